"""Kill -9 at random moments: does every question still get exactly one complete answer?

The bot runs as its own process (`python -m bot`) against the fake platform and the fake
OpenAI server in this process (tests/crash_harness.py). Each round, M chats ask a question
at once; the answers stream for about --stream seconds; at a random moment between the
questions and a little after the answers should be done, the bot is SIGKILLed and started
again on the same database. Once the journal is empty, every question of the round is
classified from what the users see and what the history holds:

  answered once  one complete answer in the chat, no other message of the bot for it
  doubled        the complete answer shown twice, or stored twice in history
  lost           no complete answer (within --settle seconds of the restart)
  cut            a complete answer, but a cut-off stub of it left beside it

and the restart is timed: spawn -> live on the platform, and spawn -> the round's last
answer complete. Before the first round every chat asks once, so each is a channel the
bot was addressed in (Discord's catch-up reads only those).

    .venv/bin/python bench/crash.py --rounds 100 --chats 5 --platform telegram
    .venv/bin/python bench/crash.py --rounds 100 --chats 5 --platform discord
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.crash_harness import (
    BotProcess,
    Chat,
    Platform,
    answer_for,
    make_platform,
    model_answer,
)
from tests.fakes.openai_api import FakeOpenAI


def classify(platform: Platform, bot: BotProcess, chat: Chat, token: str) -> str:
    """One question's outcome (see the module docstring)."""
    full = answer_for(token)
    shown = [text for _, text in platform.shown(chat)]
    complete = shown.count(full)
    stubs = [t for t in shown if t != full and t and full.startswith(t)]
    stored = bot.query("SELECT COUNT(*) FROM turns WHERE role = 'assistant' AND content = ?",
                       (full,))[0][0]
    if complete > 1 or stored > 1:
        return "doubled"
    if complete == 0:
        return "lost"
    if stubs:
        return "cut"
    return "answered once"


async def wait_round(platform: Platform, bot: BotProcess, asked: dict[str, Chat],
                     timeout: float) -> bool:
    """Until every question shows a complete answer and the journal is empty."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(answer_for(t) in [x for _, x in platform.shown(c)] for t, c in asked.items()) \
                and bot.open_entries() == 0:
            return True
        await asyncio.sleep(0.02)
    return False


async def run(args: argparse.Namespace, name: str) -> dict[str, object]:
    platform = make_platform(name)
    ai = FakeOpenAI()
    await platform.start()
    await ai.start()
    ai.reply_fn(model_answer)
    pieces = len(answer_for("q0")) / ai.chunk_size
    ai.chunk_delay = args.stream / pieces
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    live_times: list[float] = []
    recover_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        bot = BotProcess(platform, ai, Path(tmp))
        await bot.start()
        chats = [Chat(2000 + i, group=(i == 0 and args.group)) for i in range(args.chats)]
        warm = {f"q{i + 1}": c for i, c in enumerate(chats)}
        for token, chat in warm.items():
            platform.send(chat, f"question {token}, please")
        if not await wait_round(platform, bot, warm, args.settle):
            raise SystemExit("warm-up questions were not answered")
        for rnd in range(1, args.rounds + 1):
            asked = {f"q{rnd * 1000 + i}": c for i, c in enumerate(chats)}
            for token, chat in asked.items():
                platform.send(chat, f"question {token}, please")
            await asyncio.sleep(rng.uniform(0.0, args.stream * 1.25))
            await bot.kill()
            t0 = time.monotonic()
            await bot.start()
            live_times.append(time.monotonic() - t0)
            ok = await wait_round(platform, bot, asked, args.settle)
            if ok:
                recover_times.append(time.monotonic() - t0)
            for token, chat in asked.items():
                outcomes[classify(platform, bot, chat, token)] += 1
            if args.verbose:
                print(f"{name} round {rnd}: {dict(outcomes)}", flush=True)
        code = await bot.stop()
        integrity = bot.query("PRAGMA integrity_check")[0][0]
    await ai.stop()
    await platform.stop()
    return {"platform": name, "rounds": args.rounds, "questions": args.rounds * args.chats,
            "outcomes": outcomes, "live": live_times, "recover": recover_times,
            "integrity": integrity, "exit": code}


def report(r: dict[str, object]) -> None:
    outcomes: Counter[str] = r["outcomes"]  # type: ignore[assignment]
    live: list[float] = r["live"]  # type: ignore[assignment]
    rec: list[float] = r["recover"]  # type: ignore[assignment]

    def spread(values: list[float]) -> str:
        if not values:
            return "n/a"
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
        return (f"median {statistics.median(values):.2f} s, p95 {p95:.2f} s, "
                f"max {max(values):.2f} s")

    print(f"{r['platform']}: {r['rounds']} rounds, {r['questions']} questions")
    for key in ("answered once", "doubled", "lost", "cut"):
        print(f"  {key:<14} {outcomes.get(key, 0)}")
    print(f"  restart (spawn -> live):            {spread(live)}")
    print(f"  recovery (spawn -> round answered): {spread(rec)}")
    print(f"  integrity_check {r['integrity']}, exit code on SIGTERM {r['exit']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--chats", type=int, default=5, help="chats in flight per round")
    parser.add_argument("--platform", choices=["telegram", "discord", "both"],
                        default="both")
    parser.add_argument("--stream", type=float, default=4.0,
                        help="seconds an answer streams for")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds after a restart before a question counts as lost")
    parser.add_argument("--group", action="store_true",
                        help="the first chat is the group (the bot is mentioned there)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    names = ["telegram", "discord"] if args.platform == "both" else [args.platform]
    for name in names:
        report(asyncio.run(run(args, name)))


if __name__ == "__main__":
    main()
