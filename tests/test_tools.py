"""Function calling end to end on Telegram, Discord and the console: parallel calls,
results reaching the model and the answer, the round limit, every kind of bad call,
servers without tools, tool rounds in history, the status line, fetch_url's refusals."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from bot import tools
from tests.conftest import STORAGES
from tests.fakes.openai_api import tool_calls
from tests.harness import Driver, wait_for

pytestmark = pytest.mark.usefixtures("chat")


def tool_messages(body: dict[str, Any]) -> dict[str, str]:
    """tool_call_id -> content of the tool messages in a request."""
    return {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}


def calls_by_name(body: dict[str, Any]) -> dict[str, str]:
    """name -> tool output, pairing the request's assistant tool_calls with its results."""
    outputs = tool_messages(body)
    out = {}
    for m in body["messages"]:
        for c in m.get("tool_calls") or ():
            out[c["function"]["name"]] = outputs[c["id"]]
    return out


def answer_with_results(body: dict[str, Any]) -> str | Any:
    """The fake model: after tool results, answer with them; else echo."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        return "results: " + " | ".join(results)
    return "echo: " + str(last.get("content"))


def registry(chat: Driver) -> tools.ToolRegistry:
    assert chat.app is not None
    return tools.registry_for(chat.app.config)


async def test_parallel_calls_overlap_and_results_reach_the_answer(chat: Driver) -> None:
    started: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}

    async def probe_a(label: str) -> str:
        """Test tool A: waits until B has started too."""
        started["a"].set()
        await started["b"].wait()  # never returns if the calls ran one after another
        return f"A saw B ({label})"

    async def probe_b(label: str) -> str:
        """Test tool B: waits until A has started too."""
        started["b"].set()
        await started["a"].wait()
        return f"B saw A ({label})"

    registry(chat).add(probe_a)
    registry(chat).add(probe_b)
    chat.openai.reply_tool_calls([("probe_a", {"label": "x"}), ("probe_b", {"label": "y"})])
    chat.openai.reply_fn(answer_with_results)
    answer = await chat.ask("run both probes")
    assert answer == "results: A saw B (x) | B saw A (y)"
    first, second = chat.openai.chat_requests
    names = [t["function"]["name"] for t in first["tools"]]
    assert {"calculate", "current_time", "probe_a", "probe_b"} <= set(names)
    assert all(t["function"]["strict"] for t in first["tools"])
    assert calls_by_name(second) == {"probe_a": "A saw B (x)", "probe_b": "B saw A (y)"}
    assert second["messages"][-3]["role"] == "assistant"
    assert "tool_choice" not in second


async def test_builtin_calculate_and_time(chat: Driver) -> None:
    chat.openai.reply_tool_calls([("calculate", {"expression": "2**100 % 97"}),
                                  ("current_time", {"timezone": "Europe/Berlin"})])
    chat.openai.reply_fn(answer_with_results)
    answer = await chat.ask("what is 2^100 mod 97, and the time in Berlin?")
    assert answer.startswith("results: 16 | ")
    assert "Europe/Berlin" in answer
    # a follow-up sees what was computed, in a valid tool-call sequence
    chat.openai.reply_fn(None)
    await chat.ask("and times two?")
    follow = chat.openai.chat_requests[-1]
    roles = [m["role"] for m in follow["messages"]]
    assert roles[-5:] == ["assistant", "tool", "tool", "assistant", "user"]
    assert calls_by_name(follow)["calculate"] == "16"


@pytest.mark.parametrize("storage", STORAGES)
async def test_tool_rounds_survive_a_restart(chat: Driver) -> None:
    chat.openai.reply_tool_calls([("calculate", {"expression": "6*7"})])
    chat.openai.reply_fn(answer_with_results)
    assert await chat.ask("six times seven?") == "results: 42"
    await chat.restart()
    chat.openai.reply_fn(None)
    await chat.ask("what did you compute?")
    assert calls_by_name(chat.openai.chat_requests[-1]) == {"calculate": "42"}


@pytest.mark.parametrize("config_text", ["[tools]\nmax_rounds = 2\n"])
async def test_round_limit_then_text(chat: Driver) -> None:
    def model(body: dict[str, Any]) -> Any:
        if body.get("tool_choice") == "none":
            return "done after the limit"
        return tool_calls(("calculate", {"expression": "1+1"}))

    chat.openai.reply_fn(model)
    assert await chat.ask("loop forever") == "done after the limit"
    requests = chat.openai.chat_requests
    assert len(requests) == 3
    assert [r.get("tool_choice") for r in requests] == [None, None, "none"]
    assert len(tool_messages(requests[-1])) == 2


@pytest.mark.parametrize("config_text", ["[tools]\ntimeout = 0.5\n"])
async def test_bad_calls_become_outputs(chat: Driver, caplog: pytest.LogCaptureFixture) -> None:
    never = asyncio.Event()

    async def explode() -> str:
        """Test tool that fails."""
        raise RuntimeError("boom")

    async def stall() -> str:
        """Test tool that never finishes."""
        await never.wait()
        return "unreachable"

    registry(chat).add(explode)
    registry(chat).add(stall)
    chat.openai.reply_tool_calls([
        ("calculate", "{not json"),
        ("calculate", {}),
        ("no_such_tool", {}),
        ("explode", {}),
        ("stall", {}),
        ("calculate", {"expression": "1/0"}),
    ])
    chat.openai.reply_fn(answer_with_results)
    caplog.set_level(logging.INFO, logger="bot.tools")
    answer = await chat.ask("break everything")
    outputs = list(tool_messages(chat.openai.chat_requests[1]).values())
    assert outputs[0].startswith("error: invalid JSON arguments")
    assert outputs[1] == "error: missing argument(s): expression"
    assert outputs[2].startswith("error: unknown tool `no_such_tool`")
    assert outputs[3] == "error: `explode` failed (RuntimeError: boom)"
    assert outputs[4] == "error: `stall` timed out after 0.5 s"
    assert outputs[5] == "error: division by zero"
    assert answer.startswith("results: error: invalid JSON")
    lines = [r for r in caplog.records if r.name == "bot.tools"]
    assert len(lines) == 6


async def test_server_rejecting_tools_gets_plain_chat(chat: Driver) -> None:
    chat.openai.fail_next(400, message="tools is not supported for this model", param="tools",
                          code="invalid_value")
    assert await chat.ask("hello there") == "echo: hello there"
    rejected, plain = chat.openai.chat_requests[-2:]
    assert "tools" in rejected and "tools" not in plain
    assert await chat.ask("again") == "echo: again"
    assert "tools" not in chat.openai.chat_requests[-1]


async def test_status_line_shows_while_a_tool_runs(chat: Driver) -> None:
    if chat.platform == "console":
        pytest.skip("the console prints whole answers (no edits)")
    release = asyncio.Event()

    async def slow_lookup(topic: str) -> str:
        """Test tool that waits for the test."""
        await release.wait()
        return f"facts about {topic}"

    registry(chat).add(tools.make_tool(slow_lookup, status="looking it up…"))
    chat.openai.reply_tool_calls([("slow_lookup", {"topic": "owls"})])
    chat.openai.reply_fn(answer_with_results)
    await chat.send_text("tell me about owls")
    await wait_for(lambda: any("looking it up…" in r.text for r in chat.replies()), 10,
                   "the status line")
    release.set()
    await chat.settle()
    final = chat.replies()[-1]
    assert final.text == "results: facts about owls"


async def test_draw_tool_sends_the_picture(chat: Driver) -> None:
    chat.openai.reply_tool_calls([("draw", {"prompt": "a red fox", "size": "landscape"})])
    chat.openai.reply_fn(answer_with_results)
    before = len(chat.replies())
    await chat.send_text("draw me a fox")
    await chat.settle()
    sent = chat.replies()[before:]
    files = [f for r in sent for f in r.files]
    assert len(files) == 1 and files[0].data[:4] == b"\x89PNG"
    assert sent[-1].text.startswith("results: The picture was drawn")
    generation = chat.openai.requests_to("/images/generations")[-1].json
    assert generation["prompt"] == "a red fox" and generation["size"] == "1536x1024"
    assert chat.app is not None  # kept for "/edit make it bluer"
    rows = await chat.app.store.db.execute_fetchall("SELECT source FROM images")
    assert [r[0] for r in rows] == ["generated"]


# --------------------------------------------------------------------------- fetch_url

FETCH = '[tools]\nenabled = ["fetch_url"]\n'
FETCH_LOOPBACK = FETCH + "fetch_allow_loopback = true\nfetch_max_mb = 0.05\n"


@pytest.fixture
async def site() -> AsyncIterator[str]:
    """A loopback web server: a page, and redirects to addresses that must be refused."""
    async def page(_: web.Request) -> web.Response:
        return web.Response(text="<html><head><title>Owls</title><script>evil()</script>"
                            "</head><body><p>Owls hunt at night.</p></body></html>",
                            content_type="text/html")

    def redirect(to: str) -> Any:
        async def handler(_: web.Request) -> web.Response:
            raise web.HTTPFound(to)
        return handler

    async def big(_: web.Request) -> web.Response:
        filler = "x" * 200_000
        return web.Response(text=f"<p>start</p><script>{filler}</script><p>END</p>",
                            content_type="text/html")

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/big", big)
    app.router.add_get("/to-private", redirect("http://10.0.0.1/admin"))
    app.router.add_get("/to-metadata", redirect("http://169.254.169.254/latest/meta-data/"))
    app.router.add_get("/to-page", redirect("/page"))
    runner = web.AppRunner(app)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def fetch(chat: Driver, url: str) -> str:
    chat.openai.reply_tool_calls([("fetch_url", {"url": url})])
    chat.openai.reply_fn(answer_with_results)
    await chat.ask("read it")
    return calls_by_name(chat.openai.chat_requests[-1])["fetch_url"]


@pytest.mark.parametrize("config_text", [FETCH])
async def test_fetch_url_refuses_internal_addresses(chat: Driver, site: str) -> None:
    out = await fetch(chat, f"{site}/page")
    assert out.startswith("error: refused: 127.0.0.1 resolves to a non-public address")
    port = site.rsplit(":", 1)[1]
    assert (await fetch(chat, f"http://localhost:{port}/page")).startswith(
        "error: refused: localhost resolves to a non-public address")
    assert (await fetch(chat, "http://10.0.0.1/")).startswith("error: refused: 10.0.0.1")
    assert (await fetch(chat, "http://169.254.169.254/latest/meta-data/")).startswith(
        "error: refused: 169.254.169.254")
    assert (await fetch(chat, "file:///etc/passwd")) == (
        "error: only http:// and https:// addresses can be fetched")
    assert [t["function"]["name"] for t in chat.openai.chat_requests[0]["tools"]] == [
        "fetch_url"]


@pytest.mark.parametrize("config_text", [FETCH_LOOPBACK])
async def test_fetch_url_reads_pages_and_refuses_redirects_inside(chat: Driver,
                                                                  site: str) -> None:
    text = await fetch(chat, f"{site}/to-page")
    assert text.endswith("Owls\n\nOwls hunt at night.") and "evil" not in text
    assert (await fetch(chat, f"{site}/to-private")).startswith("error: refused: 10.0.0.1")
    assert (await fetch(chat, f"{site}/to-metadata")).startswith(
        "error: refused: 169.254.169.254")
    big = await fetch(chat, f"{site}/big")  # 200 KB page, 50 KB limit
    assert "start" in big and "END" not in big and big.endswith("[…truncated]")


async def test_fetch_url_is_off_by_default(chat: Driver) -> None:
    await chat.ask("hi")
    names = [t["function"]["name"] for t in chat.openai.chat_requests[0]["tools"]]
    assert "fetch_url" not in names and "calculate" in names
