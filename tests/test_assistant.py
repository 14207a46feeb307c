"""Files and code end to end on Telegram, Discord and the console, over both backends:
documents in, the assistant's answer and its charts/files out, the server-side state
(conversation, container, vector store) per channel, what the model was sent.

The fake model is scripted per test with `Turn`s (tests/fakes/openai_assistant.py): the
code interpreter never runs code; a turn names the files the code "wrote".
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from PIL import Image

from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.openai_assistant import AssistantAPI, Turn
from tests.harness import ALICE, BOB, BotReply, Driver, File

CSV = b"month,sales\nJan,10\nFeb,12\nMar,19\n"


def png(colour: str = "red", size: tuple[int, int] = (64, 48)) -> bytes:
    """A real PNG chart stand-in."""
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


CHART = png()


@pytest.fixture(params=["responses"])
def backend(request: pytest.FixtureRequest) -> str:
    """Both backends look the same to the user."""
    return str(request.param)


@pytest.fixture
def config_text(backend: str) -> str:
    return f'[assistant]\nbackend = "{backend}"\ncjk_font = ""\n'


def csv_file(name: str = "sales.csv", data: bytes = CSV) -> File:
    return File(data, name, "text/csv", kind="document")


def fake(openai_fake: FakeOpenAI) -> AssistantAPI:
    return openai_fake.assistant


def texts(replies: list[BotReply]) -> str:
    return "\n".join(r.text for r in replies)


def images_in(replies: list[BotReply]) -> list[bytes]:
    return [f.data for r in replies for f in r.files if f.kind in ("photo", "image")]


def documents_in(replies: list[BotReply]) -> dict[str, bytes]:
    """Sent documents by name (the console saves them as `<n>-<name>`)."""
    return {re.sub(r"^\d+-", "", f.filename): f.data for r in replies for f in r.files
            if f.kind in ("document", "file")}


async def send(chat: Driver, text: str, files: list[File] | None = None,
               **kw: Any) -> list[BotReply]:
    """Send, wait until the bot is done, return the new replies."""
    where = {"group": kw.get("group", False), "user": kw.get("user", ALICE)}
    before = len(chat.replies(**where))
    await chat.send_text(text, files=files, **kw)
    await chat.settle()
    return chat.replies(**where)[before:]


def last_request(openai_fake: FakeOpenAI) -> dict[str, Any]:
    bodies = fake(openai_fake).response_requests()
    assert bodies, "the model was never asked"
    return bodies[-1]


def container_of(body: dict[str, Any]) -> str:
    return next(t["container"] for t in body["tools"] if t["type"] == "code_interpreter")


async def test_csv_in_chart_out(chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(code="df = pd.read_csv('/mnt/data/sales.csv'); df.plot()",
                    files={"chart.png": CHART},
                    text="Sales rose every month. [Download the chart](sandbox:/mnt/data/chart.png)"))
    replies = await send(chat, "plot sales by month", [csv_file()])
    shown = texts(replies)
    assert "Sales rose every month. chart.png" in shown
    assert "sandbox:" not in shown
    assert images_in(replies) == [CHART] or _same_picture(images_in(replies), CHART)
    body = last_request(openai_fake)
    assert "plot sales by month" in str(body["input"])
    container = api.containers[container_of(body)]
    held = {f.path: f.data for f in container.files.values()}
    assert held["/mnt/data/sales.csv"] == CSV
    assert "/mnt/data/sales.csv" in body["instructions"]
    assert body["background"] is True and body["stream"] is True
    assert body["conversation"] in api.conversations


def _same_picture(got: list[bytes], want: bytes) -> bool:
    """Telegram may re-encode photos: compare pixels, not bytes."""
    if len(got) != 1:
        return False
    a = Image.open(io.BytesIO(got[0])).convert("RGB")
    b = Image.open(io.BytesIO(want)).convert("RGB")
    return a.size == b.size and a.getpixel((1, 1)) == b.getpixel((1, 1))


async def test_follow_up_continues_the_conversation_and_restart_keeps_it(
        chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(text="It holds monthly sales for Jan-Mar."),
               Turn(text="March was best."), Turn(text="Still March."))
    await send(chat, "what is this?", [csv_file()])
    first = last_request(openai_fake)
    replies = await send(chat, "which month was best?")
    assert "March was best." in texts(replies)
    second = last_request(openai_fake)
    assert second["conversation"] == first["conversation"]
    assert container_of(second) == container_of(first)
    await chat.restart()
    replies = await send(chat, "sure?")
    assert "Still March." in texts(replies)
    third = last_request(openai_fake)
    assert third["conversation"] == first["conversation"]
    assert container_of(third) == container_of(first)
    items = api.conversations[first["conversation"]].items
    said = [p.get("text", "") for it in items for p in it.get("content", [])]
    assert any("which month was best?" in s for s in said)


async def test_document_without_caption_is_described(chat: Driver,
                                                     openai_fake: FakeOpenAI) -> None:
    fake(openai_fake).script(Turn(text="Monthly sales for three months. I can chart it."))
    replies = await send(chat, "", [csv_file()])
    assert texts(replies).strip() == "Monthly sales for three months. I can chart it."
    body = last_request(openai_fake)
    assert "two or three short lines" in str(body["input"])
    assert "sales.csv" in str(body["input"])


async def test_files_list_and_clear(chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(text="ok"), Turn(text="ok too"))
    await send(chat, "keep this", [csv_file()])
    await send(chat, "and this", [File(b"# Notes\nalpha beta\n", "notes.md", "text/markdown",
                                       kind="document")])
    listing = texts(await send(chat, "/files"))
    assert "sales.csv" in listing and "notes.md" in listing
    assert "Alice" in listing or "alice" in listing
    assert "KB" in listing or " B," in listing
    uploaded = {f.id for f in api.files.values()}
    conv = last_request(openai_fake)["conversation"]
    cleared = texts(await send(chat, "/files clear"))
    assert "Deleted 2 files" in cleared
    assert uploaded <= set(api.deleted_files)
    assert api.vector_stores == {}
    assert api.live_containers() == []
    assert api.conversations[conv].deleted
    answer = await chat.ask("hello again")
    assert answer.startswith("echo:")  # normal chat carries on


async def test_code_without_files(chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(code="print(2**200)", text="2^200 = 1606938044258990275541962092341162602522202993782792835301376"))
    replies = await send(chat, "/code what is 2^200 exactly")
    assert "1606938044258990275541962092341162602522202993782792835301376" in texts(replies)
    body = last_request(openai_fake)
    assert "what is 2^200 exactly" in str(body["input"])
    assert "python tool" in body["instructions"]


async def test_code_returns_other_files_as_documents(chat: Driver,
                                                     openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    table = b"x,y\n1,2\n"
    api.script(Turn(code="df.to_csv('/mnt/data/result.csv')", files={"result.csv": table},
                    text="Saved [result.csv](sandbox:/mnt/data/result.csv)."))
    replies = await send(chat, "/code make a table of x and y")
    assert documents_in(replies).get("result.csv") == table
    assert "Saved result.csv." in texts(replies)
