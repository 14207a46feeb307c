"""Nothing lost on a crash (issue #11): the bot process is SIGKILLed with several chats in
flight and restarted on the same database; every question gets exactly one complete answer.

Kill points are conditions observed at the fakes, never sleeps:
- received: the platform saw the update acknowledged (Telegram: the next getUpdates offset;
  Discord: the journal holds every message), the model is not answering;
- model: every in-flight chat's request is at the fake model, held before its answer;
- stream: the model is held mid-answer and each in-flight chat shows the partial text;
- final: each in-flight chat shows its complete answer.
On Telegram the bot must also have recorded the message it sent (stream, final): a kill in
the instant between Telegram creating a message and the bot learning its id leaves that
message unknown (the Bot API has no idempotency key; bench/crash.py counts such cases).
Discord's enforce_nonce closes that gap, so there the kill comes the moment it shows.
While the bot is down more questions arrive (Discord: in a channel it was addressed in,
read back through GET /channels/{id}/messages?after=).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.crash_harness import (
    BotProcess,
    Chat,
    Platform,
    TelegramPlatform,
    answer_for,
    make_platform,
    model_answer,
)
from tests.fakes.openai_api import FakeOpenAI
from tests.harness import wait_for

TIMEOUT = 60.0
ALICE, BOB, CAROL, DAVE, ERIN = (Chat(1001), Chat(1002), Chat(1003), Chat(1004, group=True),
                                 Chat(1005))


@pytest.fixture(params=["telegram", "discord"])
async def platform(request: pytest.FixtureRequest) -> AsyncIterator[Platform]:
    """A started platform fake."""
    p = make_platform(request.param)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def complete(platform: Platform, asked: dict[str, Chat], token: str) -> bool:
    chat = asked[token]
    return any(text == answer_for(token) for _, text in platform.shown(chat))


def partial(platform: Platform, chat: Chat, token: str) -> bool:
    full = answer_for(token)
    return any(text and full.startswith(text) and text != full
               for _, text in platform.shown(chat))


async def reach_kill_point(point: str, platform: Platform, bot: BotProcess, ai: FakeOpenAI,
                           in_flight: dict[str, Chat], total: int) -> None:
    """Wait until the condition of a kill point holds for every chat in flight."""
    chats = len(set(in_flight.values()))
    if point == "received":
        if isinstance(platform, TelegramPlatform):
            await platform.wait_until(platform.acknowledged, TIMEOUT)
        else:
            await platform.wait_until(lambda: bot.journaled() >= total, TIMEOUT)
    elif point == "model":
        await ai.wait_until(lambda: ai.held >= chats, TIMEOUT)
    elif point == "stream":
        await ai.wait_until(lambda: ai.held >= chats, TIMEOUT)
        await platform.wait_until(lambda: all(partial(platform, c, t)
                                              for t, c in in_flight.items()), TIMEOUT)
    else:
        await platform.wait_until(lambda: all(complete(platform, in_flight, t)
                                              for t in in_flight), TIMEOUT)
    if isinstance(platform, TelegramPlatform) and point in ("stream", "final"):
        await wait_for(lambda: all(bot.recorded(t) for t in in_flight), TIMEOUT,
                       "the bot to record what it sent")


@pytest.mark.parametrize("point", ["received", "model", "stream", "final"])
async def test_kill_9_and_restart_answers_every_question_once(
        platform: Platform, openai_fake: FakeOpenAI, tmp_path: Path, point: str) -> None:
    ai = openai_fake
    ai.reply_fn(model_answer)
    bot = BotProcess(platform, ai, tmp_path)
    await bot.start()
    try:
        if point in ("received", "model"):
            ai.hold(0)
        elif point == "stream":
            ai.hold(8)
        asked: dict[str, Chat] = {}
        ids: dict[str, str] = {}
        # four chats in flight, Alice with a second question queued behind her first
        for token, chat in [("q1", ALICE), ("q2", BOB), ("q3", CAROL), ("q4", DAVE),
                            ("q5", ALICE)]:
            ids[token] = platform.send(chat, f"question {token}, please")
            asked[token] = chat
        # (after the final text, q5 too: otherwise it would be streaming at the kill)
        in_flight = {t: c for t, c in asked.items() if t != "q5" or point == "final"}
        await reach_kill_point(point, platform, bot, ai, in_flight, total=len(asked))
        await bot.kill()
        ai.release()

        # while it is down: Alice asks again; on Telegram a new chat starts too
        ids["q6"] = platform.send(ALICE, "question q6, please", while_down=True)
        asked["q6"] = ALICE
        if isinstance(platform, TelegramPlatform):
            ids["q7"] = platform.send(ERIN, "question q7, please", while_down=True)
            asked["q7"] = ERIN

        await bot.start()
        await platform.wait_until(lambda: all(complete(platform, asked, t) for t in asked),
                                  TIMEOUT)
        await wait_for(lambda: bot.open_entries() == 0, TIMEOUT, "the journal to close")
        assert await bot.stop() == 0, bot.log()
    except BaseException:
        if bot.proc is not None:
            await bot.kill()
        print(f"--- first run ---\n{bot.log(1)}\n--- last run ---\n{bot.log()}")
        raise

    # what the users see: one complete answer per question, nothing else, in order
    for chat in {*asked.values()}:
        tokens = [t for t, c in asked.items() if c == chat]
        shown = platform.shown(chat)
        assert [text for _, text in shown] == [answer_for(t) for t in tokens], (
            chat.name, shown, bot.log())
    if isinstance(platform, TelegramPlatform):  # in the group the answer replies to Dave
        (answer_id, _), = platform.shown(DAVE)
        assert platform.replied_to(DAVE, answer_id) == ids["q4"]

    # the history holds every question and its complete answer exactly once
    turns = bot.query("SELECT role, content FROM turns ORDER BY id")
    for token in asked:
        questions = [c for r, c in turns if r == "user" and f"question {token}," in c]
        answers = [c for r, c in turns if r == "assistant" and c == answer_for(token)]
        assert len(questions) == 1 and len(answers) == 1, (token, turns)
    assert len(turns) == 2 * len(asked), turns
    db = sqlite3.connect(bot.db)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        states = db.execute("SELECT state, COUNT(*) FROM inbox GROUP BY state").fetchall()
    finally:
        db.close()
    assert all(state not in ("received", "answering") for state, _ in states), states
