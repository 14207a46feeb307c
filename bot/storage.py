"""Which database the bot uses: `open_store(config)` picks SQLite or PostgreSQL.

`[storage] url` / BOT_DATABASE_URL = postgresql://... (or postgres://) -> PostgreSQL
(bot/store_pg.py); a path, sqlite:///path or nothing -> SQLite (bot/store.py) at
`[storage] path` / BOT_DATABASE. Both stores have the same methods; start-up problems are
one StartupError line (exit 2) with any password blanked.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import TYPE_CHECKING

from bot.config import Config
from bot.errors import StartupError

if TYPE_CHECKING:
    from bot.store import Store
    from bot.store_pg import PgStore


def make_store(config: Config) -> Store | PgStore:
    """The store for this configuration, not yet opened."""
    if config.postgres:
        from bot.store_pg import PgStore

        return PgStore(config.database_url)
    from bot.store import Store

    return Store(config.database_path)


async def open_store(config: Config) -> Store | PgStore:
    """The configured store, opened and migrated; StartupError (exit 2) when it cannot be."""
    store = make_store(config)
    if store.backend == "postgres":
        await store.open()  # raises StartupError itself, password blanked
        return store
    from bot.doctor import database_access_error, explain_database_error

    try:
        problem = database_access_error(config.database_path)
        if problem is not None:
            raise problem
        await store.open()
    except (OSError, sqlite3.Error) as e:
        with contextlib.suppress(Exception):
            await store.close()
        raise StartupError(explain_database_error(config.database_path, e), 2) from e
    return store
