"""Benchmark: context assembly time with 1,000,000 stored messages (target p50 <= 5 ms).

Fills a fresh SQLite database with N messages spread over many channels (bulk insert,
not timed), then times the chat handler's context assembly (persona lookup, budgeted
recent-turn query, message list) for random channels through the real Store.

    .venv/bin/python bench/context_assembly.py [--messages 1000000] [--channels 10000]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.ai import AI, Tokenizer
from bot.commands import CommandTable
from bot.config import load_config
from bot.context import Context
from bot.events import Author, ChannelKey, Inbound
from bot.replies import Replier
from bot.store import Store
from handlers.chat import build_messages


def fill(path: str, messages: int, channels: int) -> None:
    """Bulk-insert synthetic history (schema created by the real Store first)."""
    db = sqlite3.connect(path)
    words = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
             "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore"]
    rng = random.Random(1)
    batch = []
    now = time.time()
    for i in range(messages):
        ch = f"telegram:{i % channels}"
        text = " ".join(rng.choices(words, k=rng.randint(5, 60)))
        role = "user" if i % 2 == 0 else "assistant"
        batch.append((ch, role, "1", "Alice", text, len(text) // 3 + 1, None, 1, now))
        if len(batch) >= 50_000:
            db.executemany("INSERT INTO turns (channel, role, author_id, author_name, content,"
                           " tokens, message_id, addressed, created) VALUES"
                           " (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
            batch.clear()
    if batch:
        db.executemany("INSERT INTO turns (channel, role, author_id, author_name, content,"
                       " tokens, message_id, addressed, created) VALUES"
                       " (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
    db.commit()
    db.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--channels", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.sqlite3")
        store = Store(path)
        await store.open()
        await store.close()
        t = time.perf_counter()
        fill(path, args.messages, args.channels)
        print(f"filled {args.messages:,} messages in {args.channels:,} channels "
              f"in {time.perf_counter() - t:.1f} s")
        config = load_config(None, env={"OPENAI_API_KEY": "x"})
        store = Store(path)
        await store.open()
        ai = AI(config, Tokenizer("estimate"))
        rng = random.Random(2)
        times = []
        for _ in range(args.samples):
            chat_id = str(rng.randrange(args.channels))
            inbound = Inbound(id="1", channel=ChannelKey("telegram", chat_id),
                              author=Author("1", "Alice"), text="hi", is_private=True)
            ctx = Context(inbound, Replier(), config, store, ai, CommandTable([]))
            t0 = time.perf_counter()
            messages = await build_messages(ctx, "hi")
            times.append((time.perf_counter() - t0) * 1000)
            assert len(messages) > 1
        await store.close()
        await ai.close()
    times.sort()
    p50 = statistics.median(times)
    p99 = times[int(len(times) * 0.99) - 1]
    verdict = "OK" if p50 <= 5 else "MISSED"
    print(f"context assembly over {args.messages:,} messages: p50 {p50:.2f} ms, "
          f"p99 {p99:.2f} ms (target p50 <= 5 ms: {verdict})")


if __name__ == "__main__":
    asyncio.run(main())
