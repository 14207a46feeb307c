"""Benchmark: the bot's own overhead for a 30 s voice note, voice in and voice out.

The bot runs as its own process (`python -m bot`, as deployed) with the Telegram adapter;
the fake Telegram Bot API and the fake OpenAI server run in this process, as in
bench/load.py. One iteration is what a user does and sees: a 30 s Ogg/Opus voice note
is queued for getUpdates; the bot downloads it (getFile + file download), checks it with
ffmpeg, has it transcribed, streams the text answer, has it spoken, and uploads the
voice message (sendVoice). The clock stops when both the final text and the voice
message have reached the fake Bot API.

Model time is excluded, and only model time: the fake OpenAI server answers at once
(latency 0), its own ffprobe/ffmpeg work is made near-free (the transcription fake reads
the duration from the Ogg pages; speech audio is encoded once and then served from a
cache), and whatever time requests still spend inside the fake OpenAI server is measured
per iteration and subtracted. Everything else - both adapters' HTTP, the bot's ffmpeg run,
SQLite, the streaming edits, the upload - is counted.

    .venv/bin/python bench/voice.py [iterations]

  target: overhead p50 <= 150 ms
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import Bench, pct  # noqa: E402
from bot.audio import ogg_duration  # noqa: E402
from tests import audiogen  # noqa: E402
from tests.fakes import openai_api  # noqa: E402

TARGET_MS = 150.0


def _cheap_model_audio() -> None:
    """Make the fake's own audio work near-free, so that little model time is left to
    subtract: durations from the Ogg pages instead of ffprobe, speech encoded once."""
    real_probe = openai_api._probe_duration
    real_encode = openai_api.encode_audio
    cache: dict[tuple[int, str], bytes] = {}

    async def probe(data: bytes, ext: str) -> float | None:
        quick = ogg_duration(data) if ext in ("ogg", "oga") else None
        return quick if quick is not None else await real_probe(data, ext)

    async def encode(pcm: bytes, fmt: str) -> bytes:
        key = (hash(pcm), fmt)
        if key not in cache:
            cache[key] = await real_encode(pcm, fmt)
        return cache[key]

    openai_api._probe_duration = probe  # type: ignore[assignment]
    openai_api.encode_audio = encode  # type: ignore[assignment]


class VoiceBench(Bench):
    """Bench plus helpers for voice answers."""

    def answered_at(self, chat_id: int, before: int) -> float | None:
        """When both the final text answer and the voice message had arrived, or None."""
        new = self.tg.messages(chat_id)[before:]
        text = [m for m in new if m.kind == "text" and "echo: transcript of" in m.text]
        voice = [m for m in new if m.kind == "voice"]
        if not text or not voice:
            return None
        return max(text[-1].edits[-1][0], voice[-1].edits[-1][0])

    async def one(self, chat_id: int, note: bytes) -> tuple[float, float]:
        """One voice note: (end-to-end ms, ms spent inside the fake OpenAI server)."""
        before = len(self.tg.messages(chat_id))
        inside0 = self.ai.inside
        t0 = time.monotonic()
        self.tg.user_message(chat_id, chat_id, None, voice=note, voice_duration=30)
        await self.tg.wait_until(lambda: self.answered_at(chat_id, before) is not None,
                                 timeout=60)
        done = self.answered_at(chat_id, before)
        assert done is not None
        return (done - t0) * 1000, (self.ai.inside - inside0) * 1000


async def main(n: int) -> None:
    _cheap_model_audio()
    note = audiogen.audio("ogg", 30.0)
    with tempfile.TemporaryDirectory() as tmp:
        async with VoiceBench(Path(tmp)) as b:
            for i in range(5):  # warm up connections, caches, the database
                await b.one(10_000 + i, note)
            results = [await b.one(20_000 + (i % 10), note) for i in range(n)]
    e2e = [r[0] for r in results]
    model = [r[1] for r in results]
    overhead = [r[0] - r[1] for r in results]
    p50 = statistics.median(overhead)
    ok = "OK" if p50 <= TARGET_MS else "MISSED"
    print(f"30 s voice note ({len(note) / 1024:.0f} KB Ogg/Opus) -> transcript -> streamed "
          f"text + spoken answer, Telegram adapter, {n} sequential:")
    print(f"  end to end        p50 {statistics.median(e2e):7.1f} ms  p90 {pct(e2e, 0.9):7.1f} ms")
    print(f"  inside model fake p50 {statistics.median(model):7.1f} ms  (subtracted)")
    print(f"  bot overhead      p50 {p50:7.1f} ms  p90 {pct(overhead, 0.9):7.1f} ms  "
          f"max {max(overhead):7.1f} ms  (target p50 <= {TARGET_MS:.0f} ms: {ok})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("iterations", nargs="?", type=int, default=30,
                        help="voice notes to time (default: 30)")
    asyncio.run(main(parser.parse_args().iterations))
