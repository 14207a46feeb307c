"""Benchmark: the bot's own time for a CSV -> chart round trip (files and code).

The bot runs as its own process (`python -m bot`, as deployed, default [assistant]
settings: responses backend, the CJK font found on the system) with the Telegram adapter;
the fake Telegram Bot API and the fake OpenAI server run in this process, as in
bench/voice.py. One iteration is what a user does and sees: a CSV document with the
caption "plot sales by month" arrives in a new private chat; the bot downloads it
(getFile + file download), uploads it to the Files API, makes the chat's container (with
the CJK font), copies the file in, starts the chat's conversation (seeded with history),
runs a streamed background response whose code interpreter "writes" chart.png, downloads
the chart and sends the answer and the photo. The clock stops when both have reached
the fake Bot API. A second iteration in the same chat (`follow-up`) asks for another chart
in the existing conversation and container.

Model time is excluded, and only model time: the fake OpenAI server answers at once and
the time requests spend inside it (including receiving uploads) is measured per
iteration and subtracted. Everything else - both adapters' HTTP, SQLite, the status
logic, the downloads, the upload of the photo - is counted.

    .venv/bin/python bench/assistant.py [iterations]

  target: bot time p50 <= 150 ms
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402
from bench.common import Bench, pct  # noqa: E402
from tests.fakes.openai_assistant import Turn  # noqa: E402

TARGET_MS = 150.0
CSV = ("month,sales\n" + "\n".join(f"2024-{m:02d},{100 + m * 7}" for m in range(1, 13))
       + "\n").encode()


def chart() -> bytes:
    """A 1000x600 PNG, the size of a typical matplotlib figure."""
    buf = io.BytesIO()
    Image.new("RGB", (1000, 600), "white").save(buf, "PNG")
    return buf.getvalue()


class AssistantBench(Bench):
    """Bench plus helpers for assistant answers."""

    def answered_at(self, chat_id: int, before: int, text: str) -> float | None:
        """When both the final text answer and the chart photo had arrived, or None."""
        new = self.tg.messages(chat_id)[before:]
        answer = [m for m in new if m.kind == "text" and m.text.startswith(text)]
        photo = [m for m in new if m.kind == "photo"]
        if not answer or not photo:
            return None
        return max(answer[-1].edits[-1][0], photo[-1].edits[-1][0])

    async def one(self, chat_id: int, png: bytes, *, follow_up: bool) -> tuple[float, float]:
        """One round trip: (end-to-end ms, ms spent inside the fake OpenAI server)."""
        text = f"Sales grow all year ({chat_id}, {follow_up})."
        self.ai.assistant.script(Turn(code="df.plot(); plt.savefig('/mnt/data/chart.png')",
                                      files={"chart.png": png},
                                      text=f"{text} [chart](sandbox:/mnt/data/chart.png)"))
        before = len(self.tg.messages(chat_id))
        inside0 = self.ai.inside
        t0 = time.monotonic()
        if follow_up:
            self.tg.user_message(chat_id, chat_id, "now as bars")
        else:
            self.tg.user_message(chat_id, chat_id, None, caption="plot sales by month",
                                 document=(CSV, "sales.csv", "text/csv"))
        await self.tg.wait_until(lambda: self.answered_at(chat_id, before, text) is not None,
                                 timeout=60)
        done = self.answered_at(chat_id, before, text)
        assert done is not None
        return (done - t0) * 1000, (self.ai.inside - inside0) * 1000


def report(label: str, results: list[tuple[float, float]]) -> None:
    e2e = [r[0] for r in results]
    model = [r[1] for r in results]
    own = [r[0] - r[1] for r in results]
    p50 = statistics.median(own)
    ok = "OK" if p50 <= TARGET_MS else "MISSED"
    print(f"{label}, {len(results)} sequential:")
    print(f"  end to end        p50 {statistics.median(e2e):7.1f} ms  p90 {pct(e2e, 0.9):7.1f} ms")
    print(f"  inside model fake p50 {statistics.median(model):7.1f} ms  (subtracted)")
    print(f"  bot time          p50 {p50:7.1f} ms  p90 {pct(own, 0.9):7.1f} ms  "
          f"max {max(own):7.1f} ms  (target p50 <= {TARGET_MS:.0f} ms: {ok})")


async def main(n: int) -> None:
    png = chart()
    with tempfile.TemporaryDirectory() as tmp:
        async with AssistantBench(Path(tmp)) as b:
            for i in range(3):  # warm up connections, caches, the font, the database
                await b.one(10_000 + i, png, follow_up=False)
            first = [await b.one(20_000 + i, png, follow_up=False) for i in range(n)]
            again = [await b.one(20_000 + i, png, follow_up=True) for i in range(n)]
    print(f"CSV ({len(CSV)} B) -> chart ({len(png) / 1024:.0f} KB PNG), Telegram adapter, "
          "responses backend:")
    report("first file in a new chat (container + font + conversation made)", first)
    report("follow-up in the same chat", again)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("iterations", nargs="?", type=int, default=20,
                        help="round trips to time per case (default: 20)")
    iterations = parser.parse_args().iterations
    common.CONFIG += '\n[assistant]\nbackend = "responses"\n'
    asyncio.run(main(iterations))
