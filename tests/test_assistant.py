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
from dataclasses import dataclass
from typing import Any

import pytest
from PIL import Image

from tests.conftest import STORAGES
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


@pytest.fixture(params=["responses", "assistants"])
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


@dataclass
class Seen:
    """What the model was sent for one run, the same for both backends."""

    conversation: str  # Responses conversation id / Assistants thread id
    sandbox: str  # the code interpreter's container id / the thread id
    instructions: str
    text: str  # the user's turn as sent
    body: dict[str, Any]


def runs(openai_fake: FakeOpenAI) -> list[Seen]:
    """Every run the bot started, oldest first."""
    out = []
    for r in openai_fake.requests:
        body = r.json or {}
        if r.method == "POST" and r.path == "/v1/responses":
            cid = next((t["container"] for t in body.get("tools", [])
                        if t["type"] == "code_interpreter"), "")
            out.append(Seen(body.get("conversation", ""), cid, body.get("instructions", ""),
                            str(body.get("input")), body))
        elif r.method == "POST" and re.fullmatch(r"/v1/threads/[^/]+/runs", r.path):
            tid = r.path.split("/")[3]
            out.append(Seen(tid, tid, body.get("instructions", ""),
                            str(body.get("additional_messages")), body))
    return out


def last_run(openai_fake: FakeOpenAI) -> Seen:
    seen = runs(openai_fake)
    assert seen, "the model was never asked"
    return seen[-1]


def sandbox_files(openai_fake: FakeOpenAI, seen: Seen) -> dict[str, tuple[str, bytes]]:
    """File name -> (path in the sandbox, bytes) the code interpreter of a run sees."""
    api = fake(openai_fake)
    if seen.sandbox in api.containers:
        return {f.path.rsplit("/", 1)[-1]: (f.path, f.data)
                for f in api.containers[seen.sandbox].files.values()}
    thread = api.legacy.threads[seen.sandbox]
    ids = thread.tool_resources.get("code_interpreter", {}).get("file_ids", [])
    return {api.files[i].filename: (f"/mnt/data/{i}", api.files[i].data) for i in ids}


def said(openai_fake: FakeOpenAI, conversation: str) -> list[str]:
    """The texts stored in a conversation / thread, in order."""
    api = fake(openai_fake)
    if conversation in api.conversations:
        items = api.conversations[conversation].items
        return [str(p.get("text", "")) for it in items for p in it.get("content", [])]
    return [str(b.get("text", {}).get("value", "")) for m in
            api.legacy.threads[conversation].messages for b in m["content"]]


def ended(openai_fake: FakeOpenAI, conversation: str) -> bool:
    api = fake(openai_fake)
    if conversation in api.conversations:
        return api.conversations[conversation].deleted
    return api.legacy.threads[conversation].deleted


def run_statuses(openai_fake: FakeOpenAI) -> list[str]:
    api = fake(openai_fake)
    return [r.obj["status"] for r in api.responses.values()] + [
        r.obj["status"] for r in api.legacy.runs.values()]


def responses_only(backend: str, why: str) -> None:
    if backend != "responses":
        pytest.skip(why)


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
    seen = last_run(openai_fake)
    assert "plot sales by month" in seen.text
    path, data = sandbox_files(openai_fake, seen)["sales.csv"]
    assert data == CSV
    assert path in seen.instructions
    assert seen.body["stream"] is True
    if seen.sandbox in api.containers:
        assert seen.body["background"] is True and seen.conversation in api.conversations


def _same_picture(got: list[bytes], want: bytes) -> bool:
    """Telegram may re-encode photos: compare pixels, not bytes."""
    if len(got) != 1:
        return False
    a = Image.open(io.BytesIO(got[0])).convert("RGB")
    b = Image.open(io.BytesIO(want)).convert("RGB")
    return a.size == b.size and a.getpixel((1, 1)) == b.getpixel((1, 1))


@pytest.mark.parametrize("storage", STORAGES)
async def test_follow_up_continues_the_conversation_and_restart_keeps_it(
        chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(text="It holds monthly sales for Jan-Mar."),
               Turn(text="March was best."), Turn(text="Still March."))
    await send(chat, "what is this?", [csv_file()])
    first = last_run(openai_fake)
    replies = await send(chat, "which month was best?")
    assert "March was best." in texts(replies)
    second = last_run(openai_fake)
    assert second.conversation == first.conversation
    assert second.sandbox == first.sandbox
    await chat.restart()
    replies = await send(chat, "sure?")
    assert "Still March." in texts(replies)
    third = last_run(openai_fake)
    assert third.conversation == first.conversation
    assert third.sandbox == first.sandbox
    assert any("which month was best?" in t for t in said(openai_fake, first.conversation))


async def test_document_without_caption_is_described(chat: Driver,
                                                     openai_fake: FakeOpenAI) -> None:
    fake(openai_fake).script(Turn(text="Monthly sales for three months. I can chart it."))
    replies = await send(chat, "", [csv_file()])
    assert texts(replies).strip() == "Monthly sales for three months. I can chart it."
    seen = last_run(openai_fake)
    assert "two or three short lines" in seen.text
    assert "sales.csv" in seen.text


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
    conv = last_run(openai_fake).conversation
    cleared = texts(await send(chat, "/files clear"))
    assert "Deleted 2 files" in cleared
    assert uploaded <= set(api.deleted_files)
    assert api.vector_stores == {}
    assert api.live_containers() == []
    assert ended(openai_fake, conv)
    answer = await chat.ask("hello again")
    assert answer.startswith("echo:")  # normal chat carries on


async def test_code_without_files(chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(code="print(2**200)", text=f"2^200 = {BIG}"))
    replies = await send(chat, "/code what is 2^200 exactly")
    assert BIG in texts(replies)
    seen = last_run(openai_fake)
    assert "what is 2^200 exactly" in seen.text
    assert "python tool" in seen.instructions


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
    alice = last_run(openai_fake)
    asked = len(runs(openai_fake))
    answer = await chat.ask("what is in sales.csv?", user=BOB)
    assert answer.startswith("echo:")  # Bob's chat has no workspace: plain chat
    assert len(runs(openai_fake)) == asked
    listing = texts(await send(chat, "/files", user=BOB))
    assert "sales.csv" not in listing
    api.script(Turn(text="Bob's numbers."))
    await send(chat, "mine", [csv_file("bob.csv", b"a\n1\n")], user=BOB)
    bob = last_run(openai_fake)
    assert bob.conversation != alice.conversation
    assert bob.sandbox != alice.sandbox
    held = sandbox_files(openai_fake, bob)
    assert "sales.csv" not in held and "bob.csv" in held


async def test_group_document_needs_addressing(chat: Driver, openai_fake: FakeOpenAI) -> None:
    no_console(chat, "the terminal has no groups")
    api = fake(openai_fake)
    await chat.send_text("fyi", files=[csv_file()], user=BOB, group=True)
    await chat.settle()
    assert api.files == {} and chat.replies(group=True) == []
    api.script(Turn(text="Three months of sales."))
    replies = await send(chat, "what is this?", [csv_file()], group=True, mention=True)
    assert "Three months of sales." in texts(replies)
    assert "Alice" in last_run(openai_fake).text


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
    await wait_for(lambda: "in_progress" in run_statuses(openai_fake), 10, "the run to start")
    await chat.send_text("/cancel")
    await chat.settle()
    shown = texts(chat.replies())
    assert "Stopping the request in progress" in shown
    assert "never" not in shown
    assert run_statuses(openai_fake) == ["cancelled"]
    assert [r for r in openai_fake.requests if r.path.endswith("/cancel")]
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
    assert run_statuses(openai_fake) == ["cancelled"]


async def test_expired_container_is_remade_with_the_files(
        chat: Driver, openai_fake: FakeOpenAI, backend: str) -> None:
    responses_only(backend, "Assistants threads have no containers to expire")
    api = fake(openai_fake)
    api.script(Turn(text="Loaded."), Turn(code="df.describe()", text="Mean sales: 13.7"))
    await send(chat, "load it", [csv_file()])
    first = last_run(openai_fake).sandbox
    api.expire_containers()
    replies = await send(chat, "mean sales?")
    assert "Mean sales: 13.7" in texts(replies)
    assert "expired" not in texts(replies).lower()
    second = last_run(openai_fake)
    assert second.sandbox != first
    assert sandbox_files(openai_fake, second)["sales.csv"][1] == CSV
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
    seen = last_run(openai_fake)
    path, data = sandbox_files(openai_fake, seen)[font.name]
    assert data == font.read_bytes()
    assert path in seen.instructions and "addfont" in seen.instructions


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
    assert runs(openai_fake) == []
    assert "No files here yet" in texts(await send(chat, "/files"))
    assert fake(openai_fake).files == {}  # nothing left behind on the server


async def test_usage_rows(chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(code="df.plot()", files={"chart.png": CHART}, search=["sales"],
                    cite=["notes.md"], text="Chart attached."))
    await send(chat, "plot it", [File(b"# Notes\nSales were good.\n", "notes.md",
                                      "text/markdown", kind="document")])
    assert chat.app is not None
    rows = [r for r in await chat.app.store.usage_rows() if r.feature == "assistant"]
    by_model = {r.model: r for r in rows}
    assert len(rows) == 3, rows  # the run's tokens, one code session, one search call
    session = by_model["code_interpreter"]
    assert (session.units, session.unit, session.cost) == (1, "sessions", 0.03)
    search = by_model["file_search"]
    assert (search.units, search.unit) == (1, "calls")
    run = next(r for r in rows if r.model not in ("code_interpreter", "file_search"))
    assert run.prompt_tokens > 0 and run.completion_tokens > 0 and not run.estimated
    assert run.user_id is not None and run.cost is not None and run.cost > 0
    assert "Sources: notes.md" in texts(chat.replies())


async def test_reset_starts_a_new_conversation_and_keeps_the_files(
        chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    await chat.ask("my name is Alice")
    api.script(Turn(text="Loaded."), Turn(text="Hello again."))
    await send(chat, "load", [csv_file()])
    first = last_run(openai_fake)
    assert any("my name is Alice" in t for t in said(openai_fake, first.conversation))
    await send(chat, "/reset")
    await send(chat, "hi")
    second = last_run(openai_fake)
    assert second.conversation != first.conversation
    assert not any("my name is Alice" in t for t in said(openai_fake, second.conversation))
    assert "sales.csv" in second.instructions


async def test_clear_then_new_file_seeds_history(chat: Driver, openai_fake: FakeOpenAI) -> None:
    api = fake(openai_fake)
    api.script(Turn(text="Sales peaked in March."), Turn(text="ok"))
    await send(chat, "when did sales peak?", [csv_file()])
    await send(chat, "/files clear")
    answer = await chat.ask("what did you say about sales?")
    assert "Sales peaked in March." in str(openai_fake.chat_requests[-1]["messages"])
    assert answer.startswith("echo:")
    await send(chat, "again", [csv_file("more.csv")])
    conversation = last_run(openai_fake).conversation
    assert any("Sales peaked in March." in t for t in said(openai_fake, conversation))


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


def assistants_only(backend: str, why: str) -> None:
    if backend != "assistants":
        pytest.skip(why)


async def test_expired_run_gets_a_clear_reply(chat: Driver, openai_fake: FakeOpenAI,
                                              backend: str) -> None:
    assistants_only(backend, "only Assistants runs expire (Responses have no such status)")
    fake(openai_fake).script(Turn(status="expired"))
    replies = await send(chat, "/code slow thing")
    assert "The run expired on the AI server" in texts(replies)
    assert run_statuses(openai_fake) == ["expired"]


async def test_a_tool_call_is_answered_as_unavailable_and_the_run_goes_on(
        chat: Driver, openai_fake: FakeOpenAI, backend: str) -> None:
    assistants_only(backend, "requires_action is an Assistants run status")
    fake(openai_fake).script(Turn(tool_call=("get_weather", '{"city": "Paris"}'),
                                  text="I can't check the weather here."))
    replies = await send(chat, "/code weather in Paris?")
    assert "I can't check the weather here." in texts(replies)
    submitted = [r.json for r in openai_fake.requests if r.path.endswith("/submit_tool_outputs")]
    assert len(submitted) == 1
    (output,) = submitted[0]["tool_outputs"]
    assert "not available" in output["output"] and "get_weather" in output["output"]
    assert run_statuses(openai_fake) == ["completed"]


@pytest.mark.parametrize("storage", STORAGES)
async def test_assistants_backend_keeps_one_assistant(chat: Driver, openai_fake: FakeOpenAI,
                                                      backend: str) -> None:
    assistants_only(backend, "the assistant object is an Assistants API thing")
    api = fake(openai_fake)
    api.script(Turn(text="one"), Turn(text="two"))
    await send(chat, "a", [csv_file()])
    await chat.restart()
    await send(chat, "b")
    assert len(api.legacy.assistants) == 1
    assert len({s.body["assistant_id"] for s in runs(openai_fake)}) == 1


@pytest.mark.parametrize("profile", ["llama.cpp", "ollama", "vllm"])
@pytest.mark.parametrize("platform", ["console", "telegram"])
async def test_local_servers_say_once_that_they_cannot(tmp_path: Any, profile: str,
                                                       platform: str, backend: str) -> None:
    """llama.cpp, Ollama and vLLM serve none of these endpoints: one clear reply, then
    normal chat."""
    from tests.conftest import make_driver

    server = FakeOpenAI(profile=profile)
    await server.start()
    model = server.models[0]
    driver, platform_fake = await make_driver(
        platform, server, tmp_path,
        f'[models]\nchat = "{model}"\nvision = "{model}"\n'
        f'[assistant]\nbackend = "{backend}"\ncjk_font = ""\n')
    try:
        await driver.start()
        replies = await send(driver, "plot this", [csv_file()])
        assert texts(replies).strip() == "This AI server can't run code or read files."
        assert (await driver.ask("hello")).strip()
        assert server.chat_requests, "normal chat went to the server"
    finally:
        await driver.stop()
        await server.stop()
        if platform_fake is not None:
            await platform_fake.stop()


async def test_a_run_failing_after_the_status_shows_replaces_it(
        chat: Driver, openai_fake: FakeOpenAI) -> None:
    no_console(chat, "the terminal cannot edit messages")
    hold = asyncio.Event()
    fake(openai_fake).script(Turn(code="1/0", hold=hold, status="failed",
                                  error=("server_error", "Sandbox crashed")))
    await chat.send_text("/code divide by zero")
    await wait_for(lambda: any("Running code" in r.text for r in chat.replies()), 10,
                   "the status message to say the code is running")
    hold.set()
    await chat.settle()
    replies = chat.replies()
    assert len(replies) == 1  # the status message became the error, nothing else was sent
    assert "The assistant run failed: Sandbox crashed" in replies[0].text


@pytest.mark.parametrize("extra", ['cjk_font = ""\n[budgets]\nuser_daily = 0.000001'])
async def test_budget_is_checked_before_a_run(chat: Driver, openai_fake: FakeOpenAI) -> None:
    replies = await send(chat, "/code 2 + 2")
    assert texts(replies).startswith("⛔ This would go over your daily budget")
    assert runs(openai_fake) == []
