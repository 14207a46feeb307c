"""The SQL of several bot processes on one PostgreSQL database (issue #14; bot/cluster.py).

The queue is the inbox journal itself (migration 6): ingress stores each message there as
JSON, exactly as the single process does, and wakes the workers with NOTIFY in the same
statement (delivered when it commits). Workers claim channels, not messages: a claim is a
lease row (`cluster_leases`, one per channel) taken with `SELECT ... FOR UPDATE SKIP
LOCKED` over the queued rows, so two workers scanning at once never contend for the same
rows, and a channel's messages are answered by one worker at a time, oldest first.
Leases expire on the database's clock (no clock skew between machines): a worker renews
its leases while it lives; one that dies (kill -9, a frozen VM) loses them after
`[cluster] lease_seconds` and another worker takes the channel over. The polling lease of
a Telegram ingress is a row of the same table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bot.store import InboxRow

# wakes the workers; the payload is the channel (ChannelKey string), prefixed with
# IMMEDIATE for a command that must not wait behind the channel's answer (/cancel)
CHANNEL = "gptbot_queue"
IMMEDIATE = "!"
# open journal entries that carry a built message: what workers answer
_QUEUED = "state IN ('received', 'answering') AND inbound IS NOT NULL"
# a channel's messages in the order the platform numbered them (Telegram message ids grow
# per chat, Discord snowflakes with time), not in the order the ingress stored them: its
# handlers run concurrently, and the cluster test saw a channel's second message stored
# before its first (5 of 50 Discord channels in a 250-message burst)
_IN_CHANNEL = ("CASE WHEN message_id ~ '^[0-9]{1,30}$' THEN message_id::numeric END"
               " NULLS LAST, id")

# appended to bot/store_pg.py's PG_MIGRATIONS as migration 7 (PostgreSQL only)
MIGRATION = """
ALTER TABLE inbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
CREATE INDEX inbox_queue ON inbox (channel, id)
    WHERE state IN ('received', 'answering') AND inbound IS NOT NULL;
CREATE TABLE cluster_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    acquired TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
"""

_COLUMNS = ("id, platform, key, channel, message_id, state, raw, inbound, addressed,"
            " reply_ids, partial, received")


def _row(r: Any) -> InboxRow:
    return InboxRow(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]),
                    tuple(json.loads(r[9] or "[]")), r[10] or "", float(r[11]))


def channel_lease(channel: str) -> str:
    """The lease row's name for a channel."""
    return f"channel:{channel}"


class ClusterStore:
    """Queue, leases and wake-ups over the PostgreSQL store's asyncpg pool."""

    def __init__(self, pool: Any, url: str | None = None) -> None:
        self.pool = pool
        # LISTEN gets a connection of its own when the URL is known (not one of the pool's)
        self.url = url
        self._listener: Any = None

    # --- ingress -------------------------------------------------------------------------

    async def enqueue(self, platform: str, key: str, *, channel: str, message_id: str,
                      inbound: str, addressed: bool, wake: str | None = None) -> int | None:
        """Queue a message that has no stored delivery; None: (platform, key) is known.
        `wake` is the notification's payload (default: the channel)."""
        return await self.pool.fetchval(  # type: ignore[no-any-return]
            "WITH ins AS (INSERT INTO inbox (platform, key, channel, message_id, state,"
            " inbound, addressed, received, updated) VALUES ($1, $2, $3, $4, 'received', $5,"
            " $6, extract(epoch FROM clock_timestamp()), extract(epoch FROM"
            " clock_timestamp())) ON CONFLICT (platform, key) DO NOTHING RETURNING id)"
            " SELECT id, pg_notify($7, $8) FROM ins",
            platform, key, channel, message_id, inbound, int(addressed), CHANNEL,
            wake or channel)

    async def enqueue_bind(self, platform: str, keys: list[str], *, channel: str,
                           message_id: str, inbound: str, addressed: bool,
                           wake: str | None = None) -> int | None:
        """Attach a built message to its stored deliveries and queue it (the rest of an
        album are 'merged'), in one statement; None when another ingress bound it first."""
        entry = await self.pool.fetchval(
            "WITH bound AS (UPDATE inbox SET channel = $1, message_id = $2, inbound = $3,"
            " addressed = $4, updated = extract(epoch FROM clock_timestamp())"
            " WHERE platform = $5 AND key = $6 AND inbound IS NULL AND state = 'received'"
            " RETURNING id),"
            " merged AS (UPDATE inbox SET state = 'merged', updated = extract(epoch FROM"
            " clock_timestamp()) WHERE platform = $5 AND key = ANY($7::text[])"
            " AND EXISTS (SELECT 1 FROM bound))"
            " SELECT id, pg_notify($8, $9) FROM bound",
            channel, message_id, inbound, int(addressed), platform, keys[0], keys[1:],
            CHANNEL, wake or channel)
        return None if entry is None else int(entry)

    async def replace_waiting(self, platform: str, channel: str, message_id: str,
                              inbound: str) -> bool:
        """An edit: the new form replaces a message no worker has started on."""
        entry = await self.pool.fetchval(
            "UPDATE inbox SET inbound = $1, updated = extract(epoch FROM clock_timestamp())"
            " WHERE platform = $2 AND channel = $3 AND message_id = $4 AND state = 'received'"
            " AND inbound IS NOT NULL AND attempts = 0 RETURNING id",
            inbound, platform, channel, message_id)
        return entry is not None

    # --- workers -------------------------------------------------------------------------

    async def claim(self, holder: str, seconds: float, limit: int,
                    platforms: list[str]) -> list[str]:
        """Lease up to about `limit` channels with queued messages that nobody holds (or
        whose holder let the lease expire), oldest message first; returns the channels."""
        rows = await self.pool.fetch(
            f"WITH queued AS (SELECT id, channel FROM inbox i WHERE {_QUEUED}"
            " AND platform = ANY($3::text[]) AND NOT EXISTS (SELECT 1 FROM cluster_leases l"
            " WHERE l.name = 'channel:' || i.channel AND l.expires > clock_timestamp())"
            " ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED)"
            " INSERT INTO cluster_leases (name, holder, expires)"
            " SELECT 'channel:' || channel, $1, clock_timestamp() + make_interval("
            "secs => $2) FROM (SELECT channel FROM queued GROUP BY channel"
            " ORDER BY min(id) LIMIT $5) c"
            " ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder,"
            " expires = EXCLUDED.expires, acquired = clock_timestamp()"
            " WHERE cluster_leases.expires <= clock_timestamp() RETURNING name",
            holder, float(seconds), platforms, limit * 4, limit)
        return [r[0].removeprefix("channel:") for r in rows]

    async def queued(self, channel: str, limit: int = 50) -> list[int]:
        """Ids of a channel's queued messages, oldest first."""
        rows = await self.pool.fetch(
            f"SELECT id FROM inbox WHERE channel = $1 AND {_QUEUED} ORDER BY {_IN_CHANNEL}"
            " LIMIT $2", channel, limit)
        return [int(r[0]) for r in rows]

    async def queued_forms(self, channel: str, limit: int = 50) -> list[tuple[int, str]]:
        """(id, message JSON) of a channel's queued messages, oldest first."""
        rows = await self.pool.fetch(
            f"SELECT id, inbound FROM inbox WHERE channel = $1 AND {_QUEUED}"
            f" ORDER BY {_IN_CHANNEL} LIMIT $2", channel, limit)
        return [(int(r[0]), r[1]) for r in rows]

    async def begin(self, entry: int) -> tuple[InboxRow, int] | None:
        """A worker starts on a message: its current form and how many workers have
        started on it (more than one: taken over from a worker that died); None when it
        is no longer open."""
        r = await self.pool.fetchrow(
            f"UPDATE inbox SET attempts = attempts + 1 WHERE id = $1 AND {_QUEUED}"
            f" RETURNING {_COLUMNS}, attempts", entry)
        return None if r is None else (_row(r), int(r[12]))

    async def expire(self, entry: int) -> None:
        """Give up on a message that waited too long (logged by the caller)."""
        await self.pool.execute(
            "UPDATE inbox SET state = 'expired', updated = extract(epoch FROM"
            f" clock_timestamp()) WHERE id = $1 AND {_QUEUED}", entry)

    # --- leases --------------------------------------------------------------------------

    async def acquire(self, name: str, holder: str, seconds: float) -> tuple[bool, str, float]:
        """Take a lease if free or expired: (taken, current holder, seconds it has left)."""
        r = await self.pool.fetchrow(
            "WITH got AS (INSERT INTO cluster_leases (name, holder, expires) VALUES ($1, $2,"
            " clock_timestamp() + make_interval(secs => $3)) ON CONFLICT (name) DO UPDATE SET"
            " holder = EXCLUDED.holder, expires = EXCLUDED.expires, acquired ="
            " clock_timestamp() WHERE cluster_leases.expires <= clock_timestamp()"
            " OR cluster_leases.holder = EXCLUDED.holder RETURNING holder)"
            " SELECT (SELECT holder FROM got), l.holder, extract(epoch FROM l.expires -"
            " clock_timestamp()) FROM (SELECT 1) one LEFT JOIN cluster_leases l"
            " ON l.name = $1", name, holder, float(seconds))
        if r[0] is not None:
            return True, holder, float(seconds)
        return False, r[1] or "", max(0.0, float(r[2] or 0.0))

    async def renew(self, holder: str, seconds: float) -> set[str]:
        """Extend every lease a process holds; returns the names it still holds."""
        rows = await self.pool.fetch(
            "UPDATE cluster_leases SET expires = clock_timestamp() + make_interval(secs => $2)"
            " WHERE holder = $1 RETURNING name", holder, float(seconds))
        return {r[0] for r in rows}

    async def release(self, name: str, holder: str) -> None:
        """Give a lease back (only if still ours)."""
        await self.pool.execute(
            "DELETE FROM cluster_leases WHERE name = $1 AND holder = $2", name, holder)

    async def release_all(self, holder: str) -> None:
        """A process stopping cleanly gives back everything it holds."""
        await self.pool.execute("DELETE FROM cluster_leases WHERE holder = $1", holder)

    # --- wake-ups ------------------------------------------------------------------------

    async def listen(self, wake: Callable[[str], None]) -> None:
        """Call `wake(channel)` on every NOTIFY of the queue (one connection kept for it)."""
        if self.url:
            import asyncpg

            conn = await asyncpg.connect(self.url)
        else:
            conn = await self.pool.acquire()

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            wake(payload)

        await conn.add_listener(CHANNEL, on_notify)
        self._listener = (conn, on_notify)

    async def unlisten(self) -> None:
        """Stop listening and give the connection back."""
        if self._listener is None:
            return
        conn, callback = self._listener
        self._listener = None
        try:
            await conn.remove_listener(CHANNEL, callback)
        finally:
            if self.url:
                await conn.close()
            else:
                await self.pool.release(conn)
