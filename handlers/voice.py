"""Speech to text: voice notes and audio become typed messages; /translate to English.

A transcribed recording is handled exactly like a typed message: the transcript goes
into the channel's history and the chat model answers it. The user sees what was heard
(`[voice] show_transcript`), and a voice note is answered with a voice message too
(`reply_voice`, see handlers/speech.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

from bot import audio
from bot.audio import AudioError, AudioInfo, AudioPart
from bot.commands import Param, command
from bot.context import Context
from bot.errors import ModelError, UserError
from bot.events import Attachment, Inbound
from handlers import speech
from handlers.chat import converse, user_content

log = logging.getLogger(__name__)

PARALLEL_CHUNKS = 4
QUOTE_LIMIT = 1500  # longer transcripts are shown as their own message instead of quoted
AUDIO_EXTENSIONS = {".ogg", ".oga", ".opus", ".mp3", ".wav", ".m4a", ".flac", ".webm",
                    ".mpga", ".mpeg", ".aac", ".amr", ".wma", ".aiff", ".aif", ".caf"}
NO_SPEECH = "I couldn't make out any words in that recording."
TRANSLATE_USAGE = ("Attach an audio file or voice note to `/translate`, or reply to one "
                   "with `/translate`.")
TRANSLATE_PROMPT = ("Translate the user's message into English. Reply with the translation "
                    "only, without comments. If it is already English, repeat it unchanged.")
# errors of the translations endpoint that mean "not here": fall back to the chat model
_NO_TRANSLATIONS = {"unsupported", "model_not_found", "bad_request"}


def is_audio(att: Attachment) -> bool:
    """Voice notes, audio files, recorded video notes and audio sent as documents."""
    if att.kind in ("voice", "audio") or att.voice_note:
        return True
    if att.kind == "document":
        return att.mime.startswith("audio/") or Path(att.filename).suffix.lower() in (
            AUDIO_EXTENSIONS)
    return False


def audio_attachments(attachments: list[Attachment] | tuple[Attachment, ...]) -> list[Attachment]:
    """The attachments to listen to, in order."""
    return [a for a in attachments if is_audio(a)]


def wants_audio(inbound: Inbound) -> bool:
    """Messages carrying a recording go to the voice handler before the chat handler."""
    return inbound.command is None and any(is_audio(a) for a in inbound.attachments)


def _is_voice_note(att: Attachment) -> bool:
    return att.kind == "voice" or att.voice_note


async def load(ctx: Context, att: Attachment) -> tuple[bytes, AudioInfo]:
    """Download and check a recording: length (before downloading, when known), damage,
    silence."""
    max_seconds = ctx.config.voice.max_audio_minutes * 60
    audio.check_length(att.duration, max_seconds)
    data = await att.read()
    info = await audio.analyze(data, max_seconds=max_seconds)
    audio.check_usable(info, max_seconds)
    return data, info


async def transcribe_parts(ctx: Context, parts: list[AudioPart]) -> str:
    """Transcribe chunks concurrently (a few at a time) and join them in order."""
    model = ctx.config.models.transcribe
    limit = asyncio.Semaphore(PARALLEL_CHUNKS)

    async def one(part: AudioPart) -> str:
        async with limit:
            text = await ctx.ai.transcribe(model, (part.filename, part.data, part.mime),
                                           seconds=part.duration)
            return text.strip()

    texts = await asyncio.gather(*(one(p) for p in parts))
    return " ".join(t for t in texts if t)


async def transcribe(ctx: Context, att: Attachment) -> str:
    """One recording -> its transcript (checked, converted and chunked as needed).

    A voice note that is already Ogg/Opus within the limits is sent to the API while
    ffmpeg checks it (damage, silence), so the check costs no waiting; if the check
    fails, the request is cancelled or its answer dropped.
    """
    voice = ctx.config.voice
    max_seconds = voice.max_audio_minutes * 60
    chunk_seconds = voice.chunk_minutes * 60
    audio.check_length(att.duration, max_seconds)
    data = await att.read()
    intact = audio.looks_like_ogg_opus(data) and audio.ogg_intact(data)
    quick = audio.ogg_duration(data) if intact else None
    early: asyncio.Task[str] | None = None
    within = quick is not None and audio.MIN_SECONDS <= quick <= min(
        chunk_seconds or quick, max_seconds or quick)
    if quick is not None and within and len(data) <= audio.API_MAX_BYTES:
        part = AudioPart(f"{audio.base_name(att.filename)}.ogg", data, "audio/ogg", quick)
        early = asyncio.create_task(transcribe_parts(ctx, [part]))
    try:
        info = await audio.analyze(data, max_seconds=max_seconds)
        audio.check_usable(info, max_seconds)
        if early is not None and info.api_extension() == "ogg":
            text = await early
        else:
            parts = await audio.prepare(data, att.filename, info, chunk_seconds=chunk_seconds)
            text = await transcribe_parts(ctx, parts)
    finally:
        if early is not None:
            if not early.done():
                early.cancel()
            elif not early.cancelled():
                early.exception()  # retrieved: a dropped request's error is not news
    if not text.strip():
        raise AudioError(NO_SPEECH)
    return text.strip()


def _quote(text: str) -> str:
    lines = text.splitlines() or [""]
    return "\n".join(f"> {'🎤 ' if i == 0 else ''}{line}" for i, line in enumerate(lines))


async def voice_message(ctx: Context) -> None:
    """Answer a voice note or audio file as if its words had been typed."""
    inbound = ctx.inbound
    recordings = audio_attachments(inbound.attachments)
    async with ctx.reply.working("typing"):
        heard = [await transcribe(ctx, att) for att in recordings]
    transcript = "\n\n".join(heard)
    caption = inbound.text.strip()
    said = f"{caption}\n\n{transcript}" if caption else transcript
    content = user_content(dataclasses.replace(inbound, text=said))
    mode = ctx.config.voice.show_transcript
    prefix = ""
    if mode == "quote" and len(transcript) <= QUOTE_LIMIT:
        prefix = _quote(transcript) + "\n\n"
    elif mode != "off":
        await ctx.reply.reply_long(f"🎤 {transcript}")
    answer = await converse(ctx, content, prefix=prefix)
    voice_in = any(_is_voice_note(a) for a in recordings)
    if answer.strip() and await speech.wants_voice_reply(ctx, voice_in=voice_in):
        await speech.speak(ctx, answer)


@command("translate", Param("audio", "The recording to translate", type="attachment"))
async def translate_cmd(ctx: Context) -> None:
    """Translate a voice note or audio file into English text"""
    inbound = ctx.inbound
    found = audio_attachments(inbound.attachments)
    quoted = inbound.reply_to
    if not found and quoted is not None:
        found = audio_attachments(quoted.attachments)
    if not found:
        offered = inbound.attachments or (quoted.attachments if quoted else ())
        raise UserError(audio.NOT_AUDIO if offered else TRANSLATE_USAGE)
    att = found[0]
    async with ctx.reply.working("typing"):
        data, info = await load(ctx, att)
        parts = await audio.prepare(data, att.filename, info,
                                    chunk_seconds=ctx.config.voice.chunk_minutes * 60)
        text = await translate_parts(ctx, parts)
    if not text.strip():
        raise AudioError(NO_SPEECH)
    await ctx.reply.reply_long(f"**English translation:**\n{text.strip()}")


async def translate_parts(ctx: Context, parts: list[AudioPart]) -> str:
    """English text of a recording: the audio translations endpoint where the server and
    model offer it, else a transcript translated by the chat model."""
    model = ctx.config.voice.translate_model
    if model:
        try:
            texts = [await ctx.ai.translate_audio(model, (p.filename, p.data, p.mime),
                                                  seconds=p.duration)
                     for p in parts]
        except ModelError as e:
            if e.kind not in _NO_TRANSLATIONS:
                raise
            log.info("audio translations unavailable with %s (%s); using the chat model",
                     model, e.kind)
        else:
            return " ".join(t.strip() for t in texts if t.strip())
    transcript = await transcribe_parts(ctx, parts)
    if not transcript.strip():
        raise AudioError(NO_SPEECH)
    chat_model = await ctx.setting("model", ctx.config.models.chat)
    messages = [{"role": "system", "content": TRANSLATE_PROMPT},
                {"role": "user", "content": transcript}]
    text, _, _, _ = await ctx.ai.complete(
        chat_model, messages, max_tokens=ctx.config.chat.max_output_tokens, feature="voice_in")
    return text
