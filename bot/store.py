"""The only place with SQL: history, channel settings, usage and conversation ids.

One aiosqlite connection in WAL mode, schema as numbered migrations applied at start-up.
Every turn stores its token count when written, so context assembly reads a bounded number
of recent rows through the (channel, id) index and never re-tokenizes old history: its
cost does not grow with the size of the database.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

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
]


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
class UsageRow:
    """Token usage of one model request."""

    platform: str
    channel: str
    user_id: str | None
    model: str
    feature: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool


class Store:
    """Async SQLite access; open() applies migrations, close() checkpoints."""

    def __init__(self, path: str, settings_cache: int = 4096) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        # channel settings are read on every message and written rarely, only through
        # this object: a small LRU of whole settings dicts saves a query per read
        self._settings: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._settings_cap = settings_cache
        # channels known to hold no images: most never do, and chat asks on every message
        self._imageless: set[str] = set()

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
        # multi-statement work uses explicit BEGIN/COMMIT
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA journal_mode=WAL")
        await self.db.execute("PRAGMA synchronous=NORMAL")
        await self.db.execute("PRAGMA foreign_keys=ON")
        await self.db.execute("PRAGMA busy_timeout=5000")
        await self._migrate()

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

    async def close(self) -> None:
        """Commit and close; WAL content is checkpointed so the file stands alone."""
        if self._db is not None:
            await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await self._db.close()
            self._db = None

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
    ) -> int:
        """Store one message of the conversation and return its id."""
        cur = await self.db.execute(
            "INSERT INTO turns (channel, role, author_id, author_name, content, tokens,"
            " message_id, addressed, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (channel, role, author_id, author_name, content, tokens, message_id,
             int(addressed), time.time()),
        )
        return int(cur.lastrowid or 0)

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
            "SELECT id, role, author_id, author_name, content, tokens, addressed FROM turns"
            " WHERE channel = ? AND id > ? ORDER BY id DESC LIMIT ?",
            (channel, start, limit),
        )
        out: list[Turn] = []
        used = 0
        for r in rows:
            used += r[5]
            if used > token_budget:
                break
            out.append(Turn(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])))
        out.reverse()
        return out

    async def _context_start(self, channel: str) -> int:
        value = await self.setting(channel, "context_start")
        return int(value) if value is not None else 0

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

    async def last_images(self, channel: str, limit: int = 1,
                          source: str | None = None) -> list[StoredImage]:
        """The newest images of a channel since the last /reset, newest first."""
        if channel in self._imageless:
            return []
        start = await self._context_start(channel)
        sql = (f"SELECT {self._IMAGE_COLUMNS} FROM images WHERE channel = ?"
               " AND (turn_id IS NULL OR turn_id > ?)")
        params: list[Any] = [channel, start]
        if source is not None:
            sql += " AND source = ?"
            params.append(source)
        rows = await self.db.execute_fetchall(sql + " ORDER BY id DESC LIMIT ?",
                                              [*params, limit])
        if not rows and source is None:
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

    async def set_setting(self, channel: str, key: str, value: Any) -> None:
        """Set (or with None, clear) a channel setting."""
        if value is None:
            await self.db.execute(
                "DELETE FROM channel_settings WHERE channel = ? AND key = ?", (channel, key)
            )
        else:
            await self.db.execute(
                "INSERT INTO channel_settings (channel, key, value, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (channel, key) DO UPDATE SET value = excluded.value,"
                " updated = excluded.updated",
                (channel, key, json.dumps(value), time.time()),
            )
        self._settings.pop(channel, None)

    # --- usage ---------------------------------------------------------------------------

    async def record_usage(self, row: UsageRow) -> None:
        """One model request's tokens, per platform, channel, user and model."""
        await self.db.execute(
            "INSERT INTO usage (created, platform, channel, user_id, model, feature,"
            " prompt_tokens, completion_tokens, estimated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), row.platform, row.channel, row.user_id, row.model, row.feature,
             row.prompt_tokens, row.completion_tokens, int(row.estimated)),
        )

    async def usage_rows(self, channel: str | None = None) -> list[UsageRow]:
        """Usage rows, oldest first (for reports and tests)."""
        sql = ("SELECT platform, channel, user_id, model, feature, prompt_tokens,"
               " completion_tokens, estimated FROM usage")
        params: tuple[Any, ...] = ()
        if channel is not None:
            sql += " WHERE channel = ?"
            params = (channel,)
        cur = await self.db.execute(sql + " ORDER BY id", params)
        return [UsageRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) async for r in cur]

    # --- conversation ids ----------------------------------------------------------------

    async def conversation_id(self, channel: str, kind: str) -> str | None:
        """A remote conversation/thread id kept for this channel (assistants, responses)."""
        cur = await self.db.execute(
            "SELECT remote_id FROM conversations WHERE channel = ? AND kind = ?", (channel, kind)
        )
        row = await cur.fetchone()
        return str(row[0]) if row else None

    async def set_conversation_id(self, channel: str, kind: str, remote_id: str | None) -> None:
        """Remember (or with None, forget) a remote conversation id."""
        if remote_id is None:
            await self.db.execute(
                "DELETE FROM conversations WHERE channel = ? AND kind = ?", (channel, kind)
            )
        else:
            await self.db.execute(
                "INSERT INTO conversations (channel, kind, remote_id, updated) VALUES (?,?,?,?)"
                " ON CONFLICT (channel, kind) DO UPDATE SET remote_id = excluded.remote_id,"
                " updated = excluded.updated",
                (channel, kind, remote_id, time.time()),
            )
