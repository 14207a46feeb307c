"""Text chat: store the turn, assemble context inside the token budget, stream the answer.

Context assembly also carries the channel's recent images (downscaled copies kept in the
store by the vision handler): up to `[vision] context_images` of them go with the turns
they belong to, and their token cost (OpenAI's image formula) counts against
`history_tokens` like text does.

The budget also fits the model: history + answer stay inside the context window the
server publishes (see bot/probe.py), a message too long for it keeps its start and end,
and a request the server still finds too long is shrunk and asked again. Local servers
fail in quiet ways, so an empty stream counts as a failed request: it is asked once more
without streaming, which makes the server say what went wrong.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot import builtin_tools, memory, tools
from bot.ai import MESSAGES, ContextOverflow
from bot.commands import Param, command
from bot.context import Context
from bot.errors import ModelError, UserError
from bot.events import Inbound
from bot.media import PreparedImage, image_part, image_tokens
from bot.store import StoredImage, Turn

log = logging.getLogger(__name__)

QUOTE_LIMIT = 600
EMPTY_ANSWER = "The model returned an empty answer. Please rephrase and try again."
NOTHING_TO_READ = "I can only read text here. Send me a message in words."
# shown to the model after an assistant turn that carried images (the API takes images
# in user messages only)
ASSISTANT_IMAGES = "[the image(s) you sent above]"
SHORTENED = ("⚠️ Your message was too long for this model, so I kept its start and end "
             "({kept:,} of {total:,} characters).")
CUT_MARKER = "\n\n[… {count:,} characters cut here …]\n\n"
# an over-long message may take this share of the history budget: what is stored must
# leave room for the conversation before it
MESSAGE_SHARE = 0.6
# the answer never gets less room than this; below it the context is shrunk instead
MIN_ANSWER = 64
SHRINKS = 2


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


def _margin(window: int) -> int:
    """Tokens kept free for chat-template markup the estimate does not see."""
    return 16 + window // 50


async def budgets(ctx: Context, model: str) -> tuple[int, int]:
    """(tokens for system prompt + history + message, tokens for the answer) for a model.

    `[chat] history_tokens` and `max_output_tokens` are upper limits; a smaller context
    window shrinks both (the answer to at most half of it) so that they fit together.
    """
    history = ctx.config.chat.history_tokens
    out = ctx.config.chat.max_output_tokens
    window = await ctx.ai.context_window(model)
    if window:
        out = min(out, window // 2)
        history = min(history, window - out - _margin(window))
    return history, out


def shorten(ctx: Context, text: str, limit: int) -> str:
    """Start and end of a text, with a marker where the middle was, within `limit` tokens."""
    count = ctx.ai.tokenizer.count
    if count(text) <= limit:
        return text
    low, high = 0, len(text)
    best = ""
    while low <= high:  # the longest cut that fits (the estimate is monotonic enough)
        keep = (low + high) // 2
        head, tail = text[: keep - keep // 2], text[len(text) - keep // 2:] if keep else ""
        candidate = head + CUT_MARKER.format(count=len(text) - keep) + tail
        if count(candidate) <= limit:
            best, low = candidate, keep + 1
        else:
            high = keep - 1
    return best or text[: max(1, limit)]


async def fit_message(ctx: Context, text: str, model: str) -> tuple[str, str]:
    """(the message as it will be sent and stored, a note for the user if it was cut)."""
    history, _ = await budgets(ctx, model)
    system = ctx.ai.tokenizer.count(await system_prompt(ctx))
    limit = max(50, int((history - system) * MESSAGE_SHARE))
    fitted = shorten(ctx, text, limit)
    if fitted == text:
        return text, ""
    kept = len(fitted) - len(CUT_MARKER.format(count=len(text) - len(fitted)))
    log.info("message in %s shortened from %d to %d characters", ctx.channel, len(text),
             len(fitted))
    return fitted, SHORTENED.format(kept=max(0, kept), total=len(text))


async def build_messages(
    ctx: Context, current: str, *, images: Sequence[PreparedImage] = (),
    history_images: bool = True, model: str | None = None,
) -> list[dict[str, Any]]:
    """System prompt + as many earlier turns as fit the budget + the current message.

    `images` go with the current message. With `history_images`, the newest stored images
    of the channel (at most [vision] context_images) go with their turns while they fit
    the budget; an older turn whose images do not fit is sent as text. The budget is the
    one of `model` (default: the channel's chat model).

    Called before the current message is stored, so that storing it can overlap with
    the model request.
    """
    system = await system_prompt(ctx)
    history, _ = await budgets(ctx, model or await chat_model(ctx))
    budget = history - ctx.ai.tokenizer.count(system)
    image_cost = sum(i.tokens for i in images)
    current_tokens = ctx.ai.tokenizer.count(current) + image_cost
    if current_tokens > budget:
        # the message alone is over budget: keep its start and end rather than nothing
        current = shorten(ctx, current, max(50, budget - image_cost))
        return alternate(ctx, [{"role": "system", "content": system},
                               _user_message(current, [i.part() for i in images])])
    available = budget - current_tokens
    turns = await ctx.store.recent_turns(ctx.channel, available,
                                         ctx.config.chat.history_messages)
    # older turns similar to the question (semantic memory), inside the same budget
    recalled, recall_tokens = await memory.recall_message(ctx, current, turns, available)
    available -= recall_tokens
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
            messages.extend(reversed(tools.history_messages(t.tools)))
    messages.reverse()
    if recalled is not None:
        system = f"{system}\n\n{recalled['content']}"
    messages.insert(0, {"role": "system", "content": system})
    messages.append(_user_message(current, [i.part() for i in images]))
    return alternate(ctx, messages)


def alternate(ctx: Context, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Strict user/assistant alternation after the system prompt, for servers whose chat
    templates demand it (Gemma, Mistral, Llama 2 raise on two user turns in a row, which a
    failed turn or a busy group leaves): same-role neighbours are merged, and a leading
    assistant turn (its question fell outside the budget) is dropped. OpenAI takes any
    order, and there each group member's turn stays its own message."""
    if ctx.ai.openai_api():
        return messages
    out: list[dict[str, Any]] = []
    dropped_calls = False  # tool results go wherever their tool_calls message goes
    for m in messages:
        if m["role"] == "tool":
            if not dropped_calls:
                out.append(m)
            continue
        dropped_calls = False
        if m["role"] == "assistant" and (not out or out[-1]["role"] == "system"):
            dropped_calls = bool(m.get("tool_calls"))
            continue
        if out and m["role"] == out[-1]["role"] and m["role"] in ("user", "assistant") and (
                not m.get("tool_calls") and not out[-1].get("tool_calls")):
            out[-1] = _merge(out[-1], m)
        else:
            out.append(m)
    return out


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    if isinstance(a["content"], str) and isinstance(b["content"], str):
        return {**a, "content": f"{a['content']}\n\n{b['content']}"}
    parts = [*_parts(a["content"]), *_parts(b["content"])]
    return {**a, "content": parts}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return list(content)
    return [{"type": "text", "text": str(content or "")}]


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
        texts = [p.get("text", "") for p in content
                 if p.get("type") == "text" and p.get("text") != ASSISTANT_IMAGES]
        if texts:
            out.append({**m, "content": "\n".join(texts)})
    return out


@dataclass
class _Answer:
    """What one request produced (the AI layer records its usage)."""

    text: str
    messages: list[dict[str, Any]]
    note: str = ""
    # the tool rounds that led to the text (JSON, stored with the turn)
    tools: str | None = None
    # the stream, whose details /info shows once the answer is out
    stream: Any = None


async def answer_room(ctx: Context, model: str, messages: list[dict[str, Any]]) -> int:
    """Tokens the answer may take: `max_output_tokens`, less if the window is nearly full
    (vLLM rejects prompt + max_tokens over its window; llama.cpp runs out of room)."""
    _, out = await budgets(ctx, model)
    window = await ctx.ai.context_window(model)
    if window:
        room = window - ctx.ai.estimate_messages(messages) - _margin(window)
        if room < min(MIN_ANSWER, out):
            raise ContextOverflow(window)
        out = min(out, room)
    return out


def shrink(ctx: Context, messages: list[dict[str, Any]], target: int) -> list[dict[str, Any]]:
    """Drop the oldest turns (then cut the message itself) until the request fits `target`."""
    estimate = ctx.ai.estimate_messages
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    body = messages[len(head):]
    while len(body) > 1 and estimate(head + body) > target:
        body = body[1:]
    shrunk = alternate(ctx, head + body)
    over = estimate(shrunk) - target
    last = shrunk[-1]
    if over > 0 and isinstance(last.get("content"), str):
        limit = max(50, ctx.ai.tokenizer.count(last["content"]) - over)
        shrunk[-1] = {**last, "content": shorten(ctx, last["content"], limit)}
    return shrunk


async def answer(ctx: Context, messages: list[dict[str, Any]], *, feature: str = "chat",
                 prefix: str = "", model: str | None = None) -> str:
    """Stream the model's answer into the chat and store it; returns the text (the AI
    layer records the usage under `feature`).

    `prefix` is shown above the answer (e.g. the transcript of a voice note) but is not
    part of the stored answer. `model` defaults to the channel's chat model.
    """
    model = model or await chat_model(ctx)
    out = ctx.reply.stream()
    if prefix:
        out.append(prefix)
    drawn: list[builtin_tools.DrawnImage] = []
    token = builtin_tools.DRAWN.set(drawn)  # pictures the draw tool sends in this answer
    turn_id = None
    try:
        async with ctx.reply.working("typing"):
            try:
                result = await _ask(ctx, out, model, messages, feature)
            except (ModelError, UserError):
                await out.abort()
                raise
            await out.finish(result.note)
        # stored once the answer is out (a write before the last edit would hold it up),
        # with its details for /info in the same write
        turn_id = await _remember(ctx, result.text, out, result.tools,
                                  result.stream.last_answer() if result.stream else None)
    finally:
        builtin_tools.DRAWN.reset(token)
        if drawn:  # with the answer's turn, so follow-ups see them as a /draw picture
            await builtin_tools.keep_drawn(ctx, drawn, turn_id)
    return result.text


async def _ask(ctx: Context, out: Any, model: str,
               messages: list[dict[str, Any]], feature: str) -> _Answer:
    """One answer, shrinking the context when the server says it is too long for it."""
    for attempt in range(SHRINKS + 1):
        try:
            max_tokens = await answer_room(ctx, model, messages)
            return await _ask_once(ctx, out, model, messages, max_tokens, feature)
        except ContextOverflow as e:
            if attempt == SHRINKS:
                raise
            if e.window:
                ctx.ai.learn_window(model, e.window)
            size = ctx.ai.estimate_messages(messages)
            target = int(size * 0.7)
            window = await ctx.ai.context_window(model)
            if window:
                _, room = await budgets(ctx, model)
                target = min(target, window - min(room, window // 4) - _margin(window))
            log.info("request to %s too long for its context (%s); shrinking %d -> %d tokens",
                     model, e.window or "size not given", size, target)
            messages = shrink(ctx, messages, max(target, 50))
    raise AssertionError("unreachable")


async def _ask_once(ctx: Context, out: Any, model: str, messages: list[dict[str, Any]],
                    max_tokens: int, feature: str) -> _Answer:
    # tool rounds, /seed and /temperature: bot/tools.py
    stream = await tools.start_answer(ctx, model, messages, out, max_tokens=max_tokens,
                                      feature=feature)
    try:
        async for delta in stream:
            out.append(delta)
    except ModelError as e:
        if not stream.text:
            raise
        log.warning("answer interrupted in %s: %s", ctx.channel, e.kind)
        return _Answer(stream.text, messages, f"⚠️ {e.message}", stream.exchange_json())
    if stream.text.strip():
        note = "…(answer cut at the length limit)" if stream.finish_reason == "length" else ""
        return _Answer(stream.text, messages, note, stream.exchange_json(), stream)
    if stream.refusal.strip():
        await stream.save_last()
        raise UserError(stream.refusal.strip())
    # An empty stream is a failed request (llama.cpp answers an over-long prompt with an
    # empty 200 when streaming): the same request unstreamed makes the server say why.
    log.warning("empty answer stream from %s in %s (%d events); asking again without "
                "streaming", model, ctx.channel, stream.chunks)
    text, _, _, _ = await ctx.ai.complete(model, messages, max_tokens=max_tokens,
                                          feature=feature)
    if not text.strip():
        await stream.save_last()
        raise UserError(EMPTY_ANSWER)
    out.append(text)
    return _Answer(text, messages, stream=stream)


async def _remember(ctx: Context, text: str, out: Any, exchange: str | None = None,
                    details: tuple[str, Any] | None = None) -> int:
    first = out.sent[0].id if out.sent else None
    return await ctx.store.append_turn(ctx.channel, "assistant", text, ctx.ai.tokenizer.count(
        text + (exchange or "")), message_id=first, tools=exchange, setting=details)


async def converse(ctx: Context, content: str, *, feature: str = "chat",
                   prefix: str = "") -> str:
    """One user turn in this channel's conversation -> the streamed, stored answer.

    Recent images of the channel go along unless the model is known not to take them; if
    the server says it cannot, the answer is asked again as text only and the model is
    remembered as such. A message too long for the model is cut (start and end kept),
    stored as cut, and the user is told.
    """
    model = await chat_model(ctx)
    content, note = await fit_message(ctx, content, model)
    if note:
        prefix = f"{prefix}\n\n{note}" if prefix else note
    images_ok = await ctx.ai.takes_images(model) is not False
    messages = await build_messages(ctx, content, history_images=images_ok, model=model)
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
            return await answer(ctx, alternate(ctx, without_images(messages)),
                                feature=feature, prefix=prefix, model=model)
    finally:
        await stored


def no_vision_message(model: str) -> str:
    """What the user hears when the model cannot see the images they sent."""
    return MESSAGES["no_vision"].format(model=model)


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


# In the terminal, files are attached by path; the console adapter turns these lines into
# messages with an attachment, so the handlers below only answer a line it passed on.
ATTACH_USAGE = "Attach a file by its path, e.g. `/image ~/cat.jpg what breed is it?`"


@command("image", Param("path", "Image file", required=True),
         Param("question", "What to ask about it", type="text"), requires="files_by_path")
async def image_cmd(ctx: Context) -> None:
    """Send an image file with a question about it"""
    raise UserError(ATTACH_USAGE)


@command("audio", Param("path", "Audio file or voice note", required=True),
         requires="files_by_path")
async def audio_cmd(ctx: Context) -> None:
    """Send a voice note or audio file to answer (also: /voice PATH)"""
    raise UserError(ATTACH_USAGE)


@command("file", Param("path", "Any file", required=True),
         Param("question", "What to do with it", type="text"), requires="files_by_path")
async def file_cmd(ctx: Context) -> None:
    """Send a file (images are looked at, audio is transcribed)"""
    raise UserError(ATTACH_USAGE)
