"""Render a real console session to docs/console-session.png (the README's picture).

The bot runs as its own process (`python -m bot --console`), reading the lines below from
a pipe; the model is the test suite's fake OpenAI server with scripted answers, so the
picture is reproducible offline. Everything else shown is the bot's real output.

    .venv/bin/python scripts/render_session.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from tests.fakes.openai_api import FakeOpenAI  # noqa: E402

SESSION = [
    ("Suggest a name for my sourdough starter, and say why in one line.",
     "**Clint Yeastwood**: it is tough, it is patient, and it rises to every occasion."),
    ("Translate that into French.",
     "**Clint Yeastwood** : il est coriace, patient, et il se montre toujours à la hauteur "
     "(il « lève » à chaque occasion)."),
    ("/whoami", None),
    ("/model", None),
]
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf"
COLUMNS = 84


async def transcript() -> list[tuple[str, str]]:
    """(prompt, answer) pairs as the bot printed them.

    One bot process per line, on one database (the conversation carries over, as after a
    restart): each process's output is exactly one answer, blank lines and all.
    """
    fake = FakeOpenAI()
    await fake.start()
    pairs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "USER": "alice",
                   "OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.url,
                   "BOT_DATABASE": str(Path(tmp) / "bot.sqlite3")}
            for prompt, answer in SESSION:
                if answer:
                    fake.reply(answer)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bot", "--console", cwd=tmp, env=env,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE)
                out, err = await asyncio.wait_for(proc.communicate(f"{prompt}\n".encode()), 60)
                if proc.returncode != 0 or not out.strip():
                    raise SystemExit(f"the bot failed on {prompt!r}:\n{err.decode()}")
                pairs.append((prompt, out.decode().strip("\n")))
    finally:
        await fake.stop()
    return pairs


def render(pairs: list[tuple[str, str]], path: Path) -> None:
    """A terminal-like picture: prompts in green, the bot's answers in light grey."""
    font, bold = ImageFont.truetype(FONT, 17), ImageFont.truetype(BOLD, 17)
    rows: list[tuple[str, str]] = [("title", "$ python -m bot --console"), ("gap", "")]
    for prompt, answer in pairs:
        rows += [("you", line) for line in textwrap.wrap("> " + prompt, COLUMNS)]
        for para in answer.splitlines() or [""]:
            rows += [("bot", line) for line in (textwrap.wrap(para, COLUMNS) or [""])]
        rows.append(("gap", ""))
    line_h, pad = 24, 24
    width = int(font.getlength("M") * COLUMNS) + 2 * pad
    height = line_h * len(rows) + 2 * pad + 30
    img = Image.new("RGB", (width, height), "#1e1f29")
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, width, 30], fill="#2c2e3b")
    for i, color in enumerate(("#ff5f56", "#ffbd2e", "#27c93f")):
        draw.ellipse([14 + 22 * i, 9, 26 + 22 * i, 21], fill=color)
    y = 30 + pad
    colors = {"title": "#8be9fd", "you": "#50fa7b", "bot": "#e6e6e6"}
    for kind, text in rows:
        if kind != "gap":
            draw.text((pad, y), text, font=bold if kind == "you" else font, fill=colors[kind])
        y += line_h
    img.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "console-session.png")
    args = parser.parse_args()
    pairs = asyncio.run(transcript())
    render(pairs, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
