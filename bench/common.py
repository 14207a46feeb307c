"""Shared by the benchmarks: the bot as its own process against fakes in this one.

The bot runs exactly as deployed (`python -m bot`, Telegram adapter); the fake Telegram
Bot API and the fake OpenAI server run in the benchmark's process, so times are taken on
the fakes' side of the wire and the bot's CPU can be read from /proc.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.openai_api import FakeOpenAI  # noqa: E402
from tests.fakes.telegram_api import FakeTelegram  # noqa: E402

CONFIG = """
[bot]
log_level = "WARNING"
[chat]
tokenizer = "estimate"
[telegram]
poll_timeout = 30
# the fake Bot API has no bot-wide limit and these benchmarks measure the bot's own cost:
# without this, 500 chats would wait for Telegram's 30 messages/s (about 16 s)
global_rate = 0
"""


class TimedOpenAI(FakeOpenAI):
    """The fake OpenAI server, adding up the time requests spend inside it (model time)."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = 0.0
        self._dispatch = self._timed(self._dispatch)  # type: ignore[method-assign]

    def _timed(self, handler: Any) -> Any:
        async def run(request: Any) -> Any:
            t0 = time.monotonic()
            try:
                return await handler(request)
            finally:
                self.inside += time.monotonic() - t0

        return run


class Bench:
    """Fakes here, the bot in a child process (BENCH_PROFILE=FILE: under cProfile;
    BENCH_PYSPY=FILE: sampled by py-spy from outside, in its raw collapsed-stack format,
    which leaves the bot at full speed and sees the SQLite thread too; `pip install py-spy`
    first)."""

    def __init__(self, tmp: Path, extra_config: str = "") -> None:
        self.tmp = tmp
        self.extra_config = extra_config  # appended to CONFIG (e.g. "[memory]\nenabled = false")
        self.tg = FakeTelegram()
        self.ai = TimedOpenAI()
        self.proc: subprocess.Popen[bytes] | None = None
        self.spy: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Bench:
        await self.tg.start()
        await self.ai.start()
        cfg = self.tmp / "config.toml"
        cfg.write_text(CONFIG + self.extra_config)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "OPENAI_API_KEY": self.ai.api_key,
            "OPENAI_BASE_URL": self.ai.url,
            "TELEGRAM_BOT_TOKEN": self.tg.token,
            "TELEGRAM_API_URL": self.tg.url,
            "BOT_DATABASE": str(self.tmp / "bench.sqlite3"),
            "BOT_CONFIG": str(cfg),
        }
        cmd = [sys.executable, "-m", "bot"]
        if os.environ.get("BENCH_PROFILE"):
            cmd = [sys.executable, "-m", "cProfile", "-o", os.environ["BENCH_PROFILE"],
                   "-m", "bot"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env)  # noqa: ASYNC220
        if os.environ.get("BENCH_PYSPY"):
            self.spy = subprocess.Popen(  # noqa: ASYNC220
                [str(Path(sys.executable).with_name("py-spy")), "record", "--rate", "500",
                 "--format", "raw", "--nonblocking", "-o", os.environ["BENCH_PYSPY"],
                 "--pid", str(self.proc.pid)])
        # live once it has registered its commands and is polling
        await self.tg.wait_until(lambda: any(c.method == "getUpdates" for c in self.tg.calls),
                                 timeout=60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.spy is not None:
            self.spy.send_signal(signal.SIGINT)  # py-spy writes its file when interrupted
            await asyncio.to_thread(self.spy.wait, 30)
        if self.proc is not None:
            self.proc.terminate()
            await asyncio.to_thread(self.proc.wait, 30)
        await self.ai.stop()
        await self.tg.stop()


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of a list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
