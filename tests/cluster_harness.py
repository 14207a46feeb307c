"""Several bot processes on one PostgreSQL database (tests/test_cluster.py, bench/cluster.py).

Each process is `python -m bot --role ingress|worker` (through tests/discord_process.py,
which points discord.py at the fake Discord and then runs the bot's own __main__), with
both platform tokens set: the ingress receives Telegram updates by webhook (the fake
Telegram POSTs them, standing in for the owner's reverse proxy) and Discord messages on
its gateway session; workers send through both platforms' HTTP APIs. A process is live
once it has written its health file (right after start-up finished).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.crash_harness import ROOT, Chat, DiscordPlatform, TelegramPlatform
from tests.fakes.openai_api import FakeOpenAI
from tests.harness import wait_for
from tests.harness_platforms import WEBHOOK_ORIGIN, free_port, with_webhook

CONFIG = """
[bot]
log_level = "INFO"
[chat]
tokenizer = "estimate"
[openai]
# answers held at the fake model wait for the test, however busy the machine is
timeout = 600
[telegram]
# the fake Bot API has no bot-wide limit (and bench/cluster.py measures the bot's own cost)
global_rate = 0
"""


def cluster_config(*, lease: float = 30.0, poll: float = 2.0, channels: int = 100,
                   webhook_port: int | None = None) -> str:
    """config.toml text for every process of a cluster."""
    text = (f"{CONFIG}[cluster]\nlease_seconds = {lease}\npoll_seconds = {poll}\n"
            f"channels_per_worker = {channels}\n")
    return with_webhook(text, webhook_port) if webhook_port is not None else text


class RoleProcess:
    """One `python -m bot --role ...` process; its log goes to a file in `folder`."""

    def __init__(self, name: str, role: str | None, folder: Path, env: dict[str, str],
                 discord_url: str | None) -> None:
        self.name = name
        self.role = role
        self.folder = folder
        self.env = env
        self.discord_url = discord_url
        self.health = folder / f"{name}.health"
        self.log_path = folder / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    def command(self) -> list[str]:
        role = ["--role", self.role] if self.role else []
        if self.discord_url:
            return [sys.executable, "-m", "tests.discord_process", self.discord_url, *role]
        return [sys.executable, "-m", "bot", *role]

    async def spawn(self) -> None:
        """Start the process without waiting for it."""
        env = {**self.env, "BOT_HEALTH_FILE": str(self.health)}
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(), cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log)

    async def start(self, timeout: float = 60.0) -> None:
        """Start and wait until it is live (its health file exists)."""
        await self.spawn()
        assert self.proc is not None
        proc = self.proc

        def live() -> bool:
            if proc.returncode is not None:
                raise AssertionError(f"{self.name} exited at start-up:\n{self.log()}")
            return self.health.exists()

        await wait_for(live, timeout, f"{self.name} to start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def exit_code(self, timeout: float = 60.0) -> int:
        """Wait for the process to end by itself."""
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would."""
        if self.proc is None:
            return
        if self.proc.returncode is not None:  # ended by itself
            self.proc = None
            return
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.proc = None

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        self.proc = None
        return code


class Cluster:
    """An ingress and workers against the fake Telegram (webhook), the fake Discord and the
    fake OpenAI, on one PostgreSQL database."""

    def __init__(self, folder: Path, database_url: str, ai: FakeOpenAI,
                 telegram: TelegramPlatform | None, discord: DiscordPlatform | None, *,
                 lease: float = 30.0, poll: float = 2.0, channels: int = 100,
                 webhook: bool = True) -> None:
        self.folder = folder
        self.database_url = database_url
        self.ai = ai
        self.telegram = telegram
        self.discord = discord
        port = None
        if telegram is not None and webhook:
            port = free_port()
            telegram.fake.route(WEBHOOK_ORIGIN, f"http://127.0.0.1:{port}")
        (folder / "config.toml").write_text(
            cluster_config(lease=lease, poll=poll, channels=channels, webhook_port=port))
        self.processes: list[RoleProcess] = []
        self._count = 0

    def env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "OPENAI_API_KEY": self.ai.api_key, "OPENAI_BASE_URL": self.ai.url,
               "BOT_DATABASE_URL": self.database_url,
               "BOT_CONFIG": str(self.folder / "config.toml"), "PYTHONPATH": str(ROOT)}
        if self.telegram is not None:
            env.update(self.telegram.env())
        if self.discord is not None:
            env.update(self.discord.env())
        return env

    def process(self, role: str | None, **env: str) -> RoleProcess:
        """A new process of the cluster (not started)."""
        self._count += 1
        name = f"{role or 'bot'}-{self._count}"
        p = RoleProcess(name, role, self.folder, {**self.env(), **env},
                        self.discord.fake.url if self.discord is not None else None)
        self.processes.append(p)
        return p

    async def start(self, role: str | None, **env: str) -> RoleProcess:
        """Start a process and wait until it is live."""
        p = self.process(role, **env)
        await p.start()
        return p

    async def stop(self) -> dict[str, int]:
        """SIGTERM every process still running; their exit codes by name."""
        codes: dict[str, int] = {}
        for p in reversed(self.processes):
            if p.proc is not None:
                codes[p.name] = await p.stop()
        return codes

    async def kill_all(self) -> None:
        for p in self.processes:
            await p.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log()}" for p in self.processes)


async def query(database_url: str, sql: str, *args: Any) -> list[Any]:
    """Read the cluster's database from the test."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


__all__ = ["Chat", "Cluster", "DiscordPlatform", "RoleProcess", "TelegramPlatform", "query",
           "wait_async"]


async def wait_async(predicate: Any, timeout: float, what: str,
                     detail: Any = None) -> None:
    """wait_for for a condition that needs a query (polled, never a fixed wait);
    `detail()` says what was still missing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            more = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out waiting for {what}{more}")
        await asyncio.sleep(0.05)
