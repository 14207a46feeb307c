"""Inbox behaviours besides kill -9 (tests/test_crash.py): a chat that refuses the bot (403),
what the bot cannot use (stickers, locations, contacts), edited messages, and messages a
clean restart left unanswered."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store import _connector
from tests.conftest import STORAGES, make_driver
from tests.fakes.openai_api import FakeOpenAI
from tests.harness import ALICE, BOB, Driver, wait_for

PLATFORMS = ["telegram", "discord"]


@pytest.fixture(params=PLATFORMS)
async def bot(request: pytest.FixtureRequest, openai_fake: FakeOpenAI,
              tmp_path: Path, database_url: str) -> AsyncIterator[Driver]:
    """The bot on Telegram and on Discord (the console has no 403s, stickers or edits), on
    the `storage` backend."""
    driver, fake = await make_driver(request.param, openai_fake, tmp_path,
                                     database_url=database_url)
    try:
        await driver.start()
        yield driver
    finally:
        await driver.stop()
        if hasattr(driver, "close_redirect"):
            driver.close_redirect()
        await fake.stop()


def inbox(driver: Driver) -> list[tuple[str, str | None, str]]:
    """(state, message id, stored text) of every journal entry."""
    # the bot's own SQLite build: two builds in one process break each other's locks
    db = _connector(str(driver.db_path))()
    try:
        rows = db.execute("SELECT state, message_id, COALESCE(json_extract(inbound, '$.text'),"
                          " '') FROM inbox ORDER BY id").fetchall()
    finally:
        db.close()
    return [(r[0], r[1], r[2]) for r in rows]


async def journal_states(driver: Driver) -> list[str]:
    """The state of every journal entry, read from whichever database the bot uses."""
    url = driver.env.get("BOT_DATABASE_URL")
    if not url:
        return [state for state, _, _ in inbox(driver)]
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [r[0] for r in await conn.fetch("SELECT state FROM inbox ORDER BY id")]
    finally:
        await conn.close()


def user_edit(driver: Driver, message_id: str, text: str) -> None:
    """The user edits a message of theirs in their private chat."""
    fake = driver.fake  # type: ignore[attr-defined]
    if driver.platform == "telegram":
        fake.user_edit(ALICE.id, int(message_id), text)
    else:
        fake.user_edit(int(message_id), text)


def private_channel(driver: Driver) -> str:
    """Alice's private chat as a channel key."""
    fake = driver.fake  # type: ignore[attr-defined]
    if driver.platform == "telegram":
        return f"telegram:{ALICE.id}"
    return f"discord:{fake.dm_channel(ALICE.id)}"


def sends(driver: Driver) -> int:
    """Message-creating calls the bot made (failed ones included)."""
    fake = driver.fake  # type: ignore[attr-defined]
    if driver.platform == "telegram":
        return len(fake.calls_to("sendMessage"))
    return sum(1 for c in fake.calls if c.method == "POST" and c.path.endswith("/messages"))


def forbid_next(driver: Driver, times: int) -> None:
    """The platform answers the next sends with 403 (the bot was blocked or removed)."""
    fake = driver.fake  # type: ignore[attr-defined]
    if driver.platform == "telegram":
        fake.fail_next("sendMessage", error_code=403,
                       description="Forbidden: bot was blocked by the user", times=times)
    else:
        fake.fail_next("POST", "/channels/*/messages", status=403, times=times,
                       body={"message": "Cannot send messages to this user", "code": 50007})


async def test_403_stops_the_reply_with_one_log_line(bot: Driver,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    forbid_next(bot, times=1)
    before = sends(bot)
    await bot.send_text("are you there?")
    await bot.settle()
    assert bot.replies() == []  # no internal-error message into the forbidden chat
    assert sends(bot) == before + 1  # no retries
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    refusals = [r for r in caplog.records if "refuses" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
    assert inbox(bot)[-1][0] == "failed"
    # nothing else is affected: the next chat is answered
    assert await bot.ask("hello", user=BOB) == "echo: hello"


async def test_403_in_the_middle_of_a_streamed_answer(bot: Driver,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bot.openai.reply("word " * 300)  # long enough to be sent while it streams
    bot.openai.chunk_delay = 0.002
    forbid_next(bot, times=1)
    before = sends(bot)
    await bot.send_text("tell me a lot")
    await bot.settle(timeout=30)
    assert bot.replies() == []
    assert sends(bot) == before + 1
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


@pytest.mark.parametrize("what, kwargs", [
    ("stickers", {"sticker": "😀"}),
    ("locations", {"location": (52.52, 13.405)}),
    ("locations", {"venue": (48.8584, 2.2945, "Eiffel Tower", "Champ de Mars, Paris")}),
    ("contacts", {"contact": ("+15550100", "Bob")}),
])
async def test_telegram_stickers_locations_contacts_get_a_short_answer(
        openai_fake: FakeOpenAI, tmp_path: Path, what: str, kwargs: dict[str, object]) -> None:
    driver, fake = await make_driver("telegram", openai_fake, tmp_path)
    try:
        await driver.start()
        driver.mark()
        fake.user_message(ALICE.id, ALICE.id, None, first_name="Alice", **kwargs)
        await driver.settle()
        (reply,) = driver.replies()
        assert reply.text.startswith(f"I can't do anything with {what}.")
        assert openai_fake.chat_requests == []
        # in a group, unaddressed, it is no one's business
        driver.mark()
        fake.user_message(-1001234567890, BOB.id, None, first_name="Bob",
                          chat_type="supergroup", chat_title="Test group", **kwargs)
        await driver.settle()
        assert driver.replies(group=True) == []
    finally:
        await driver.stop()
        await fake.stop()


async def test_an_edit_before_the_answer_is_answered_in_its_new_form(bot: Driver) -> None:
    ai = bot.openai
    ai.hold(0)
    await bot.send_text("first question")
    await ai.wait_until(lambda: ai.held == 1, 10)
    await bot.send_text("second questoin")
    second = bot.last_sent_id
    assert second is not None
    await wait_for(lambda: any(m == second for _, m, _ in inbox(bot)), 10, "the journal")
    user_edit(bot, second, "second question")
    await wait_for(lambda: ("received", second, "second question") in inbox(bot), 10,
                   "the edit to replace the waiting message")
    ai.release()
    await bot.settle(expect=0, timeout=10)
    await wait_for(lambda: len(bot.replies()) == 2, 10)
    assert [r.text for r in bot.replies()] == ["echo: first question", "echo: second question"]
    assert ai.chat_requests[-1]["messages"][-1]["content"] == "second question"
    assert bot.app is not None
    turns = await bot.app.store.recent_turns(private_channel(bot), 10**6)
    assert [t.content for t in turns if t.role == "user"] == ["first question",
                                                             "second question"]


async def test_an_edit_after_the_answer_is_ignored(bot: Driver,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert await bot.ask("what is two plus two?") == "echo: what is two plus two?"
    asked = bot.last_sent_id
    assert asked is not None
    requests = len(bot.openai.chat_requests)
    user_edit(bot, asked, "what is three plus three?")
    await wait_for(lambda: "edit of message" in caplog.text, 10, "the edit to arrive")
    assert [r.text for r in bot.replies()] == ["echo: what is two plus two?"]
    assert len(bot.openai.chat_requests) == requests


@pytest.mark.parametrize("storage", STORAGES)
async def test_unanswered_message_of_a_stopped_run_is_answered_after_restart(
        bot: Driver) -> None:
    """A message still in the journal at start-up (here: its run was stopped while the
    model hung, and the shutdown gave up on it) is answered first after the restart."""
    ai = bot.openai
    ai.hold(0)
    await bot.send_text("are you still there?")
    await ai.wait_until(lambda: ai.held == 1, 10)
    assert bot.app is not None
    bot.app.router.close = _impatient(bot.app.router.close)  # type: ignore[method-assign]
    await bot.stop()
    ai.release()
    assert bot.replies() == []
    await bot.start()
    await wait_for(lambda: len(bot.replies()) == 1, 20, "the answer after the restart")
    assert bot.replies()[0].text == "echo: are you still there?"
    await bot.settle(0)
    assert await journal_states(bot) == ["answered"]


@pytest.mark.parametrize("storage", STORAGES)
async def test_a_photo_left_unanswered_is_read_again_after_restart(bot: Driver) -> None:
    """Files of a stored message are fetched again (Telegram file_id, Discord CDN URL)."""
    import io

    from PIL import Image

    from tests.harness import File

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG")
    ai = bot.openai
    ai.hold(0)
    await bot.send_text("what colour is this?", files=[File(buf.getvalue())])
    await ai.wait_until(lambda: ai.held == 1, 10)
    assert bot.app is not None
    bot.app.router.close = _impatient(bot.app.router.close)  # type: ignore[method-assign]
    await bot.stop()
    ai.release()
    await bot.start()
    await wait_for(lambda: len(bot.replies()) == 1, 20, "the answer after the restart")
    assert bot.replies()[0].text.endswith("what colour is this? [images: 1]")
    assert len([r for r in ai.chat_requests if any(
        isinstance(m["content"], list) for m in r["messages"])]) == 2


def _impatient(close):  # type: ignore[no-untyped-def]
    async def run(timeout: float = 30.0) -> None:
        await close(0.2)

    return run


async def test_stored_update_never_handed_over_is_handled_at_the_next_start(
        openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    """The last run stored and acknowledged an update, then died before the Application
    handed it on: the update is only in the journal, and is answered once at start-up."""
    import json

    from bot.store import Store

    driver, fake = await make_driver("telegram", openai_fake, tmp_path)
    try:
        fake.user_message(ALICE.id, ALICE.id, "did you get this?", first_name="Alice")
        (update,) = fake.updates
        fake.updates.clear()  # acknowledged by the run that died
        store = Store(str(driver.db_path))
        await store.open()
        await store.inbox_add("telegram", str(update["update_id"]),
                              channel=f"telegram:{ALICE.id}", message_id="1",
                              raw=json.dumps(update))
        await store.close()
        await driver.start()
        await wait_for(lambda: len(driver.replies()) == 1, 20, "the answer")
        assert driver.replies()[0].text == "echo: did you get this?"
        fake.queue_update("message", update["message"])  # Telegram re-delivers it anyway...
        fake.updates[-1]["update_id"] = update["update_id"]
        await fake.wait_until(lambda: fake.pending_updates == 0, 10)
        assert driver.app is not None
        await driver.app.router.wait_idle(10)
        assert len(driver.replies()) == 1  # ...and it is recognised, not answered again
        assert len(openai_fake.chat_requests) == 1
    finally:
        await driver.stop()
        await fake.stop()


@pytest.mark.parametrize("config_text", ["[bot]\nresume_minutes = 0\n"])
async def test_messages_older_than_resume_minutes_are_logged_not_answered(
        openai_fake: FakeOpenAI, tmp_path: Path, config_text: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    driver, fake = await make_driver("telegram", openai_fake, tmp_path, config_text)
    try:
        await driver.start()
        openai_fake.hold(0)
        await driver.send_text("anyone?")
        await openai_fake.wait_until(lambda: openai_fake.held == 1, 10)
        assert driver.app is not None
        driver.app.router.close = _impatient(driver.app.router.close)  # type: ignore[method-assign]
        await driver.stop()
        openai_fake.release()
        await driver.start()
        assert "not answering message 1 in telegram:1001 after the restart" in caplog.text
        assert driver.app is not None
        await driver.app.router.wait_idle(10)
        assert driver.replies() == [] and [s for s, _, _ in inbox(driver)] == ["expired"]
    finally:
        await driver.stop()
        await fake.stop()


async def test_console_answers_what_a_stopped_run_left(openai_fake: FakeOpenAI,
                                                      tmp_path: Path) -> None:
    driver, _ = await make_driver("console", openai_fake, tmp_path)
    try:
        await driver.start()
        openai_fake.hold(0)
        await driver.send_text("still there?")
        await openai_fake.wait_until(lambda: openai_fake.held == 1, 10)
        assert driver.app is not None
        driver.app.router.close = _impatient(driver.app.router.close)  # type: ignore[method-assign]
        await driver.stop()
        openai_fake.release()
        assert driver.replies() == []
        await driver.start()
        await wait_for(lambda: len(driver.replies()) == 1, 20, "the answer")
        assert driver.replies()[0].text == "echo: still there?"
    finally:
        await driver.stop()


@pytest.mark.parametrize("value, error", [
    ("2000", "bot.resume_minutes must be between 0 and 1440"),
    ("-1", "bot.resume_minutes must not be negative"),
    ('"ten"', "bot.resume_minutes must be a whole number"),
])
def test_resume_minutes_is_validated(tmp_path: Path, value: str, error: str) -> None:
    from bot.config import ConfigError, load_config

    path = tmp_path / "config.toml"
    path.write_text(f"[bot]\nresume_minutes = {value}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(path, env={"OPENAI_API_KEY": "sk-x"})


async def test_finished_entries_are_pruned_after_two_days(tmp_path: Path) -> None:
    import time

    from bot.config import load_config
    from bot.journal import KEEP_FINISHED, Journal
    from bot.store import Store

    store = Store(str(tmp_path / "bot.sqlite3"))
    await store.open()
    try:
        config = load_config(None, env={"OPENAI_API_KEY": "sk-x"})
        old_done = await store.inbox_add("discord", "1", channel="discord:9", message_id="1")
        old_open = await store.inbox_add("discord", "2", channel="discord:9", message_id="2")
        new_done = await store.inbox_add("discord", "3", channel="discord:9", message_id="3")
        assert old_done and old_open and new_done
        await store.inbox_set_state([old_done, new_done], "answered")
        await store.db.execute("UPDATE inbox SET received = ? WHERE id IN (?, ?)",
                               (time.time() - KEEP_FINISHED - 60, old_done, old_open))
        await Journal(store, config).recover()
        left = {r.key: r.state for r in [await store.inbox_row(i) for i in (1, 2, 3)] if r}
        # the finished old one is gone; the old unanswered one is given up on (expired, and
        # removed at the next pruning); the recent one stays
        assert left == {"2": "expired", "3": "answered"}
    finally:
        await store.close()


class _Recorder:
    """A Replier stand-in that records what it was asked to do."""

    def __init__(self, edits: bool = True, deletes: bool = True) -> None:
        from dataclasses import replace

        from adapters.console import CAPABILITIES

        self.capabilities = replace(CAPABILITIES, edits=edits)
        self.action_interval = 4.0
        self.action_delay = 0.2
        self.calls: list[tuple[str, str, str]] = []
        self._next = 100
        if not deletes:
            self.delete = None  # type: ignore[assignment]

    async def send(self, markdown: str):  # type: ignore[no-untyped-def]
        from bot.replies import Sent

        self._next += 1
        self.calls.append(("send", str(self._next), markdown))
        return Sent(str(self._next), markdown)

    async def edit(self, sent, markdown: str):  # type: ignore[no-untyped-def]
        from bot.replies import Sent

        self.calls.append(("edit", sent.id, markdown))
        return Sent(sent.id, markdown)

    async def delete(self, sent) -> None:  # type: ignore[no-untyped-def]
        self.calls.append(("delete", sent.id, ""))


async def _journaled(tmp_path: Path, inner: _Recorder, stale: tuple[str, ...]):  # type: ignore[no-untyped-def]
    from bot.config import load_config
    from bot.journal import Journal, JournaledReplier
    from bot.store import Store

    store = Store(str(tmp_path / "j.sqlite3"))
    await store.open()
    entry = await store.inbox_add("discord", "1", channel="discord:9", message_id="1")
    assert entry is not None
    journal = Journal(store, load_config(None, env={"OPENAI_API_KEY": "sk-x"}))
    return store, JournaledReplier(inner, journal, entry, stale)  # type: ignore[arg-type]


async def test_a_cut_reply_is_edited_into_the_answer_and_leftovers_deleted(
        tmp_path: Path) -> None:
    inner = _Recorder()
    store, replier = await _journaled(tmp_path, inner, ("7", "8"))
    try:
        sent = await replier.send("the complete answer")
        await replier.settle()
        assert sent.id == "7"
        assert inner.calls == [("edit", "7", "the complete answer"), ("delete", "8", "")]
        row = await store.inbox_row(1)
        assert row is not None and row.reply_ids == ("7",) and row.state == "answering"
        assert row.partial == "the complete answer"
    finally:
        await store.close()


async def test_a_cut_reply_that_cannot_be_deleted_is_marked(tmp_path: Path) -> None:
    from bot.journal import CUT_MARK

    inner = _Recorder(deletes=False)
    store, replier = await _journaled(tmp_path, inner, ("7", "8"))
    try:
        await replier.send("short")
        await replier.settle()
        assert inner.calls == [("edit", "7", "short"), ("edit", "8", CUT_MARK)]
    finally:
        await store.close()


async def test_without_edits_the_complete_answer_says_the_one_above_was_cut(
        tmp_path: Path) -> None:
    from bot.journal import RESUMED_NOTE

    inner = _Recorder(edits=False)
    store, replier = await _journaled(tmp_path, inner, ("7",))
    try:
        await replier.send("the complete answer")
        await replier.settle()
        assert inner.calls == [("send", "101", f"{RESUMED_NOTE}\n\nthe complete answer")]
    finally:
        await store.close()


async def test_a_delivery_is_bound_to_its_message_with_the_first_reply(
        tmp_path: Path) -> None:
    """A stored Telegram update gets its built message in the same write as its answer's
    first message; an edit that arrived meanwhile stays; edits of a sent reply are not
    written (a restart needs the ids, which do not change)."""
    from dataclasses import replace

    from bot.config import load_config
    from bot.events import Author, ChannelKey, Inbound
    from bot.journal import Journal
    from bot.replies import Sent
    from bot.store import Store

    store = Store(str(tmp_path / "j.sqlite3"))
    await store.open()
    try:
        journal = Journal(store, load_config(None, env={"OPENAI_API_KEY": "sk-x"}))
        assert await journal.delivered("telegram", "500", channel="telegram:5",
                                       message_id="10", raw='{"update_id": 500}')
        inbound = Inbound(id="10", channel=ChannelKey("telegram", "5"),
                          author=Author("1", "Alice"), text="questoin", is_private=True,
                          receipts=("500",))
        replier = await journal.receive(inbound, _Recorder())  # type: ignore[arg-type]
        assert replier is not None
        row = await store.inbox_row(replier.entry_id)
        # until a reply is out, a restart builds the message again from the raw update
        assert row is not None and row.inbound is None and row.state == "received"
        edited = replace(inbound, text="question", receipts=("501",))  # its own update
        await journal.edited(edited, replier)
        changes = store.db.total_changes
        sent = await replier.send("the answer so far")
        assert store.db.total_changes == changes + 1  # bound and progressed in one write
        row = await store.inbox_row(replier.entry_id)
        assert row is not None
        assert (row.state, row.channel, row.message_id, row.reply_ids, row.partial) == (
            "answering", "telegram:5", "10", (sent.id,), "the answer so far")
        assert row.inbound is not None and '"question"' in row.inbound
        await replier.edit(Sent(sent.id), "the whole answer")
        assert store.db.total_changes == changes + 1
        second = await replier.send("and a second message")
        row = await store.inbox_row(replier.entry_id)
        assert row is not None and row.reply_ids == (sent.id, second.id)
        assert row.partial == "the whole answer\n\nand a second message"
    finally:
        await store.close()


async def test_a_polled_update_is_journaled_as_telegram_sent_it(
        openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    """The journal keeps the update from getUpdates' own JSON (not PTB's re-serialised
    object), so a restart rebuilds exactly what Telegram delivered."""
    import copy
    import json

    driver, fake = await make_driver("telegram", openai_fake, tmp_path)
    try:
        await driver.start()
        fake.user_message(ALICE.id, ALICE.id, "keep me as I am", first_name="Alice")
        sent = copy.deepcopy(fake.updates[-1])
        await wait_for(lambda: len(driver.replies()) == 1, 20, "the answer")
        db = _connector(str(driver.db_path))()
        try:
            (raw,) = db.execute("SELECT raw FROM inbox WHERE key = ?",
                                (str(sent["update_id"]),)).fetchone()
        finally:
            db.close()
        assert json.loads(raw) == sent
    finally:
        await driver.stop()
        await fake.stop()
