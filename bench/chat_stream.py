"""Benchmark: CPU the bot spends per streamed chat answer, SDK typed path vs `post()` path.

`bot/ai.py` streams chat completions through `AsyncOpenAI.post(..., cast_to=object)` and
reads chunks as dicts. This measures what that saves against the typed
`chat.completions.create(stream=True)` (same client, same fields read from each chunk).
The fake OpenAI server runs on its own thread and event loop; only the CPU time of the
client's thread is counted (`time.thread_time`), so the fake's work and other processes
on the machine do not count. The two paths alternate, so drift affects both alike.

    .venv/bin/python bench/chat_stream.py [rounds]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.ai import AI, Tokenizer  # noqa: E402
from bot.config import load_config  # noqa: E402
from tests.fakes.openai_api import FakeOpenAI  # noqa: E402

MODEL = "gpt-5.4-mini"
# streamed as the API does, about one token (4 characters) per chunk, plus the role,
# finish and usage chunks
ANSWERS = {"3-token answer (6 chunks)": "Hi there!",
           "200-token answer (203 chunks)": "word " * 160}


def serve(fake: FakeOpenAI, ready: threading.Event, loop: asyncio.AbstractEventLoop) -> None:
    """Run the fake OpenAI server on this thread's own event loop."""
    asyncio.set_event_loop(loop)
    loop.run_until_complete(fake.start())
    ready.set()
    loop.run_forever()


async def via_post(ai: AI, messages: list[dict[str, Any]]) -> str:
    """The bot's path: AI.chat_stream (SDK post, chunks as dicts)."""
    stream = await ai.chat_stream(MODEL, messages, max_tokens=500)
    async for _ in stream:
        pass
    assert stream.completion_tokens
    return stream.text


async def via_typed(ai: AI, messages: list[dict[str, Any]]) -> str:
    """The SDK's typed path, reading the same fields as AI.chat_stream."""
    stream = await ai.client.chat.completions.create(
        model=MODEL, messages=messages, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True}, max_completion_tokens=500)
    text, usage, finish = "", None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            if choice.delta.content:
                text += choice.delta.content
    assert usage and finish
    return text


async def measure(ai: AI, fake: FakeOpenAI, rounds: int) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    paths = {"post() path": via_post, "typed create()": via_typed}
    for label, answer in ANSWERS.items():
        fake.reply_fn(lambda _body, answer=answer: answer)
        cpu: dict[str, list[float]] = {name: [] for name in paths}
        for i in range(rounds + 20):  # the first 20 warm up connections and caches
            for name, run in paths.items():
                t0 = time.thread_time()
                assert await run(ai, messages) == answer
                if i >= 20:
                    cpu[name].append((time.thread_time() - t0) * 1000)
        print(f"{label}, {rounds} answers each, client CPU per answer (median / mean):")
        for name, values in cpu.items():
            print(f"  {name:<15} {statistics.median(values):6.2f} / "
                  f"{statistics.fmean(values):6.2f} ms")
        saved = statistics.median(cpu["typed create()"]) - statistics.median(cpu["post() path"])
        print(f"  post() saves {saved:.2f} ms per answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rounds", nargs="?", type=int, default=100,
                        help="answers per path (default: 100)")
    rounds = parser.parse_args().rounds
    fake = FakeOpenAI()
    fake.chunk_size = 4
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    threading.Thread(target=serve, args=(fake, ready, loop), daemon=True).start()
    ready.wait(30)
    config = load_config(None, env={"OPENAI_API_KEY": fake.api_key,
                                    "OPENAI_BASE_URL": fake.url})

    async def run() -> None:
        ai = AI(config, Tokenizer("estimate"))
        try:
            await measure(ai, fake, rounds)
        finally:
            await ai.close()

    asyncio.run(run())
    asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    main()
