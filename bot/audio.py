"""Audio with ffmpeg: check, convert and split recordings for speech-to-text; voice output.

Every ffmpeg run is an asyncio subprocess on temporary files (MP4/M4A cannot be read
from a pipe). ffmpeg's start-up costs tens of milliseconds, so the common case, a
Telegram or Discord voice note in Ogg/Opus, is handled with a single decoding pass
(`analyze`: container, codecs, duration and peak level at once) and the original bytes
go to the API unchanged. Anything the API does not take, anything with a video track,
and anything over the size or duration limit is re-encoded to 16 kHz mono Ogg/Opus and,
when needed, cut into chunks. Nothing here knows about chats or the OpenAI SDK.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import math
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bot.errors import UserError

log = logging.getLogger(__name__)

API_MAX_BYTES = 25 * 1024 * 1024  # the transcription API's upload limit
MIN_SECONDS = 0.1  # the API refuses shorter audio
SILENCE_DB = -50.0  # a recording whose loudest moment is quieter than this is silence
ANALYZE_RATE = 16_000
CONVERT_BITRATE = 24_000  # bits/s of the Opus we send: plenty for speech
TIMEOUT = 120.0

EMPTY = "That recording is empty."
CORRUPT = ("I couldn't read that audio file: it seems to be damaged or in a format I "
           "don't know.")
NOT_AUDIO = "That file has no sound in it for me to listen to."
SILENT = "I couldn't hear anything in that recording: it seems to be silent."
TOO_SHORT = "That recording is too short to understand."
TOO_LONG = "That recording is {length} long; I can listen to at most {limit}."
NO_FFMPEG = "Audio processing is not available on this server (ffmpeg is missing)."
BAD_SPEECH = "The speech service returned audio I couldn't use."

# ffmpeg container name -> the file extension the API accepts for it, when its codec fits
_API_CONTAINERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ogg": ("ogg", ("opus", "vorbis", "flac")),
    "mp3": ("mp3", ("mp3",)),
    "wav": ("wav", ("pcm_s16le", "pcm_s24le", "pcm_f32le", "pcm_u8", "pcm_mulaw",
                    "pcm_alaw")),
    "flac": ("flac", ("flac",)),
    "mov,mp4,m4a,3gp,3g2,mj2": ("m4a", ("aac", "alac", "mp3")),
    "matroska,webm": ("webm", ("opus", "vorbis")),
}
_MIME = {"ogg": "audio/ogg", "mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac",
         "m4a": "audio/mp4", "webm": "audio/webm"}


class AudioError(UserError):
    """A recording the bot cannot use; the message says why in the user's terms."""


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What one decoding pass learned about a file."""

    container: str
    codec: str
    duration: float
    peak_db: float
    has_video: bool
    size: int

    @property
    def silent(self) -> bool:
        """No moment louder than SILENCE_DB."""
        return self.peak_db <= SILENCE_DB

    def api_extension(self) -> str | None:
        """The extension to send this file under unchanged, or None if it needs converting."""
        if self.has_video:
            return None
        accepted = _API_CONTAINERS.get(self.container)
        if accepted is None or self.codec not in accepted[1]:
            return None
        return accepted[0]


@dataclass(frozen=True, slots=True)
class AudioPart:
    """One upload for the transcription API."""

    filename: str
    data: bytes
    mime: str
    duration: float


@dataclass(frozen=True, slots=True)
class VoiceClip:
    """Ogg/Opus ready to go out as a voice message."""

    data: bytes
    duration: float


def format_minutes(seconds: float) -> str:
    """"42 minutes", "1 minute 15 seconds", "45 seconds": lengths in user-facing texts."""
    minutes, secs = divmod(max(1, round(seconds)), 60)
    parts = []
    if minutes:
        parts.append(f"{minutes} minute{'s' if minutes != 1 else ''}")
    if secs:
        parts.append(f"{secs} second{'s' if secs != 1 else ''}")
    return " ".join(parts)


def check_length(seconds: float | None, max_seconds: float) -> None:
    """Refuse a recording over the limit (also used before downloading, on a hint)."""
    if seconds is not None and max_seconds > 0 and seconds > max_seconds + 0.5:
        raise AudioError(TOO_LONG.format(length=format_minutes(seconds),
                                         limit=format_minutes(max_seconds)))


def ffmpeg_path() -> str:
    """The ffmpeg binary, or an AudioError the user can read."""
    path = shutil.which("ffmpeg")
    if path is None:
        log.error("ffmpeg is not installed; audio features are unavailable")
        raise AudioError(NO_FFMPEG)
    return path


async def _run(args: list[str], *, stdin: bytes | None = None,
               timeout: float = TIMEOUT) -> tuple[int, bytes, str]:
    """Run one process; (return code, stdout, stderr). Killed when over the timeout."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out, err.decode("utf-8", errors="replace")


@contextlib.asynccontextmanager
async def _workdir():  # type: ignore[no-untyped-def]
    tmp = await asyncio.to_thread(tempfile.mkdtemp, prefix="bot-audio-")
    try:
        yield Path(tmp)
    finally:
        await asyncio.to_thread(shutil.rmtree, tmp, True)


def _write_now(path: Path, data: bytes) -> None:
    path.write_bytes(data)


async def _write(path: Path, data: bytes) -> None:
    if len(data) < 1 << 20:
        _write_now(path, data)  # small: cheaper than a thread hop
    else:
        await asyncio.to_thread(_write_now, path, data)


_INPUT_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_STREAM_RE = re.compile(r"^\s*Stream #0:\d+\S*: (Audio|Video): ([A-Za-z0-9_]+)(.*)$", re.M)
_SAMPLES_RE = re.compile(r"n_samples: (\d+)")
_PEAK_RE = re.compile(r"max_volume: (-?(?:\d+(?:\.\d+)?|inf)) dB")


def parse_analysis(stderr: str, size: int) -> AudioInfo:
    """Read ffmpeg's report of a volumedetect pass; AudioError for non-audio or damage."""
    head = re.split(r"^(?:Stream mapping:|Output #0)", stderr, maxsplit=1, flags=re.M)[0]
    container_m = _INPUT_RE.search(head)
    if container_m is None:
        raise AudioError(CORRUPT)
    audio_codec = ""
    has_video = False
    for kind, codec, rest in _STREAM_RE.findall(head):
        if kind == "Audio" and not audio_codec:
            audio_codec = codec
        elif kind == "Video" and "attached pic" not in rest:
            has_video = True
    if not audio_codec:
        raise AudioError(NOT_AUDIO)
    samples_m = _SAMPLES_RE.search(stderr)
    peak_m = _PEAK_RE.search(stderr)
    if samples_m is None or peak_m is None:
        raise AudioError(CORRUPT)
    decoded = int(samples_m.group(1)) / ANALYZE_RATE
    duration = decoded
    dur_m = _DURATION_RE.search(head)
    if dur_m is not None:
        h, m, s = dur_m.groups()
        duration = max(decoded, int(h) * 3600 + int(m) * 60 + float(s))
    peak_text = peak_m.group(1)
    peak = -math.inf if peak_text.endswith("inf") else float(peak_text)
    return AudioInfo(container=container_m.group(1), codec=audio_codec, duration=duration,
                     peak_db=peak, has_video=has_video, size=size)


async def analyze(data: bytes, *, max_seconds: float = 0.0) -> AudioInfo:
    """One ffmpeg pass: container, codec, duration and peak level; refuses bad files.

    Decoding stops just past `max_seconds` (when set), so an over-long file is refused
    without decoding all of it.
    """
    if not data:
        raise AudioError(EMPTY)
    ffmpeg = ffmpeg_path()
    async with _workdir() as tmp:
        src = tmp / "input"
        await _write(src, data)
        limit = ["-t", f"{max_seconds + 1:.0f}"] if max_seconds > 0 else []
        rc, _, err = await _run([
            ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-i", str(src), *limit,
            "-map", "0:a:0", "-af",
            f"aformat=sample_rates={ANALYZE_RATE}:channel_layouts=mono,volumedetect",
            "-f", "null", "-",
        ])
    if rc != 0 and "matches no streams" in err:
        if _INPUT_RE.search(err) is None:
            raise AudioError(CORRUPT)
        raise AudioError(NOT_AUDIO)
    if rc != 0:
        log.info("ffmpeg could not decode an upload (%d bytes): %s", len(data),
                 err.strip().splitlines()[-1:] or "")
        raise AudioError(CORRUPT)
    info = parse_analysis(err, len(data))
    log.debug("audio: %s/%s %.2fs peak %.1f dB", info.container, info.codec, info.duration,
              info.peak_db)
    return info


def check_usable(info: AudioInfo, max_seconds: float) -> None:
    """Length, shortness and silence checks in the order a user would want to hear them."""
    check_length(info.duration, max_seconds)
    if info.duration < MIN_SECONDS:
        raise AudioError(TOO_SHORT if info.duration > 0 else EMPTY)
    if info.silent:
        raise AudioError(SILENT)


def chunk_plan(duration: float, size: int, *, chunk_seconds: float,
               max_bytes: int = API_MAX_BYTES, bitrate: int = CONVERT_BITRATE) -> int:
    """How many equal chunks a recording needs once converted (1 = no splitting).

    Equal chunks rather than fixed-length ones, so that no chunk is a sliver the API
    would refuse as too short.
    """
    del size  # converted size depends only on duration and bitrate
    n = 1
    if chunk_seconds > 0:
        n = max(n, math.ceil(duration / chunk_seconds - 1e-6))
    # stay under the upload limit with 10% headroom for container overhead
    per_chunk_bytes = duration / n * bitrate / 8
    if per_chunk_bytes > max_bytes * 0.9:
        n = math.ceil(duration * bitrate / 8 / (max_bytes * 0.9))
    return max(1, n)


def base_name(filename: str) -> str:
    """A filename's stem, safe for an upload name ("voice" for nothing usable)."""
    stem = Path(filename or "audio").stem
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "audio"
    return stem[:60]


async def prepare(data: bytes, filename: str, info: AudioInfo, *, chunk_seconds: float,
                  max_bytes: int = API_MAX_BYTES) -> list[AudioPart]:
    """The uploads for one recording: the file itself when the API takes it as it is,
    else 16 kHz mono Ogg/Opus, split into chunks when over the size or duration limit."""
    stem = base_name(filename)
    ext = info.api_extension()
    fits = info.size <= max_bytes and (chunk_seconds <= 0 or info.duration <= chunk_seconds)
    if ext is not None and fits:
        return [AudioPart(f"{stem}.{ext}", data, _MIME[ext], info.duration)]
    n = chunk_plan(info.duration, info.size, chunk_seconds=chunk_seconds, max_bytes=max_bytes)
    ffmpeg = ffmpeg_path()
    async with _workdir() as tmp:
        src = tmp / "input"
        await _write(src, data)
        common = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", str(src),
                  "-vn", "-map", "0:a:0", "-ac", "1", "-ar", str(ANALYZE_RATE),
                  "-c:a", "libopus", "-b:a", str(CONVERT_BITRATE), "-vbr", "constrained",
                  "-application", "voip"]
        if n == 1:
            out = [tmp / "part000.ogg"]
            rc, _, err = await _run([*common, "-f", "ogg", str(out[0])])
        else:
            step = info.duration / n
            times = ",".join(f"{step * i:.3f}" for i in range(1, n))
            rc, _, err = await _run([*common, "-f", "segment", "-segment_format", "ogg",
                                     "-segment_times", times, "-reset_timestamps", "1",
                                     str(tmp / "part%03d.ogg")])
            out = sorted(tmp.glob("part*.ogg"))
        if rc != 0:
            log.warning("ffmpeg could not convert an upload: %s", err.strip()[-300:])
            raise AudioError(CORRUPT)
        blobs = [await asyncio.to_thread(p.read_bytes) for p in out]
    parts: list[AudioPart] = []
    for i, blob in enumerate(blobs):
        seconds = ogg_duration(blob) or 0.0
        if seconds < MIN_SECONDS:
            continue  # an empty tail: nothing to hear
        name = f"{stem}.ogg" if len(blobs) == 1 else f"{stem}-part{i + 1}.ogg"
        parts.append(AudioPart(name, blob, "audio/ogg", seconds))
    if not parts:
        raise AudioError(TOO_SHORT)
    log.info("audio: %s %.1fs converted into %d part(s)", info.container, info.duration,
             len(parts))
    return parts


def looks_like_ogg_opus(data: bytes) -> bool:
    """Ogg container whose first stream is Opus (what voice messages must be)."""
    return data.startswith(b"OggS") and b"OpusHead" in data[:128]


def ogg_intact(data: bytes) -> bool:
    """Whether the bytes are a whole sequence of Ogg pages, with nothing cut or appended
    (page structure only; the checksums are left to ffmpeg)."""
    pos, size = 0, len(data)
    while pos < size:
        if data[pos : pos + 4] != b"OggS" or pos + 27 > size:
            return False
        segments = data[pos + 26]
        table_end = pos + 27 + segments
        if table_end > size:
            return False
        pos = table_end + sum(data[pos + 27 : table_end])
    return pos == size and size > 0


def ogg_duration(data: bytes) -> float | None:
    """Duration of an Ogg/Opus file from its last page's granule position (48 kHz)."""
    if not data.startswith(b"OggS"):
        return None
    last = data.rfind(b"OggS")
    if last + 14 > len(data):
        return None
    granule = struct.unpack_from("<q", data, last + 6)[0]
    head = data.find(b"OpusHead")
    pre_skip = struct.unpack_from("<H", data, head + 10)[0] if 0 <= head <= len(data) - 12 else 0
    return (granule - pre_skip) / 48000 if granule > 0 else None


async def to_voice(data: bytes) -> VoiceClip:
    """Speech audio as Ogg/Opus with its duration: as it is when it already is, else
    re-encoded (servers that ignore response_format send MP3 or WAV)."""
    if not data:
        raise AudioError(BAD_SPEECH)
    if not looks_like_ogg_opus(data):
        ffmpeg = ffmpeg_path()
        async with _workdir() as tmp:
            src = tmp / "speech"
            await _write(src, data)
            rc, out, err = await _run([
                ffmpeg, "-hide_banner", "-nostdin", "-v", "error", "-i", str(src), "-vn",
                "-map", "0:a:0", "-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k",
                "-f", "ogg", "pipe:1",
            ])
        if rc != 0 or not out:
            log.warning("speech audio could not be converted: %s", err.strip()[-300:])
            raise AudioError(BAD_SPEECH)
        data = out
    duration = ogg_duration(data)
    if duration is None or duration <= 0:
        raise AudioError(BAD_SPEECH)
    return VoiceClip(data, duration)


async def decode_pcm(data: bytes, rate: int = 8000) -> array.array[int] | None:
    """Mono 16-bit samples at `rate`, or None without ffmpeg or for audio it cannot decode
    (adapters draw previews from these, e.g. Discord's voice-message waveform)."""
    ffmpeg = shutil.which("ffmpeg")
    if not ffmpeg:
        return None
    try:
        rc, out, _ = await _run([ffmpeg, "-v", "error", "-i", "pipe:0", "-f", "s16le",
                                 "-ac", "1", "-ar", str(rate), "pipe:1"], stdin=data, timeout=30)
    except (OSError, TimeoutError):
        log.warning("ffmpeg could not decode the audio", exc_info=True)
        return None
    if rc != 0 or not out:
        return None
    samples = array.array("h")
    samples.frombytes(out[: len(out) - len(out) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples
