"""Chat against local model servers (issue #12): each behaviour on the fake's server
profiles (llama.cpp, Ollama, vLLM, and OpenAI itself), on the console and Telegram."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.ai import AI, Tokenizer, estimate_tokens
from bot.config import load_config
from tests.fakes.openai_api import FakeOpenAI, count_tokens_local
from tests.harness import Driver, File
from tests.test_chat import user_texts

PROFILES = ["openai", "llama.cpp", "ollama", "vllm"]
LOCAL = ["llama.cpp", "ollama", "vllm"]
PLATFORMS = ["console", "telegram"]
LOG_LINE = ("2025-03-14 09:26:53,589 ERROR [worker-{i}] upstream 10.0.{i}.7:8443 reset "
            "(errno=104) after 1532 ms; retry {i}/5\n")


def log_text(chars: int) -> str:
    """A pasted log of exactly `chars` characters (digits and punctuation heavy)."""
    text = ""
    i = 0
    while len(text) < chars:
        text += LOG_LINE.format(i=i % 10)
        i += 1
    return text[:chars]


def log_line_text(chars: int) -> str:
    """The same log pasted as one line (piped console input is one message per line)."""
    return log_text(chars).replace("\n", " | ")


def server_config(profile: str, extra: str = "") -> str:
    """The settings a bot owner writes for this server (its model as the chat model)."""
    if profile == "openai":
        return extra
    model = FakeOpenAI(profile=profile).models[0]
    return f'[models]\nchat = "{model}"\nvision = "{model}"\n' + extra


async def start(profile: str, platform: str, tmp_path: Path, extra: str = "",
                **fake_kw: object) -> tuple[Driver, FakeOpenAI, object]:
    from tests.conftest import make_driver

    fake = FakeOpenAI(profile=profile, **fake_kw)  # type: ignore[arg-type]
    await fake.start()
    driver, platform_fake = await make_driver(platform, fake, tmp_path,
                                              server_config(profile, extra))
    await driver.start()
    return driver, fake, platform_fake


@pytest.fixture
async def servers() -> AsyncIterator[list[tuple[Driver, FakeOpenAI, object]]]:
    """Started bots, stopped at the end of the test."""
    started: list[tuple[Driver, FakeOpenAI, object]] = []
    yield started
    for driver, fake, platform_fake in started:
        await driver.stop()
        await fake.stop()
        if platform_fake is not None:
            await platform_fake.stop()  # type: ignore[attr-defined]


async def bot(servers: list, profile: str, platform: str, tmp_path: Path, extra: str = "",
              **fake_kw: object) -> Driver:
    started = await start(profile, platform, tmp_path, extra, **fake_kw)
    servers.append(started)
    return started[0]


def both(profiles: list[str]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(("profile", "platform"),
                                   [(p, q) for p in profiles for q in PLATFORMS])


# -------------------------------------------------------------- the chat basics on each


@both(PROFILES)
async def test_three_turns_carry_history(servers: list, profile: str, platform: str,
                                         tmp_path: Path) -> None:
    chat = await bot(servers, profile, platform, tmp_path)
    assert await chat.ask("my name is Zed") == "echo: my name is Zed"
    assert await chat.ask("what is my name?") == "echo: what is my name?"
    assert user_texts(chat.openai.chat_requests[-1]) == [
        "my name is Zed", "echo: my name is Zed", "what is my name?"]


# -------------------------------------------------------------- 1. answer length field


@both(PROFILES)
async def test_answer_length_cap_uses_the_field_the_server_honours(
        servers: list, profile: str, platform: str, tmp_path: Path) -> None:
    chat = await bot(servers, profile, platform, tmp_path,
                     "[chat]\nmax_output_tokens = 40\n")
    chat.openai.reply("word " * 400)
    text = await chat.ask("talk a lot")
    assert text.rstrip().endswith("…(answer cut at the length limit)")
    body = chat.openai.chat_requests[-1]
    expected = "max_completion_tokens" if profile == "openai" else "max_tokens"
    other = "max_tokens" if profile == "openai" else "max_completion_tokens"
    assert body[expected] == 40 and other not in body


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_length_field_can_be_forced(servers: list, platform: str,
                                          tmp_path: Path) -> None:
    chat = await bot(servers, "vllm", platform, tmp_path,
                     '[openai]\nlength_param = "max_completion_tokens"\n')
    await chat.ask("hi")
    body = chat.openai.chat_requests[-1]
    assert "max_completion_tokens" in body and "max_tokens" not in body


# -------------------------------------------------------------- 2. empty stream


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_empty_stream_on_overflow_is_retried_with_less_context(
        servers: list, platform: str, tmp_path: Path) -> None:
    # the owner set a window larger than the server's: llama.cpp streams an empty 200
    chat = await bot(servers, "llama.cpp", platform, tmp_path,
                     "[chat]\ncontext_window = 8192\n", n_ctx=1024)
    for i in range(2):  # the second request is over the server's 1,024 tokens
        question = f"fact {i}: " + log_line_text(650)
        assert await chat.ask(question) == f"echo: {question}"  # never an error
    requests = chat.openai.chat_requests
    unstreamed = [i for i, r in enumerate(requests) if not r.get("stream")]
    assert len(unstreamed) == 1, "one overflow, asked again unstreamed, then learned"
    i = unstreamed[0]
    assert requests[i - 1]["stream"] is True and requests[i + 1]["stream"] is True
    assert requests[i + 1]["messages"][-1] == requests[i]["messages"][-1]
    assert len(requests[i + 1]["messages"]) < len(requests[i]["messages"])
    for body in requests[i + 1:]:
        assert count_tokens_local(" ".join(user_texts(body))) < 1024


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_overflow_that_cannot_be_fixed_is_told(servers: list, platform: str,
                                                     tmp_path: Path) -> None:
    chat = await bot(servers, "vllm", platform, tmp_path,
                     '[bot]\nsystem_prompt = "' + "rule number 1; " * 200 + '"\n', n_ctx=600)
    text = await chat.ask("hello")
    assert "no longer fits the model's context window" in text and "Error code" not in text


# -------------------------------------------------------------- 3. history fits the window


@both(LOCAL)
async def test_history_and_answer_fit_the_learned_window(
        servers: list, profile: str, platform: str, tmp_path: Path) -> None:
    chat = await bot(servers, profile, platform, tmp_path, n_ctx=2048)
    for i in range(8):
        await chat.ask(f"part {i}: " + log_line_text(500))
    before = len(chat.openai.chat_requests)
    assert await chat.ask("summarise") == "echo: summarise"
    (body,) = chat.openai.chat_requests[before:]  # one request: no overflow, no retry
    prompt = 3 + sum(3 + count_tokens_local(FakeOpenAI.message_text(m))
                     for m in body["messages"])
    assert prompt + body["max_tokens"] <= 2048
    assert len(body["messages"]) >= 3  # some history still went along


def test_estimate_is_an_upper_bound_for_a_pasted_log() -> None:
    # the issue: 7,359 characters of log, 4,078 tokens on the server, estimated at 2,454
    text = log_text(7359)
    assert estimate_tokens(text) >= 4078
    assert estimate_tokens(text) >= count_tokens_local(text)
    tok = Tokenizer("estimate")
    tok.foreign = True
    assert tok.count(text) >= 4078


# -------------------------------------------------------------- 4. /model checked


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_model_command_checks_the_servers_list(servers: list, platform: str,
                                                     tmp_path: Path) -> None:
    chat = await bot(servers, "llama.cpp", platform, tmp_path)  # gpt-5.5 is a choice
    text = await chat.ask("/model gpt-5.5")
    assert "has no model" in text and "gpt-5.5" in text and "gemma-3-270m-it-Q8_0.gguf" in text
    await chat.ask("still there?")
    assert chat.openai.chat_requests[-1]["model"] == "gemma-3-270m-it-Q8_0.gguf"


# -------------------------------------------------------------- 5. images


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_image_to_a_text_only_model_is_refused_once_not_dropped(
        servers: list, platform: str, tmp_path: Path) -> None:
    chat = await bot(servers, "llama.cpp", platform, tmp_path)
    photo = File(png(), "cat.png", "image/png", "photo")
    await chat.send_text("what colour is this?", files=[photo])
    await chat.settle()
    assert "cannot look at images" in chat.replies()[-1].text
    assert await chat.ask("tell me a joke") == "echo: tell me a joke"
    wire = [m for b in chat.openai.chat_requests for m in b["messages"]]
    assert not any(isinstance(m["content"], list) for m in wire)


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_image_goes_to_a_vision_build(servers: list, platform: str,
                                            tmp_path: Path) -> None:
    chat = await bot(servers, "llama.cpp", platform, tmp_path, vision=True)
    await chat.send_text("what colour?", files=[File(png(), "cat.png", "image/png", "photo")])
    await chat.settle()
    assert chat.replies()[-1].text.endswith("[images: 1]")


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_accepts_images_setting(servers: list, platform: str, tmp_path: Path) -> None:
    chat = await bot(servers, "openai", platform, tmp_path,
                     '[vision]\naccepts_images = "no"\n')
    await chat.send_text("what?", files=[File(png(), "cat.png", "image/png", "photo")])
    await chat.settle()
    assert "cannot look at images" in chat.replies()[-1].text
    assert chat.openai.chat_requests == []


# -------------------------------------------------------------- 6. over-long message


@both(["llama.cpp", "openai"])
async def test_long_message_keeps_start_and_end_and_says_so(
        servers: list, profile: str, platform: str, tmp_path: Path) -> None:
    chat = await bot(servers, profile, platform, tmp_path, "[chat]\nhistory_tokens = 3000\n")
    await chat.ask("remember: pineapple")
    pasted = "QUESTION: why does it fail? " + log_line_text(30_000) + " END OF LOG"
    chat.openai.reply("The upstream keeps resetting connections.")
    text = await chat.ask(pasted)
    assert "too long for this model" in text and "start and end" in text
    sent = user_texts(chat.openai.chat_requests[-1])[-1]
    assert sent.startswith("QUESTION: why does it fail?") and sent.endswith("END OF LOG")
    assert "characters cut here" in sent and len(sent) < len(pasted)
    await chat.ask("what was the fruit?")
    assert "remember: pineapple" in user_texts(chat.openai.chat_requests[-1])[0]
    assert chat.app is not None
    stored = [t.content for t in await chat.app.store.recent_turns(
        str(next(iter(await _channels(chat)))), 100_000, 100)]
    assert pasted not in stored and any("characters cut here" in t for t in stored)


async def _channels(chat: Driver) -> set[str]:
    assert chat.app is not None
    rows = await chat.app.store.usage_rows()
    return {r.channel for r in rows}


# -------------------------------------------------------------- 9. error text


@both(["openai", "vllm"])
async def test_error_shows_the_servers_sentence_only(servers: list, profile: str,
                                                     platform: str, tmp_path: Path) -> None:
    chat = await bot(servers, profile, platform, tmp_path)
    chat.openai.fail_next(400, message="Invalid value for 'messages'.", code="invalid_value")
    text = await chat.ask("break it")
    assert text == "The AI service rejected the request: Invalid value for 'messages'."


# -------------------------------------------------------------- 10. alternation


@pytest.mark.parametrize("platform", PLATFORMS)
async def test_failed_turn_keeps_user_assistant_alternation(servers: list, platform: str,
                                                            tmp_path: Path) -> None:
    chat = await bot(servers, "llama.cpp", platform, tmp_path)
    assert await chat.ask("first") == "echo: first"
    chat.openai.fail_next(400, message="bad luck", code="invalid_value")
    assert "bad luck" in await chat.ask("second")
    assert await chat.ask("third") == "echo: second\n\nthird"
    roles = [m["role"] for m in chat.openai.chat_requests[-1]["messages"]]
    assert roles == ["system", "user", "assistant", "user"]


async def test_group_messages_alternate_on_strict_servers(servers: list,
                                                          tmp_path: Path) -> None:
    from tests.harness import BOB

    chat = await bot(servers, "llama.cpp", "telegram", tmp_path)
    await chat.send_text("the meeting is at noon", user=BOB, group=True)
    await chat.settle()
    answer = await chat.ask("when is the meeting?", group=True, mention=True)
    assert answer.endswith("Alice: when is the meeting?")
    roles = [m["role"] for m in chat.openai.chat_requests[-1]["messages"]]
    assert roles == ["system", "user"]


# -------------------------------------------------------------- 11. probe


@pytest.mark.parametrize("profile", PROFILES)
async def test_probe_finds_what_the_server_offers(profile: str) -> None:
    async with FakeOpenAI(profile=profile, n_ctx=8192) as fake:
        config = load_config(None, env={"OPENAI_API_KEY": fake.api_key,
                                        "OPENAI_BASE_URL": fake.url})
        if profile != "openai":
            object.__setattr__(config.models, "chat", fake.models[0])
        ai = AI(config, Tokenizer("estimate"))
        try:
            assert ai.server_info is None
            info = await ai.server()
            assert info is not None and ai.server_info is info
            assert info.reachable and info.models == tuple(fake.models)
            expected = {"openai": 400_000}.get(profile, 8192)
            assert info.context_window == expected
            assert info.vision is {"openai": True, "llama.cpp": False, "ollama": False,
                                   "vllm": None}[profile]
            if profile != "openai":
                assert info.images is False and info.audio is False
                assert info.responses is False
            assert info.embeddings is (profile in ("openai", "ollama"))
            text = "\n".join(info.lines())
            assert "context window" in text and f"{expected:,}" in text
            count = len(fake.requests)
            await ai.server()
            assert len(fake.requests) == count  # cached
        finally:
            await ai.close()


async def test_server_down_at_startup_is_logged_not_fatal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    from adapters.console import ConsoleAdapter
    from bot.__main__ import start_app
    from tests.harness import RecordingOut

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = load_config(None, env={"OPENAI_API_KEY": "k",
                                    "OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1",
                                    "BOT_DATABASE": str(tmp_path / "db.sqlite3")})
    adapter = ConsoleAdapter(stdin=__import__("asyncio").StreamReader(), stdout=RecordingOut())
    app = await start_app(config, [adapter], tokenizer=Tokenizer("estimate"))
    try:
        info = await app.ai.server()
        assert info is not None and not info.reachable
        assert "not reachable" in info.lines()[0]
        assert any("not reachable" in r.getMessage() and r.levelname == "WARNING"
                   for r in caplog.records)
    finally:
        await app.stop()
