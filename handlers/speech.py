"""Text to speech: spoken answers as native voice messages, /say, and /voice settings.

A voice message always comes with the text answer, never instead of it. Speech covers
the answer up to the TTS input limit, cut at a sentence end; Markdown is read as plain
words (code blocks and link targets are left out).
"""

from __future__ import annotations

import functools
import logging
import re

from bot import audio
from bot.commands import Handler, Param, Subcommand, command, spec_of
from bot.context import Context
from bot.errors import UserError
from bot.render import to_plain
from bot.replies import OutFile, Sent

log = logging.getLogger(__name__)

TTS_LIMIT = 4096  # characters the speech endpoint accepts per request
MIN_SPEED, MAX_SPEED = 0.25, 4.0
MODES = {"on": "always", "off": "never", "auto": "auto"}
MODE_LABEL = {"always": "on (every answer is spoken)",
              "never": "off (text answers only)",
              "auto": "auto (voice notes are answered with voice)"}
SAY_USAGE = "Usage: `/say <text>`, or reply to a message with `/say`."
TONE_LIMIT = 1000

_FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1\s*$", re.M | re.S)
_URL_IN_PARENS = re.compile(r"\s*\((?:https?|mailto|tg):[^)\s]*\)")
_BARE_URL = re.compile(r"https?://\S+")
_LINE_MARKS = re.compile(r"^\s*(?:[>•*\-+]+|#{1,6}|\d+[.)])\s+", re.M)
_SENTENCE_END = re.compile(r"[.!?…。！？](?:[\"'”’)\]]*)(?=\s|$)|\n")


def speakable(markdown: str) -> str:
    """Markdown as words to read aloud: no code blocks, link targets, bullets or marks."""
    text = _FENCE.sub(" (code omitted) ", markdown)
    text = to_plain(text)
    text = _URL_IN_PARENS.sub("", text)
    text = _BARE_URL.sub("the link", text)
    text = _LINE_MARKS.sub("", text)
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def cut_for_speech(text: str, limit: int = TTS_LIMIT) -> str:
    """The longest start of `text` within `limit` characters ending at a sentence end
    (else at a word break), so long answers are spoken up to a natural stop."""
    text = text.strip()
    if len(text) <= limit:
        return text
    window = text[:limit]
    ends = [m.end() for m in _SENTENCE_END.finditer(window)]
    if ends and ends[-1] >= limit // 3:
        return window[: ends[-1]].strip()
    space = window.rfind(" ")
    cut = window[:space] if space >= limit // 3 else window[: limit - 1]
    return cut.rstrip(" ,;:") + "…"


async def reply_mode(ctx: Context) -> str:
    """This channel's reply_voice: "always", "never" or "auto"."""
    return str(await ctx.setting("reply_voice", ctx.config.voice.reply_voice))


async def wants_voice_reply(ctx: Context, *, voice_in: bool) -> bool:
    """Whether an answer gets a voice message too: voice in, voice out under "auto"."""
    mode = await reply_mode(ctx)
    return mode == "always" or (mode == "auto" and voice_in)


async def voice_settings(ctx: Context) -> tuple[str, float, str]:
    """(voice, speed, tone instructions) for this channel."""
    cfg = ctx.config.voice
    settings = await ctx.store.settings(ctx.channel)
    voice = str(settings.get("voice") or cfg.voice)
    speed = float(settings.get("voice_speed") or cfg.speed)
    tone = settings.get("voice_tone")
    return voice, speed, str(cfg.instructions if tone is None else tone)


async def speak(ctx: Context, text: str) -> Sent | None:
    """Say a (Markdown) text as a voice message in this chat; None when nothing to say."""
    words = cut_for_speech(speakable(text))
    if not words:
        return None
    model = ctx.config.models.tts
    voice, speed, tone = await voice_settings(ctx)
    async with ctx.reply.working("record_voice"):
        raw = await ctx.ai.speech(model, words, voice=voice, speed=speed,
                                  instructions=tone or None, fmt="opus")
        clip = await audio.to_voice(raw)
    async with ctx.reply.working("upload_voice"):
        return await ctx.reply.send_file(OutFile(
            data=clip.data, filename="voice-answer.ogg", mime="audio/ogg", kind="voice",
            duration=clip.duration))


def spoken(handler: Handler) -> Handler:
    """Wrap a text-answering handler so that with `/voice on` its answer is spoken too."""

    @functools.wraps(handler)
    async def run(ctx: Context) -> None:
        if await reply_mode(ctx) != "always":
            await handler(ctx)
            return
        before = await ctx.store.last_turn(ctx.channel)
        await handler(ctx)
        after = await ctx.store.last_turn(ctx.channel)
        if after is not None and after.role == "assistant" and (
                before is None or after.id != before.id):
            await speak(ctx, after.content)

    return run


@command("say", Param("text", "What to say", type="text"))
async def say_cmd(ctx: Context) -> None:
    """Say a text as a voice message"""
    text = ctx.text("text")
    quoted = ctx.inbound.reply_to
    if not text and quoted is not None:
        text = quoted.text.strip()
    if not text:
        raise UserError(SAY_USAGE)
    words = speakable(text)
    if not words:
        raise UserError("There is nothing I can read aloud in that.")
    await speak(ctx, text)
    if len(words) > TTS_LIMIT:
        await ctx.reply.reply_long(
            f"(I spoke the first {len(cut_for_speech(words)):,} characters: that is as much "
            "as one voice message can hold.)")


VOICE_PARTS = (
    Subcommand("show", "Show the voice settings here"),
    Subcommand("on", "Speak every answer, as a voice message with the text"),
    Subcommand("off", "Text answers only"),
    Subcommand("auto", "Answer voice notes with voice, text with text"),
    Subcommand("reset", "All voice settings back to the defaults"),
    Subcommand("name", "Choose the voice", (
        Param("name", "The voice to speak with", required=True, choices_from="voice.voices"),)),
    Subcommand("speed", "Choose the speaking speed", (
        Param("speed", f"From {MIN_SPEED:g} (slow) to {MAX_SPEED:g} (fast); 1 is normal",
              type="float", required=True, min_value=MIN_SPEED, max_value=MAX_SPEED),)),
    Subcommand("tone", "Describe how to speak (newer speech models), or 'reset'", (
        Param("tone", "e.g. calm and warm; 'reset' for the default", type="text",
              required=True),)),
)


@command("voice", *VOICE_PARTS)
async def voice_cmd(ctx: Context) -> None:
    """Spoken answers here: on/off/auto, which voice, speed and tone"""
    sub = ctx.sub
    cfg = ctx.config.voice
    if sub is None or sub == "show":
        await ctx.reply.reply_long(await _describe(ctx))
    elif sub in MODES:
        await ctx.store.set_setting(ctx.channel, "reply_voice", MODES[sub])
        await ctx.reply.reply_long(f"Spoken answers: {MODE_LABEL[MODES[sub]]}.")
    elif sub == "reset":
        for key in ("reply_voice", "voice", "voice_speed", "voice_tone"):
            await ctx.store.set_setting(ctx.channel, key, None)
        await ctx.reply.reply_long("Voice settings reset to the defaults.")
    elif sub == "name":
        name = ctx.text("name")
        await ctx.store.set_setting(ctx.channel, "voice", None if name == cfg.voice else name)
        await ctx.reply.reply_long(f"Voice: `{name}`.")
    elif sub == "speed":
        speed = round(ctx.number("speed") or cfg.speed, 2)
        await ctx.store.set_setting(ctx.channel, "voice_speed",
                                    None if speed == cfg.speed else speed)
        await ctx.reply.reply_long(f"Speaking speed: {speed:g}×.")
    elif sub == "tone":
        await _set_tone(ctx, ctx.text("tone"))


async def _set_tone(ctx: Context, tone: str) -> None:
    if tone.lower() == "reset":
        await ctx.store.set_setting(ctx.channel, "voice_tone", None)
        await ctx.reply.reply_long("Speaking tone reset to the default.")
        return
    if len(tone) > TONE_LIMIT:
        raise UserError(f"That tone description is too long (the limit is {TONE_LIMIT:,} "
                        "characters).")
    await ctx.store.set_setting(ctx.channel, "voice_tone", tone)
    note = ("" if not ctx.config.models.tts.startswith("tts-1") else
            f" (the current model, `{ctx.config.models.tts}`, ignores tone)")
    await ctx.reply.reply_long(f"Speaking tone set{note}.")


async def _describe(ctx: Context) -> str:
    voice, speed, tone = await voice_settings(ctx)
    mode = await reply_mode(ctx)
    spec = spec_of(voice_cmd)
    lines = [
        "**Voice settings here**",
        f"Spoken answers: {MODE_LABEL.get(mode, mode)}",
        f"Voice: `{voice}`",
        f"Speed: {speed:g}×",
        f"Tone: {tone or '(default)'}",
        "",
        spec.usage_text(),
        "Voices: " + ", ".join(f"`{v}`" for v in ctx.config.voice.voices),
    ]
    return "\n".join(lines)
