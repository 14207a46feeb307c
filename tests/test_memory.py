"""Semantic memory on Telegram, Discord and the console: a fact said 200 messages ago is
recalled, /search, /forget, isolation between chats, and a failing, slow or missing
embeddings endpoint never holding up an answer."""

from __future__ import annotations

import logging

import pytest

from bot.memory import RECALL_HEADER
from tests.conftest import STORAGES
from tests.harness import BOB, Driver, wait_for

pytestmark = pytest.mark.usefixtures("chat")

MEMORY = "[memory]\nenabled = true\n"
SMALL_WINDOW = "[chat]\nhistory_tokens = 400\n" + MEMORY
FACT = "my locker code at the gym is 7391"
QUESTION = "what is my locker code at the gym?"


def recalled(body: dict) -> str:
    """The recall block of a request ('' when none): the end of the system prompt."""
    system = body["messages"][0]
    assert system["role"] == "system"
    _, found, block = str(system["content"]).partition(RECALL_HEADER)
    return found + block


async def embedded(chat: Driver, at_least: int, timeout: float = 30.0) -> None:
    """Wait until the background embedder has stored `at_least` vectors in total."""
    assert chat.app is not None and chat.app.memory is not None
    memory = chat.app.memory
    memory.notify()
    await wait_for(lambda: memory.embedded >= at_least, timeout, f"{at_least} embedded")


async def say_many(chat: Driver, count: int, *, group: bool) -> None:
    """`count` unrelated messages (unaddressed in groups: stored, not answered)."""
    for i in range(count):
        text = f"filler number {i} about weather and trains"
        if group:
            await chat.send_text(text, user=BOB, group=True)
        else:
            await chat.send_text(text)
    await chat.settle(expect=count, timeout=120)


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("config_text", [SMALL_WINDOW])
async def test_fact_from_200_messages_ago_is_recalled(chat: Driver) -> None:
    group = chat.supports_groups
    await chat.send_text(FACT, group=group) if group else await chat.ask(FACT)
    await chat.settle()
    await say_many(chat, 200, group=group)
    await embedded(chat, 200)
    kw = {"group": True, "mention": True} if group else {}
    await chat.ask(QUESTION, **kw)
    body = chat.openai.chat_requests[-1]
    history = " ".join(str(m["content"]) for m in body["messages"][1:])
    assert "7391" not in history  # far outside the history window
    block = recalled(body)
    assert "7391" in block and "filler" not in block.split("\n")[1]


@pytest.fixture
def config_text() -> str:
    """Memory on (the harness turns it off for other tests)."""
    return MEMORY


@pytest.mark.parametrize("storage", STORAGES)
async def test_search_finds_and_forget_erases_but_reset_does_not(chat: Driver) -> None:
    await chat.ask(FACT)
    await chat.ask("the weather is nice today")
    await embedded(chat, 4)
    found = await chat.ask("/search locker code")
    assert "7391" in found
    await chat.ask("/reset")
    assert "7391" in await chat.ask("/search locker code")
    assert "erased" in await chat.ask("/forget")
    assert "Nothing in this chat's memory" in await chat.ask("/search locker code")


async def test_memory_is_per_chat(chat: Driver) -> None:
    if not chat.supports_groups:
        pytest.skip("the console is one conversation")
    await chat.ask(FACT)
    await embedded(chat, 2)
    await chat.ask(QUESTION, group=True, mention=True)
    assert recalled(chat.openai.chat_requests[-1]) == ""
    answer = await chat.ask("/search locker code", group=True)
    assert "7391" not in answer


@pytest.mark.parametrize("config_text", ["[chat]\nhistory_tokens = 100\n" + MEMORY
                                         + "recall_timeout = 0.3\n"])
async def test_embeddings_down_or_slow_never_hold_up_answers(chat: Driver) -> None:
    chat.openai.fail_next(500, path="/embeddings", times=1000)
    assert await chat.ask("hello while embeddings fail") == "echo: hello while embeddings fail"
    assert chat.app is not None and chat.app.memory is not None
    assert chat.app.memory.embedded == 0
    chat.openai._failures.clear()
    chat.app.memory._down_until = 0.0  # the service is back: don't wait out the backoff
    await embedded(chat, 2)  # the backlog is embedded later
    await chat.ask("a second message to push the first out of the window")
    await embedded(chat, 4)
    chat.openai.hang_next(path="/embeddings")
    asked = len(chat.openai.requests_to("/embeddings"))
    assert await chat.ask("hello while embeddings hang") == "echo: hello while embeddings hang"
    # an embeddings request was made and hangs; the answer did not wait for it
    assert len(chat.openai.requests_to("/embeddings")) > asked


async def test_server_without_embeddings_turns_memory_off(
        chat: Driver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="bot.memory")
    chat.openai.disable("/embeddings", style="ollama")
    assert await chat.ask("hello") == "echo: hello"
    assert chat.app is not None and chat.app.memory is not None
    memory = chat.app.memory
    memory.notify()
    await wait_for(lambda: not memory.active, 10, "memory to switch off")
    assert "Memory: off" in await chat.ask("/info")
    assert "Memory is off" in await chat.ask("/search anything")
    lines = [r for r in caplog.records if "semantic memory is off" in r.getMessage()]
    assert len(lines) == 1
