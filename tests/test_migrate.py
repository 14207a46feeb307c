"""`python -m bot migrate`: a bot that ran on SQLite (history, an image, a persona, usage,
its journal, memory vectors) is copied to PostgreSQL, and the bot started on PostgreSQL
carries on the same conversation: the model receives the same history."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.migrate import check_arguments, migrate
from tests.conftest import make_driver
from tests.fakes.openai_api import FakeOpenAI
from tests.harness import File, wait_for
from tests.test_vision import BASE_CONFIG, sent_images
from tests.unit.test_media import jpeg, near

CONFIG = BASE_CONFIG + "[memory]\nenabled = true\n"
ROOT = Path(__file__).resolve().parent.parent


async def test_a_sqlite_bot_moved_to_postgres_carries_on(
        openai_fake: FakeOpenAI, tmp_path: Path, pg_url: str) -> None:
    driver, fake = await make_driver("telegram", openai_fake, tmp_path, CONFIG)
    try:
        await driver.start()
        assert driver.app is not None and driver.app.store.backend == "sqlite"
        await driver.ask("/persona You are a pirate.")
        await driver.ask("my locker code at the gym is 7391")
        await driver.send_text("what is this?", files=[File(jpeg(300, 200, (200, 30, 30)))])
        await driver.settle()
        memory = driver.app.memory
        assert memory is not None
        stored = await driver.app.store.count_turns()
        memory.notify()
        await wait_for(lambda: memory.embedded >= stored, 30, "the turns to be embedded")
        await driver.ask("what did I show you?")
        before = openai_fake.chat_requests[-1]
        turns = await driver.app.store.count_turns()
        last_id = await driver.app.store.last_turn_id("telegram:1001")
        usage_before = await driver.app.store.usage_rows()
        await driver.stop()

        out = io.StringIO()
        assert await migrate(str(driver.db_path), pg_url, out=out) == 0, out.getvalue()
        report = out.getvalue()
        assert re.search(rf"\bturns +{turns} rows", report), report
        assert re.search(r"\bimages +1 rows", report), report
        assert "count check: every table matches" in report
        assert "memory_vectors" in report and "MISMATCH" not in report
        driver.db_path.rename(tmp_path / "old.sqlite3")  # the bot must not read it again

        driver.env = {**driver.env, "BOT_DATABASE_URL": pg_url}
        await driver.start()
        assert driver.app is not None and driver.app.store.backend == "postgres"
        await driver.ask("and its colour?")
        after = openai_fake.chat_requests[-1]
        # the same history, image included, then the new question
        assert after["messages"][0]["content"].startswith("You are a pirate.")
        assert after["messages"][1:-3] == before["messages"][1:-1]
        assert [m["content"] for m in after["messages"][-3:]] == [
            "what did I show you?", "echo: what did I show you?", "and its colour?"]
        (img,) = sent_images(after, last_only=False)
        assert near(img.getpixel((250, 150)), (200, 30, 30))
        # memory vectors came along: recall works without embedding the old turns again
        assert "7391" in await driver.ask("/search locker code")
        # the new turns were added after the copied ones (the id sequence was moved on)
        assert await driver.app.store.count_turns() == turns + 2
        assert await driver.app.store.last_turn_id("telegram:1001") == last_id + 2
        assert driver.app.store.backend == "postgres"
        usage = await driver.app.store.usage_rows()  # copied as they were, then recorded on
        assert usage[:len(usage_before)] == usage_before and len(usage) > len(usage_before)
    finally:
        await driver.stop()
        await fake.stop()


def run_migrate(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "OPENAI_"))}
    return subprocess.run([sys.executable, "-m", "bot", "migrate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


async def test_the_command_refuses_a_filled_target_unless_told(
        tmp_path: Path, pg_url: str) -> None:
    from bot.store import Store

    store = Store(str(tmp_path / "bot.sqlite3"))
    await store.open()
    await store.append_turn("console:local", "user", "hello", 2)
    await store.close()
    source = f"sqlite:///{tmp_path / 'bot.sqlite3'}"
    first = run_migrate("--from", source, "--to", pg_url)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "count check: every table matches" in first.stdout
    again = run_migrate("--from", source, "--to", pg_url)
    assert again.returncode == 2
    assert "already holds bot data (turns" in again.stdout and "--replace" in again.stdout
    replaced = run_migrate("--from", source, "--to", pg_url, "--replace")
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert " 1 rows" in replaced.stdout


@pytest.mark.parametrize(("source", "target", "error"), [
    ("mysql://x/y", "postgresql://h/d", "--from must be sqlite:///path"),
    ("sqlite:///{db}", "sqlite:///other", "--to must be a postgresql://"),
    ("sqlite:///{tmp}/missing.sqlite3", "postgresql://h/d", "no SQLite database at"),
])
def test_bad_arguments_are_refused(tmp_path: Path, source: str, target: str,
                                   error: str) -> None:
    db = tmp_path / "bot.sqlite3"
    db.write_bytes(b"")
    with pytest.raises(ValueError, match=error):
        check_arguments(source.format(db=db, tmp=tmp_path), target)
