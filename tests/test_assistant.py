"""Files and code end to end on Telegram, Discord and the console, over both backends:
documents in, the assistant's answer and its charts/files out, the server-side state
(conversation, container, vector store) per channel, what the model was sent.

The fake model is scripted per test with `Turn`s (tests/fakes/openai_assistant.py): the
code interpreter never runs code; a turn names the files the code "wrote".
"""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import pytest
from PIL import Image

from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.openai_assistant import AssistantAPI, Turn
from tests.harness import ALICE, BOB, BotReply, Driver, File, wait_for

BIG = "1606938044258990275541962092341162602522202993782792835301376"

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
def extra() -> str:
    """More [assistant] keys for one test (parametrize to change)."""
    return 'cjk_font = ""'


@pytest.fixture
def config_text(backend: str, extra: str) -> str:
    return f'[assistant]\nbackend = "{backend}"\n{extra}\n'


def no_console(chat: Driver, why: str) -> None:
    if chat.platform == "console":
        pytest.skip(why)


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
                    text="Sales rose every month. "
                         "[Download the chart](sandbox:/mnt/data/chart.png)"))
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
    api.script(Turn(code="print(2**200)", text=f"2^200 = {BIG}"))
    replies = await send(chat, "/code what is 2^200 exactly")
    assert BIG in texts(replies)
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


async def test_isolation_a_file_in_one_chat_is_unknown_in_another(
        chat: Driver, openai_fake: FakeOpenAI) -> None:
    no_console(chat, "the terminal is one chat")
    api = fake(openai_fake)
    api.script(Turn(text="Got your sales."))
    await send(chat, "remember this", [csv_file()])
    alice = last_request(openai_fake)
    asked = len(api.response_requests())
    answer = await chat.ask("what is in sales.csv?", user=BOB)
    assert answer.startswith("echo:")  # Bob's chat has no workspace: plain chat
    assert len(api.response_requests()) == asked
    listing = texts(await send(chat, "/files", user=BOB))
    assert "sales.csv" not in listing
    api.script(Turn(text="Bob's numbers."))
    await send(chat, "mine", [csv_file("bob.csv", b"a\n1\n")], user=BOB)
    bob = last_request(openai_fake)
    assert bob["conversation"] != alice["conversation"]
    assert container_of(bob) != container_of(alice)
    held = {f.path for f in api.containers[container_of(bob)].files.values()}
    assert "/mnt/data/sales.csv" not in held and "/mnt/data/bob.csv" in held


async def test_group_document_needs_addressing(chat: Driver, openai_fake: FakeOpenAI) -> None:
    no_console(chat, "the terminal has no groups")
    api = fake(openai_fake)
    await chat.send_text("fyi", files=[csv_file()], user=BOB, group=True)
    await chat.settle()
    assert api.files == {} and chat.replies(group=True) == []
    api.script(Turn(text="Three months of sales."))
    replies = await send(chat, "what is this?", [csv_file()], group=True, mention=True)
    assert "Three months of sales." in texts(replies)
    assert "Alice" in str(last_request(openai_fake)["input"])


async def test_status_message_follows_the_run_and_becomes_the_answer(
        chat: Driver, openai_fake: FakeOpenAI) -> None:
    no_console(chat, "the terminal cannot edit messages")
    api = fake(openai_fake)
    hold = asyncio.Event()
    api.script(Turn(code="plot()", files={"chart.png": CHART}, hold=hold,
                    text="Here is the chart."))
    await chat.send_text("plot it", files=[csv_file()])
    await wait_for(lambda: any("Running code" in r.text for r in chat.replies()), 10,
                   "the status message to say the code is running")
    hold.set()
    await chat.settle()
    replies = chat.replies()
    status = next(r for r in replies if any("Running code" in e for _, e in r.edits)
                  or "Running code" in r.text)
    assert status.text.startswith("Here is the chart.")
    assert not any("Running code" in r.text for r in replies)
    assert images_in(replies)


async def test_cancel_stops_the_run(chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(code="while True: pass", hang=True, text="never"))
    await chat.send_text("/code loop forever")
    await openai_fake.wait_until(lambda: any(
        r.obj["status"] == "in_progress" for r in api.responses.values()), 10)
    await chat.send_text("/cancel")
    await chat.settle()
    shown = texts(chat.replies())
    assert "Stopping the request in progress" in shown
    assert "never" not in shown
    assert [r.obj["status"] for r in api.responses.values()] == ["cancelled"]
    assert openai_fake.requests_to(f"/responses/{next(iter(api.responses))}/cancel")
    assert "Nothing is running here" in texts(await send(chat, "/cancel"))


async def test_failed_run_gets_a_clear_reply(chat: Driver, openai_fake: FakeOpenAI) -> None:
    fake(openai_fake).script(Turn(status="failed", error=("server_error", "Sandbox crashed")))
    replies = await send(chat, "/code divide by zero")
    assert "The assistant run failed: Sandbox crashed" in texts(replies)


async def test_incomplete_run_says_so(chat: Driver, openai_fake: FakeOpenAI) -> None:
    fake(openai_fake).script(Turn(text="The first half of a long answer and then more text",
                                  status="incomplete"))
    replies = await send(chat, "/code explain everything")
    shown = texts(replies)
    assert "The first half" in shown
    assert "incomplete (it hit the length limit)" in shown


@pytest.mark.parametrize("extra", ['cjk_font = ""\nrun_timeout = 1'])
async def test_a_hanging_run_is_cancelled_after_run_timeout(
        chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(hang=True, text="never"))
    replies = await send(chat, "/code think forever")
    assert "took longer than 1 s" in texts(replies)
    assert [r.obj["status"] for r in api.responses.values()] == ["cancelled"]


async def test_expired_container_is_remade_with_the_files(chat: Driver,
                                                          openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(text="Loaded."), Turn(code="df.describe()", text="Mean sales: 13.7"))
    await send(chat, "load it", [csv_file()])
    first = container_of(last_request(openai_fake))
    api.expire_containers()
    replies = await send(chat, "mean sales?")
    assert "Mean sales: 13.7" in texts(replies)
    assert "expired" not in texts(replies).lower()
    second = container_of(last_request(openai_fake))
    assert second != first
    held = {f.path: f.data for f in api.containers[second].files.values()}
    assert held["/mnt/data/sales.csv"] == CSV
    statuses = [r.headers for r in openai_fake.requests_to("/responses")]
    assert len(statuses) == 3  # the load, the refused request, the retry


@pytest.mark.parametrize("extra", ['cjk_font = "auto"'])
async def test_cjk_font_goes_into_the_container_and_the_instructions(
        chat: Driver, openai_fake: FakeOpenAI) -> None:
    from bot.assistant import find_cjk_font

    font = find_cjk_font()
    assert font is not None, "install fonts-noto-cjk (scripts/test does as root)"
    api = fake(openai_fake)
    api.script(Turn(code="plt.title('销售')", files={"图表.png": CHART},
                    text="这是图表 [图表](sandbox:/mnt/data/图表.png)"))
    replies = await send(chat, "画一个每月销售的图表", [csv_file()])
    assert "这是图表 图表.png" in texts(replies)
    body = last_request(openai_fake)
    held = {f.path: f.data for f in api.containers[container_of(body)].files.values()}
    path = f"/mnt/data/{font.name}"
    assert held[path] == font.read_bytes()
    assert path in body["instructions"] and "addfont" in body["instructions"]


async def test_server_without_the_endpoints(chat: Driver, openai_fake: FakeOpenAI) -> None:
    for prefix in ("/files", "/containers", "/vector_stores", "/conversations",
                   "/responses", "/assistants", "/threads"):
        openai_fake.disable(prefix, style="ollama")
    replies = await send(chat, "plot this", [csv_file()])
    assert texts(replies).strip() == "This AI server can't run code or read files."
    replies = await send(chat, "/code 2+2")
    assert texts(replies).strip() == "This AI server can't run code or read files."
    answer = await chat.ask("just chat then")
    assert answer.startswith("echo:")


@pytest.mark.parametrize("extra", ['cjk_font = ""\nmax_file_mb = 1'])
@pytest.mark.parametrize(("name", "data", "reason"), [
    ("big.csv", b"x" * (1024 * 1024 + 10), "too large"),
    ("empty.csv", b"", "empty"),
    ("tool.exe", b"MZ\x90\x00", "not supported"),
    ("report.pdf", b"this is not a pdf", "could not process it"),
])
async def test_bad_files_get_one_clear_reply(chat: Driver, openai_fake: FakeOpenAI, name: str,
                                             data: bytes, reason: str) -> None:
    replies = await send(chat, "look at this", [File(data, name, "application/octet-stream",
                                                     kind="document")])
    shown = texts(replies)
    assert name in shown and reason in shown
    assert len(replies) == 1
    assert fake(openai_fake).response_requests() == []
    assert "No files here yet" in texts(await send(chat, "/files"))
    assert fake(openai_fake).files == {}  # nothing left behind on the server


async def test_usage_rows(chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(code="df.plot()", files={"chart.png": CHART}, search=["sales"],
                    cite=["notes.md"], text="Chart attached."))
    await send(chat, "plot it", [File(b"# Notes\nSales were good.\n", "notes.md",
                                      "text/markdown", kind="document")])
    assert chat.app is not None
    rows = await chat.app.store.usage_rows()
    features = [r.feature for r in rows]
    assert features.count("code_interpreter") == 1
    assert features.count("file_search") == 1
    run = next(r for r in rows if r.feature == "assistant")
    assert run.prompt_tokens > 0 and run.completion_tokens > 0 and not run.estimated
    assert "Sources: notes.md" in texts(chat.replies())


async def test_reset_starts_a_new_conversation_and_keeps_the_files(
        chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    await chat.ask("my name is Alice")
    api.script(Turn(text="Loaded."), Turn(text="Hello again."))
    await send(chat, "load", [csv_file()])
    first = last_request(openai_fake)
    seeded = api.conversations[first["conversation"]].items
    assert any("my name is Alice" in str(i["content"]) for i in seeded)
    await send(chat, "/reset")
    await send(chat, "hi")
    second = last_request(openai_fake)
    assert second["conversation"] != first["conversation"]
    assert not any("my name is Alice" in str(i["content"])
                   for i in api.conversations[second["conversation"]].items)
    assert "/mnt/data/sales.csv" in second["instructions"]


async def test_clear_then_new_file_seeds_history(chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(text="Sales peaked in March."), Turn(text="ok"))
    await send(chat, "when did sales peak?", [csv_file()])
    await send(chat, "/files clear")
    answer = await chat.ask("what did you say about sales?")
    assert "Sales peaked in March." in str(openai_fake.chat_requests[-1]["messages"])
    assert answer.startswith("echo:")
    await send(chat, "again", [csv_file("more.csv")])
    conv = api.conversations[last_request(openai_fake)["conversation"]]
    assert any("Sales peaked in March." in str(i["content"]) for i in conv.items)


async def test_files_add_command_with_an_attachment(chat: Driver,
                                                    openai_fake: FakeOpenAI) -> None:
    """Discord: `/files add` with the file as the slash command's attachment option;
    elsewhere the command is the document's caption."""
    fake(openai_fake).script(Turn(text="Monthly sales; I can chart them."))
    replies = await send(chat, "/files add", [csv_file()])
    assert "Monthly sales; I can chart them." in texts(replies)
    assert "sales.csv" in texts(await send(chat, "/files"))


async def test_files_remove(chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(text="ok"))
    await send(chat, "keep", [csv_file()])
    remote = api.file_named("sales.csv")
    assert remote is not None
    assert "no file named nope.csv" in texts(await send(chat, "/files remove nope.csv"))
    shown = texts(await send(chat, "/files remove sales.csv"))
    assert "Removed sales.csv" in shown and "back to normal chat" in shown
    assert remote.id in api.deleted_files
    assert (await chat.ask("plain chat now")).startswith("echo:")


@pytest.mark.parametrize("extra", ['cjk_font = ""\nfile_ttl_days = 2'])
async def test_old_files_expire_here_and_on_the_server(chat: Driver,
                                                       openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(text="ok"))
    await send(chat, "keep", [csv_file()])
    remote = api.file_named("sales.csv")
    assert remote is not None and remote.expires_at is not None
    assert remote.expires_at - remote.created_at == 2 * 86_400  # the server expires it too
    assert chat.app is not None
    # three days pass
    await chat.app.store.db.execute("UPDATE workspace_files SET created = created - ?",
                                    (3 * 86_400,))
    await chat.restart()
    assert "No files here yet" in texts(await send(chat, "/files"))
    assert remote.id in api.deleted_files
