"""Image questions: photos, image files and replies to images go to the vision model.

One request per message: a Telegram album or a Discord message with several images is
one question with all of them. The caption is the question; without one the model is
asked to describe the image(s) in the user's language. Every image is downscaled for
the channel's `/detail` level before it is sent (as a base64 data URL: nothing the
platform hands us, least of all a Telegram file URL, ever reaches the model), and the
downscaled copy is kept in the store so that follow-up questions, and replies to the
message, still see it.

Model choice: image questions go to `[models] vision`; text follow-ups go to the
channel's chat model (`/model`), carrying the recent images with them.
"""

from __future__ import annotations

import asyncio
import logging

from bot.commands import Param, command
from bot.context import Context
from bot.errors import ModelError, UserError
from bot.events import Attachment, Inbound
from bot.media import DETAILS, PreparedImage, fits, prepare_image_async, read_image
from handlers.chat import (
    answer,
    build_messages,
    no_vision_message,
    store_user_turn,
    user_content,
)

log = logging.getLogger(__name__)

MAX_IMAGES = 10
VISION_OFF = "Looking at images is turned off on this bot."
TOO_MANY = f"I can look at up to {MAX_IMAGES} images at once."
NO_IMAGE_LEFT = "I no longer have that image. Please send it again."

# interface language codes -> names for the default question; others are named by code
LANGUAGES = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek",
    "en": "English", "es": "Spanish", "fa": "Persian", "fi": "Finnish", "fr": "French",
    "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian",
    "ja": "Japanese", "ko": "Korean", "nl": "Dutch", "no": "Norwegian", "pl": "Polish",
    "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish", "th": "Thai",
    "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}


def _images(attachments: tuple[Attachment, ...] | list[Attachment]) -> list[Attachment]:
    return [a for a in attachments if a.kind == "image"]


def wants_images(inbound: Inbound) -> bool:
    """Messages with images, and replies to images (unless they bring audio to transcribe)."""
    if _images(inbound.attachments):
        return True
    quoted = inbound.reply_to
    return quoted is not None and bool(_images(quoted.attachments)) and not any(
        a.kind in ("voice", "audio", "video") for a in inbound.attachments)


def image_note(count: int) -> str:
    """How an image message reads in the stored history: `[image]`, `[3 images]`."""
    return "[image]" if count == 1 else f"[{count} images]"


def default_question(count: int, language: str | None) -> str:
    """What to ask when an image comes without a caption, in the user's language."""
    what = "this image" if count == 1 else "these images"
    fallback = "English"
    if language:
        code = language.split("-")[0].lower()
        fallback = LANGUAGES.get(code, f"the language with code '{language}'")
    return (f"Describe {what}. Answer in the language the user writes in; if there is no "
            f"earlier text from them, answer in {fallback}.")


async def vision(ctx: Context) -> None:
    """Answer a message with images (or a reply to one) with the vision model."""
    inbound = ctx.inbound
    model = ctx.config.models.vision
    if not model:
        raise UserError(VISION_OFF)
    if await ctx.ai.takes_images(model) is False:
        # a server that drops image parts would answer about a picture it never saw
        raise UserError(no_vision_message(model))
    detail = str(await ctx.setting("detail", ctx.config.vision.detail))
    async with ctx.reply.working("typing"):
        images, origins = await gather_images(ctx, detail)
    caption = inbound.text.strip()
    content = user_content(inbound, f"{image_note(len(images))} {caption}")
    asked = content if caption else (
        f"{content}\n{default_question(len(images), inbound.language)}")
    messages = await build_messages(ctx, asked, images=images, model=model)
    stored = asyncio.create_task(_store(ctx, content, images, origins))
    try:
        await answer(ctx, messages, feature="vision", model=model)
    except ModelError as e:
        if e.kind == "no_vision":  # the reply says so; follow-ups then go as text only
            log.warning("vision model %s rejected image input", model)
            ctx.ai.text_only_models.add(model)
        raise
    finally:
        await stored


async def gather_images(ctx: Context, detail: str) -> tuple[list[PreparedImage], list[str]]:
    """The images of a request, prepared for the model, and the message each came from.

    A replied-to image comes from the store when the bot kept it (its own or an earlier
    user image), else it is downloaded from the platform; then the message's own images.
    """
    inbound = ctx.inbound
    jobs: list[tuple[str, asyncio.Future[PreparedImage] | PreparedImage]] = []
    quoted = inbound.reply_to
    if quoted is not None:
        kept = await ctx.store.images_by_message(ctx.channel, quoted.id)
        seen: set[bytes] = set()
        for row in kept:
            if row.data not in seen:
                seen.add(row.data)
                jobs.append((quoted.id, _stored(row.data, row.mime, row.width, row.height,
                                                detail)))
        if not kept:
            jobs += [(quoted.id, _fetch(ctx, a, detail)) for a in _images(quoted.attachments)]
    jobs += [(inbound.id, _fetch(ctx, a, detail)) for a in _images(inbound.attachments)]
    if len(jobs) > MAX_IMAGES:
        for _, job in jobs:
            if isinstance(job, asyncio.Future):
                job.cancel()
        raise UserError(TOO_MANY)
    results = await asyncio.gather(*(_done(job) for _, job in jobs), return_exceptions=True)
    images: list[PreparedImage] = []
    for i, result in enumerate(results):
        if isinstance(result, UserError):
            if len(jobs) > 1:
                raise UserError(f"Image {i + 1} of {len(jobs)}: {result.message}")
            raise result
        if isinstance(result, BaseException):
            raise result
        images.append(result)
    if not images:
        raise UserError(NO_IMAGE_LEFT)
    return images, [origin for origin, _ in jobs]


async def _done(job: asyncio.Future[PreparedImage] | PreparedImage) -> PreparedImage:
    return job if isinstance(job, PreparedImage) else await job


def _stored(data: bytes, mime: str, width: int, height: int,
            detail: str) -> asyncio.Future[PreparedImage] | PreparedImage:
    """A kept copy, re-scaled only when the channel now asks for a lower detail."""
    if fits(width, height, detail):
        return PreparedImage(data, mime, width, height, detail)
    return asyncio.ensure_future(prepare_image_async(data, detail))


def _fetch(ctx: Context, attachment: Attachment, detail: str) -> asyncio.Future[PreparedImage]:
    return asyncio.ensure_future(_download_and_prepare(ctx, attachment, detail))


async def _download_and_prepare(ctx: Context, attachment: Attachment,
                                detail: str) -> PreparedImage:
    """Download within [vision] max_image_mb, then decode/downscale on the image pool."""
    data = await read_image(attachment, ctx.config.vision.max_image_mb)
    try:
        return await prepare_image_async(data, detail)
    except UserError as e:
        log.info("image %r (%s) not usable in %s: %s", attachment.filename, attachment.mime,
                 ctx.channel, e.message)
        raise


async def _store(ctx: Context, content: str, images: list[PreparedImage],
                 origins: list[str]) -> None:
    """The user's turn, then its images linked to it (kept for follow-ups and replies)."""
    turn_id = await store_user_turn(ctx, content)
    for image, origin in zip(images, origins, strict=True):
        await ctx.store.add_image(
            ctx.channel, image.data, image.mime, image.width, image.height, image.tokens,
            turn_id=turn_id, message_id=origin, source="user",
            keep=ctx.config.vision.keep_images)


@command(
    "detail",
    Param("level", "How closely to look at images: low, high or auto", choices=DETAILS),
    admin_in_groups=True,
)
async def detail_cmd(ctx: Context) -> None:
    """Show or set how closely I look at images (low, high, auto)"""
    level = str(ctx.args.get("level", "")).strip()
    default = ctx.config.vision.detail
    current = str(await ctx.setting("detail", default))
    if not level:
        await ctx.reply.reply_long(
            f"Image detail here: `{current}`\n"
            "`low` is fast and cheap (512×512), `high` reads small print (up to 768×2000), "
            "`auto` lets the model decide. Change it with `/detail low|high|auto`.")
        return
    await ctx.store.set_setting(ctx.channel, "detail", None if level == default else level)
    await ctx.reply.reply_long(f"Image detail for this chat is now `{level}`.")
