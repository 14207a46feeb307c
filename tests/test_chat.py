"""The parity suite for chat: each behaviour written once, run on Telegram, Discord, console."""

from __future__ import annotations

import itertools

import pytest

from tests.conftest import STORAGES
from tests.harness import ALICE, BOB, Driver

# the parity suite runs on both database backends: what users see must not depend on it
pytestmark = [pytest.mark.usefixtures("chat"), pytest.mark.parametrize("storage", STORAGES)]


def groups_only(chat: Driver) -> None:
    if not chat.supports_groups:
        pytest.skip("the console has no group chats")


TG_USER = ALICE.id  # a Telegram private chat's id is the user's


def assert_code_blocks_closed(chat: Driver) -> None:
    """Each message shows whole code blocks: balanced fences on Discord and the console;
    on Telegram the fences became `pre` entities, so none may be left as text."""
    if chat.platform == "telegram":
        for m in chat.fake.messages(TG_USER):  # type: ignore[attr-defined]
            assert "```" not in m.text
            assert any(e["type"] == "pre" for e in m.entities)
    else:
        for r in chat.replies():
            assert r.text.count("```") % 2 == 0


def in_code_entity(message: object, needle: str) -> bool:
    """Whether `needle` (ASCII) lies inside a pre/code entity of a Telegram message."""
    text: str = message.text  # type: ignore[attr-defined]
    start = len(text[: text.index(needle)].encode("utf-16-le")) // 2
    return any(e["type"] in ("pre", "code") and e["offset"] <= start < e["offset"] + e["length"]
               for e in message.entities)  # type: ignore[attr-defined]


def user_texts(body: dict) -> list[str]:
    """The user/assistant contents of a chat request, in order."""
    out = []
    for m in body["messages"]:
        if m["role"] in ("user", "assistant"):
            c = m["content"]
            out.append(c if isinstance(c, str) else " ".join(
                p.get("text", "") for p in c if p.get("type") == "text"))
    return out


async def test_three_turns_carry_history(chat: Driver) -> None:
    assert await chat.ask("my name is Zed") == "echo: my name is Zed"
    assert await chat.ask("I like tea") == "echo: I like tea"
    assert await chat.ask("what is my name?") == "echo: what is my name?"
    third = chat.openai.chat_requests[-1]
    assert third["messages"][0]["role"] == "system"
    assert user_texts(third) == [
        "my name is Zed", "echo: my name is Zed", "I like tea", "echo: I like tea",
        "what is my name?",
    ]
    assert third["stream"] is True


async def test_usage_recorded_per_request(chat: Driver) -> None:
    await chat.ask("count my tokens")
    assert chat.app is not None
    rows = await chat.app.store.usage_rows()
    assert len(rows) == 1
    row = rows[0]
    assert row.platform == chat.platform and row.model == "gpt-5.4-mini"
    assert row.prompt_tokens > 0 and row.completion_tokens > 0 and not row.estimated


async def test_usage_estimated_when_server_omits_it(chat: Driver) -> None:
    chat.openai.omit_usage = True
    await chat.ask("no usage please")
    assert chat.app is not None
    (row,) = await chat.app.store.usage_rows()
    assert row.estimated and row.prompt_tokens > 0 and row.completion_tokens > 0


async def test_group_message_without_mention_is_recorded_not_answered(chat: Driver) -> None:
    groups_only(chat)
    await chat.send_text("the meeting is at noon", user=BOB, group=True)
    await chat.settle()
    assert chat.replies(group=True) == []
    assert chat.openai.chat_requests == []
    answer = await chat.ask("when is the meeting?", group=True, mention=True)
    assert answer == "echo: Alice: when is the meeting?"
    contents = user_texts(chat.openai.chat_requests[-1])
    assert contents == ["Bob: the meeting is at noon", "Alice: when is the meeting?"]


async def test_reply_to_bot_is_answered(chat: Driver) -> None:
    groups_only(chat)
    await chat.ask("hello bot", group=True, mention=True)
    bot_msg = chat.replies(group=True)[-1]
    answer = await chat.ask("and another thing", group=True, reply_to=bot_msg.id, user=BOB)
    assert answer == "echo: Bob: and another thing"


async def test_other_bots_are_ignored(chat: Driver) -> None:
    groups_only(chat)
    await chat.send_text("beep", group=True, mention=True, as_bot=True)
    await chat.ask("hi", group=True, mention=True)
    assert all("beep" not in " ".join(user_texts(r)) for r in chat.openai.chat_requests)


async def test_history_survives_restart(chat: Driver) -> None:
    await chat.ask("remember the code word: pineapple")
    await chat.restart()
    await chat.ask("what was the code word?")
    assert user_texts(chat.openai.chat_requests[-1])[:2] == [
        "remember the code word: pineapple", "echo: remember the code word: pineapple"]


async def test_reset_forgets_context_but_keeps_rows(chat: Driver) -> None:
    await chat.ask("secret is 42")
    reply = await chat.ask("/reset")
    assert "forgotten" in reply
    await chat.ask("what is the secret?")
    assert user_texts(chat.openai.chat_requests[-1]) == ["what is the secret?"]
    assert chat.app is not None
    assert await chat.app.store.count_turns() == 4


async def test_persona_set_show_reset(chat: Driver) -> None:
    shown = await chat.ask("/persona")
    assert "Default persona" in shown
    assert "updated" in await chat.ask("/persona You are a pirate. Speak like one.")
    await chat.ask("hello")
    assert chat.openai.chat_requests[-1]["messages"][0] == {
        "role": "system", "content": "You are a pirate. Speak like one."}
    assert "pirate" in await chat.ask("/persona")
    await chat.restart()
    await chat.ask("still a pirate?")
    assert chat.openai.chat_requests[-1]["messages"][0]["content"].startswith("You are a pirate")
    assert "reset" in await chat.ask("/persona reset")
    await chat.ask("hello again")
    assert "pirate" not in chat.openai.chat_requests[-1]["messages"][0]["content"]


async def test_model_command(chat: Driver) -> None:
    shown = await chat.ask("/model")
    assert "gpt-5.4-mini" in shown and "gpt-5.5" in shown
    assert "now uses" in await chat.ask("/model gpt-5.5")
    await chat.ask("which model?")
    assert chat.openai.chat_requests[-1]["model"] == "gpt-5.5"
    bad = await chat.ask("/model gpt-1")
    assert "must be one of" in bad or "Unknown model" in bad


async def test_help_lists_commands(chat: Driver) -> None:
    text = await chat.ask("/help")
    for name in ("/reset", "/persona", "/model", "/help"):
        assert name in text


async def test_unknown_command_gets_a_reply(chat: Driver) -> None:
    assert "Unknown command /frobnicate" in await chat.ask("/frobnicate now")
    assert chat.openai.chat_requests == []


LONG_CODE = "\n".join(f"    result_{i} = compute({i}) * {i}  # step {i}" for i in range(60))


def long_answer() -> str:
    parts = []
    for n in range(6):
        parts.append(f"## Part {n}\n\n" + ("Some explanation sentence here. " * 25).strip())
        parts.append(f"```python\ndef part_{n}():\n{LONG_CODE}\n```")
    text = "\n\n".join(parts)
    assert len(text) > 9000
    return text


@pytest.mark.parametrize("config_text", ["[chat]\nmax_output_tokens = 8000\n"])
async def test_long_answer_split_with_fences_intact(chat: Driver) -> None:
    answer = long_answer()
    chat.openai.reply(answer)
    await chat.send_text("write a lot")
    await chat.settle(timeout=30)
    replies = chat.replies()
    limit = {"telegram": 4096, "discord": 2000, "console": 100_000}[chat.platform]
    assert len(replies) >= 2 if chat.platform != "console" else len(replies) == 1
    for r in replies:
        assert len(r.text) <= limit
    assert_code_blocks_closed(chat)
    if chat.platform == "telegram":
        # every code line the user sees is inside a code block of its own message
        for m in chat.fake.messages(TG_USER):  # type: ignore[attr-defined]
            for line in m.text.splitlines():
                if "result_" in line:
                    assert in_code_entity(m, line), line
    joined = "\n".join(r.text for r in replies)
    for n in range(6):
        assert f"def part_{n}():" in joined
    for i in range(60):
        assert joined.count(f"result_{i} = compute({i}) * {i}  # step {i}") == 6
    assert "cut at the length limit" not in joined


async def test_answer_cut_at_length_limit_says_so(chat: Driver) -> None:
    chat.openai.reply("```python\n" + "x = 1\n" * 3000 + "```")
    text = await chat.ask("too long")
    assert text.rstrip().endswith("…(answer cut at the length limit)")
    assert_code_blocks_closed(chat)
    if chat.platform == "telegram":  # the note is outside the code block
        last = chat.fake.messages(TG_USER)[-1]  # type: ignore[attr-defined]
        assert not in_code_entity(last, "…(answer cut at the length limit)")


async def test_streaming_edits_stay_within_platform_limits(chat: Driver) -> None:
    if chat.platform == "console":
        pytest.skip("the console prints once; it does not edit")
    text = " ".join(f"word{i}" for i in range(200))  # ~6 s of streaming
    chat.openai.reply(text)
    chat.openai.chunk_size = 8
    chat.openai.chunk_delay = 0.03
    await chat.send_text("stream please")
    await chat.settle(timeout=30)
    (reply,) = chat.replies()
    assert reply.text == text
    times = [t for t, _ in reply.edits]
    assert len(times) >= 6, "the answer should grow in place while streaming"
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.9, gaps
    # Discord allows 5 edits per 5 s per channel: never 6 within 5 s. The times are taken
    # on the fake's side, so each carries the request's latency; 4.5 s leaves room for it
    # (a bot pacing at 1 s spans 5 s, one that ignores the interval far less)
    assert all(times[i + 5] - times[i] >= 4.5 for i in range(len(times) - 5))


async def test_server_error_then_success(chat: Driver) -> None:
    chat.openai.fail_next(500)
    assert await chat.ask("flaky?") == "echo: flaky?"
    assert len(chat.openai.chat_requests) == 2


async def test_rate_limit_honours_retry_after(chat: Driver) -> None:
    chat.openai.fail_next(429, headers={"retry-after": "1"})
    assert await chat.ask("busy?") == "echo: busy?"
    first, second = [r for r in chat.openai.requests if r.path.endswith("/chat/completions")]
    assert second.at - first.at >= 0.9


async def test_rate_limit_exhausted_tells_the_user(chat: Driver) -> None:
    chat.openai.fail_next(429, headers={"retry-after": "0"}, times=5)
    text = await chat.ask("still busy?")
    assert "rate limited" in text and "Traceback" not in text
    assert await chat.ask("and now?") == "echo: and now?"


async def test_quota_exhausted(chat: Driver) -> None:
    chat.openai.fail_next(429, code="insufficient_quota", type="insufficient_quota", times=5)
    assert "quota" in await chat.ask("anything")


@pytest.mark.parametrize("config_text", ['[models]\nchat = "no-such-model"\n'])
async def test_model_not_found(chat: Driver) -> None:
    text = await chat.ask("hello?")
    assert "no-such-model" in text and "is not available on this AI server" in text


@pytest.mark.parametrize("config_text", ['[access]\nallowed_users = ["1001", "alice"]\n'])
async def test_refused_user_told_once(chat: Driver) -> None:
    assert await chat.ask("hi", user=ALICE) == "echo: hi"
    text = await chat.ask("let me in", user=BOB)
    assert "not allowed" in text
    await chat.send_text("please", user=BOB)
    await chat.settle()
    assert len(chat.replies(user=BOB)) == 1
    assert [user_texts(r)[-1] for r in chat.openai.chat_requests] == ["hi"]


async def test_channels_concurrent_but_each_in_order(chat: Driver) -> None:
    if chat.platform == "console":
        pytest.skip("the console is a single channel")
    chat.openai.latency = 0.4
    chat.mark()
    await chat.send_text("a1", user=ALICE)
    await chat.send_text("a2", user=ALICE)
    await chat.send_text("b1", user=BOB)
    await chat.settle(expect=3, timeout=15)
    reqs = [r for r in chat.openai.requests if r.path.endswith("/chat/completions")]
    last = {user_texts(r.json)[-1]: r.at for r in reqs}
    assert last["b1"] < last["a1"] + 0.4, "channel B waited for channel A"
    assert last["a2"] >= last["a1"] + 0.4, "channel A's second message overtook its first"
    a2 = next(r.json for r in reqs if user_texts(r.json)[-1] == "a2")
    assert user_texts(a2) == ["a1", "echo: a1", "a2"]
    assert [r.text for r in chat.replies(user=ALICE)] == ["echo: a1", "echo: a2"]
    assert [r.text for r in chat.replies(user=BOB)] == ["echo: b1"]


async def test_model_error_midway_keeps_bot_alive(chat: Driver) -> None:
    chat.openai.fail_next(400, message="Invalid value for 'messages'.", code="invalid_value",
                          times=1)
    text = await chat.ask("break it")
    assert "rejected the request" in text and "Traceback" not in text
    assert await chat.ask("fine now?") == "echo: fine now?"
    assert len(chat.openai.chat_requests) == 2


async def test_threads_are_separate_conversations(chat: Driver) -> None:
    groups_only(chat)
    await chat.ask("topic one", thread=True, mention=True)
    await chat.ask("main channel", group=True, mention=True)
    assert user_texts(chat.openai.chat_requests[-1]) == ["Alice: main channel"]
    await chat.ask("topic two", thread=True, mention=True)
    assert user_texts(chat.openai.chat_requests[-1]) == [
        "Alice: topic one", "echo: Alice: topic one", "Alice: topic two"]
    assert [r.text for r in chat.replies(thread=True)] == [
        "echo: Alice: topic one", "echo: Alice: topic two"]


@pytest.mark.parametrize("config_text", ['[bot]\ngroup_trigger = "always"\n'])
async def test_group_trigger_always(chat: Driver) -> None:
    groups_only(chat)
    assert await chat.ask("no mention needed", group=True) == "echo: Alice: no mention needed"


@pytest.mark.parametrize("config_text", ["[bot]\nrecord_unaddressed = false\n"])
async def test_unaddressed_not_recorded_when_disabled(chat: Driver) -> None:
    groups_only(chat)
    await chat.send_text("private aside", user=BOB, group=True)
    await chat.settle()
    await chat.ask("hello", group=True, mention=True)
    assert user_texts(chat.openai.chat_requests[-1]) == ["Alice: hello"]
