"""Several processes on one PostgreSQL database (issue #14): one ingress, three workers.

Real processes (`python -m bot --role ...`) against the fake Telegram (webhook) and the
fake Discord: 50 channels x 5 questions, every question answered exactly once and in order
per channel, while one worker is SIGKILLed in the middle of its answers: its channels are
taken over once its leases run out, their cut replies finished. Plus the refusals: a
second polling ingress, a worker on SQLite.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster_harness import (
    Chat,
    Cluster,
    DiscordPlatform,
    TelegramPlatform,
    query,
    wait_async,
)
from tests.crash_harness import answer_for, model_answer
from tests.fakes.openai_api import FakeOpenAI

TIMEOUT = 300.0  # a guard for a loaded machine; every wait ends on a condition
CHANNELS = 25  # per platform
ROUNDS = 5


@pytest.fixture
async def telegram() -> AsyncIterator[TelegramPlatform]:
    p = TelegramPlatform()
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
async def discord() -> AsyncIterator[DiscordPlatform]:
    p = DiscordPlatform()
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def shown_texts(platform: TelegramPlatform | DiscordPlatform, chat: Chat) -> list[str]:
    return [text for _, text in platform.shown(chat)]


async def test_ingress_and_three_workers_answer_each_message_once_in_order_through_a_kill(
        tmp_path: Path, pg_url: str, openai_fake: FakeOpenAI,
        telegram: TelegramPlatform, discord: DiscordPlatform) -> None:
    ai = openai_fake
    ai.reply_fn(model_answer)
    cluster = Cluster(tmp_path, pg_url, ai, telegram, discord, lease=3.0, poll=0.5,
                      channels=6)
    chats: list[tuple[TelegramPlatform | DiscordPlatform, Chat]] = (
        [(telegram, Chat(2000 + i)) for i in range(CHANNELS)]
        + [(discord, Chat(3000 + i)) for i in range(CHANNELS)])
    asked: dict[int, list[str]] = {}  # chat index -> tokens in the order asked
    try:
        await cluster.start("ingress")
        workers = [await cluster.start("worker") for _ in range(3)]
        # every answer pauses mid-stream until released: the workers fill their slots
        ai.hold(8)
        n = 0
        for _ in range(ROUNDS):
            for i, (platform, chat) in enumerate(chats):
                n += 1
                token = f"q{n}"
                platform.send(chat, f"question {token}, please")
                asked.setdefault(i, []).append(token)
        slots = 3 * 6
        await ai.wait_until(lambda: ai.held >= slots, TIMEOUT)

        victim = workers[0]

        async def victim_channels() -> list[str]:
            rows = await query(pg_url, "SELECT name FROM cluster_leases WHERE holder LIKE $1"
                               " AND name LIKE 'channel:%'", f"%:{victim.pid}:%")
            return [r[0].removeprefix("channel:") for r in rows]

        async def victim_mid_answer() -> bool:
            held = await victim_channels()
            if not held:
                return False
            rows = await query(
                pg_url, "SELECT COUNT(DISTINCT channel) FROM inbox WHERE channel = ANY($1)"
                " AND state = 'answering' AND reply_ids <> '[]'", held)
            return int(rows[0][0]) == len(held)

        # the kill comes while each of the victim's channels shows part of an answer
        await wait_async(victim_mid_answer, TIMEOUT, "the victim to be mid-answer")
        taken = await victim_channels()
        await victim.kill()
        ai.release()

        differ: list[Any] = []

        async def all_answered() -> bool:
            rows = await query(pg_url, "SELECT COUNT(*) FROM inbox WHERE state IN"
                                       " ('received', 'answering')")
            differ[:] = [(c, shown_texts(p, c)) for i, (p, c) in enumerate(chats)
                         if shown_texts(p, c) != [answer_for(t) for t in asked[i]]]
            return int(rows[0][0]) == 0 and not differ

        await wait_async(all_answered, TIMEOUT, "every question to be answered",
                         lambda: f"open entries or chats showing otherwise: {differ}")
        logs = cluster.logs()
        codes = await cluster.stop()
    except BaseException:
        await cluster.kill_all()
        print(cluster.logs())
        raise
    assert all(code == 0 for code in codes.values()), (codes, logs)

    # what users see: exactly one complete answer per question, in the order asked
    for i, (platform, chat) in enumerate(chats):
        assert shown_texts(platform, chat) == [answer_for(t) for t in asked[i]], (chat, logs)
    # the dead worker's channels were finished by the others (its cut replies edited)
    assert taken and "taking over message" in logs, logs
    # history: every question and its answer exactly once; the journal is closed
    turns = await query(pg_url, "SELECT role, content FROM turns ORDER BY id")
    assert len(turns) == 2 * CHANNELS * 2 * ROUNDS, len(turns)
    answers = [t["content"] for t in turns if t["role"] == "assistant"]
    assert sorted(answers) == sorted(answer_for(f"q{k}") for k in range(1, n + 1))
    states = await query(pg_url, "SELECT state, COUNT(*) FROM inbox GROUP BY state")
    assert {s["state"] for s in states} <= {"answered", "skipped", "merged"}, states
    leases = await query(pg_url, "SELECT name FROM cluster_leases")
    assert not leases, leases  # clean stops give every lease back


async def test_a_second_polling_ingress_refuses_to_start(
        tmp_path: Path, pg_url: str, openai_fake: FakeOpenAI,
        telegram: TelegramPlatform) -> None:
    cluster = Cluster(tmp_path, pg_url, openai_fake, telegram, None, webhook=False)
    try:
        first = await cluster.start("ingress")
        second = cluster.process("ingress")
        await second.spawn()
        assert await second.exit_code() == 2
        err = second.log()
        assert "another ingress" in err and "is polling Telegram" in err, err
        assert "webhook_url" in err
        assert first.proc is not None and first.proc.returncode is None
        assert await first.stop() == 0, first.log()
        # the lease is given back on a clean stop: a new ingress may poll at once
        third = await cluster.start("ingress")
        assert await third.stop() == 0, third.log()
    finally:
        await cluster.kill_all()


@pytest.mark.parametrize("role", ["worker", "ingress"])
async def test_roles_refuse_sqlite(tmp_path: Path, openai_fake: FakeOpenAI,
                                  telegram: TelegramPlatform, role: str) -> None:
    cluster = Cluster(tmp_path, "", openai_fake, telegram, None, webhook=False)
    p = cluster.process(role, BOT_DATABASE_URL="", BOT_DATABASE=str(tmp_path / "b.sqlite3"))
    await p.spawn()
    assert await p.exit_code() == 2
    err = p.log().strip().splitlines()
    assert err[-1].startswith(f"error: --role {role} needs PostgreSQL"), err
    assert not (tmp_path / "b.sqlite3").exists()
    assert not telegram.fake.calls_to("getMe")  # refused before touching the platform


async def test_workers_budgets_count_what_every_worker_spent(pg_url: str) -> None:
    """Two workers' budgets over one database: spending recorded by one is refused by the
    other (a single process keeps its sums in memory and would not see it)."""
    from bot.budgets import BudgetExceeded, Budgets
    from bot.config import BudgetsSection
    from bot.store import UsageRow
    from bot.store_pg import PgStore
    from bot.usage import Caller

    store = PgStore(pg_url)
    await store.open()
    try:
        section = BudgetsSection(user_daily=0.05)
        caller = Caller(platform="telegram", user_id="42", channel="telegram:42",
                        chat="telegram:42")
        first, second = Budgets(section, store), Budgets(section, store)
        alone = Budgets(section, store)  # as in one process: sums kept in memory
        first.shared = second.shared = True
        now = time.time()
        for b in (first, second, alone):
            b.release(await b.admit(caller, 0.01, now))  # each has read the spend (0)
            caller.admitted = False
        # the first worker's request costs $0.045 (recorded as Meter._record does)
        await store.record_usage(UsageRow(
            platform="telegram", channel="telegram:42", user_id="42", model="m",
            feature="chat", prompt_tokens=1, completion_tokens=1, estimated=False, cost=0.045,
            created=now, day=first.calendar.day_of(now), chat="telegram:42"))
        with pytest.raises(BudgetExceeded):
            await second.admit(caller, 0.01, now)
        caller.admitted = False
        assert [s.spent for s in await second.standing(caller, now)] == [pytest.approx(0.045)]
        await alone.admit(caller, 0.01, now)  # the per-process sum missed it
    finally:
        await store.close()


async def test_cancel_reaches_the_worker_answering_the_channel_at_once(
        tmp_path: Path, pg_url: str, openai_fake: FakeOpenAI,
        telegram: TelegramPlatform) -> None:
    """/cancel is not queued behind the answer it is meant to stop: the worker holding the
    channel runs it on arrival, as one process does."""
    ai = openai_fake
    ai.reply_fn(model_answer)
    cluster = Cluster(tmp_path, pg_url, ai, telegram, None, lease=5.0, poll=0.5)
    alice = Chat(4001)
    try:
        await cluster.start("ingress")
        await cluster.start("worker")
        ai.hold(0)
        telegram.send(alice, "question q1, please")
        await ai.wait_until(lambda: ai.held == 1, TIMEOUT)
        telegram.send(alice, "/cancel")
        await telegram.wait_until(
            lambda: shown_texts(telegram, alice) == ["Nothing is running here."], TIMEOUT)
        assert ai.held == 1  # the question's answer is still waiting for the model
        ai.release()
        await telegram.wait_until(lambda: shown_texts(telegram, alice) == [
            "Nothing is running here.", answer_for("q1")], TIMEOUT)
        codes = await cluster.stop()
    except BaseException:
        await cluster.kill_all()
        print(cluster.logs())
        raise
    assert all(code == 0 for code in codes.values()), (codes, cluster.logs())


async def test_an_edit_of_a_queued_message_is_answered_in_its_new_form(
        tmp_path: Path, pg_url: str, openai_fake: FakeOpenAI,
        telegram: TelegramPlatform) -> None:
    """The ingress replaces a message no worker has started on; an edit of a message being
    answered is ignored (as in one process)."""
    ai = openai_fake
    ai.reply_fn(model_answer)
    cluster = Cluster(tmp_path, pg_url, ai, telegram, None, lease=5.0, poll=0.5)
    bob = Chat(4002)
    try:
        await cluster.start("ingress")
        await cluster.start("worker")
        ai.hold(0)
        first = telegram.send(bob, "question q1, please")
        await ai.wait_until(lambda: ai.held == 1, TIMEOUT)
        second = telegram.send(bob, "question q2, please")

        async def queued() -> bool:
            rows = await query(pg_url, "SELECT 1 FROM inbox WHERE message_id = $1 AND"
                                       " inbound IS NOT NULL", second)
            return bool(rows)

        await wait_async(queued, TIMEOUT, "the second question to be queued")
        telegram.fake.user_edit(bob.user, int(second), "question q3, please")
        telegram.fake.user_edit(bob.user, int(first), "question q9, please")

        async def edits_handled() -> bool:
            rows = await query(pg_url, "SELECT COUNT(*) FROM inbox WHERE state IN"
                                       " ('merged', 'skipped')")
            return int(rows[0][0]) == 2

        await wait_async(edits_handled, TIMEOUT, "both edits to be handled")
        ai.release()
        await telegram.wait_until(lambda: shown_texts(telegram, bob) == [
            answer_for("q1"), answer_for("q3")], TIMEOUT)
        codes = await cluster.stop()
    except BaseException:
        await cluster.kill_all()
        print(cluster.logs())
        raise
    assert all(code == 0 for code in codes.values()), (codes, cluster.logs())
    turns = await query(pg_url, "SELECT content FROM turns WHERE role = 'user' ORDER BY id")
    assert [t["content"] for t in turns] == ["question q1, please", "question q3, please"]
