"""The bot as a process: `python -m bot` answers in the terminal and shuts down cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from pathlib import Path

from tests.fakes.openai_api import FakeOpenAI


async def start_bot(fake: FakeOpenAI, tmp_path: Path) -> asyncio.subprocess.Process:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENAI_API_KEY": fake.api_key,
           "OPENAI_BASE_URL": fake.url, "BOT_DATABASE": str(tmp_path / "bot.sqlite3")}
    (tmp_path / "config.toml").write_text('[chat]\ntokenizer = "estimate"\n')
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--console", cwd=tmp_path, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)


def turns(tmp_path: Path) -> list[tuple[str, str]]:
    db = sqlite3.connect(tmp_path / "bot.sqlite3")
    try:
        return db.execute("SELECT role, content FROM turns ORDER BY id").fetchall()
    finally:
        db.close()


async def test_sigterm_finishes_the_answer_in_flight(openai_fake: FakeOpenAI,
                                                     tmp_path: Path) -> None:
    openai_fake.latency = 1.0
    proc = await start_bot(openai_fake, tmp_path)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"hello there\n")
    await proc.stdin.drain()
    await openai_fake.wait_until(lambda: len(openai_fake.chat_requests) == 1, timeout=30)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "echo: hello there" in out.decode()
    assert turns(tmp_path) == [("user", "hello there"), ("assistant", "echo: hello there")]


async def test_piped_input_is_answered_then_exits(openai_fake: FakeOpenAI,
                                                  tmp_path: Path) -> None:
    proc = await start_bot(openai_fake, tmp_path)
    out, err = await asyncio.wait_for(proc.communicate(b"one\ntwo\n"), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split("\n\n")[:2] == ["echo: one", "echo: two"]
    assert [c for _, c in turns(tmp_path)] == ["one", "echo: one", "two", "echo: two"]
    assert "sk-test-key" not in err.decode()
