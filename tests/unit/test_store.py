"""Storage, on both backends (SQLite and PostgreSQL): budgeted recent history, reset without
loss, survival across reopen, the journal's trigger, usage rollups, memory vectors."""

from __future__ import annotations

import array
import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.errors import StartupError
from bot.store import InboxMark, Store, UsageRow, current_inbox
from bot.store_pg import PgStore, redact

AnyStore = Store | PgStore


@pytest.fixture(params=["sqlite", "postgres"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], AnyStore]:
    """Makes a store on this test's database (call again to reopen the same one)."""
    if request.param == "sqlite":
        path = str(tmp_path / "s.db")
        return lambda: Store(path)
    url = request.getfixturevalue("pg_url")
    return lambda: PgStore(url)


async def opened(new_store: Callable[[], AnyStore]) -> AnyStore:
    store = new_store()
    await store.open()
    return store


async def test_recent_turns_fit_budget_and_survive_reopen(
        new_store: Callable[[], AnyStore]) -> None:
    store = await opened(new_store)
    for i in range(10):
        await store.append_turn("c:1", "user", f"m{i}", 10)
    await store.append_turn("c:2", "user", "other", 10)
    turns = await store.recent_turns("c:1", 35)
    assert [t.content for t in turns] == ["m7", "m8", "m9"]
    await store.set_setting("c:1", "persona", "pirate")
    await store.record_usage(UsageRow("console", "c:1", "u", "m", "chat", 5, 6, False))
    await store.close()

    store = await opened(new_store)
    assert [t.content for t in await store.recent_turns("c:1", 1000)][-1] == "m9"
    assert await store.setting("c:1", "persona") == "pirate"
    assert len(await store.usage_rows()) == 1
    await store.reset_context("c:1")
    assert await store.recent_turns("c:1", 1000) == []
    assert await store.count_turns("c:1") == 10
    assert await store.count_turns() == 11
    await store.append_turn("c:1", "user", "after", 10)
    assert [t.content for t in await store.recent_turns("c:1", 1000)] == ["after"]
    assert [t.content for t in await store.recent_turns("c:2", 1000)] == ["other"]
    last = await store.last_turn("c:1")
    assert last is not None and last.content == "after" and last.addressed
    assert await store.last_turn_id("c:1") == last.id
    assert await store.context_marker("c:1") == 10
    await store.close()


async def test_settings_set_clear_and_types(new_store: Callable[[], AnyStore]) -> None:
    store = await opened(new_store)
    assert await store.settings("c") == {}
    await store.set_setting("c", "voice", {"on": True, "speed": 1.5})
    await store.set_setting("c", "model", "gpt-x")
    await store.set_setting("c", "model", "gpt-y")
    assert await store.settings("c") == {"voice": {"on": True, "speed": 1.5}, "model": "gpt-y"}
    await store.set_setting("c", "model", None)
    assert await store.setting("c", "model") is None
    await store.close()


async def test_conversation_ids(new_store: Callable[[], AnyStore]) -> None:
    store = await opened(new_store)
    assert await store.conversation_id("c", "responses") is None
    await store.set_conversation_id("c", "responses", "conv_1")
    assert await store.conversation_id("c", "responses") == "conv_1"
    await store.set_conversation_id("c", "responses", "conv_2", anchor=7)
    assert await store.conversation("c", "responses") == ("conv_2", 7)
    await store.set_conversation_id("c", "responses", None)
    assert await store.conversation_id("c", "responses") is None
    await store.set_conversation_id("c", "assistant:thread", "t1")
    await store.set_conversation_id("c", "assistant:vs", "v1")
    await store.set_conversation_id("c", "other", "o1")
    await store.forget_conversations("c", "assistant:")
    assert await store.conversation_id("c", "assistant:thread") is None
    assert await store.conversation_id("c", "assistant:vs") is None
    assert await store.conversation_id("c", "other") == "o1"
    await store.close()


async def test_images_kept_per_channel_with_eviction(new_store: Callable[[], AnyStore]) -> None:
    store = await opened(new_store)
    turn = await store.append_turn("c", "user", "look", 5)
    ids = [await store.add_image("c", bytes([i]), "image/jpeg", 10, 10, 85, turn_id=turn,
                                 message_id=f"m{i}", keep=3) for i in range(5)]
    await store.add_image("d", b"x", "image/png", 1, 1, 85, keep=3)
    kept = await store.last_images("c", 10)
    assert [i.id for i in kept] == ids[:1:-1]  # newest three, newest first
    assert [i.data for i in kept] == [b"\x04", b"\x03", b"\x02"]
    assert [i.id for i in await store.images_by_message("c", "m4")] == ids[-1:]
    assert await store.images_by_message("c", "m0") == []  # evicted
    await store.reset_context("c")
    assert await store.last_images("c", 10) == []
    after = await store.append_turn("c", "user", "new picture", 5)
    await store.add_image("c", b"new", "image/png", 1, 1, 85, turn_id=after)
    assert [i.data for i in await store.last_images("c", 10)] == [b"new"]
    assert len(await store.last_images("d", 10)) == 1
    await store.close()


async def test_answer_turn_ends_its_inbox_entry(new_store: Callable[[], AnyStore]) -> None:
    store = await opened(new_store)
    entry = await store.inbox_add("telegram", "u1", channel=None, message_id=None, raw="{}")
    assert entry is not None
    assert await store.inbox_add("telegram", "u1", channel=None, message_id=None) is None
    await store.inbox_add("telegram", "u2", channel=None, message_id=None, raw="{}")
    bound = await store.inbox_bind("telegram", ["u1", "u2"], channel="telegram:5",
                                   message_id="10", inbound='{"x": 1}', addressed=True)
    assert bound == entry
    assert await store.inbox_bind("telegram", ["u1"], channel="telegram:5", message_id="10",
                                  inbound="{}", addressed=True) is None
    assert [r.id for r in await store.inbox_open()] == [entry]
    mark = InboxMark(entry)
    token = current_inbox.set(mark)
    try:
        await store.append_turn("telegram:5", "user", "hi", 2)
        await store.inbox_progress(entry, ["100"], "Hel")
        row = await store.inbox_row(entry)
        assert row is not None and row.state == "answering" and row.reply_ids == ("100",)
        assert not await store.inbox_answer_stored(entry)
        await store.append_turn("telegram:5", "assistant", "Hello", 2)
    finally:
        current_inbox.reset(token)
    assert mark.answered
    row = await store.inbox_row(entry)
    assert row is not None and row.state == "answered" and row.addressed
    assert await store.inbox_answer_stored(entry)
    assert await store.inbox_open() == []
    found = await store.inbox_find("telegram", "telegram:5", "10")
    assert found is not None and found.id == entry
    assert await store.inbox_channels("telegram", 0) == [("telegram:5", "10")]
    await store.close()


async def test_inbox_discard_expire_prune(new_store: Callable[[], AnyStore]) -> None:
    store = await opened(new_store)
    a = await store.inbox_add("discord", "1", channel="discord:1", message_id="9",
                              inbound="{}", addressed=True)
    b = await store.inbox_add("discord", "2", channel="discord:1", message_id="12",
                              inbound="{}", addressed=True)
    assert a is not None and b is not None
    token = current_inbox.set(InboxMark(a))
    try:
        turn = await store.append_turn("discord:1", "user", "q", 1)
        await store.add_image("discord:1", b"i", "image/png", 1, 1, 1, turn_id=turn)
    finally:
        current_inbox.reset(token)
    assert await store.inbox_discard_turns(a) == 1
    assert await store.count_turns() == 0 and await store.last_images("discord:1", 5) == []
    # message ids compare as numbers: 12 is newer than 9
    assert await store.inbox_channels("discord", 0) == [("discord:1", "12")]
    await store.inbox_set_state([b], "skipped")
    await store.inbox_set_state([a, b], "failed", only_open=True)
    states = [(await store.inbox_row(i)).state for i in (a, b)]  # type: ignore[union-attr]
    assert states == ["failed", "skipped"]
    c = await store.inbox_add("discord", "3", channel="discord:1", message_id="13",
                              inbound="{}")
    expired = await store.inbox_expire(1e12)
    assert [(r.id, r.state) for r in expired] == [(c, "received")]  # as it was
    assert (await store.inbox_row(c)).state == "expired"  # type: ignore[union-attr]
    assert await store.inbox_prune(1e12) == 3
    assert await store.inbox_row(a) is None
    await store.close()


async def test_usage_rollups_and_budgets(new_store: Callable[[], AnyStore]) -> None:
    store = await opened(new_store)
    await store.record_usage(UsageRow("telegram", "telegram:1:7", "u1", "gpt", "chat", 10, 5,
                                      False, cost=0.5, day="2026-01-01"))
    await store.record_usage(UsageRow("telegram", "telegram:1", "u1", "gpt", "chat", 1, 1,
                                      True, cost=None, day="2026-01-01"))
    await store.record_usage(UsageRow("telegram", "telegram:2", "u2", "tts", "speech_out",
                                      0, 0, False, units=12.0, unit="chars", cost=0.25,
                                      day="2026-01-02"))
    rows = await store.usage_rows()
    assert [r.chat for r in rows] == ["telegram:1", "telegram:1", "telegram:2"]
    assert rows[1].estimated and rows[1].cost is None
    by_feature = await store.usage_sums("2026-01-01", "2026-01-31", "feature")
    assert [(s.key, s.requests, s.input_tokens, s.cost, s.unpriced, s.estimated)
            for s in by_feature] == [("chat", 2, 11, 0.5, 1, 1), ("speech_out", 1, 0, 0.25, 0, 0)]
    mine = await store.usage_sums("2026-01-01", "2026-01-31", "day",
                                  user=("telegram", "u1"))
    assert [(s.key, s.requests) for s in mine] == [("2026-01-01", 2)]
    assert await store.usage_cost("2026-01-01", "2026-01-31") == 0.75
    assert await store.usage_cost("2026-01-02", "2026-01-02", chat="telegram:2") == 0.25
    assert len(await store.usage_between(0, 1e12, 2)) == 2
    assert await store.usage_timezone() == "UTC"
    assert await store.redate_usage("Asia/Tokyo", lambda created: "2030-05-05") == 3
    assert await store.usage_timezone() == "Asia/Tokyo"
    assert [(s.key, s.requests) for s in await store.usage_sums(
        "2030-05-05", "2030-05-05", "day")] == [("2030-05-05", 3)]
    await store.set_budget_override("user", "telegram:u1", "day", 2.0, "admin")
    await store.set_budget_override("user", "telegram:u1", "day", 3.0, "admin")
    assert [(o.key, o.amount) for o in await store.budget_overrides()] == [("telegram:u1", 3.0)]
    await store.set_budget_override("user", "telegram:u1", "day", None)
    assert await store.budget_overrides() == []
    assert await store.claim_budget_warning("user", "u1", "2026-01")
    assert not await store.claim_budget_warning("user", "u1", "2026-01")
    await store.close()


async def test_workspace_files(new_store: Callable[[], AnyStore]) -> None:
    store = await opened(new_store)
    assert not await store.has_workspace("c")
    f = await store.add_workspace_file("c", "a.pdf", 10, "application/pdf", "file_1",
                                       searchable=True, author_name="Alice")
    assert await store.has_workspace("c")
    await store.set_container_file("c", f.id, "cfile_1", "/mnt/data/a.pdf")
    [got] = await store.workspace_files("c")
    assert (got.name, got.searchable, got.container_path) == ("a.pdf", True, "/mnt/data/a.pdf")
    assert [w.id for w in await store.workspace_files_before(got.created + 1)] == [f.id]
    await store.remove_workspace_file("c", f.id)
    assert await store.workspace_files("c") == []
    await store.close()


def _vec(*values: float) -> bytes:
    """An 8-dimension float32 vector (sqlite-vec's binary index wants multiples of 8)."""
    return array.array("f", [*values, 0, 0, 0, 0]).tobytes()


async def test_memory_vectors_search_and_forget(new_store: Callable[[], AnyStore]) -> None:
    store = await opened(new_store)
    if not store.vec:
        pytest.skip("sqlite-vec cannot load in this Python")
    ids = [await store.append_turn("c", "user", text, 3)
           for text in ("cats", "dogs", "tax forms", "now")]
    other = await store.append_turn("d", "user", "cats elsewhere", 3)
    assert await store.memory_backlog(0, 2) == [(ids[0], "c", "cats"), (ids[1], "c", "dogs")]
    vectors = [_vec(1, 0, 0, 0), _vec(0.9, 0.1, 0, 0), _vec(0, 0, 1, 0), _vec(1, 0, 0, 0)]
    rows = [(t, "c", "emb", v) for t, v in zip(ids, vectors, strict=True)]
    await store.add_vectors([*rows, (other, "d", "emb", _vec(1, 0, 0, 0))], 8, other)
    assert await store.memory_cursor() == other
    assert await store.memory_count("c") == 4
    assert await store.memory_has_older("c", ids[1]) and not await store.memory_has_older(
        "c", ids[0])
    found = await store.memory_search("c", _vec(1, 0, 0, 0), 8, before=ids[3], k=2)
    assert [r.content for r in found] == ["cats", "dogs"]
    assert found[0].distance == pytest.approx(0, abs=1e-6)
    await store.rebuild_memory_index()
    assert await store.forget_memory("c") == 4
    assert await store.memory_search("c", _vec(1, 0, 0, 0), 8, before=1 << 40, k=2) == []
    assert await store.memory_count("d") == 1
    await store.close()


async def test_pg_migrations_run_once_when_processes_start_together(pg_url: str) -> None:
    stores = [PgStore(pg_url) for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    versions = await stores[0].pool.fetch("SELECT version FROM schema_version ORDER BY 1")
    from bot.store_pg import PG_MIGRATIONS

    assert [r[0] for r in versions] == list(range(1, len(PG_MIGRATIONS) + 1))
    assert stores[0].backend == "postgres"
    for s in stores:
        await s.close()


async def test_pg_missing_pgvector_is_one_clear_startup_line(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bot.store_pg._PGVECTOR", "vector_not_installed")
    with pytest.raises(StartupError) as e:
        await PgStore(pg_url).open()
    assert e.value.exit_code == 2 and "pgvector" in e.value.message


async def test_pg_bad_password_is_blanked(pg_url: str) -> None:
    url = pg_url.replace("postgres:@", "nobody:s3cret-pw@")
    with pytest.raises(StartupError) as e:
        await PgStore(url).open()
    assert e.value.exit_code == 2
    assert "s3cret-pw" not in e.value.message and "nobody:***@" in e.value.message


def test_redact() -> None:
    assert redact("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


async def test_sqlite_backend_name(tmp_path: Path) -> None:
    store: Any = Store(str(tmp_path / "x.db"))
    assert store.backend == "sqlite"


async def test_pg_turns_keep_call_order_while_the_pool_is_busy(pg_url: str) -> None:
    """The chat handler stores the user turn in a task while the model answers; on a pool
    the answer's insert could overtake it. Ids follow the calls, as on SQLite."""
    store = PgStore(pg_url)
    await store.open()
    try:
        busy = await store.pool.acquire()  # the user turn's insert needs a new connection
        user = asyncio.create_task(store.append_turn("c", "user", "question", 1))
        await asyncio.sleep(0)
        await store.pool.release(busy)
        await store.append_turn("c", "assistant", "answer", 1)
        await user
        assert [t.role for t in await store.recent_turns("c", 100)] == ["user", "assistant"]
    finally:
        await store.close()


async def test_pg_a_failed_memory_batch_keeps_what_others_wrote_meanwhile(pg_url: str) -> None:
    """As on SQLite (tests/unit/test_store_transactions.py): a batch whose vector has the
    wrong size fails as a whole, and writes of other coroutines meanwhile stay."""
    store = PgStore(pg_url)
    await store.open()
    try:
        first = await store.append_turn("c:1", "user", "hello", 3)
        await store.add_vectors([(first, "c:1", "m", _vec(1, 0, 0, 0))], 8, first)
        bad = [(first, "c:1", "m", array.array("f", [1, 0, 0]).tobytes())]
        batch = asyncio.create_task(store.add_vectors(bad, 8, first + 1))
        second = await store.append_turn("c:1", "assistant", "hi there", 3)
        await store.set_setting("c:1", "persona", "pirate")
        with pytest.raises(Exception, match=r"(?i)check constraint"):
            await batch
        assert [t.id for t in await store.recent_turns("c:1", 1000)] == [first, second]
        assert await store.setting("c:1", "persona") == "pirate"
        assert await store.memory_cursor() == first  # the failed batch moved nothing
        assert len(await store.memory_search("c:1", _vec(1, 0, 0, 0), 8, before=second, k=3)) == 1
    finally:
        await store.close()


async def test_pg_memory_backlog_waits_at_a_turn_still_being_written(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another connection's insert may commit after a later id: the embedder's cursor must
    not pass it. A fresh gap stops the backlog; an old one (a deleted turn) does not."""
    store = PgStore(pg_url)
    await store.open()
    try:
        first = await store.append_turn("c", "user", "one", 1)
        # an id taken by an insert that has not committed yet
        await store.pool.fetchval("SELECT nextval(pg_get_serial_sequence('turns', 'id'))")
        third = await store.append_turn("c", "user", "three", 1)
        assert await store.memory_backlog(0, 10) == [(first, "c", "one")]
        monkeypatch.setattr("bot.store_pg._IN_FLIGHT_SECONDS", -1.0)  # the gap is old now
        assert [t for t, _, _ in await store.memory_backlog(0, 10)] == [first, third]
    finally:
        await store.close()


def test_loading_sqlite_vec_does_not_pull_in_numpy(tmp_path: Path) -> None:
    """sqlite-vec's package imports numpy (17 MB of RSS the bot never uses): the store
    loads the extension by its file, and a bot process has no numpy."""
    import subprocess
    import sys

    script = (
        "import asyncio, sys\n"
        "from bot.store import Store\n"
        "async def main():\n"
        f"    store = Store({str(tmp_path / 'v.sqlite3')!r})\n"
        "    await store.open()\n"
        "    print(store.vec, 'numpy' in sys.modules)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    vec, numpy = out.stdout.split()
    if vec != "True":
        pytest.skip("sqlite-vec cannot load in this Python")
    assert numpy == "False"
