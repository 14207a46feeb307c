"""Text chat: store the turn, assemble context inside the token budget, stream the answer.

Context assembly also carries the channel's recent images (downscaled copies kept in the
store by the vision handler): up to `[vision] context_images` of them go with the turns
they belong to, and their token cost (OpenAI's image formula) counts against
`history_tokens` like text does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from bot.context import Context
from bot.errors import ModelError, UserError
from bot.events import Inbound
from bot.media import PreparedImage, image_part, image_tokens
from bot.store import StoredImage, Turn, UsageRow

log = logging.getLogger(__name__)

QUOTE_LIMIT = 600
EMPTY_ANSWER = "The model returned an empty answer. Please rephrase and try again."
NOTHING_TO_READ = "I can only read text here. Send me a message in words."
# shown to the model after an assistant turn that carried images (the API takes images
# in user messages only)
ASSISTANT_IMAGES = "[the image(s) you sent above]"


def user_content(inbound: Inbound, text: str | None = None) -> str:
    """The text the model sees for a message: speaker label in groups, quoted reply.

    `text` replaces the message's own text (the vision handler adds an image note).
    """
    text = (inbound.text if text is None else text).strip()
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


async def store_user_turn(ctx: Context, content: str, *, addressed: bool = True) -> int:
    """Append the user's message to the channel history with its token count; its id."""
    inbound = ctx.inbound
    return await ctx.store.append_turn(
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


async def chat_model(ctx: Context) -> str:
    """The channel's /model choice, or the configured chat model."""
    return str(await ctx.setting("model", ctx.config.models.chat))


async def build_messages(
    ctx: Context, current: str, *, images: Sequence[PreparedImage] = (),
    history_images: bool = True,
) -> list[dict[str, Any]]:
    """System prompt + as many earlier turns as fit the budget + the current message.

    `images` go with the current message. With `history_images`, the newest stored images
    of the channel (at most [vision] context_images) go with their turns while they fit
    the budget; an older turn whose images do not fit is sent as text.

    Called before the current message is stored, so that storing it can overlap with
    the model request.
    """
    system = await system_prompt(ctx)
    budget = ctx.config.chat.history_tokens - ctx.ai.tokenizer.count(system)
    current_tokens = ctx.ai.tokenizer.count(current) + sum(i.tokens for i in images)
    if current_tokens > budget:
        # the message alone is over budget: send its tail rather than nothing
        keep = max(budget, 100) * 3
        return [{"role": "system", "content": system},
                _user_message(current[-keep:], [i.part() for i in images])]
    available = budget - current_tokens
    turns = await ctx.store.recent_turns(ctx.channel, available,
                                         ctx.config.chat.history_messages)
    pictures: dict[int, list[StoredImage]] = {}
    detail = ""
    if history_images and turns and ctx.config.vision.context_images > 0:
        pictures = await _history_images(ctx, turns, images)
        if pictures:
            detail = str(await ctx.setting("detail", ctx.config.vision.detail))
    messages: list[dict[str, Any]] = []
    used = 0
    for t in reversed(turns):  # newest first, so the budget favours recent context
        if used + t.tokens > available:
            break
        used += t.tokens
        shown = pictures.get(t.id, [])
        cost = sum(image_tokens(p.width, p.height, detail) for p in shown)
        if shown and used + cost > available:
            shown, cost = [], 0
        used += cost
        parts = [image_part(p.data, p.mime, detail) for p in shown]
        if t.role == "user":
            messages.append(_user_message(t.content, parts))
        else:
            if parts:
                messages.append(_user_message(ASSISTANT_IMAGES, parts))
            messages.append({"role": t.role, "content": t.content})
    messages.reverse()
    messages.insert(0, {"role": "system", "content": system})
    messages.append(_user_message(current, [i.part() for i in images]))
    return messages


async def _history_images(ctx: Context, turns: list[Turn],
                          current: Sequence[PreparedImage]) -> dict[int, list[StoredImage]]:
    """The newest stored images that belong to the given turns, grouped by turn.

    An image also in the current message, or stored twice (a reply re-stores the image it
    asks about), is sent once: where it appears last.
    """
    wanted = ctx.config.vision.context_images
    # a few extra rows so that duplicates do not crowd out distinct images
    rows = await ctx.store.last_images(ctx.channel, wanted + len(current) + 4)
    turn_ids = {t.id for t in turns}
    seen = {i.data for i in current}
    out: dict[int, list[StoredImage]] = {}
    count = 0
    for row in rows:  # newest first
        if count >= wanted:
            break
        if row.turn_id is None or row.turn_id not in turn_ids or row.data in seen:
            continue
        seen.add(row.data)
        out.setdefault(row.turn_id, []).insert(0, row)
        count += 1
    return out


def _user_message(text: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    if not parts:
        return {"role": "user", "content": text}
    return {"role": "user", "content": [{"type": "text", "text": text}, *parts]}


def has_images(messages: list[dict[str, Any]]) -> bool:
    """Whether a request carries any image part."""
    return any(isinstance(m.get("content"), list) and any(
        p.get("type") == "image_url" for p in m["content"]) for m in messages)


def without_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same request as text only (for models that cannot take images)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        content = m.get("content")
        if not isinstance(content, list):
            out.append(m)
            continue
        if content and content[0].get("text") == ASSISTANT_IMAGES:
            continue
        text = "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
        out.append({**m, "content": text})
    return out


async def answer(ctx: Context, messages: list[dict[str, Any]], *, feature: str = "chat",
                 prefix: str = "", model: str | None = None) -> str:
    """Stream the model's answer into the chat, store it, record usage; returns the text.

    `prefix` is shown above the answer (e.g. the transcript of a voice note) but is not
    part of the stored answer. `model` defaults to the channel's chat model.
    """
    model = model or await chat_model(ctx)
    out = ctx.reply.stream()
    if prefix:
        out.append(prefix)
    async with ctx.reply.working("typing"):
        try:
            stream = await ctx.ai.chat_stream(model, messages,
                                              max_tokens=ctx.config.chat.max_output_tokens)
        except ModelError:
            await out.abort()
            raise
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
    """One user turn in this channel's conversation -> the streamed, stored answer.

    Recent images of the channel go along; if the server says the chat model cannot take
    images, the answer is asked again as text only and the model is remembered as such.
    """
    model = await chat_model(ctx)
    messages = await build_messages(ctx, content,
                                    history_images=model not in ctx.ai.text_only_models)
    # stored while the model request goes out; awaited before this message is done, and
    # the channel's next message waits for this one, so history order is kept
    stored = asyncio.create_task(store_user_turn(ctx, content))
    try:
        try:
            return await answer(ctx, messages, feature=feature, prefix=prefix, model=model)
        except ModelError as e:
            if e.kind != "no_vision" or not has_images(messages):
                raise
            log.info("model %s cannot take images; answering %s as text", model, ctx.channel)
            ctx.ai.text_only_models.add(model)
            return await answer(ctx, without_images(messages), feature=feature,
                                prefix=prefix, model=model)
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
