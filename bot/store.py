"""The only place with SQL: history, channel settings, usage and conversation ids.

One aiosqlite connection in WAL mode, schema as numbered migrations applied at start-up.
Every turn stores its token count when written, so context assembly reads a bounded number
of recent rows through the (channel, id) index and never re-tokenizes old history: its
cost does not grow with the size of the database.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_SET_MEMORY_CURSOR = ("INSERT INTO memory_state (key, value) VALUES ('cursor', ?)"
                      " ON CONFLICT (key) DO UPDATE SET value = excluded.value")

# the daily rollup and day totals from the raw usage rows (migration 3, timezone change)
_ROLLUP_STATEMENTS = (
    "INSERT INTO usage_daily SELECT day, platform, COALESCE(user_id, ''), chat, feature, model,"
    " COUNT(*), SUM(prompt_tokens), SUM(cached_tokens), SUM(completion_tokens), SUM(units),"
    " TOTAL(cost), SUM(cost IS NULL), SUM(estimated)"
    " FROM usage GROUP BY day, platform, COALESCE(user_id, ''), chat, feature, model",
    "INSERT INTO usage_days SELECT day, COUNT(*), TOTAL(cost) FROM usage GROUP BY day",
)
_ROLLUP_FROM_RAW = "".join(f"{sql};\n" for sql in _ROLLUP_STATEMENTS)

MIGRATIONS: list[str] = [
    # 1: history, settings, usage, conversation ids
    """
    CREATE TABLE turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        author_id TEXT,
        author_name TEXT,
        content TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        message_id TEXT,
        addressed INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL
    );
    CREATE INDEX turns_channel_id ON turns (channel, id);
    CREATE TABLE channel_settings (
        channel TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (channel, key)
    ) WITHOUT ROWID;
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created REAL NOT NULL,
        platform TEXT NOT NULL,
        channel TEXT NOT NULL,
        user_id TEXT,
        model TEXT NOT NULL,
        feature TEXT NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        estimated INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX usage_user ON usage (platform, user_id, created);
    CREATE TABLE conversations (
        channel TEXT NOT NULL,
        kind TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        updated REAL NOT NULL,
        PRIMARY KEY (channel, kind)
    ) WITHOUT ROWID;
    """,
    # 2: downscaled copies of images seen or generated in a channel, for follow-ups
    """
    CREATE TABLE images (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        turn_id INTEGER,
        message_id TEXT,
        mime TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        tokens INTEGER NOT NULL,
        source TEXT NOT NULL DEFAULT 'user',
        data BLOB NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX images_channel_id ON images (channel, id);
    CREATE INDEX images_turn ON images (turn_id);
    CREATE INDEX images_message ON images (channel, message_id);
    """,
    # 3: usage costs and billing units, the chat (threads share it), the local day; a
    # daily rollup kept by a trigger so reports never scan raw rows; budget overrides
    # and the 80% warnings already given
    """
    ALTER TABLE usage ADD COLUMN day TEXT NOT NULL DEFAULT '';
    ALTER TABLE usage ADD COLUMN chat TEXT NOT NULL DEFAULT '';
    ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN units REAL NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN unit TEXT NOT NULL DEFAULT '';
    ALTER TABLE usage ADD COLUMN cost REAL;
    UPDATE usage SET
        day = date(created, 'unixepoch'),
        chat = CASE WHEN instr(substr(channel, instr(channel, ':') + 1), ':') > 0
            THEN substr(channel, 1, instr(channel, ':')
                        + instr(substr(channel, instr(channel, ':') + 1), ':') - 1)
            ELSE channel END,
        feature = CASE feature WHEN 'image' THEN 'images' WHEN 'transcribe' THEN 'voice_in'
            WHEN 'translate' THEN 'voice_in' WHEN 'tts' THEN 'speech_out' ELSE feature END;
    CREATE INDEX usage_created ON usage (created);
    CREATE TABLE usage_daily (
        day TEXT NOT NULL,
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        chat TEXT NOT NULL,
        feature TEXT NOT NULL,
        model TEXT NOT NULL,
        requests INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        units REAL NOT NULL,
        cost REAL NOT NULL,
        unpriced INTEGER NOT NULL,
        estimated INTEGER NOT NULL,
        PRIMARY KEY (day, platform, user_id, chat, feature, model)
    ) WITHOUT ROWID;
    CREATE INDEX usage_daily_user ON usage_daily (platform, user_id, day);
    CREATE INDEX usage_daily_chat ON usage_daily (chat, day);
    CREATE TABLE usage_days (
        day TEXT PRIMARY KEY,
        requests INTEGER NOT NULL,
        cost REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE TRIGGER usage_rollup AFTER INSERT ON usage BEGIN
        INSERT INTO usage_daily VALUES (NEW.day, NEW.platform, COALESCE(NEW.user_id, ''),
            NEW.chat, NEW.feature, NEW.model, 1, NEW.prompt_tokens, NEW.cached_tokens,
            NEW.completion_tokens, NEW.units, COALESCE(NEW.cost, 0), NEW.cost IS NULL,
            NEW.estimated)
        ON CONFLICT DO UPDATE SET requests = requests + 1,
            input_tokens = input_tokens + excluded.input_tokens,
            cached_tokens = cached_tokens + excluded.cached_tokens,
            output_tokens = output_tokens + excluded.output_tokens,
            units = units + excluded.units, cost = cost + excluded.cost,
            unpriced = unpriced + excluded.unpriced, estimated = estimated + excluded.estimated;
        INSERT INTO usage_days VALUES (NEW.day, 1, COALESCE(NEW.cost, 0))
        ON CONFLICT DO UPDATE SET requests = requests + 1, cost = cost + excluded.cost;
    END;
    CREATE TABLE usage_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    INSERT INTO usage_meta VALUES ('rollup_timezone', 'UTC');
    CREATE TABLE budget_overrides (
        scope TEXT NOT NULL CHECK (scope IN ('user', 'chat')),
        key TEXT NOT NULL,
        period TEXT NOT NULL CHECK (period IN ('day', 'month')),
        amount REAL NOT NULL,
        set_by TEXT,
        updated REAL NOT NULL,
        PRIMARY KEY (scope, key, period)
    ) WITHOUT ROWID;
    CREATE TABLE budget_warnings (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        period TEXT NOT NULL,
        created REAL NOT NULL,
        PRIMARY KEY (scope, key, period)
    ) WITHOUT ROWID;
    """ + _ROLLUP_FROM_RAW,
    # 4: assistant workspaces: a channel's files on the AI server; the context marker a
    # remote conversation was started at (so /reset starts a new one)
    """
    CREATE TABLE workspace_files (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        name TEXT NOT NULL,
        size INTEGER NOT NULL,
        mime TEXT NOT NULL,
        remote_id TEXT NOT NULL,
        searchable INTEGER NOT NULL DEFAULT 0,
        container_file_id TEXT,
        container_path TEXT,
        author_id TEXT,
        author_name TEXT,
        created REAL NOT NULL
    );
    CREATE INDEX workspace_files_channel ON workspace_files (channel, id);
    CREATE INDEX workspace_files_created ON workspace_files (created);
    ALTER TABLE conversations ADD COLUMN anchor INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: tool rounds kept with the assistant turn they led to; semantic memory vectors
    # (float32 little-endian; the sqlite-vec search index is built from them at start-up)
    """
    ALTER TABLE turns ADD COLUMN tools TEXT;
    CREATE TABLE memory_vectors (
        turn_id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        model TEXT NOT NULL,
        dims INTEGER NOT NULL,
        vector BLOB NOT NULL,
        created REAL NOT NULL
    );
    CREATE INDEX memory_vectors_channel ON memory_vectors (channel, turn_id);
    CREATE TABLE memory_state (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
    # 6: the inbox journal (issue #11): every inbound message from the moment it reached the
    # bot until it is answered, so that a restart answers what a crash left undone, once
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        platform TEXT NOT NULL,
        key TEXT NOT NULL,
        channel TEXT,
        message_id TEXT,
        state TEXT NOT NULL CHECK (state IN ('received', 'answering', 'answered', 'merged',
                                              'skipped', 'expired', 'failed')),
        raw TEXT,
        inbound TEXT,
        addressed INTEGER NOT NULL DEFAULT 0,
        reply_ids TEXT NOT NULL DEFAULT '[]',
        partial TEXT NOT NULL DEFAULT '',
        received REAL NOT NULL,
        updated REAL NOT NULL,
        UNIQUE (platform, key)
    );
    CREATE INDEX inbox_open ON inbox (state) WHERE state IN ('received', 'answering');
    CREATE INDEX inbox_message ON inbox (platform, channel, message_id);
    CREATE INDEX inbox_received ON inbox (received);
    ALTER TABLE turns ADD COLUMN inbox_id INTEGER;
    CREATE INDEX turns_inbox ON turns (inbox_id) WHERE inbox_id IS NOT NULL;
    -- the answer and the end of its message's journal entry are one write: a crash can
    -- never leave an answer in history whose message would be answered again
    CREATE TRIGGER turns_answer_ends_inbox AFTER INSERT ON turns
    WHEN NEW.inbox_id IS NOT NULL AND NEW.role = 'assistant'
    BEGIN
        UPDATE inbox SET state = 'answered', updated = NEW.created WHERE id = NEW.inbox_id;
    END;
    """,
]

# The inbox entry of the message being handled, set by bot/journal.py around its handler
# (asyncio tasks the handler starts inherit it): every turn written meanwhile is tied to
# that message, and the answer's turn closes the entry in the same statement.
@dataclass(slots=True)
class InboxMark:
    """The entry a handler works under; `answered` once its answer's turn is stored."""

    id: int
    answered: bool = False


current_inbox: ContextVar[InboxMark | None] = ContextVar("current_inbox", default=None)


@dataclass(frozen=True, slots=True)
class InboxRow:
    """One journal entry: an inbound message and how far its answer got."""

    id: int
    platform: str
    key: str
    channel: str | None
    message_id: str | None
    state: str
    raw: str | None
    inbound: str | None
    addressed: bool
    reply_ids: tuple[str, ...]
    partial: str
    received: float


@dataclass(frozen=True, slots=True)
class InboxBind:
    """A delivery's built message, written with its answer's first progress (one write
    instead of two; until then a restart rebuilds the message from the raw delivery)."""

    channel: str
    message_id: str
    inbound: str
    addressed: bool


@dataclass(frozen=True, slots=True)
class Turn:
    """One stored message of a channel's history."""

    id: int
    role: str
    author_id: str | None
    author_name: str | None
    content: str
    tokens: int
    addressed: bool
    tools: str | None = None


@dataclass(frozen=True, slots=True)
class Recalled:
    """A stored turn found by semantic search."""

    turn_id: int
    role: str
    author_name: str | None
    content: str
    tokens: int
    created: float
    distance: float


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image kept for a channel (already downscaled for the model)."""

    id: int
    channel: str
    turn_id: int | None
    message_id: str | None
    mime: str
    width: int
    height: int
    tokens: int
    source: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class WorkspaceFile:
    """A file a user added to a channel's assistant workspace (stored on the AI server)."""

    id: int
    channel: str
    name: str
    size: int
    mime: str
    remote_id: str
    searchable: bool
    container_file_id: str | None
    container_path: str | None
    author_id: str | None
    author_name: str | None
    created: float


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One model request: tokens (or other billing units), dollars, who and where.

    `cost` is None when the model has no price; `day` is the local day of the budget
    timezone; `chat` is the channel without its thread (threads share a chat's budget).
    """

    platform: str
    channel: str
    user_id: str | None
    model: str
    feature: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    cached_tokens: int = 0
    units: float = 0.0
    unit: str = ""
    cost: float | None = None
    created: float = 0.0
    day: str = ""
    chat: str = ""


@dataclass(frozen=True, slots=True)
class UsageSum:
    """Usage added up over some group (a feature, a model, a user, a day...)."""

    key: str
    requests: int
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    units: float
    cost: float
    unpriced: int
    estimated: int


@dataclass(frozen=True, slots=True)
class BudgetOverride:
    """An admin's per-user or per-chat budget (0 = unlimited), replacing the config one."""

    scope: str
    key: str
    period: str
    amount: float


def chat_of(channel: str) -> str:
    """`platform:chat` of a channel key (`platform:chat:thread`)."""
    parts = channel.split(":")
    return ":".join(parts[:2])


class Store:
    """Async SQLite access; open() applies migrations, close() checkpoints."""

    backend = "sqlite"

    def __init__(self, path: str, settings_cache: int = 4096) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        # channel settings are read on every message and written rarely, only through
        # this object: a small LRU of whole settings dicts saves a query per read
        self._settings: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._settings_cap = settings_cache
        # channels known to hold no images: most never do, and chat asks on every message
        self._imageless: set[str] = set()
        # a second, read-only connection for long report queries (admin /usage all, CSV
        # exports): WAL lets it read while the main one keeps serving messages
        self._reports: aiosqlite.Connection | None = None
        # channels known to have an empty assistant workspace (asked on every message)
        self._no_workspace: set[str] = set()
        # remote ids and workspaces are read several times per assistant run and written
        # only through this object: write-through LRUs save a thread hop per read
        self._remote: OrderedDict[tuple[str, str], tuple[str, int] | None] = OrderedDict()
        self._workspaces: OrderedDict[str, list[WorkspaceFile]] = OrderedDict()
        # sqlite-vec loaded: memory search goes through its index (else memory is off)
        self.vec = False
        self._vec_tables: set[int] = set()

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection (open() first)."""
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def open(self) -> None:
        """Open the database, enable WAL and apply pending migrations."""
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # autocommit: each statement is its own transaction (one thread hop, not two);
        # multi-statement work runs in one call on the thread (_atomic)
        self._db = aiosqlite.Connection(_connector(self.path), 64)
        await self._db
        try:
            await self._load_vec()
            await self.db.execute("PRAGMA journal_mode=WAL")
            await self.db.execute("PRAGMA synchronous=NORMAL")
            await self.db.execute("PRAGMA foreign_keys=ON")
            await self.db.execute("PRAGMA busy_timeout=5000")
            await self._migrate()
        except BaseException:  # not a database, read-only...: never leave the thread behind
            await self._db.close()
            self._db = None
            raise

    async def _load_vec(self) -> None:
        """Load the sqlite-vec extension when the package and the SQLite build allow it."""
        try:
            await self.db.enable_load_extension(True)
            await self.db.load_extension(_vec_path())
            await self.db.enable_load_extension(False)
            self.vec = True
        except Exception as e:
            log.warning("sqlite-vec could not be loaded (%s: %s); semantic memory is off",
                        type(e).__name__, e)
            self.vec = False

    async def _migrate(self) -> None:
        cur = await self.db.execute("PRAGMA user_version")
        row = await cur.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            # executescript commits first; the version bump rides in the same script
            await self.db.executescript(
                f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;"
            )

    async def _report_db(self) -> aiosqlite.Connection:
        """The report connection (the main one for an in-memory database)."""
        if self.path == ":memory:":
            return self.db
        if self._reports is None:
            # the same SQLite build as the main connection: two builds in one process do not
            # see each other's POSIX locks on the file, and writes stall
            reports = aiosqlite.Connection(_connector(self.path), 64)
            self._reports = await reports
            await self._reports.execute("PRAGMA query_only=ON")
            await self._reports.execute("PRAGMA busy_timeout=5000")
        return self._reports

    async def close(self) -> None:
        """Commit and close; WAL content is checkpointed so the file stands alone."""
        if self._reports is not None:
            await self._reports.close()
            self._reports = None
        if self._db is not None:
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await self._db.close()
            self._db = None

    async def _atomic(self, work: Callable[[Any], _T]) -> _T:
        """Run several statements as one transaction in a single call on the connection's
        thread.

        The connection is shared by every coroutine in autocommit mode: a BEGIN ... COMMIT
        spread over awaits takes in other coroutines' statements, and its ROLLBACK undoes
        them. (The kill -9 tests caught it: a restart's history clean-up ran inside the
        memory embedder's transaction, whose COMMIT then failed, and the clean-up was lost.)
        aiosqlite has no public call for this; _execute is what its own methods use.
        """
        db = self.db

        def run() -> _T:
            conn = db._conn
            conn.execute("BEGIN")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return result

        return await db._execute(run)

    # --- history -------------------------------------------------------------------------

    async def append_turn(
        self,
        channel: str,
        role: str,
        content: str,
        tokens: int,
        *,
        author_id: str | None = None,
        author_name: str | None = None,
        message_id: str | None = None,
        addressed: bool = True,
        tools: str | None = None,
        setting: tuple[str, Any] | None = None,
    ) -> int:
        """Store one message of the conversation and return its id (`tools`: the JSON tool
        rounds that led to an assistant turn; `setting`: a channel setting written in the
        same transaction, the answer's details for /info, one write less per answer).

        Under a journal entry (current_inbox) the turn is tied to it; an assistant turn
        also marks the entry answered, in the same statement (a trigger).
        """
        mark = current_inbox.get()
        now = time.time()
        row = (channel, role, author_id, author_name, content, tokens, message_id,
               int(addressed), now, tools, mark.id if mark else None)
        sql = ("INSERT INTO turns (channel, role, author_id, author_name, content, tokens,"
               " message_id, addressed, created, tools, inbox_id)"
               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        if setting is None:
            cur = await self.db.execute(sql, row)
            turn_id = int(cur.lastrowid or 0)
        else:
            key, value = setting

            def both(conn: Any) -> int:
                turn = conn.execute(sql, row).lastrowid
                conn.execute(self._UPSERT_SETTING, (channel, key, json.dumps(value), now))
                return int(turn or 0)

            turn_id = await self._atomic(both)
            self._cache_setting(channel, key, value)
        if mark is not None and role == "assistant":
            mark.answered = True
        return turn_id

    async def last_turn(self, channel: str) -> Turn | None:
        """The newest turn since the last /reset, whatever its size."""
        turns = await self.recent_turns(channel, 1 << 62, 1)
        return turns[0] if turns else None

    async def recent_turns(self, channel: str, token_budget: int, limit: int = 200) -> list[Turn]:
        """The newest turns since the last /reset that fit the budget, oldest first.

        One query walking the (channel, id) index backwards, bounded by `limit`, so the
        cost does not depend on how much history is stored.
        """
        start = await self._context_start(channel)
        rows = await self.db.execute_fetchall(
            "SELECT id, role, author_id, author_name, content, tokens, addressed, tools"
            " FROM turns WHERE channel = ? AND id > ? ORDER BY id DESC LIMIT ?",
            (channel, start, limit),
        )
        out: list[Turn] = []
        used = 0
        for r in rows:
            used += r[5]
            if used > token_budget:
                break
            out.append(Turn(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), r[7]))
        out.reverse()
        return out

    async def _context_start(self, channel: str) -> int:
        value = await self.setting(channel, "context_start")
        return int(value) if value is not None else 0

    async def last_turn_id(self, channel: str) -> int:
        """The newest turn id of a channel, /reset or not (0 when none)."""
        rows = await self.db.execute_fetchall(
            "SELECT COALESCE(MAX(id), 0) FROM turns WHERE channel = ?", (channel,))
        return int(rows[0][0]) if rows else 0

    async def reset_context(self, channel: str) -> int:
        """Forget the context from here on; the rows stay (nothing stored is lost)."""
        cur = await self.db.execute("SELECT COALESCE(MAX(id), 0) FROM turns WHERE channel = ?",
                                    (channel,))
        row = await cur.fetchone()
        last = int(row[0]) if row else 0
        await self.set_setting(channel, "context_start", last)
        return last

    async def count_turns(self, channel: str | None = None) -> int:
        """How many turns are stored (all channels, or one)."""
        if channel is None:
            cur = await self.db.execute("SELECT COUNT(*) FROM turns")
        else:
            cur = await self.db.execute("SELECT COUNT(*) FROM turns WHERE channel = ?",
                                        (channel,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    # --- images --------------------------------------------------------------------------

    _IMAGE_COLUMNS = "id, channel, turn_id, message_id, mime, width, height, tokens, source, data"

    async def add_image(
        self, channel: str, data: bytes, mime: str, width: int, height: int, tokens: int, *,
        turn_id: int | None = None, message_id: str | None = None, source: str = "user",
        keep: int = 8,
    ) -> int:
        """Keep an image for follow-ups; only the newest `keep` per channel are kept.

        Eviction is by age within the channel: the oldest image rows are deleted, the
        turns that mentioned them stay (their text is history; the pixels are a cache).
        """
        self._imageless.discard(channel)
        cur = await self.db.execute(
            "INSERT INTO images (channel, turn_id, message_id, mime, width, height, tokens,"
            " source, data, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (channel, turn_id, message_id, mime, width, height, tokens, source, data,
             time.time()),
        )
        image_id = int(cur.lastrowid or 0)
        await self.db.execute(
            "DELETE FROM images WHERE channel = ? AND id NOT IN"
            " (SELECT id FROM images WHERE channel = ? ORDER BY id DESC LIMIT ?)",
            (channel, channel, max(keep, 1)),
        )
        return image_id

    async def images_by_message(self, channel: str, message_id: str) -> list[StoredImage]:
        """Images that were in one platform message of this channel (a reply target)."""
        rows = await self.db.execute_fetchall(
            f"SELECT {self._IMAGE_COLUMNS} FROM images WHERE channel = ? AND message_id = ?"
            " ORDER BY id", (channel, message_id))
        return [StoredImage(*r) for r in rows]

    async def last_images(self, channel: str, limit: int = 1) -> list[StoredImage]:
        """The newest images of a channel since the last /reset, newest first."""
        if channel in self._imageless:
            return []
        start = await self._context_start(channel)
        sql = (f"SELECT {self._IMAGE_COLUMNS} FROM images WHERE channel = ?"
               " AND (turn_id IS NULL OR turn_id > ?)")
        rows = await self.db.execute_fetchall(sql + " ORDER BY id DESC LIMIT ?",
                                              (channel, start, limit))
        if not rows:
            if len(self._imageless) > 100_000:
                self._imageless.clear()
            self._imageless.add(channel)
        return [StoredImage(*r) for r in rows]

    # --- settings ------------------------------------------------------------------------

    async def setting(self, channel: str, key: str) -> Any:
        """One channel setting, or None when unset (the config default applies)."""
        return (await self.settings(channel)).get(key)

    async def settings(self, channel: str) -> dict[str, Any]:
        """All settings of a channel (cached; treat the result as read-only)."""
        cached = self._settings.get(channel)
        if cached is not None:
            self._settings.move_to_end(channel)
            return cached
        cur = await self.db.execute(
            "SELECT key, value FROM channel_settings WHERE channel = ?", (channel,)
        )
        values = {k: json.loads(v) async for k, v in cur}
        self._settings[channel] = values
        if len(self._settings) > self._settings_cap:
            self._settings.popitem(last=False)
        return values

    _UPSERT_SETTING = (
        "INSERT INTO channel_settings (channel, key, value, updated) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (channel, key) DO UPDATE SET value = excluded.value,"
        " updated = excluded.updated")

    async def set_setting(self, channel: str, key: str, value: Any) -> None:
        """Set (or with None, clear) a channel setting."""
        if value is None:
            await self.db.execute(
                "DELETE FROM channel_settings WHERE channel = ? AND key = ?", (channel, key)
            )
        else:
            await self.db.execute(self._UPSERT_SETTING,
                                  (channel, key, json.dumps(value), time.time()))
        self._cache_setting(channel, key, value)

    def _cache_setting(self, channel: str, key: str, value: Any) -> None:
        # write-through (a new dict: callers may hold the old one): a setting written on
        # every answer (last_answer, for /info) would otherwise cost a re-read per message
        cached = self._settings.get(channel)
        if cached is not None:
            updated = {k: v for k, v in cached.items() if k != key}
            if value is not None:
                updated[key] = json.loads(json.dumps(value))
            self._settings[channel] = updated

    # --- usage ---------------------------------------------------------------------------

    _USAGE_COLUMNS = ("platform, channel, user_id, model, feature, prompt_tokens,"
                      " completion_tokens, estimated, cached_tokens, units, unit, cost, created,"
                      " day, chat")
    _SUM_COLUMNS = ("SUM(requests), SUM(input_tokens), SUM(cached_tokens), SUM(output_tokens),"
                    " SUM(units), TOTAL(cost), SUM(unpriced), SUM(estimated)")

    async def record_usage(self, row: UsageRow) -> None:
        """One model request; the trigger adds it to the daily rollup in the same step."""
        created = row.created or time.time()
        day = row.day or time.strftime("%Y-%m-%d", time.gmtime(created))
        await self.db.execute(
            f"INSERT INTO usage ({self._USAGE_COLUMNS}) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.platform, row.channel, row.user_id, row.model, row.feature, row.prompt_tokens,
             row.completion_tokens, int(row.estimated), row.cached_tokens, row.units, row.unit,
             row.cost, created, day, row.chat or chat_of(row.channel)),
        )

    async def usage_rows(self, channel: str | None = None) -> list[UsageRow]:
        """Usage rows, oldest first (for reports and tests)."""
        sql = f"SELECT {self._USAGE_COLUMNS} FROM usage"
        params: tuple[Any, ...] = ()
        if channel is not None:
            sql += " WHERE channel = ?"
            params = (channel,)
        cur = await self.db.execute(sql + " ORDER BY id", params)
        return [UsageRow(*r[:7], bool(r[7]), *r[8:]) async for r in cur]

    async def usage_between(self, start: float, end: float, limit: int) -> list[UsageRow]:
        """Raw rows created in [start, end), oldest first, at most `limit` (exports)."""
        db = await self._report_db()
        rows = await db.execute_fetchall(
            f"SELECT {self._USAGE_COLUMNS} FROM usage WHERE created >= ? AND created < ?"
            " ORDER BY created, id LIMIT ?", (start, end, limit))
        return [UsageRow(*r[:7], bool(r[7]), *r[8:]) for r in rows]

    def _who(self, user: tuple[str, str] | None, chat: str | None) -> tuple[str, list[Any]]:
        if user is not None:
            return " AND platform = ? AND user_id = ?", [user[0], user[1]]
        if chat is not None:
            return " AND chat = ?", [chat]
        return "", []

    async def usage_sums(
        self, first_day: str, last_day: str, by: str, *, user: tuple[str, str] | None = None,
        chat: str | None = None, limit: int = 1000,
    ) -> list[UsageSum]:
        """Rollup totals for days [first_day, last_day] grouped by `by` (feature, model,
        day, day+feature, user, chat), for one user (platform, id), one chat or everyone;
        the most expensive groups first. Whole-bot sums, which read every row of the
        period, go through the report connection."""
        groups = {"feature": "feature", "model": "model", "day": "day",
                  "day_feature": "day || ' ' || feature", "user": "platform || ':' || user_id",
                  "chat": "chat"}
        key = groups[by]
        where, params = self._who(user, chat)
        db = self.db if user is not None or chat is not None else await self._report_db()
        rows = await db.execute_fetchall(
            f"SELECT {key}, {self._SUM_COLUMNS} FROM usage_daily"
            f" WHERE day >= ? AND day <= ?{where} GROUP BY 1"
            " ORDER BY TOTAL(cost) DESC, SUM(requests) DESC LIMIT ?",
            [first_day, last_day, *params, limit])
        return [UsageSum(str(r[0]), *(v or 0 for v in r[1:])) for r in rows]

    async def usage_cost(
        self, first_day: str, last_day: str, *, user: tuple[str, str] | None = None,
        chat: str | None = None,
    ) -> float:
        """Dollars spent over days [first_day, last_day] by a user, a chat or everyone."""
        if user is None and chat is None:
            cur = await self.db.execute(
                "SELECT TOTAL(cost) FROM usage_days WHERE day >= ? AND day <= ?",
                (first_day, last_day))
        else:
            where, params = self._who(user, chat)
            cur = await self.db.execute(
                f"SELECT TOTAL(cost) FROM usage_daily WHERE day >= ? AND day <= ?{where}",
                [first_day, last_day, *params])
        row = await cur.fetchone()
        return float(row[0]) if row else 0.0

    async def usage_timezone(self) -> str:
        """The timezone the stored usage days were computed in."""
        cur = await self.db.execute(
            "SELECT value FROM usage_meta WHERE key = 'rollup_timezone'")
        row = await cur.fetchone()
        return str(row[0]) if row else "UTC"

    async def redate_usage(self, timezone: str, local_day: Callable[[float], str]) -> int:
        """Recompute every row's day for a new budget timezone and rebuild the rollup.

        One pass over the raw rows, done once when `[budgets] timezone` changes.
        """
        await self.db.create_function("local_day", 1, local_day, deterministic=True)

        def redate(conn: Any) -> int:
            changed = conn.execute("UPDATE usage SET day = local_day(created)").rowcount
            for sql in ("DELETE FROM usage_daily", "DELETE FROM usage_days",
                        *_ROLLUP_STATEMENTS):
                conn.execute(sql)
            conn.execute(
                "INSERT INTO usage_meta VALUES ('rollup_timezone', ?) ON CONFLICT (key)"
                " DO UPDATE SET value = excluded.value", (timezone,))
            return int(changed)

        changed = await self._atomic(redate)
        return int(changed or 0)

    # --- budgets -------------------------------------------------------------------------

    async def budget_overrides(self) -> list[BudgetOverride]:
        """Every per-user and per-chat budget an admin set."""
        rows = await self.db.execute_fetchall(
            "SELECT scope, key, period, amount FROM budget_overrides ORDER BY scope, key")
        return [BudgetOverride(r[0], r[1], r[2], float(r[3])) for r in rows]

    async def set_budget_override(self, scope: str, key: str, period: str,
                                  amount: float | None, set_by: str | None = None) -> None:
        """Set (or with None, remove) a per-user or per-chat budget."""
        if amount is None:
            await self.db.execute(
                "DELETE FROM budget_overrides WHERE scope = ? AND key = ? AND period = ?",
                (scope, key, period))
            return
        await self.db.execute(
            "INSERT INTO budget_overrides (scope, key, period, amount, set_by, updated)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (scope, key, period) DO UPDATE SET"
            " amount = excluded.amount, set_by = excluded.set_by, updated = excluded.updated",
            (scope, key, period, amount, set_by, time.time()))

    async def claim_budget_warning(self, scope: str, key: str, period: str) -> bool:
        """True the first time a budget's 80% warning is claimed for a period."""
        cur = await self.db.execute(
            "INSERT OR IGNORE INTO budget_warnings (scope, key, period, created)"
            " VALUES (?, ?, ?, ?)", (scope, key, period, time.time()))
        return cur.rowcount == 1

    # --- conversation ids ----------------------------------------------------------------

    async def conversation_id(self, channel: str, kind: str) -> str | None:
        """A remote conversation/thread id kept for this channel (assistants, responses)."""
        got = await self.conversation(channel, kind)
        return got[0] if got else None

    async def set_conversation_id(self, channel: str, kind: str, remote_id: str | None,
                                  *, anchor: int = 0) -> None:
        """Remember (or with None, forget) a remote conversation id; `anchor` is the history
        marker it was started at."""
        if remote_id is None:
            await self.db.execute(
                "DELETE FROM conversations WHERE channel = ? AND kind = ?", (channel, kind)
            )
        else:
            await self.db.execute(
                "INSERT INTO conversations (channel, kind, remote_id, updated, anchor)"
                " VALUES (?,?,?,?,?) ON CONFLICT (channel, kind) DO UPDATE SET"
                " remote_id = excluded.remote_id, updated = excluded.updated,"
                " anchor = excluded.anchor",
                (channel, kind, remote_id, time.time(), anchor),
            )
        self._remember_remote((channel, kind), None if remote_id is None else (remote_id, anchor))

    async def conversation(self, channel: str, kind: str) -> tuple[str, int] | None:
        """(remote id, anchor) of a remote conversation kept for this channel."""
        key = (channel, kind)
        if key in self._remote:
            self._remote.move_to_end(key)
            return self._remote[key]
        cur = await self.db.execute(
            "SELECT remote_id, anchor FROM conversations WHERE channel = ? AND kind = ?",
            (channel, kind))
        row = await cur.fetchone()
        value = (str(row[0]), int(row[1])) if row else None
        self._remember_remote(key, value)
        return value

    def _remember_remote(self, key: tuple[str, str], value: tuple[str, int] | None) -> None:
        self._remote[key] = value
        self._remote.move_to_end(key)
        if len(self._remote) > self._settings_cap * 4:
            self._remote.popitem(last=False)

    async def forget_conversations(self, channel: str, prefix: str) -> None:
        """Drop every remote id of a channel whose kind starts with `prefix`."""
        await self.db.execute(
            "DELETE FROM conversations WHERE channel = ? AND substr(kind, 1, ?) = ?",
            (channel, len(prefix), prefix))
        for key in [k for k in self._remote if k[0] == channel and k[1].startswith(prefix)]:
            del self._remote[key]

    async def context_marker(self, channel: str) -> int:
        """The channel's current /reset marker (0 before the first /reset)."""
        return await self._context_start(channel)

    # --- assistant workspaces ------------------------------------------------------------

    _WS_COLUMNS = ("id, channel, name, size, mime, remote_id, searchable, container_file_id,"
                   " container_path, author_id, author_name, created")

    async def add_workspace_file(
        self, channel: str, name: str, size: int, mime: str, remote_id: str, *,
        searchable: bool = False, container_file_id: str | None = None,
        container_path: str | None = None, author_id: str | None = None,
        author_name: str | None = None,
    ) -> WorkspaceFile:
        """Record a file uploaded to the AI server for this channel."""
        created = time.time()
        cur = await self.db.execute(
            "INSERT INTO workspace_files (channel, name, size, mime, remote_id, searchable,"
            " container_file_id, container_path, author_id, author_name, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (channel, name, size, mime, remote_id, int(searchable), container_file_id,
             container_path, author_id, author_name, created))
        self._no_workspace.discard(channel)
        self._workspaces.pop(channel, None)
        return WorkspaceFile(int(cur.lastrowid or 0), channel, name, size, mime, remote_id,
                             searchable, container_file_id, container_path, author_id,
                             author_name, created)

    async def workspace_files(self, channel: str) -> list[WorkspaceFile]:
        """A channel's workspace, oldest first (cached; treat it as read-only)."""
        cached = self._workspaces.get(channel)
        if cached is not None:
            self._workspaces.move_to_end(channel)
            return cached
        rows = await self.db.execute_fetchall(
            f"SELECT {self._WS_COLUMNS} FROM workspace_files WHERE channel = ? ORDER BY id",
            (channel,))
        files = [_workspace_file(r) for r in rows]
        self._workspaces[channel] = files
        if len(self._workspaces) > self._settings_cap:
            self._workspaces.popitem(last=False)
        return files

    async def has_workspace(self, channel: str) -> bool:
        """Whether the channel's workspace holds files (asked on every chat message)."""
        if channel in self._no_workspace:
            return False
        if await self.workspace_files(channel):
            return True
        if len(self._no_workspace) > 100_000:
            self._no_workspace.clear()
        self._no_workspace.add(channel)
        return False

    async def set_container_file(self, channel: str, file_id: int,
                                 container_file_id: str | None,
                                 container_path: str | None) -> None:
        """Where a workspace file now lives in the channel's code-interpreter container."""
        await self.db.execute(
            "UPDATE workspace_files SET container_file_id = ?, container_path = ?"
            " WHERE id = ?", (container_file_id, container_path, file_id))
        self._workspaces.pop(channel, None)

    async def remove_workspace_file(self, channel: str, file_id: int) -> None:
        """Forget one workspace file (the caller deleted it on the server)."""
        await self.db.execute("DELETE FROM workspace_files WHERE id = ?", (file_id,))
        self._workspaces.pop(channel, None)

    async def workspace_files_before(self, created: float, limit: int = 500
                                     ) -> list[WorkspaceFile]:
        """Workspace files of every channel added before a time (for expiry)."""
        rows = await self.db.execute_fetchall(
            f"SELECT {self._WS_COLUMNS} FROM workspace_files WHERE created < ?"
            " ORDER BY created LIMIT ?", (created, limit))
        return [_workspace_file(r) for r in rows]


    # --- semantic memory -----------------------------------------------------------------

    async def memory_cursor(self) -> int:
        """The newest turn id the background embedder has dealt with."""
        rows = await self.db.execute_fetchall(
            "SELECT value FROM memory_state WHERE key = 'cursor'")
        return int(rows[0][0]) if rows else 0

    async def set_memory_cursor(self, turn_id: int) -> None:
        """Move the embedder's cursor (only after a batch is stored)."""
        await self.db.execute(_SET_MEMORY_CURSOR, (turn_id,))

    async def memory_backlog(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """Turns not yet embedded: (id, channel, content), oldest first."""
        rows = await self.db.execute_fetchall(
            "SELECT id, channel, content FROM turns WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit))
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def add_vectors(self, rows: list[tuple[int, str, str, bytes]], dims: int,
                          cursor: int) -> None:
        """Store embedded turns (turn id, channel, model, float32 vector) and their search
        index rows, and move the cursor, in one transaction."""
        now = time.time()
        await self._vec_table(dims)
        vec = self.vec

        def add(conn: Any) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO memory_vectors (turn_id, channel, model, dims, vector,"
                " created) VALUES (?, ?, ?, ?, ?, ?)",
                [(t, c, m, dims, v, now) for t, c, m, v in rows])
            if vec:
                conn.executemany(
                    f"DELETE FROM memory_index_{dims} WHERE rowid = ?", [(t,) for t, *_ in rows])
                conn.executemany(
                    f"INSERT INTO memory_index_{dims} (rowid, channel, tid,"
                    " embedding) VALUES (?, ?, ?, vec_quantize_binary(vec_f32(?)))",
                    [(t, c, t, v) for t, c, _m, v in rows])
            conn.execute(_SET_MEMORY_CURSOR, (cursor,))

        await self._atomic(add)

    async def _vec_table(self, dims: int) -> None:
        """The sqlite-vec index for one vector size: binary-quantized vectors partitioned
        by channel (a scan per channel, 1 bit per dimension); the float vectors in
        memory_vectors re-rank its candidates."""
        if not self.vec or dims in self._vec_tables:
            return
        await self.db.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS memory_index_{int(dims)} USING vec0("
            f"channel text partition key, tid integer, embedding bit[{int(dims)}])")
        self._vec_tables.add(dims)

    async def rebuild_memory_index(self) -> int:
        """Index vectors stored while sqlite-vec was unavailable; returns rows added."""
        if not self.vec:
            return 0
        added = 0
        dims_rows = await self.db.execute_fetchall("SELECT DISTINCT dims FROM memory_vectors")
        for (dims,) in dims_rows:
            dims = int(dims)
            await self._vec_table(dims)
            while True:
                # (vector functions lose their type through INSERT ... SELECT: go via Python)
                rows = await self.db.execute_fetchall(
                    "SELECT turn_id, channel, vector FROM memory_vectors WHERE dims = ? AND"
                    f" turn_id NOT IN (SELECT rowid FROM memory_index_{dims}) LIMIT 1000",
                    (dims,))
                if not rows:
                    break
                await self.db.executemany(
                    f"INSERT INTO memory_index_{dims} (rowid, channel, tid, embedding)"
                    " VALUES (?, ?, ?, vec_quantize_binary(vec_f32(?)))",
                    [(r[0], r[1], r[0], r[2]) for r in rows])
                added += len(rows)
        return added

    async def memory_search(self, channel: str, vector: bytes, dims: int, *, before: int,
                            k: int, candidates: int = 16) -> list[Recalled]:
        """This channel's k stored turns (ids < before, since the last /forget) nearest to
        a float32 vector: hamming-distance candidates from the sqlite-vec index, re-ranked
        by exact cosine distance."""
        if not self.vec or k <= 0:
            return []
        await self._vec_table(dims)
        rows = await self.db.execute_fetchall(
            f"WITH candidates AS (SELECT rowid AS id FROM memory_index_{int(dims)}"
            " WHERE embedding MATCH vec_quantize_binary(vec_f32(?1)) AND k = ?2"
            " AND channel = ?3 AND tid < ?4)"
            " SELECT t.id, t.role, t.author_name, t.content, t.tokens, t.created,"
            " vec_distance_cosine(v.vector, vec_f32(?1)) AS d"
            " FROM candidates c JOIN memory_vectors v ON v.turn_id = c.id"
            " JOIN turns t ON t.id = c.id ORDER BY d LIMIT ?5",
            (vector, max(candidates, 4 * k), channel, before, k))
        return [Recalled(int(r[0]), r[1], r[2], r[3], int(r[4]), float(r[5]), float(r[6]))
                for r in rows]

    async def forget_memory(self, channel: str) -> int:
        """Erase a channel's vectors (its turns stay: /reset and /forget differ)."""
        rows = await self.db.execute_fetchall(
            "SELECT DISTINCT dims FROM memory_vectors WHERE channel = ?", (channel,))
        dims_list = [int(r[0]) for r in rows]
        for dims in dims_list:
            await self._vec_table(dims)
        vec = self.vec

        def forget(conn: Any) -> int:
            for dims in dims_list:
                if vec:
                    conn.execute(
                        f"DELETE FROM memory_index_{dims} WHERE rowid IN"
                        " (SELECT turn_id FROM memory_vectors WHERE channel = ? AND dims = ?)",
                        (channel, dims))
            return int(conn.execute("DELETE FROM memory_vectors WHERE channel = ?",
                                    (channel,)).rowcount)

        return max(await self._atomic(forget), 0)

    async def memory_has_older(self, channel: str, before: int) -> bool:
        """Whether any turn of the channel older than `before` is embedded (one index seek:
        without one, recall would cost an embeddings request for nothing)."""
        rows = await self.db.execute_fetchall(
            "SELECT 1 FROM memory_vectors WHERE channel = ? AND turn_id < ? LIMIT 1",
            (channel, before))
        return bool(rows)

    async def memory_count(self, channel: str) -> int:
        """How many of a channel's turns are embedded."""
        rows = await self.db.execute_fetchall(
            "SELECT COUNT(*) FROM memory_vectors WHERE channel = ?", (channel,))
        return int(rows[0][0]) if rows else 0

    # --- inbox journal (crash recovery, bot/journal.py) ------------------------------------

    _INBOX_COLUMNS = ("id, platform, key, channel, message_id, state, raw, inbound, addressed,"
                      " reply_ids, partial, received")

    @staticmethod
    def _inbox_row(r: Any) -> InboxRow:
        return InboxRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]),
                        tuple(json.loads(r[9])), r[10], r[11])

    async def inbox_add(self, platform: str, key: str, *, channel: str | None,
                        message_id: str | None, raw: str | None = None,
                        inbound: str | None = None, addressed: bool = False,
                        state: str = "received") -> int | None:
        """Record a delivery; None when (platform, key) is already known (a re-delivery)."""
        now = time.time()
        cur = await self.db.execute(
            "INSERT INTO inbox (platform, key, channel, message_id, state, raw, inbound,"
            " addressed, received, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (platform, key) DO NOTHING",
            (platform, key, channel, message_id, state, raw, inbound, int(addressed), now, now),
        )
        return int(cur.lastrowid) if cur.rowcount == 1 and cur.lastrowid else None

    async def inbox_bind(self, platform: str, keys: list[str], *, channel: str,
                         message_id: str, inbound: str, addressed: bool) -> int | None:
        """Attach a built message to its stored deliveries (the first carries it, the rest
        of an album are 'merged'); None when it was bound before (handled already)."""
        # fetched in the same call: a write statement left half-stepped between awaits
        # makes another coroutine's COMMIT fail ("SQL statements in progress")
        rows = await self.db.execute_fetchall(
            "UPDATE inbox SET channel = ?, message_id = ?, inbound = ?, addressed = ?,"
            " updated = ? WHERE platform = ? AND key = ? AND inbound IS NULL"
            " AND state = 'received' RETURNING id",
            (channel, message_id, inbound, int(addressed), time.time(), platform, keys[0]),
        )
        if not rows:
            return None
        row = rows[0]
        for key in keys[1:]:
            await self.db.execute(
                "UPDATE inbox SET state = 'merged', updated = ? WHERE platform = ? AND key = ?",
                (time.time(), platform, key))
        return int(row[0])

    async def inbox_set_state(self, ids: list[int], state: str,
                              only_open: bool = False) -> None:
        """Move entries to a state (only_open: leave finished ones as they are)."""
        sql = "UPDATE inbox SET state = ?, updated = ? WHERE id = ?"
        if only_open:
            sql += " AND state IN ('received', 'answering')"
        now = time.time()
        for i in ids:
            await self.db.execute(sql, (state, now, i))

    async def inbox_keys_state(self, platform: str, keys: list[str], state: str) -> None:
        """Finish stored deliveries by their platform key (dropped or merged updates)."""
        now = time.time()
        for key in keys:
            await self.db.execute(
                "UPDATE inbox SET state = ?, updated = ? WHERE platform = ? AND key = ?"
                " AND state IN ('received', 'answering')", (state, now, platform, key))

    async def inbox_progress(self, inbox_id: int, reply_ids: list[str], partial: str,
                             bind: InboxBind | None = None) -> None:
        """The messages sent so far for an answer and their text (to finish a cut reply);
        an entry with part of its answer out is 'answering'. `bind`: the message, when it
        was not stored yet (an edit's newer form, stored meanwhile, is kept)."""
        sql = ("UPDATE inbox SET reply_ids = ?, partial = ?, updated = ?, state = CASE state"
               " WHEN 'received' THEN 'answering' ELSE state END")
        params: tuple[Any, ...] = (json.dumps(reply_ids), partial, time.time())
        if bind is not None:
            sql += (", channel = ?, message_id = ?, inbound = COALESCE(inbound, ?),"
                    " addressed = ?")
            params += (bind.channel, bind.message_id, bind.inbound, int(bind.addressed))
        await self.db.execute(sql + " WHERE id = ?", (*params, inbox_id))

    async def inbox_set_inbound(self, inbox_id: int, inbound: str) -> None:
        """Replace the stored message (an edit arrived before it was answered)."""
        await self.db.execute("UPDATE inbox SET inbound = ?, updated = ? WHERE id = ?",
                              (inbound, time.time(), inbox_id))

    async def inbox_row(self, inbox_id: int) -> InboxRow | None:
        """One entry by id."""
        rows = await self.db.execute_fetchall(
            f"SELECT {self._INBOX_COLUMNS} FROM inbox WHERE id = ?", (inbox_id,))
        return self._inbox_row(rows[0]) if rows else None

    async def inbox_open(self, *, undelivered: bool = False,
                         platform: str | None = None) -> list[InboxRow]:
        """Unfinished entries, oldest first: built messages, or (undelivered) stored
        deliveries that never became one (killed between storing and handing over)."""
        sql = (f"SELECT {self._INBOX_COLUMNS} FROM inbox WHERE state IN ('received',"
               " 'answering') AND inbound IS " + ("NULL AND raw IS NOT NULL" if undelivered
                                                  else "NOT NULL"))
        params: tuple[Any, ...] = ()
        if platform is not None:
            sql += " AND platform = ?"
            params = (platform,)
        rows = await self.db.execute_fetchall(sql + " ORDER BY id", params)
        return [self._inbox_row(r) for r in rows]

    async def inbox_expire(self, before: float) -> list[InboxRow]:
        """Give up on unfinished entries received before `before`; returns them (to log)."""
        rows = await self.db.execute_fetchall(
            f"SELECT {self._INBOX_COLUMNS} FROM inbox WHERE state IN ('received', 'answering')"
            " AND received < ? ORDER BY id", (before,))
        if rows:
            await self.db.execute(
                "UPDATE inbox SET state = 'expired', updated = ? WHERE state IN ('received',"
                " 'answering') AND received < ?", (time.time(), before))
        return [self._inbox_row(r) for r in rows]

    async def inbox_prune(self, before: float) -> int:
        """Forget finished entries received before `before` (the turns stay)."""
        cur = await self.db.execute(
            "DELETE FROM inbox WHERE received < ? AND state NOT IN ('received', 'answering')",
            (before,))
        return cur.rowcount

    async def inbox_find(self, platform: str, channel: str, message_id: str) -> InboxRow | None:
        """The entry that carries a message (for edits)."""
        rows = await self.db.execute_fetchall(
            f"SELECT {self._INBOX_COLUMNS} FROM inbox WHERE platform = ? AND channel = ?"
            " AND message_id = ? AND inbound IS NOT NULL ORDER BY id LIMIT 1",
            (platform, channel, message_id))
        return self._inbox_row(rows[0]) if rows else None

    async def inbox_discard_turns(self, inbox_id: int) -> int:
        """Remove the user turns an unanswered message left in history (it is handled again
        and stores them again), with their images; returns how many."""
        rows = await self.db.execute_fetchall(
            "SELECT id FROM turns WHERE inbox_id = ? AND role = 'user'", (inbox_id,))
        for (turn_id,) in rows:
            await self.db.execute("DELETE FROM images WHERE turn_id = ?", (turn_id,))
            await self.db.execute("DELETE FROM turns WHERE id = ?", (turn_id,))
        return len(rows)

    async def inbox_answer_stored(self, inbox_id: int) -> bool:
        """Whether the message's answer is in history."""
        rows = await self.db.execute_fetchall(
            "SELECT 1 FROM turns WHERE inbox_id = ? AND role = 'assistant' LIMIT 1",
            (inbox_id,))
        return bool(rows)

    async def inbox_channels(self, platform: str, since: float) -> list[tuple[str, str]]:
        """(channel, newest message id seen) of channels where the bot was addressed since
        `since`; message ids compared as numbers (Discord snowflakes)."""
        rows = await self.db.execute_fetchall(
            "SELECT channel, (SELECT message_id FROM inbox i2 WHERE i2.platform = i.platform"
            " AND i2.channel = i.channel ORDER BY CAST(i2.message_id AS INTEGER) DESC LIMIT 1)"
            " FROM inbox i WHERE platform = ? AND received >= ? AND addressed = 1"
            " AND channel IS NOT NULL GROUP BY channel",
            (platform, since))
        return [(r[0], r[1]) for r in rows if r[1] is not None]



def _workspace_file(r: Any) -> WorkspaceFile:
    return WorkspaceFile(int(r[0]), r[1], r[2], int(r[3]), r[4], r[5], bool(r[6]), r[7], r[8],
                         r[9], r[10], float(r[11]))


def _vec_path() -> str:
    """sqlite-vec's loadable extension, found without importing its package: the package
    imports numpy when it is installed (for its own helpers, unused here), which cost the
    bot 17 MB of RSS (bench/load.py memory: 122.5 MB after 10,000 chats, target 120)."""
    spec = importlib.util.find_spec("sqlite_vec")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the sqlite-vec package is not installed")
    return os.path.join(next(iter(spec.submodule_search_locations)), "vec0")


def _connector(path: str) -> Any:
    """sqlite3.connect, or sqlean's drop-in build where this Python's sqlite3 cannot load
    extensions (pyenv builds often lack it) and sqlite-vec is needed."""
    module: Any = sqlite3
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        try:
            import sqlean

            module = sqlean
        except ImportError:
            pass

    def connect() -> Any:
        return module.connect(path, isolation_level=None)

    return connect


# --- whole-table export, for `python -m bot migrate` (bot/migrate.py) ----------------------

async def table_names(store: Store) -> list[str]:
    """The database's own tables (not SQLite's, not the sqlite-vec index, which is rebuilt
    from memory_vectors)."""
    rows = await store.db.execute_fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        " AND name NOT LIKE 'memory_index_%' ORDER BY name")
    return [str(r[0]) for r in rows]


async def table_columns(store: Store, table: str) -> list[str]:
    """A table's columns, in order (`table` must come from table_names)."""
    if table not in await table_names(store):
        raise ValueError(f"no table {table!r}")
    rows = await store.db.execute_fetchall(f'PRAGMA table_info("{table}")')
    return [str(r[1]) for r in rows]


async def table_count(store: Store, table: str) -> int:
    """Rows in a table (`table` must come from table_names)."""
    if table not in await table_names(store):
        raise ValueError(f"no table {table!r}")
    rows = await store.db.execute_fetchall(f'SELECT COUNT(*) FROM "{table}"')
    return int(rows[0][0])


async def table_rows(store: Store, table: str, columns: list[str],
                     batch: int = 2000) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Every row of a table, `batch` at a time (one statement: the bot must be stopped)."""
    if table not in await table_names(store) or not set(columns) <= set(
            await table_columns(store, table)):
        raise ValueError(f"no table {table!r} with columns {columns}")
    names = ", ".join(f'"{c}"' for c in columns)
    async with store.db.execute(f'SELECT {names} FROM "{table}"') as cur:
        while rows := await cur.fetchmany(batch):
            yield [tuple(r) for r in rows]
