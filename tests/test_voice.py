"""Voice in, voice out: the parity suite for speech-to-text, spoken answers, /say,
/translate and /voice, on Telegram, Discord and the console, through the fakes.

All audio is generated here (tests/audiogen.py); the fake OpenAI server checks uploads
with ffprobe like the real API refuses bad ones, and the transcripts are queued by tests.
"""

from __future__ import annotations

import base64

import pytest

from bot import audio as bot_audio
from bot.audio import AudioError
from tests.audiogen import audio, probe, wav_bytes
from tests.audiogen import samples as pcm_samples
from tests.conftest import STORAGES
from tests.harness import BotReply, Driver, File


def voice_note(seconds: float = 2.0, kind: str = "tone") -> File:
    """A voice note as each platform delivers it (Ogg/Opus)."""
    return File(audio("ogg", seconds, kind), filename="voice-message.ogg", mime="audio/ogg",
                kind="voice", duration=max(1, round(seconds)))


def audio_file(fmt: str = "mp3", seconds: float = 2.0, *, kind: str = "audio") -> File:
    mime = {"mp3": "audio/mpeg", "wav": "audio/wav", "m4a": "audio/mp4",
            "flac": "audio/flac"}[fmt]
    return File(audio(fmt, seconds), filename=f"recording.{fmt}", mime=mime, kind=kind,
                duration=max(1, round(seconds)))


def texts(chat: Driver, **kw: object) -> list[str]:
    """The bot's text messages, without Markdown marks (each platform renders them)."""
    return [r.text.replace("**", "").replace("`", "")
            for r in chat.replies(**kw) if r.kind == "text"]  # type: ignore[arg-type]


def voices(chat: Driver, **kw: object) -> list[BotReply]:
    return [r for r in chat.replies(**kw) if r.kind == "voice"]  # type: ignore[arg-type]


def last_user_message(chat: Driver) -> str:
    body = chat.openai.chat_requests[-1]
    return str(body["messages"][-1]["content"])


def assert_opus(data: bytes) -> float:
    info = probe(data)
    assert info["codec"] == "opus" and info["format"] == "ogg", info
    return float(info["duration"])


async def say(chat: Driver, text: str, **kw: object) -> None:
    await chat.send_text(text, **kw)  # type: ignore[arg-type]
    await chat.settle()


# ---------------------------------------------------------------------------- listening

async def test_voice_note_gets_text_and_voice_answer(chat: Driver) -> None:
    chat.openai.transcribe("what time is it")
    await say(chat, "", files=[voice_note(2.0)])
    # the recording went to the transcription model as an .ogg the API accepts
    (req,) = chat.openai.requests_to("/audio/transcriptions")
    assert req.field("model") == "gpt-transcribe"
    upload = req.files[0]
    assert upload.filename.endswith(".ogg") and upload.data == voice_note(2.0).data
    # ...and its transcript reached the chat model as the user's turn
    assert last_user_message(chat) == "what time is it"
    (answer,) = texts(chat)
    assert "what time is it" in answer and "echo: what time is it" in answer
    assert answer.index("what time is it") < answer.index("echo:")
    (spoken,) = voices(chat)
    assert_opus(spoken.files[0].data)
    (tts,) = chat.openai.requests_to("/audio/speech")
    assert tts.json["input"] == "echo: what time is it"
    assert tts.json["model"] == "gpt-4o-mini-tts" and tts.json["voice"] == "alloy"
    assert tts.json["response_format"] == "opus"
    assert chat.app is not None
    features = [r.feature for r in await chat.app.store.usage_rows()]
    assert sorted(features) == ["chat", "speech_out", "voice_in"]


async def test_transcript_is_part_of_the_history(chat: Driver) -> None:
    chat.openai.transcribe("my name is Zed")
    await say(chat, "", files=[voice_note()])
    await chat.ask("what is my name?")
    history = [m["content"] for m in chat.openai.chat_requests[-1]["messages"][1:]]
    assert history == ["my name is Zed", "echo: my name is Zed", "what is my name?"]


async def test_discord_voice_message_is_native(chat: Driver) -> None:
    if chat.platform != "discord":
        pytest.skip("voice message metadata is Discord's")
    chat.openai.transcribe("hello")
    await say(chat, "", files=[voice_note(3.0)])
    (spoken,) = voices(chat)
    assert spoken.extra["flags"] & 8192 and spoken.text == ""
    att = spoken.files[0]
    assert att.mime == "audio/ogg" and att.filename.endswith(".ogg")
    duration = assert_opus(att.data)
    assert att.extra["duration_secs"] == pytest.approx(duration, abs=0.1)
    wave = base64.b64decode(att.extra["waveform"])
    assert len(wave) == 256 and max(wave) == 255 and len(set(wave)) > 10


async def test_telegram_voice_is_send_voice_with_duration(chat: Driver) -> None:
    if chat.platform != "telegram":
        pytest.skip("sendVoice is Telegram's")
    chat.openai.transcribe("hello")
    await say(chat, "", files=[voice_note()])
    (call,) = chat.fake.calls_to("sendVoice")  # type: ignore[attr-defined]
    (spoken,) = voices(chat)
    duration = assert_opus(spoken.files[0].data)
    assert int(call.params["duration"]) == int(duration)


@pytest.mark.parametrize("config_text", ['[voice]\nshow_transcript = "message"\n'])
async def test_transcript_as_its_own_message(chat: Driver) -> None:
    chat.openai.transcribe("book a table")
    await say(chat, "", files=[voice_note()])
    assert texts(chat) == ["🎤 book a table", "echo: book a table"]


@pytest.mark.parametrize("config_text", ['[voice]\nshow_transcript = "off"\n'])
async def test_transcript_hidden(chat: Driver) -> None:
    chat.openai.transcribe("book a table")
    await say(chat, "", files=[voice_note()])
    assert texts(chat) == ["echo: book a table"]


async def test_long_transcript_is_its_own_message_not_a_quote(chat: Driver) -> None:
    heard = ("and then we talked about it " * 60).strip()  # ~1,700 characters
    chat.openai.transcribe(heard)
    await say(chat, "", files=[voice_note()])
    assert texts(chat) == [f"🎤 {heard}", f"echo: {heard}"]


async def test_caption_comes_before_the_transcript(chat: Driver) -> None:
    chat.openai.transcribe("the minutes of the meeting")
    await say(chat, "summarize this", files=[audio_file("mp3")])
    assert last_user_message(chat) == "summarize this\n\nthe minutes of the meeting"


async def test_group_voice_note_is_labelled(chat: Driver) -> None:
    if not chat.supports_groups:
        pytest.skip("the console has no group chats")
    chat.openai.transcribe("is it raining")
    await say(chat, "", files=[voice_note()], group=True, mention=True)
    assert last_user_message(chat) == "Alice: is it raining"


async def test_audio_files_are_transcribed_without_voice_reply(chat: Driver) -> None:
    chat.openai.transcribe("first file", times=1)
    chat.openai.transcribe("second file", times=1)
    await say(chat, "", files=[audio_file("mp3")])
    await say(chat, "", files=[audio_file("wav", kind="document")])
    uploads = [r.files[0] for r in chat.openai.requests_to("/audio/transcriptions")]
    # formats the API takes are sent as they are
    assert [u.filename.rsplit(".", 1)[1] for u in uploads] == ["mp3", "wav"]
    assert uploads[0].data == audio_file("mp3").data
    assert [m["content"] for m in chat.openai.chat_requests[-1]["messages"][1::2]] == [
        "first file", "second file"]
    # "auto": a music/audio file is not a voice note, so the answer is text only
    assert voices(chat) == [] and chat.openai.requests_to("/audio/speech") == []


async def test_unaccepted_format_is_converted(chat: Driver) -> None:
    if chat.platform == "console":
        pytest.skip("the console names files itself")
    # an Ogg/Opus file sent under a name the API rejects, as a document
    f = File(audio("ogg", 2.0), filename="memo.opus", mime="audio/opus", kind="document")
    chat.openai.transcribe("converted")
    await say(chat, "", files=[f])
    (req,) = chat.openai.requests_to("/audio/transcriptions")
    assert req.files[0].filename == "memo.ogg"
    assert last_user_message(chat) == "converted"


async def test_telegram_video_note(chat: Driver) -> None:
    if chat.platform != "telegram":
        pytest.skip("video notes are Telegram's")
    chat.mark()
    chat.openai.transcribe("from a video note")
    chat.fake.user_message(1001, 1001, None, video_note=audio("mp4", 2.0),  # type: ignore[attr-defined]
                           voice_duration=2)
    await chat.settle()
    (req,) = chat.openai.requests_to("/audio/transcriptions")
    upload = req.files[0]
    # the video is dropped: only its sound, as Ogg/Opus, goes to the API
    assert upload.filename.endswith(".ogg") and probe(upload.data)["codec"] == "opus"
    assert last_user_message(chat) == "from a video note"
    assert len(voices(chat)) == 1  # a video note is "voice in"


@pytest.mark.parametrize("config_text", ["[voice]\nchunk_minutes = 1\n"])
async def test_long_recording_is_split_and_joined(chat: Driver) -> None:
    await say(chat, "", files=[voice_note(150.0)])
    reqs = chat.openai.requests_to("/audio/transcriptions")
    assert len(reqs) == 3
    names = sorted(r.files[0].filename for r in reqs)
    assert [n.rsplit("-", 1)[1] for n in names] == ["part1.ogg", "part2.ogg", "part3.ogg"]
    for r in reqs:
        assert 45 <= float(probe(r.files[0].data)["duration"]) <= 60.5
    # the fake's default transcript names the file: the parts are joined in order
    heard = last_user_message(chat)
    positions = [heard.index(f"part{i}.ogg") for i in (1, 2, 3)]
    assert positions == sorted(positions)


@pytest.mark.parametrize("config_text", ["[voice]\nmax_audio_minutes = 1\n"])
async def test_too_long_recording_refused(chat: Driver) -> None:
    await say(chat, "", files=[voice_note(75.0)])
    assert texts(chat) == [
        "That recording is 1 minute 15 seconds long; I can listen to at most 1 minute."]
    assert chat.openai.chat_requests == []
    if chat.platform == "telegram":  # refused on the announced duration, before downloading
        assert chat.fake.calls_to("getFile") == []  # type: ignore[attr-defined]


async def test_corrupt_file_refused(chat: Driver) -> None:
    junk = bytes(range(256)) * 40
    await say(chat, "", files=[File(junk, "voice.ogg", "audio/ogg", kind="voice")])
    assert texts(chat) == [
        "I couldn't read that audio file: it seems to be damaged or in a format I don't "
        "know."]
    assert chat.openai.requests_to("/audio/transcriptions") == []


async def test_truncated_voice_note_refused(chat: Driver) -> None:
    whole = audio("ogg", 2.0)
    broken = whole[:200] + bytes(4000)
    await say(chat, "", files=[File(broken, "voice.ogg", "audio/ogg", kind="voice")])
    assert texts(chat) == [
        "I couldn't read that audio file: it seems to be damaged or in a format I don't "
        "know."]
    assert chat.openai.requests_to("/audio/transcriptions") == []


async def test_non_audio_file_refused(chat: Driver) -> None:
    await say(chat, "", files=[File(_png(), "song.mp3", "audio/mpeg", kind="audio")])
    assert texts(chat) == ["That file has no sound in it for me to listen to."]


async def test_silent_recording_refused(chat: Driver) -> None:
    await say(chat, "", files=[voice_note(3.0, kind="silence")])
    assert texts(chat) == [
        "I couldn't hear anything in that recording: it seems to be silent."]
    assert chat.openai.chat_requests == []


async def test_noise_is_not_silence(chat: Driver) -> None:
    chat.openai.transcribe("")  # a model that hears no words
    await say(chat, "", files=[voice_note(2.0, kind="noise")])
    assert texts(chat) == ["I couldn't make out any words in that recording."]


async def test_empty_file_refused(chat: Driver) -> None:
    if chat.platform == "telegram":
        pytest.skip("Telegram does not deliver empty voice notes")
    await say(chat, "", files=[File(b"", "voice.ogg", "audio/ogg", kind="voice")])
    assert texts(chat) == ["That recording is empty."]


async def test_server_without_audio_endpoints(chat: Driver) -> None:
    chat.openai.disable("/audio")
    await say(chat, "", files=[voice_note()])
    assert texts(chat)[-1] == "This AI server does not offer speech-to-text."
    await say(chat, "/say hello")
    assert texts(chat)[-1] == "This AI server does not offer text-to-speech."
    assert voices(chat) == []


# ---------------------------------------------------------------------------- speaking

async def test_say_speaks_the_text(chat: Driver) -> None:
    await say(chat, "/say Good **morning**, everyone!")
    (tts,) = chat.openai.requests_to("/audio/speech")
    assert tts.json["input"] == "Good morning, everyone!"
    (spoken,) = voices(chat)
    assert_opus(spoken.files[0].data)
    assert chat.app is not None
    (row,) = await chat.app.store.usage_rows()
    # GPT speech models report their tokens at the end of the SSE stream
    assert row.feature == "speech_out" and not row.estimated and row.completion_tokens > 0


async def test_say_without_text(chat: Driver) -> None:
    await say(chat, "/say")
    assert texts(chat) == ["Usage: /say <text>, or reply to a message with /say."]
    assert chat.openai.requests_to("/audio/speech") == []


async def test_say_a_replied_message(chat: Driver) -> None:
    if chat.platform == "console":
        pytest.skip("the terminal has no replies to earlier messages")
    await chat.ask("tell me something")
    bot_msg = chat.replies()[-1]
    await say(chat, "/say", reply_to=bot_msg.id, typed=True)
    (tts,) = chat.openai.requests_to("/audio/speech")
    assert tts.json["input"] == "echo: tell me something"


async def test_long_answer_spoken_up_to_the_limit(chat: Driver) -> None:
    sentence = "This is a fairly long sentence about the weather today. "
    long_answer = (sentence * 110).strip()  # ~6,200 characters
    chat.openai.transcribe("tell me everything")
    chat.openai.reply(long_answer)
    await say(chat, "", files=[voice_note()])
    (tts,) = chat.openai.requests_to("/audio/speech")
    spoken = tts.json["input"]
    assert 4000 < len(spoken) <= 4096 and spoken.endswith("weather today.")
    assert long_answer.startswith(spoken)
    # the text carries everything, split at the platform limit
    shown = " ".join(texts(chat))
    assert shown.count("weather today") == 110


async def test_markdown_is_not_read_aloud(chat: Driver) -> None:
    chat.openai.transcribe("show me")
    chat.openai.reply("# Title\n**Bold** and `code` with [a link](https://example.com).\n\n"
                      "```python\nprint('hi')\n```\n- one item")
    await say(chat, "", files=[voice_note()])
    (tts,) = chat.openai.requests_to("/audio/speech")
    spoken = tts.json["input"]
    for mark in ("**", "`", "#", "https://", "print(", "- one"):
        assert mark not in spoken
    assert "Bold and code with a link." in spoken and "one item" in spoken


@pytest.mark.parametrize("config_text", ['[voice]\nreply_voice = "never"\n'])
async def test_reply_voice_never(chat: Driver) -> None:
    chat.openai.transcribe("hi")
    await say(chat, "", files=[voice_note()])
    assert texts(chat)[-1].endswith("echo: hi") and voices(chat) == []


async def test_voice_on_speaks_typed_answers_and_off_silences_voice_notes(
        chat: Driver) -> None:
    await say(chat, "/voice on")
    assert texts(chat)[-1] == "Spoken answers: on (every answer is spoken)."
    await chat.ask("typed question")
    (tts,) = chat.openai.requests_to("/audio/speech")
    assert tts.json["input"] == "echo: typed question"
    assert len(voices(chat)) == 1
    await say(chat, "/voice off")
    chat.openai.transcribe("spoken question")
    await say(chat, "", files=[voice_note()])
    assert "echo: spoken question" in texts(chat)[-1]
    assert len(voices(chat)) == 1  # no new voice message
    await say(chat, "/voice auto")
    await chat.ask("typed again")
    assert len(voices(chat)) == 1


@pytest.mark.parametrize("storage", STORAGES)
async def test_voice_settings_persist_across_restart(chat: Driver) -> None:
    await say(chat, "/voice name NOVA")
    await say(chat, "/voice speed 1.5")
    await say(chat, "/voice tone cheerful and warm")
    await say(chat, "/voice off")
    await chat.restart()
    await say(chat, "/voice")
    shown = texts(chat)[-1]
    for part in ("off (text answers only)", "nova", "1.5×", "cheerful and warm"):
        assert part in shown
    await say(chat, "/say hello there")
    (tts,) = chat.openai.requests_to("/audio/speech")
    assert tts.json["voice"] == "nova" and tts.json["speed"] == 1.5
    assert tts.json["instructions"] == "cheerful and warm"
    await say(chat, "/voice reset")
    await say(chat, "/say again")
    tts = chat.openai.requests_to("/audio/speech")[-1]
    assert tts.json["voice"] == "alloy" and "speed" not in tts.json
    assert "instructions" not in tts.json


async def test_voice_rejects_bad_settings(chat: Driver) -> None:
    await say(chat, "/voice robot")
    reply = texts(chat)[-1]
    assert reply.startswith("/voice has no option robot. Usage:")
    assert "/voice speed <0.25-4> — Choose the speaking speed" in reply
    await say(chat, "/voice name robot")
    assert texts(chat)[-1].startswith("name must be one of: alloy, ash,")
    await say(chat, "/voice speed 9")
    assert texts(chat)[-1] == "speed must be between 0.25 and 4."
    await say(chat, "/voice speed fast")
    assert texts(chat)[-1] == "speed must be a number from 0.25 to 4."
    await say(chat, "/voice tone")
    assert texts(chat)[-1] == "Missing tone. Usage: /voice tone <tone>"
    assert await chat.app.store.settings(_channel_key(chat)) == {}  # type: ignore[union-attr]


@pytest.mark.parametrize("typed", [False, True], ids=["native", "typed"])
async def test_voice_speed_parses_the_same_everywhere(chat: Driver, typed: bool) -> None:
    """`/voice speed 1.5` typed as text, or (Discord) picked in the slash-command UI."""
    if typed and chat.platform != "discord":
        pytest.skip("text is the only way to send it here")
    await chat.send_text("/voice speed 1.5", typed=typed)
    await chat.settle()
    assert texts(chat)[-1] == "Speaking speed: 1.5×."
    settings = await chat.app.store.settings(_channel_key(chat))  # type: ignore[union-attr]
    assert settings == {"voice_speed": 1.5}
    await chat.send_text("/voice name Coral", typed=typed)
    await chat.settle()
    assert texts(chat)[-1] == "Voice: coral."


async def test_voice_forbidden_falls_back_to_a_file(chat: Driver) -> None:
    if chat.platform == "console":
        pytest.skip("the console saves files; there is nothing to forbid")
    if chat.platform == "telegram":
        chat.fake.fail_next("sendVoice", error_code=400,  # type: ignore[attr-defined]
                            description="Bad Request: VOICE_MESSAGES_FORBIDDEN")
    else:
        chat.fake.disallow_voice(chat.fake.dm_channel(1001))  # type: ignore[attr-defined]
    chat.openai.transcribe("hi")
    await say(chat, "", files=[voice_note()])
    assert voices(chat) == []
    (fallback,) = [r for r in chat.replies() if r.files]
    assert fallback.kind in ("document", "file")
    assert_opus(fallback.files[0].data)
    if chat.platform == "discord":
        assert not fallback.extra["flags"] & 8192


async def test_telegram_shows_voice_chat_actions(chat: Driver) -> None:
    if chat.platform != "telegram":
        pytest.skip("chat actions are shown on Telegram; Discord has only typing")
    chat.openai.latency = 0.3
    await say(chat, "/say a slow one")
    assert "record_voice" in chat.fake.chat_actions(1001)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- /translate

async def test_translate_attached_audio(chat: Driver) -> None:
    chat.openai.transcribe("Good morning")
    await say(chat, "/translate", files=[voice_note()])
    (req,) = chat.openai.requests_to("/audio/translations")
    assert req.field("model") == "whisper-1" and req.files[0].filename.endswith(".ogg")
    assert texts(chat) == ["English translation:\nGood morning"]
    assert chat.openai.chat_requests == []  # not a conversation turn


async def test_translate_falls_back_to_the_chat_model(chat: Driver) -> None:
    chat.openai.disable("/audio/translations")
    chat.openai.transcribe("Buenos días")
    chat.openai.reply("Good morning")
    await say(chat, "/translate", files=[voice_note()])
    assert len(chat.openai.requests_to("/audio/transcriptions")) == 1
    (body,) = chat.openai.chat_requests
    assert "English" in body["messages"][0]["content"]
    assert body["messages"][1]["content"] == "Buenos días"
    assert texts(chat)[-1].endswith("Good morning")


@pytest.mark.parametrize("config_text", ['[voice]\ntranslate_model = "gpt-transcribe"\n'])
async def test_translate_with_a_model_lacking_translations(chat: Driver) -> None:
    chat.openai.transcribe("Guten Morgen")
    chat.openai.reply("Good morning")
    await say(chat, "/translate", files=[voice_note()])
    assert len(chat.openai.requests_to("/audio/translations")) == 1  # refused (400)
    assert texts(chat)[-1].endswith("Good morning")


async def test_translate_replied_voice_note(chat: Driver) -> None:
    if chat.platform == "console":
        pytest.skip("the terminal has no replies to earlier messages")
    chat.openai.transcribe("heard")
    chat.openai.transcribe("Translated text")
    await say(chat, "", files=[voice_note()])
    note_id = chat.last_sent_id
    assert note_id is not None
    await say(chat, "/translate", reply_to=note_id, typed=True)
    assert texts(chat)[-1].endswith("Translated text")


async def test_translate_without_audio(chat: Driver) -> None:
    await say(chat, "/translate")
    assert "/translate" in texts(chat)[-1] and "Attach" in texts(chat)[-1]


# ---------------------------------------------------------------------------- helpers

def _channel_key(chat: Driver) -> str:
    """The private chat's channel key on each platform."""
    if chat.platform == "console":
        return "console:local"
    if chat.platform == "telegram":
        return "telegram:1001"
    return f"discord:{chat.fake.dm_channel(1001)}"  # type: ignore[attr-defined]

def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    return buf.getvalue()



# ---------------------------------------------------------------------------- bot/audio.py
# (real ffmpeg on generated files; platform-independent, so not parametrized)

@pytest.mark.parametrize(("fmt", "container", "codec", "ext"), [
    ("ogg", "ogg", "opus", "ogg"),
    ("mp3", "mp3", "mp3", "mp3"),
    ("wav", "wav", "pcm_s16le", "wav"),
    ("m4a", "mov,mp4,m4a,3gp,3g2,mj2", "aac", "m4a"),
    ("flac", "flac", "flac", "flac"),
])
async def test_accepted_formats_go_as_they_are(fmt: str, container: str, codec: str,
                                               ext: str) -> None:
    data = audio(fmt, 3.0)
    info = await bot_audio.analyze(data)
    assert (info.container, info.codec) == (container, codec)
    assert info.duration == pytest.approx(3.0, abs=0.15) and not info.silent
    (part,) = await bot_audio.prepare(data, "voice.oga", info, chunk_seconds=600)
    assert part.filename == f"voice.{ext}" and part.data == data


async def test_video_is_reduced_to_its_sound() -> None:
    data = audio("mp4", 2.0)
    info = await bot_audio.analyze(data)
    assert info.has_video
    (part,) = await bot_audio.prepare(data, "video_note.mp4", info, chunk_seconds=600)
    assert part.filename == "video_note.ogg" and part.mime == "audio/ogg"
    assert probe(part.data)["codec"] == "opus"
    assert part.duration == pytest.approx(2.0, abs=0.1)


async def test_over_the_size_limit_is_split_by_size() -> None:
    data = wav_bytes(pcm_samples(20.0))
    info = await bot_audio.analyze(data)
    parts = await bot_audio.prepare(data, "long.wav", info, chunk_seconds=0,
                                    max_bytes=30_000)
    assert len(parts) >= 2 and all(len(p.data) <= 30_000 for p in parts)
    assert sum(p.duration for p in parts) == pytest.approx(20.0, abs=0.2)


async def test_analyze_refuses_bad_input() -> None:
    with pytest.raises(AudioError) as err:
        await bot_audio.analyze(b"")
    assert err.value.message == bot_audio.EMPTY
    with pytest.raises(AudioError) as err:
        await bot_audio.analyze(b"\x00\x01garbage" * 500)
    assert err.value.message == bot_audio.CORRUPT


async def test_analyze_stops_decoding_past_the_limit() -> None:
    data = wav_bytes(pcm_samples(30.0))[:44] + bytes(0)  # a WAV header claiming nothing
    with pytest.raises(AudioError):
        bot_audio.check_usable(await bot_audio.analyze(data), 60)
    long_one = audio("ogg", 90.0)
    info = await bot_audio.analyze(long_one, max_seconds=10)
    assert info.duration == pytest.approx(90.0, abs=0.2)  # from the header, not decoded
    with pytest.raises(AudioError, match="1 minute 30 seconds"):
        bot_audio.check_usable(info, 10)


async def test_speech_output_becomes_ogg_opus() -> None:
    ogg = audio("ogg", 2.0)
    clip = await bot_audio.to_voice(ogg)
    assert clip.data is ogg and clip.duration == pytest.approx(2.0, abs=0.05)
    converted = await bot_audio.to_voice(audio("mp3", 2.0))
    assert probe(converted.data)["codec"] == "opus"
    assert converted.duration == pytest.approx(2.0, abs=0.1)
    with pytest.raises(AudioError):
        await bot_audio.to_voice(b"not audio at all" * 10)


async def test_decode_pcm() -> None:
    samples = await bot_audio.decode_pcm(audio("ogg", 2.0), 8000)
    assert samples is not None and len(samples) == pytest.approx(16000, abs=400)
    assert await bot_audio.decode_pcm(b"not audio at all" * 10) is None
