"""Benchmarks against the in-repo fakes: per-message overhead, a burst of chats, memory.

The bot runs as its own process (`python -m bot`, exactly as deployed) with the Telegram
adapter; the fake Telegram Bot API and the fake OpenAI server run in this process. Times
are taken here, on the fakes' side of the wire: from the moment a user's update is queued
for getUpdates to the moment the bot's final text reaches the fake Bot API.

    .venv/bin/python bench/load.py                 # all three
    .venv/bin/python bench/load.py overhead burst  # a subset

  overhead  sequential short messages, zero-latency model: p50 <= 3 ms, p99 <= 15 ms
  burst     500 chats at once, 1 s model latency: all answered within 1.5 s
  memory    RSS of the bot process after 10,000 distinct chats: <= 120 MB
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Bench, cpu_seconds, pct, rss_mb


class TextBench(Bench):
    """Bench plus helpers for text answers."""

    async def all_answered(self, expected: dict[int, str], timeout: float) -> dict[int, float]:
        """Wait until every chat's last message is its expected text; when each landed.

        Checked in one pass over the fake's messages every few ms (not per request), so
        the measuring does not slow the fake server down.
        """
        deadline = time.monotonic() + timeout
        while True:
            last: dict[int, object] = {}
            for m in self.tg.all_messages():
                if m.chat_id in expected:
                    last[m.chat_id] = m
            done = {c: m.edits[-1][0] for c, m in last.items()  # type: ignore[attr-defined]
                    if m.text == expected[c]}  # type: ignore[attr-defined]
            if len(done) == len(expected):
                return done
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(expected) - len(done)} chats unanswered")
            await asyncio.sleep(0.005)

    def answered_at(self, chat_id: int, expected: str) -> float | None:
        """When the final text reached the fake, or None if not yet."""
        msgs = self.tg.messages(chat_id)
        if msgs and msgs[-1].text == expected:
            return msgs[-1].edits[-1][0]
        return None

    async def one(self, chat_id: int, text: str) -> float:
        """Send one message and return the bot's end-to-end time in ms."""
        return (await self.timed(chat_id, text))[0]

    async def timed(self, chat_id: int, text: str) -> tuple[float, float]:
        """One message: (end-to-end ms, ms spent inside the fake model server)."""
        inside0 = self.ai.inside
        t0 = time.monotonic()
        self.tg.user_message(chat_id, chat_id, text)
        expected = f"echo: {text}"
        await self.tg.wait_until(lambda: self.answered_at(chat_id, expected) is not None,
                                 timeout=30)
        done = self.answered_at(chat_id, expected)
        assert done is not None
        return (done - t0) * 1000, (self.ai.inside - inside0) * 1000


async def overhead(n: int = 300, extra_config: str = "") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with TextBench(Path(tmp), extra_config) as b:
            assert b.proc is not None
            for i in range(30):  # warm up connections, caches, the database
                await b.one(10_000 + i, f"warm {i}")
            cpu0 = cpu_seconds(b.proc.pid)
            runs = [await b.timed(20_000 + (i % 50), f"message {i}") for i in range(n)]
            cpu = (cpu_seconds(b.proc.pid) - cpu0) / n * 1000
    e2e = [r[0] for r in runs]
    times = [r[0] - r[1] for r in runs]  # model time (inside the fake model) excluded
    p50, p99 = statistics.median(times), pct(times, 0.99)
    ok = "OK" if p50 <= 3 and p99 <= 15 else "MISSED"
    print(f"short message, zero-latency model, {n} sequential:\n"
          f"  end to end (user's update queued -> final text at the Bot API): "
          f"p50 {statistics.median(e2e):.2f} ms, p99 {pct(e2e, 0.99):.2f} ms\n"
          f"  minus time inside the model fake: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
          f"max {max(times):.2f} ms (target p50 <= 3 ms, p99 <= 15 ms: {ok})\n"
          f"  bot process CPU: {cpu:.2f} ms per message (all work, incl. after the reply)")


async def burst(chats: int = 500, latency: float = 1.0, extra_config: str = "") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with TextBench(Path(tmp), extra_config) as b:
            await b.one(1, "warm")
            b.ai.latency = latency
            expected = {100_000 + i: f"echo: hello {i}" for i in range(chats)}
            t0 = time.monotonic()
            for chat_id in expected:
                b.tg.user_message(chat_id, chat_id, f"hello {chat_id - 100_000}")
            done = list((await b.all_answered(expected, timeout=120)).values())
    total = max(done) - t0
    ok = "OK" if total <= 1.5 else "MISSED"
    print(f"{chats} chats at once, {latency:.1f} s model: all answered in {total:.2f} s, "
          f"first {min(done) - t0:.2f} s, median {statistics.median(done) - t0:.2f} s "
          f"(target <= 1.5 s: {ok})")


async def memory(chats: int = 10_000, wave: int = 250, extra_config: str = "") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with TextBench(Path(tmp), extra_config) as b:
            assert b.proc is not None
            await b.one(1, "warm")
            base = rss_mb(b.proc.pid)
            for start in range(0, chats, wave):
                ids = range(200_000 + start, 200_000 + min(start + wave, chats))
                for cid in ids:
                    b.tg.user_message(cid, cid, f"hi {cid}")
                await b.all_answered({c: f"echo: hi {c}" for c in ids}, timeout=120)
            peak = rss_mb(b.proc.pid)
    ok = "OK" if peak <= 120 else "MISSED"
    print(f"RSS after {chats:,} distinct chats: {peak:.1f} MB (at start {base:.1f} MB) "
          f"(target <= 120 MB: {ok})")


async def main(which: list[str], messages: int, extra_config: str) -> None:
    for name in which or ["overhead", "burst", "memory"]:
        if name == "overhead":
            await overhead(messages, extra_config)
        else:
            await {"burst": burst, "memory": memory}[name](extra_config=extra_config)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", metavar="{overhead,burst,memory}",
                        help="benchmarks to run (default: all three)")
    parser.add_argument("--messages", type=int, default=300, metavar="N",
                        help="overhead: messages measured (default 300)")
    parser.add_argument("--config", default="", metavar="TOML",
                        help='added to the bot\'s config.toml, e.g. "[memory]\\nenabled = false" '
                             "(\\n stands for a new line)")
    args = parser.parse_args()
    which = args.which
    unknown = set(which) - {"overhead", "burst", "memory"}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    extra = "\n" + args.config.replace("\\n", "\n") + "\n" if args.config else ""
    asyncio.run(main(which, args.messages, extra))
