"""`python -m bot migrate --from sqlite:///old.sqlite3 --to postgresql://...`: move a bot's
SQLite database to PostgreSQL.

Both databases are opened as the bot opens them (so both are at the current schema), every
table is copied with its ids in one PostgreSQL transaction, and the row counts of both
sides are compared at the end. The bot must be stopped while it runs. The SQL lives in the
stores (bot/store.py, bot/store_pg.py); this module only orchestrates and reports.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from bot.config import POSTGRES_SCHEMES
from bot.errors import StartupError


def check_arguments(source: str, target: str) -> str:
    """The SQLite file to read; ValueError (the message for the user) when the arguments
    cannot work."""
    if source.startswith("sqlite:///"):
        path = source.removeprefix("sqlite://")
    elif "://" in source:
        raise ValueError(f"--from must be sqlite:///path or a file path (got {source!r})")
    else:
        path = source
    if not target.startswith(POSTGRES_SCHEMES):
        raise ValueError("--to must be a postgresql://user:password@host/database URL")
    if not Path(path).is_file():
        raise ValueError(f"--from: no SQLite database at {Path(path).absolute()}")
    return path


def migrate_main(source: str, target: str, *, replace: bool = False,
                 out: TextIO = sys.stdout) -> int:
    """The command: check the arguments, copy, report; returns the exit code."""
    import asyncio

    try:
        path = check_arguments(source, target)
    except ValueError as e:
        print(f"error: {e}", file=out)
        return 2
    return asyncio.run(migrate(path, target, replace=replace, out=out))


async def migrate(path: str, target: str, *, replace: bool = False,
                  out: TextIO = sys.stdout) -> int:
    """Copy the SQLite file `path` into PostgreSQL `target`; returns the exit code: 0
    copied and counts equal, 1 counts differ, 2 nothing done (non-empty target, database
    unreachable or unusable)."""
    from bot import store as sqlite_store
    from bot import store_pg

    shown = store_pg.redact(target)
    src = sqlite_store.Store(path)
    dst = store_pg.PgStore(target)
    try:
        await src.open()
        await dst.open()
    except StartupError as e:
        print(f"error: {e.message}", file=out)
        await src.close()
        return 2
    try:
        filled = await store_pg.filled_tables(dst)
        if filled and not replace:
            print(f"error: {shown} already holds bot data ({', '.join(filled)}); nothing "
                  "copied. Use an empty database, or add --replace to empty these tables "
                  "first", file=out)
            return 2
        source_tables = set(await sqlite_store.table_names(src))
        skipped = sorted(source_tables - set(store_pg.TABLES))
        if skipped:
            print(f"not copied (not bot tables): {', '.join(skipped)}", file=out)
        plan = []
        for table in store_pg.TABLES:
            if table not in source_tables:
                continue
            target_columns = await store_pg.table_columns(dst, table)
            columns = [c for c in await sqlite_store.table_columns(src, table)
                       if c in target_columns]
            plan.append((table, columns, sqlite_store.table_rows(src, table, columns)))
        print(f"copying {path} -> {shown}", file=out)
        await store_pg.import_tables(dst, plan, replace=replace)
        mismatched = []
        for table in store_pg.TABLES:
            expected = (await sqlite_store.table_count(src, table)
                        if table in source_tables else 0)
            copied = await store_pg.table_count(dst, table)
            mark = "" if copied == expected else f"  MISMATCH: source has {expected}"
            print(f"  {table:<18} {copied:>9} rows{mark}", file=out)
            if copied != expected:
                mismatched.append(table)
        if mismatched:
            print(f"count check FAILED for {', '.join(mismatched)}", file=out)
            return 1
        print("count check: every table matches; set [storage] url (or BOT_DATABASE_URL) "
              "to the new database and start the bot", file=out)
        return 0
    finally:
        await dst.close()
        await src.close()
