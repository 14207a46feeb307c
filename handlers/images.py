"""Making images: /draw, /edit and /variation through the Images API.

Here: reading what the user asked for, and answering. Which options each model takes is
bot/ai_images.py's business, checked before any request. While the API works the chat
shows `upload_photo` and a placeholder message; the photos then arrive as one album /
one message and the placeholder becomes a one-line summary, or (the router's error
policy, as for every reply) the error. Results are kept in the channel history (an
assistant turn "[image generated for: …]" with the picture attached) so "/edit make it
bluer" and replies to the picture work on them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot import imaging
from bot.ai import ImageResult
from bot.ai_images import (
    ALL_QUALITIES,
    ALL_SIZES,
    MAX_API_COUNT,
    SHAPES,
    SIZE_RE,
    check_count,
    check_edits,
    check_quality,
    check_size,
    family_of,
)
from bot.commands import Param, command
from bot.config import ImagesSection
from bot.context import Context
from bot.errors import UserError
from bot.events import Attachment
from bot.media import NOT_AN_IMAGE, prepare_image_async, read_image
from bot.replies import OutFile, Sent
from handlers.chat import user_content

log = logging.getLogger(__name__)

DRAWING = "🎨 Drawing…"
EDITING = "🎨 Editing the image…"
VARYING = "🎨 Making a variation…"
NO_PROMPT = "Tell me what to draw, e.g. `/draw a red fox in the snow 1536x1024 high`."
NO_EDIT_PROMPT = "Tell me what to change, e.g. `/edit make the sky purple` with an image."
NO_IMAGE = ("Attach an image (or reply to one) with `{cmd}`; without one I use the last image "
            "in this chat, and there is none yet.")
TOO_MANY = "Send one image, plus optionally a mask (a second image), with /edit."
VARIATION_PROMPT = ("Make a variation of this image: keep its subject, composition and style, "
                    "and vary the details.")
PROMPT_LIMIT = 4000


@dataclass(frozen=True, slots=True)
class DrawRequest:
    """A validated /draw: what goes to the API (None = let the API choose)."""

    prompt: str
    size: str | None
    quality: str | None
    count: int


_TAIL_RE = re.compile(r"^(.*?)\s*(\S+)\s*$", re.S)


def _pop_word(text: str) -> tuple[str, str]:
    m = _TAIL_RE.match(text)
    return (m.group(1), m.group(2)) if m else ("", "")


def split_options(text: str) -> tuple[str, dict[str, str]]:
    """`a red fox 1536x1024 high 2` -> ("a red fox", {size, quality, count}).

    Options are read from the end in the order of `/draw prompt [size] [quality] [count]`
    (a bare number counts only up to 10, so "apollo 11" stays a prompt); `size=`,
    `quality=` and `count=` also work. Anything else is part of the prompt.
    """
    rest = text.strip()
    found: dict[str, str] = {}
    while True:
        head, word = _pop_word(rest)
        key, eq, value = word.partition("=")
        key = {"n": "count"}.get(key.lower(), key.lower())
        if not eq or key not in ("size", "quality", "count") or not value or key in found:
            break
        found[key] = value.lower().replace("×", "x")
        rest = head
    head, word = _pop_word(rest)
    if "count" not in found and word.isdigit() and 1 <= int(word) <= MAX_API_COUNT:
        found["count"], rest = word, head
    head, word = _pop_word(rest)
    if "quality" not in found and word.lower() in ALL_QUALITIES:
        found["quality"], rest = word.lower(), head
    head, word = _pop_word(rest)
    size = word.lower().replace("×", "x")
    if "size" not in found and (SIZE_RE.match(size) or size in ("auto", *SHAPES)):
        found["size"], rest = size, head
    return rest.strip(), found


def _default(value: str, allowed: Callable[[str], Any]) -> str | None:
    """A config default, when it is not "auto" (the API's own default) and fits the model."""
    if not value or value == "auto":
        return None
    try:
        return str(allowed(value))
    except UserError:
        return None


def resolve_draw(model: str, args: dict[str, Any], settings: ImagesSection) -> DrawRequest:
    """/draw arguments (typed options, or options at the end of the prompt) -> a request."""
    family = family_of(model)
    prompt, found = split_options(str(args.get("prompt", "")))
    for key in ("size", "quality", "count"):
        if args.get(key) not in (None, ""):
            found[key] = str(args[key]).lower()
    if not prompt:
        raise UserError(NO_PROMPT)
    if len(prompt) > PROMPT_LIMIT:
        raise UserError(f"That prompt is too long ({len(prompt)} characters; the limit is "
                        f"{PROMPT_LIMIT}).")
    size = (check_size(family, model, found["size"]) if "size" in found else
            _default(settings.size, lambda s: check_size(family, model, s)))
    quality = (check_quality(family, model, found["quality"]) if "quality" in found else
               _default(settings.quality, lambda q: check_quality(family, model, q)))
    try:
        count = int(found.get("count", "1"))
    except ValueError:
        raise UserError("`count` must be a whole number.") from None
    count = check_count(family, model, settings.max_count, count)
    return DrawRequest(prompt, size, quality, count)


# --------------------------------------------------------------------------- delivery


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(n: int) -> str:
    return "1 image" if n == 1 else f"{n} images"


def _extension(mime: str) -> str:
    return {"image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}.get(mime, "png")


async def _replace(ctx: Context, placeholder: Sent, text: str) -> None:
    """The placeholder becomes `text` (a fresh message if it cannot be edited)."""
    try:
        await ctx.reply.edit(placeholder, text)
    except Exception:
        log.exception("could not edit the placeholder in %s", ctx.channel)
        await ctx.reply.send(text)


async def _produce(
    ctx: Context, placeholder_text: str, make: Callable[[], Awaitable[ImageResult]],
    *, history_text: str, summary: Callable[[ImageResult, tuple[int, int]], str],
) -> None:
    """Placeholder, upload_photo, request, photos; the placeholder ends as the summary, or
    the router's error reply takes its place."""
    placeholder = ctx.placeholder = await ctx.reply.send(placeholder_text)
    async with ctx.reply.working("upload_photo"):
        result = await make()
        files = [OutFile(img.data, f"image-{i + 1}.{_extension(img.mime)}", img.mime,
                         kind="image", caption=img.revised_prompt or None)
                 for i, img in enumerate(result.images)]
        sent = await ctx.reply.send_files(files)
    ctx.placeholder = None
    size = imaging.image_size(result.images[0].data) or (0, 0)
    await _replace(ctx, placeholder, summary(result, size))
    try:
        await _remember(ctx, result, sent, history_text=history_text)
    except Exception:
        log.exception("could not store generated images in %s", ctx.channel)


async def _remember(ctx: Context, result: ImageResult, sent: list[Sent], *,
                    history_text: str) -> None:
    """History: the request, an assistant turn naming the image, the pictures (the AI
    layer recorded the usage)."""
    store = ctx.store
    asked = user_content(ctx.inbound)
    if asked:
        await store.append_turn(ctx.channel, "user", asked, ctx.ai.tokenizer.count(asked),
                                author_id=ctx.inbound.author.id,
                                author_name=ctx.inbound.author.name, message_id=ctx.inbound.id)
    first_id = sent[0].id if sent else None
    turn_id = await store.append_turn(ctx.channel, "assistant", history_text,
                                      ctx.ai.tokenizer.count(history_text), message_id=first_id)
    for img, where in zip(result.images, sent, strict=False):
        try:
            # the same bounded copy the vision handler keeps of user images ("high" detail)
            copy = await prepare_image_async(img.data, "high")
        except Exception:
            log.exception("a generated image could not be kept in %s", ctx.channel)
            continue
        await store.add_image(ctx.channel, copy.data, copy.mime, copy.width, copy.height,
                              copy.tokens, turn_id=turn_id, message_id=where.id,
                              source="generated", keep=ctx.config.vision.keep_images)


def _details(size: tuple[int, int], *parts: str | None) -> str:
    shown = [f"{size[0]}x{size[1]}"] if size[0] else []
    return ", ".join([*shown, *(p for p in parts if p)])


# --------------------------------------------------------------------------- inputs


# an image to work on: an attachment (downloaded when needed), or a copy the bot kept
_Source = Attachment | bytes


async def _sources(ctx: Context, cmd: str, *, with_mask: bool) -> list[_Source]:
    """The image (and mask) a command works on: attached, replied to, or the last one."""
    args = ctx.args
    attached = [a for a in (args.get("image"), args.get("mask")) if isinstance(a, Attachment)]
    if not attached:
        attached = list(ctx.inbound.attachments)
    if attached:
        images = [a for a in attached if a.kind == "image"]
        if not images:
            raise UserError(NOT_AN_IMAGE)
        if len(images) > (2 if with_mask else 1):
            raise UserError(TOO_MANY if with_mask else
                            f"Send one image with {cmd}.")
        return list(images)
    quoted = ctx.inbound.reply_to
    if quoted is not None:
        if quoted.from_self:
            kept = await ctx.store.images_by_message(ctx.channel, quoted.id)
            if kept:
                return [kept[0].data]
        images = [a for a in quoted.attachments if a.kind == "image"]
        if images:
            return [images[0]]
        if quoted.attachments:
            raise UserError(NOT_AN_IMAGE)
    last = await ctx.store.last_images(ctx.channel, 1)
    if last:
        return [last[0].data]
    raise UserError(NO_IMAGE.format(cmd=cmd))


async def _read(ctx: Context, source: _Source) -> bytes:
    """The image's bytes; attachments within [vision] max_image_mb."""
    if isinstance(source, bytes):
        return source
    return await read_image(source, ctx.config.vision.max_image_mb)


# --------------------------------------------------------------------------- commands


@command(
    "draw",
    Param("prompt", "What to draw; may end with size, quality and count", type="text",
          required=True),
    Param("size", "Image size (the model decides which are valid)", choices=ALL_SIZES),
    Param("quality", "Image quality (the model decides which are valid)",
          choices=ALL_QUALITIES),
    Param("count", "How many images", type="int", min_value=1, max_value=MAX_API_COUNT),
)
async def draw_cmd(ctx: Context) -> None:
    """Draw an image from a description"""
    model = ctx.config.models.image
    req = resolve_draw(model, ctx.args, ctx.config.images)

    def summary(result: ImageResult, size: tuple[int, int]) -> str:
        details = _details(size, req.quality, model)
        return f"🎨 {_plural(len(result.images))} for “{_short(req.prompt)}” ({details})."

    await ctx.ai.check_images(model, req.count, req.size, req.quality)
    await _produce(
        ctx, DRAWING,
        lambda: ctx.ai.generate_images(model, req.prompt, size=req.size, quality=req.quality,
                                       n=req.count),
        history_text=f"[image generated for: {req.prompt}]", summary=summary)


@command(
    "edit",
    Param("prompt", "What to change in the image", type="text", required=True),
    Param("image", "The image to edit (default: the last image here)", type="attachment"),
    Param("mask", "Optional mask: transparent or white where to change", type="attachment"),
)
async def edit_cmd(ctx: Context) -> None:
    """Edit an image (attached, replied to, or the last one) as you describe"""
    model = ctx.config.models.image
    family = family_of(model)
    prompt = str(ctx.args.get("prompt", "")).strip()
    if not prompt:
        raise UserError(NO_EDIT_PROMPT)
    if len(prompt) > PROMPT_LIMIT:
        raise UserError(f"That prompt is too long ({len(prompt)} characters; the limit is "
                        f"{PROMPT_LIMIT}).")
    check_edits(family, model, "edit images")
    sources = await _sources(ctx, "/edit", with_mask=True)
    size = _default(ctx.config.images.size, lambda s: check_size(family, model, s))
    quality = _default(ctx.config.images.quality, lambda q: check_quality(family, model, q))
    notes: tuple[str, ...] = ()

    async def make() -> ImageResult:
        nonlocal notes
        image = await _read(ctx, sources[0])
        mask = await _read(ctx, sources[1]) if len(sources) > 1 else None
        inputs = await asyncio.to_thread(imaging.prepare_edit, image, mask,
                                         dalle2=family.square_inputs)
        notes = inputs.notes
        mask_file = ("mask.png", inputs.mask, "image/png") if inputs.mask else None
        return await ctx.ai.edit_images(model, prompt, [("image.png", inputs.image, "image/png")],
                                        mask=mask_file, size=size, quality=quality)

    def summary(result: ImageResult, out: tuple[int, int]) -> str:
        text = f"🎨 Edited: “{_short(prompt)}” ({_details(out, quality, model)})."
        if notes:
            text += f"\n_Note: {'; '.join(notes)}._"
        return text

    await ctx.ai.check_images(model, 1, size, quality)
    await _produce(ctx, EDITING, make,
                   history_text=f"[image edited for: {prompt}]", summary=summary)


@command(
    "variation",
    Param("count", "How many variations", type="int", min_value=1, max_value=MAX_API_COUNT),
    Param("image", "The image (default: the last image here)", type="attachment"),
)
async def variation_cmd(ctx: Context) -> None:
    """Make variations of an image (attached, replied to, or the last one)"""
    model = ctx.config.models.image
    family = family_of(model)
    check_edits(family, model, "make variations")
    count = check_count(family, model, ctx.config.images.max_count,
                        int(ctx.args.get("count", 1)))
    sources = await _sources(ctx, "/variation", with_mask=False)
    size = _default(ctx.config.images.size, lambda s: check_size(family, model, s))

    async def make() -> ImageResult:
        image = await _read(ctx, sources[0])
        if family.variations:
            png = await asyncio.to_thread(imaging.prepare_variation, image)
            return await ctx.ai.image_variations(model, ("image.png", png, "image/png"),
                                                 n=count, size=size)
        inputs = await asyncio.to_thread(imaging.prepare_edit, image, None)
        return await ctx.ai.edit_images(model, VARIATION_PROMPT,
                                        [("image.png", inputs.image, "image/png")],
                                        size=size, n=count)

    def summary(result: ImageResult, out: tuple[int, int]) -> str:
        what = "variation" if len(result.images) == 1 else "variations"
        return f"🎨 {len(result.images)} {what} of your image ({_details(out, model)})."

    await ctx.ai.check_images(model, count, size, None)
    await _produce(ctx, VARYING, make,
                   history_text="[image variation generated]", summary=summary)
