"""Text chat: store the turn, assemble context inside the token budget, stream the answer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bot.context import Context
from bot.errors import ModelError, UserError
from bot.events import Inbound
from bot.store import UsageRow

log = logging.getLogger(__name__)

QUOTE_LIMIT = 600
EMPTY_ANSWER = "The model returned an empty answer. Please rephrase and try again."
NOTHING_TO_READ = "I can only read text here. Send me a message in words."


def user_content(inbound: Inbound) -> str:
    """The text the model sees for a message: speaker label in groups, quoted reply."""
    text = inbound.text.strip()
    quoted = inbound.reply_to
    if quoted is not None and quoted.text and not quoted.from_self and text:
        snippet = quoted.text.strip()
        if len(snippet) > QUOTE_LIMIT:
            snippet = snippet[:QUOTE_LIMIT] + "…"
        who = quoted.author.name if quoted.author else "someone"
        quote = "\n".join(f"> {line}" for line in snippet.splitlines())
        text = f"(replying to {who}:)\n{quote}\n\n{text}"
    if text and not inbound.is_private:
        text = f"{inbound.author.name}: {text}"
    return text


async def store_user_turn(ctx: Context, content: str, *, addressed: bool = True) -> None:
    """Append the user's message to the channel history with its token count."""
    inbound = ctx.inbound
    await ctx.store.append_turn(
        ctx.channel,
        "user",
        content,
        ctx.ai.tokenizer.count(content),
        author_id=inbound.author.id,
        author_name=inbound.author.name,
        message_id=inbound.id,
        addressed=addressed,
    )


async def system_prompt(ctx: Context) -> str:
    """This channel's persona, or the configured default."""
    persona = await ctx.store.setting(ctx.channel, "persona")
    return str(persona) if persona else ctx.config.bot.system_prompt


async def build_messages(ctx: Context, current: str) -> list[dict[str, Any]]:
    """System prompt + as many earlier turns as fit the budget + the current message.

    Called before the current message is stored, so that storing it can overlap with
    the model request.
    """
    system = await system_prompt(ctx)
    budget = ctx.config.chat.history_tokens - ctx.ai.tokenizer.count(system)
    current_tokens = ctx.ai.tokenizer.count(current)
    if current_tokens > budget:
        # the message alone is over budget: send its tail rather than nothing
        keep = max(budget, 100) * 3
        return [{"role": "system", "content": system},
                {"role": "user", "content": current[-keep:]}]
    turns = await ctx.store.recent_turns(ctx.channel, budget - current_tokens,
                                         ctx.config.chat.history_messages)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
    messages += [{"role": t.role, "content": t.content} for t in turns]
    messages.append({"role": "user", "content": current})
    return messages


async def answer(ctx: Context, messages: list[dict[str, Any]], *, feature: str = "chat",
                 prefix: str = "") -> str:
    """Stream the model's answer into the chat, store it, record usage; returns the text.

    `prefix` is shown above the answer (e.g. the transcript of a voice note) but is not
    part of the stored answer.
    """
    model = await ctx.setting("model", ctx.config.models.chat)
    out = ctx.reply.stream()
    if prefix:
        out.append(prefix)
    async with ctx.reply.working("typing"):
        stream = await ctx.ai.chat_stream(model, messages,
                                          max_tokens=ctx.config.chat.max_output_tokens)
        try:
            async for delta in stream:
                out.append(delta)
        except ModelError as e:
            if not out.text:
                await out.abort()
                raise
            log.warning("answer interrupted in %s: %s", ctx.channel, e.kind)
            await out.finish(f"⚠️ {e.message}")
            await _remember(ctx, model, messages, stream.text, stream, feature, out)
            return stream.text
        if not stream.text.strip():
            await out.abort()
            raise UserError(stream.refusal.strip() or EMPTY_ANSWER)
        await out.finish("…(answer cut at the length limit)"
                         if stream.finish_reason == "length" else "")
    await _remember(ctx, model, messages, stream.text, stream, feature, out)
    return stream.text


async def _remember(ctx: Context, model: str, messages: list[dict[str, Any]], text: str,
                    stream: Any, feature: str, out: Any) -> None:
    first = out.sent[0].id if out.sent else None
    await ctx.store.append_turn(ctx.channel, "assistant", text, ctx.ai.tokenizer.count(text),
                                message_id=first)
    estimated = stream.prompt_tokens is None
    prompt = stream.prompt_tokens if not estimated else ctx.ai.estimate_messages(messages)
    completion = stream.completion_tokens
    if completion is None:
        completion = ctx.ai.tokenizer.count(text)
        estimated = True
    await ctx.store.record_usage(UsageRow(
        platform=ctx.inbound.channel.platform, channel=ctx.channel,
        user_id=ctx.inbound.author.id, model=model, feature=feature,
        prompt_tokens=prompt, completion_tokens=completion, estimated=estimated))


async def converse(ctx: Context, content: str, *, feature: str = "chat",
                   prefix: str = "") -> str:
    """One user turn in this channel's conversation -> the streamed, stored answer."""
    messages = await build_messages(ctx, content)
    # stored while the model request goes out; awaited before this message is done, and
    # the channel's next message waits for this one, so history order is kept
    stored = asyncio.create_task(store_user_turn(ctx, content))
    try:
        return await answer(ctx, messages, feature=feature, prefix=prefix)
    finally:
        await stored


async def chat(ctx: Context) -> None:
    """Answer a text message with the channel's context."""
    content = user_content(ctx.inbound)
    if not content:
        raise UserError(NOTHING_TO_READ)
    await converse(ctx, content)


async def record(ctx: Context) -> None:
    """Keep an unaddressed group message as context for later questions."""
    content = user_content(ctx.inbound)
    if content:
        await store_user_turn(ctx, content, addressed=False)


def wants_text(inbound: Inbound) -> bool:
    """The chat handler takes every message no earlier handler claimed."""
    return True
