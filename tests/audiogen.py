"""Real test audio, generated on the spot (numpy samples + ffmpeg), never shipped as blobs.

Speech itself is not needed: the fake OpenAI server answers transcriptions with the text a
test queues. What matters is that the files are genuine recordings in each format, of a
known length, loud or silent.
"""

from __future__ import annotations

import functools
import io
import json
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

RATE = 16_000


def samples(seconds: float, *, kind: str = "tone", freq: float = 440.0,
            amplitude: float = 0.3, rate: int = RATE) -> np.ndarray:
    """Mono int16 samples: a tone that wavers like a voice, white noise, or silence."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    if kind == "silence":
        return np.zeros(n, dtype="<i2")
    if kind == "noise":
        wave_ = np.random.default_rng(7).uniform(-1, 1, n)
    else:
        wave_ = np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (wave_ * amplitude * 32767).astype("<i2")


def wav_bytes(pcm: np.ndarray, rate: int = RATE) -> bytes:
    """A WAV file of int16 mono samples."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


_FORMATS = {
    "ogg": ["-c:a", "libopus", "-b:a", "24k", "-f", "ogg"],
    "mp3": ["-c:a", "libmp3lame", "-b:a", "48k", "-f", "mp3"],
    "m4a": ["-c:a", "aac", "-b:a", "48k", "-f", "ipod"],
    "flac": ["-c:a", "flac", "-f", "flac"],
}


@functools.lru_cache(maxsize=64)
def audio(fmt: str = "ogg", seconds: float = 2.0, kind: str = "tone") -> bytes:
    """A recording in a container: ogg (Opus, what voice notes are), mp3, m4a, flac, wav,
    or mp4 (a small video with sound, like a Telegram video note)."""
    pcm = samples(seconds, kind=kind)
    source = wav_bytes(pcm)
    if fmt == "wav":
        return source
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.wav"
        src.write_bytes(source)
        out = Path(tmp) / f"out.{fmt}"
        if fmt == "mp4":
            args = ["-f", "lavfi", "-i", f"color=c=blue:s=64x64:d={seconds}", "-i", str(src),
                    "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                    "-f", "mp4"]
        else:
            args = ["-i", str(src), *_FORMATS[fmt]]
        subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(out)], check=True)
        return out.read_bytes()


def probe(data: bytes) -> dict[str, str]:
    """codec_name, format_name and duration of a file, from ffprobe."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries",
             "format=format_name,duration:stream=codec_name,codec_type", "-of", "json", f.name],
            check=True, capture_output=True).stdout
    info = json.loads(out)
    stream = next((s for s in info.get("streams", []) if s.get("codec_type") == "audio"), {})
    return {"codec": stream.get("codec_name", ""),
            "format": info.get("format", {}).get("format_name", ""),
            "duration": info.get("format", {}).get("duration", "0")}
