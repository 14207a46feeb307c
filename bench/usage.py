"""Benchmark: /usage with 10,000,000 usage rows (target p50 < 50 ms), budget checks, inserts.

Fills a temporary database with N raw usage rows (bulk executemany, not timed) spread
over 400 days, 20,000 users (a few heavy ones) and 2,000 group chats, builds the daily
rollup the trigger would have built, then times through the real Store and handlers:

- `/usage` in a DM: the report text and the 30-day chart PNG, for random users and for
  the heaviest user; the same for a group chat;
- a budget's first look-up of a period (user, chat, whole bot);
- `/usage all` (admin: top users, top chats, per model for the month);
- recording one request (raw row + rollup trigger).

    .venv/bin/python bench/usage.py [--rows 10000000] [--samples 200]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.ai import AI, Tokenizer
from bot.commands import CommandTable
from bot.config import load_config
from bot.context import Context
from bot.events import Author, ChannelKey, Inbound
from bot.replies import Replier
from bot.store import _ROLLUP_STATEMENTS, Store, UsageRow
from bot.usage import Caller, Meter
from handlers.usage import admin_report, usage_report

DAYS = 400
USERS = 20_000
CHATS = 2_000
FEATURES = [("chat", "gpt-5.4-mini", 60), ("vision", "gpt-5.4-mini", 10),
            ("images", "gpt-image-2", 5), ("voice_in", "gpt-transcribe", 10),
            ("speech_out", "gpt-4o-mini-tts", 8), ("chat", "gpt-5.5", 5),
            ("embeddings", "text-embedding-3-small", 2)]
NOW = 1_796_000_000.0  # 2026-11-30


def fill(path: str, rows: int) -> None:
    """Raw rows by executemany with the rollup trigger off, then the rollup in one pass."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA cache_size = -500000")  # 500 MB: the rollup's GROUP BY sorts
    db.execute("PRAGMA journal_mode = OFF")
    (trigger,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'usage_rollup'"
                            ).fetchone()
    db.execute("DROP TRIGGER usage_rollup")
    rng = random.Random(7)
    # UTC day names by day number (the bot computes them with the budget Calendar)
    first = int(NOW // 86400) - DAYS - 1
    day_names = {d: time.strftime("%Y-%m-%d", time.gmtime(d * 86400))
                 for d in range(first, first + DAYS + 3)}
    names = [f[0] for f in FEATURES]
    models = [f[1] for f in FEATURES]
    weights = [f[2] for f in FEATURES]
    # a few heavy users: user k is picked with weight 1 / (k + 10)
    user_weights = [1 / (k + 10) for k in range(USERS)]
    batch_size = 200_000
    done = 0
    t0 = time.monotonic()
    while done < rows:
        n = min(batch_size, rows - done)
        users = rng.choices(range(USERS), user_weights, k=n)
        picks = rng.choices(range(len(FEATURES)), weights, k=n)
        batch: list[tuple[Any, ...]] = []
        for i in range(n):
            created = NOW - rng.random() * DAYS * 86400
            user = users[i]
            platform = "telegram" if user % 3 else "discord"
            if rng.random() < 0.6:
                chat = f"{platform}:{user}"
            else:
                chat = f"{platform}:-{100 + user % CHATS}"
            k = picks[i]
            tokens_in = rng.randint(50, 3000)
            tokens_out = rng.randint(10, 800)
            cost = (tokens_in * 0.75 + tokens_out * 4.5) / 1e6
            batch.append((platform, chat, str(user), models[k], names[k], tokens_in,
                          tokens_out, 0, 0, 0.0, "", cost, created,
                          day_names[int(created // 86400)], chat))
        db.executemany(
            "INSERT INTO usage (platform, channel, user_id, model, feature, prompt_tokens,"
            " completion_tokens, estimated, cached_tokens, units, unit, cost, created, day,"
            " chat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
        db.commit()
        done += n
        print(f"  {done:,} rows ({time.monotonic() - t0:.0f} s)", end="\r", flush=True)
    print()
    t1 = time.monotonic()
    for sql in _ROLLUP_STATEMENTS:
        db.execute(sql)
    db.execute(trigger)
    db.commit()
    (rollup,) = db.execute("SELECT COUNT(*) FROM usage_daily").fetchone()
    print(f"  rollup: {rollup:,} rows in {time.monotonic() - t1:.0f} s")
    db.execute("ANALYZE")
    db.commit()
    db.close()
    _ = names


class NullReplier(Replier):
    """Nothing is sent: only the report's own cost is measured."""


def context(store: Store, ai: AI, caller: Caller) -> Context:
    inbound = Inbound(id="1", channel=ChannelKey(caller.platform, caller.chat.split(":")[1]),
                      author=Author(caller.user_id or "0", "bench"), text="/usage",
                      is_private=caller.private)
    return Context(inbound, NullReplier(), ai.config, store, ai, CommandTable([]))


async def timed(fn: Callable[[], Awaitable[Any]], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def line(label: str, ms: list[float]) -> None:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    print(f"{label:<44} p50 {statistics.median(ms):7.2f} ms   p95 {p95:7.2f} ms")


async def run(rows: int, samples: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.sqlite3")
        store = Store(path)
        await store.open()
        await store.close()
        t0 = time.monotonic()
        print(f"filling {rows:,} usage rows...")
        fill(path, rows)
        size = sqlite3.connect(path).execute(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
        ).fetchone()[0]
        print(f"filled in {time.monotonic() - t0:.0f} s; {size / 1e9:.2f} GB")
        config = load_config(None, env={"OPENAI_API_KEY": "sk-bench"})
        store = Store(path)
        await store.open()
        meter = Meter(config, store, clock=lambda: NOW)
        await meter.open()
        ai = AI(config, Tokenizer("estimate"), meter=meter)
        rng = random.Random(3)

        def dm(user: int) -> Caller:
            platform = "telegram" if user % 3 else "discord"
            return Caller(platform, str(user), f"{platform}:{user}", f"{platform}:{user}")

        def group(chat: int) -> Caller:
            key = f"telegram:-{100 + chat}"
            return Caller("telegram", "1", key, key, private=False)

        users = [rng.randrange(USERS) for _ in range(samples)]
        chats = [rng.randrange(CHATS) for _ in range(samples)]
        it = iter(users)
        line("/usage in a DM, random user (text + PNG)",
             await timed(lambda: usage_report(context(store, ai, dm(next(it))), dm(0)), samples))
        line("/usage in a DM, heaviest user (text + PNG)",
             await timed(lambda: usage_report(context(store, ai, dm(0)), dm(0)), samples))
        it = iter(chats)

        async def group_report() -> Any:
            who = group(next(it))
            return await usage_report(context(store, ai, who), who)

        line("/usage in a group chat (text + PNG)", await timed(group_report, samples))
        days = meter.calendar.days(NOW, 30)
        it = iter(users)
        line("  of which the rollup query (DM)", await timed(
            lambda: store.usage_sums(days[0], days[-1], "day_feature",
                                     user=("telegram", str(next(it)))), samples))
        month = meter.calendar.period("month", NOW)
        it = iter(users)
        line("budget first look-up, user month", await timed(
            lambda: store.usage_cost(month.first_day, month.last_day,
                                     user=("telegram", str(next(it)))), samples))
        line("budget first look-up, whole bot month", await timed(
            lambda: store.usage_cost(month.first_day, month.last_day), samples))
        line("/usage all (admin, month)",
             await timed(lambda: admin_report(context(store, ai, dm(0))), max(5, samples // 20)))
        counter = iter(range(10**9))

        async def insert() -> None:
            n = next(counter)
            await store.record_usage(UsageRow(
                "telegram", f"telegram:{n % USERS}", str(n % USERS), "gpt-5.4-mini", "chat",
                100, 50, False, cost=0.0003, created=NOW, day=meter.calendar.day_of(NOW)))

        line("record one request (row + rollup trigger)", await timed(insert, samples * 5))
        await ai.close()
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.rows, args.samples))


if __name__ == "__main__":
    main()
