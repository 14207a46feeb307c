"""Pure audio helpers: ffmpeg report parsing, chunk planning, Ogg durations, PCM decoding,
what to read aloud and where to cut it, which attachments are recordings."""

from __future__ import annotations

import struct

import pytest

from bot import audio
from bot.audio import AudioError, AudioInfo
from bot.events import Attachment
from handlers.speech import cut_for_speech, speakable
from handlers.voice import is_audio

# What ffmpeg 5 prints for `-i voice.ogg -af ...volumedetect -f null -` (abridged).
OGG_REPORT = """\
Input #0, ogg, from '/tmp/bot-audio-x/input':
  Duration: 00:00:30.01, start: 0.000000, bitrate: 51 kb/s
  Stream #0:0: Audio: opus, 48000 Hz, mono, fltp
    Metadata:
      encoder         : Lavc59.37.100 libopus
Stream mapping:
  Stream #0:0 -> #0:0 (opus (native) -> pcm_s16le (native))
Output #0, null, to 'pipe:':
  Stream #0:0: Audio: pcm_s16le, 16000 Hz, mono, s16, 256 kb/s
size=N/A time=00:00:30.00 bitrate=N/A speed=1.18e+03x
[Parsed_volumedetect_1 @ 0x5592] n_samples: 480000
[Parsed_volumedetect_1 @ 0x5592] mean_volume: -21.1 dB
[Parsed_volumedetect_1 @ 0x5592] max_volume: -17.9 dB
"""

MP4_REPORT = """\
Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'in':
  Duration: 00:00:03.00, start: 0.000000, bitrate: 85 kb/s
  Stream #0:0[0x1](und): Video: h264 (High) (avc1 / 0x31637661), yuv420p, 64x64
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp
Stream mapping:
  Stream #0:1 -> #0:0 (aac (native) -> pcm_s16le (native))
Output #0, null, to 'pipe:':
  Stream #0:0(und): Audio: pcm_s16le, 16000 Hz, mono, s16, 256 kb/s (default)
[Parsed_volumedetect_1 @ 0x5653] n_samples: 48298
[Parsed_volumedetect_1 @ 0x5653] max_volume: -12.8 dB
"""

MP3_WITH_COVER = """\
Input #0, mp3, from 'in':
  Duration: N/A, start: 0.025057, bitrate: N/A
  Stream #0:0: Audio: mp3, 44100 Hz, stereo, fltp, 128 kb/s
  Stream #0:1: Video: mjpeg (Baseline), yuvj420p, 300x300, 90k tbr (attached pic)
Stream mapping:
[Parsed_volumedetect_1 @ 0x1] n_samples: 80000
[Parsed_volumedetect_1 @ 0x1] max_volume: -inf dB
"""


def test_parse_ogg_report() -> None:
    info = audio.parse_analysis(OGG_REPORT, 1234)
    assert info == AudioInfo(container="ogg", codec="opus", duration=30.01, peak_db=-17.9,
                             has_video=False, size=1234)
    assert info.api_extension() == "ogg" and not info.silent


def test_parse_video_report_needs_conversion() -> None:
    info = audio.parse_analysis(MP4_REPORT, 10)
    assert info.container == "mov,mp4,m4a,3gp,3g2,mj2" and info.codec == "aac"
    assert info.has_video and info.api_extension() is None
    assert info.duration == pytest.approx(3.02, abs=0.01)  # decoded beats the header


def test_cover_art_is_not_video_and_unknown_duration_comes_from_samples() -> None:
    info = audio.parse_analysis(MP3_WITH_COVER, 10)
    assert not info.has_video and info.api_extension() == "mp3"
    assert info.duration == 5.0 and info.silent


@pytest.mark.parametrize("report", ["garbage", "Input #0, png_pipe, from 'x':\n  Stream #0:0: "
                                    "Video: png, rgb24\n"])
def test_parse_refuses_unreadable_or_soundless(report: str) -> None:
    with pytest.raises(AudioError) as err:
        audio.parse_analysis(report, 10)
    assert err.value.message in (audio.CORRUPT, audio.NOT_AUDIO)


def test_api_extension_checks_codec() -> None:
    wav_adpcm = AudioInfo("wav", "adpcm_ms", 1.0, -10.0, False, 10)
    webm_opus = AudioInfo("matroska,webm", "opus", 1.0, -10.0, False, 10)
    assert wav_adpcm.api_extension() is None and webm_opus.api_extension() == "webm"


@pytest.mark.parametrize(("duration", "chunk", "max_bytes", "parts"), [
    (30, 600, audio.API_MAX_BYTES, 1),
    (600, 600, audio.API_MAX_BYTES, 1),
    (601, 600, audio.API_MAX_BYTES, 2),
    (1800, 600, audio.API_MAX_BYTES, 3),
    (150, 60, audio.API_MAX_BYTES, 3),
    (3 * 3600, 0, audio.API_MAX_BYTES, 2),  # no duration limit: 24 kbit/s * 3 h > 25 MB
    (100, 0, 100_000, 4),  # size alone: 300 kB of Opus in chunks under 90 kB
])
def test_chunk_plan(duration: float, chunk: float, max_bytes: int, parts: int) -> None:
    assert audio.chunk_plan(duration, 0, chunk_seconds=chunk, max_bytes=max_bytes) == parts


def test_length_limits_and_wording() -> None:
    audio.check_length(None, 60)
    audio.check_length(60.4, 60)
    with pytest.raises(AudioError) as err:
        audio.check_length(75, 60)
    assert err.value.message == (
        "That recording is 1 minute 15 seconds long; I can listen to at most 1 minute.")
    assert audio.format_minutes(1800) == "30 minutes"
    assert audio.format_minutes(45.2) == "45 seconds"


def test_check_usable_order() -> None:
    with pytest.raises(AudioError, match="silent"):
        audio.check_usable(AudioInfo("ogg", "opus", 3, -91.0, False, 1), 60)
    with pytest.raises(AudioError, match="too short"):
        audio.check_usable(AudioInfo("ogg", "opus", 0.05, -10.0, False, 1), 60)
    with pytest.raises(AudioError, match="empty"):
        audio.check_usable(AudioInfo("ogg", "opus", 0.0, -10.0, False, 1), 60)
    audio.check_usable(AudioInfo("ogg", "opus", 3, -30.0, False, 1), 60)


def _ogg_page(granule: int, payload: bytes) -> bytes:
    header = b"OggS" + struct.pack("<BBqIIIB", 0, 0, granule, 1, 0, 0, 1)
    return header + bytes([len(payload)]) + payload


def test_ogg_duration_from_granule_minus_pre_skip() -> None:
    opus_head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 48000, 0, 0)
    data = _ogg_page(0, opus_head) + _ogg_page(0, b"OpusTags") + _ogg_page(
        48000 * 3 + 312, b"x" * 20)
    assert audio.looks_like_ogg_opus(data) and audio.ogg_intact(data)
    assert not audio.ogg_intact(data[:-3]) and not audio.ogg_intact(data + b"\x00")
    assert not audio.ogg_intact(b"")
    assert audio.ogg_duration(data) == 3.0
    assert audio.ogg_duration(b"ID3 not ogg") is None
    assert audio.ogg_duration(_ogg_page(0, opus_head)) is None


def test_base_name() -> None:
    assert audio.base_name("voice.oga") == "voice"
    assert audio.base_name("Meine Aufnahme (1).m4a") == "Meine_Aufnahme_1"
    assert audio.base_name("") == "audio" and audio.base_name("...") == "audio"


def test_speakable_drops_markup_code_and_link_targets() -> None:
    md = ("## Plan\n1. **Buy** milk\n- see [the shop](https://shop.example/x)\n"
          "> quoted\n```sh\nrm -rf /\n```\nDone: https://example.com/a?b=c")
    spoken = speakable(md)
    assert "Buy milk" in spoken and "see the shop" in spoken and "quoted" in spoken
    for gone in ("**", "##", "https://", "rm -rf", "```", "1.", "> "):
        assert gone not in spoken
    assert "(code omitted)" in spoken and spoken.endswith("Done: the link")


def test_cut_for_speech_stops_at_a_sentence() -> None:
    text = "One sentence here. " * 300
    cut = cut_for_speech(text, 4096)
    assert len(cut) <= 4096 and cut.endswith("here.") and text.startswith(cut)
    assert cut_for_speech("short.", 4096) == "short."
    words = "word " * 2000
    cut = cut_for_speech(words, 100)
    assert cut.endswith("…") and len(cut) <= 100 and "wor…" not in cut
    assert cut_for_speech("x" * 500, 100) == "x" * 99 + "…"


def _att(kind: str, filename: str, mime: str, voice_note: bool = False) -> Attachment:
    async def read() -> bytes:
        return b""

    return Attachment(kind=kind, filename=filename, mime=mime, size=0, reader=read,  # type: ignore[arg-type]
                      voice_note=voice_note)


@pytest.mark.parametrize(("kind", "filename", "mime", "expected"), [
    ("voice", "voice.ogg", "audio/ogg", True),
    ("audio", "song.mp3", "audio/mpeg", True),
    ("document", "memo.m4a", "application/octet-stream", True),
    ("document", "notes", "audio/x-wav", True),
    ("document", "report.pdf", "application/pdf", False),
    ("video", "holiday.mp4", "video/mp4", False),
    ("image", "photo.jpg", "image/jpeg", False),
])
def test_which_attachments_are_recordings(kind: str, filename: str, mime: str,
                                          expected: bool) -> None:
    assert is_audio(_att(kind, filename, mime)) is expected


def test_recorded_video_notes_are_recordings_whatever_their_name() -> None:
    assert is_audio(_att("video", "clip.mp4", "video/mp4", voice_note=True))
    assert not is_audio(_att("video", "video_note.mp4", "video/mp4"))
