"""The Discord adapter end to end: the real discord.py client against FakeDiscord."""

from __future__ import annotations

import asyncio
import base64
import gc
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import discord
import pytest

from adapters.discord_adapter import (
    IS_VOICE_MESSAGE,
    DiscordAdapter,
    InteractionReplier,
    attachment_kind,
    voice_metadata,
    voice_waveform,
)
from bot.commands import CommandSpec, CommandTable, Param, Subcommand
from bot.config import Config, load_config
from bot.errors import StartupError
from bot.events import Inbound
from bot.replies import OutFile, Replier
from tests.fakes.discord_api import FakeDiscord

ALICE = 1200000000000000001
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
    b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe"
    b"\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82"
)

SPECS = [
    CommandSpec("help", "Show what I can do"),
    CommandSpec(
        "model",
        "Pick the chat model",
        (Param("name", "Model to use", choices=("gpt-a", "gpt-b"), required=True),),
    ),
    CommandSpec(
        "image",
        "Draw a picture",
        (
            Param("prompt", "What to draw", type="text", required=True),
            Param("count", "How many", type="int", min_value=1, max_value=4),
        ),
    ),
    CommandSpec(
        "describe",
        "Describe an image",
        (
            Param("file", "The image", type="attachment", required=True),
            Param("question", "What to ask", type="text"),
        ),
    ),
    CommandSpec("start", "Telegram only", requires="start_command"),
    CommandSpec("pick", "Pick one of many", (
        Param("item", "Which", choices=tuple(f"item{i}" for i in range(30)), required=True),)),
    CommandSpec("tune", "T" * 150, subcommands=(
        Subcommand("on", "Switch on"),
        Subcommand("speed", "How fast", (Param("speed", "s" * 120, type="float", required=True,
                                               min_value=0.25, max_value=4.0),)),
        Subcommand("name", "Pick a name", (Param("name", "Which", choices=("ann", "bo"),
                                                 required=True),)),
    )),
]

Handler = Callable[[Inbound, Replier], Awaitable[None]]


class RecordingSink:
    """Collects what the adapter submits; optionally runs a handler like the router would."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.commands = CommandTable(SPECS)
        self.got: list[tuple[Inbound, Replier]] = []
        self.handler: Handler | None = None
        self.tasks: list[asyncio.Task[None]] = []

    async def submit(self, inbound: Inbound, replier: Replier) -> None:
        """Record, and run the handler in the background (submit must not block)."""
        self.got.append((inbound, replier))
        if self.handler is not None:
            self.tasks.append(asyncio.create_task(self.handler(inbound, replier)))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """The fake, with discord.py's REST base and gateway pointed at it (restored after)."""
    f = FakeDiscord()
    await f.start()
    try:
        with f.redirect_discord_py():
            yield f
    finally:
        await f.stop()


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[tuple[DiscordAdapter, RecordingSink]]:
    """A started adapter feeding a recording sink."""
    config = load_config(None, env={"OPENAI_API_KEY": "x", "DISCORD_BOT_TOKEN": fake.token})
    adapter = DiscordAdapter(config, guild_ready_timeout=0.05)
    sink = RecordingSink(config)
    await adapter.start(sink)
    try:
        yield adapter, sink
    finally:
        for task in sink.tasks:
            task.cancel()
        await adapter.stop()


async def next_inbound(
    fake: FakeDiscord, sink: RecordingSink, count: int = 1
) -> tuple[Inbound, Replier]:
    """Wait until the sink holds `count` items and return the last one."""
    await fake.wait_until(lambda: len(sink.got) >= count)
    return sink.got[count - 1]


def ogg_opus(seconds: float = 1.0) -> bytes:
    """A real OGG/Opus file (a tone) made with ffmpeg."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:a", "libopus", "-f", "ogg", "pipe:1"],
        check=True, capture_output=True,
    )
    return out.stdout


# --------------------------------------------------------------------------- start-up


async def test_start_syncs_commands_with_options_and_choices(bot: Any, fake: FakeDiscord) -> None:
    names = [c["name"] for c in fake.commands]
    # /start needs a capability Discord lacks: not synced
    assert names == ["help", "model", "image", "describe", "pick", "tune"]
    by_name = {c["name"]: c for c in fake.commands}
    model = by_name["model"]["options"][0]
    assert model["type"] == 3 and model["required"] is True
    assert [c["value"] for c in model["choices"]] == ["gpt-a", "gpt-b"]
    prompt, count = by_name["image"]["options"]
    assert (prompt["name"], prompt["type"], prompt["required"]) == ("prompt", 3, True)
    assert (count["name"], count["type"]) == ("count", 4)
    assert (count["min_value"], count["max_value"]) == (1, 4)
    assert by_name["describe"]["options"][0]["type"] == 11
    assert by_name["image"]["description"] == "Draw a picture"
    # 30 choices are more than Discord offers: a free option, checked by the core
    (item,) = by_name["pick"]["options"]
    assert item["type"] == 3 and "choices" not in item
    tune = by_name["tune"]
    assert len(tune["description"]) == 100 and tune["description"].endswith("…")
    assert [(o["name"], o["type"]) for o in tune["options"]] == [
        ("on", 1), ("speed", 1), ("name", 1)]
    (speed,) = tune["options"][1]["options"]
    assert (speed["type"], speed["min_value"], speed["max_value"]) == (10, 0.25, 4.0)
    assert speed["required"] is True and len(speed["description"]) == 100
    (name,) = tune["options"][2]["options"]
    assert [c["value"] for c in name["choices"]] == ["ann", "bo"]
    assert any(c.method == "PUT" and c.path.endswith("/commands") for c in fake.calls)


async def test_missing_message_content_intent_is_refused(fake: FakeDiscord) -> None:
    fake.required_intents |= 1 << 1  # pretend GUILD_MEMBERS were required too
    config = load_config(None, env={"OPENAI_API_KEY": "x", "DISCORD_BOT_TOKEN": fake.token})
    adapter = DiscordAdapter(config, guild_ready_timeout=0.05)
    with pytest.raises(StartupError, match="Message Content intent") as caught:
        await adapter.start(RecordingSink(config))
    assert caught.value.exit_code == 2
    await adapter.stop()


def open_sessions() -> Callable[[], list[aiohttp.ClientSession]]:
    """aiohttp sessions opened after this call and still open when the result is called:
    each would log "Unclosed client session" when collected."""
    def live() -> list[aiohttp.ClientSession]:
        gc.collect()
        return [o for o in gc.get_objects()
                if isinstance(o, aiohttp.ClientSession) and not o.closed]

    before = {id(s) for s in live()}
    return lambda: [s for s in live() if id(s) not in before]


async def test_rejected_token_is_a_startup_error(fake: FakeDiscord) -> None:
    config = load_config(None, env={"OPENAI_API_KEY": "x", "DISCORD_BOT_TOKEN": "not-the-token"})
    leaked = open_sessions()
    adapter = DiscordAdapter(config, guild_ready_timeout=0.05)
    with pytest.raises(StartupError, match=r"^Discord rejected DISCORD_BOT_TOKEN") as caught:
        await adapter.start(RecordingSink(config))
    assert caught.value.exit_code == 2 and "\n" not in caught.value.message
    assert [c.path for c in fake.calls] == ["/users/@me"]  # refused at login
    assert leaked() == []


async def test_unreachable_discord_is_a_startup_error() -> None:
    gone = FakeDiscord()
    await gone.start()
    with gone.redirect_discord_py():
        await gone.stop()  # its port now refuses connections
        config = load_config(None, env={"OPENAI_API_KEY": "x", "DISCORD_BOT_TOKEN": gone.token})
        leaked = open_sessions()
        adapter = DiscordAdapter(config, guild_ready_timeout=0.05)
        with pytest.raises(StartupError, match=r"^Could not reach Discord") as caught:
            await adapter.start(RecordingSink(config))
        assert caught.value.exit_code == 1 and "\n" not in caught.value.message
        assert leaked() == []


# --------------------------------------------------------------------------- messages


async def test_dm_is_private_and_addressed(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(0, ALICE, "hello there", dm=True, global_name="Alice A.")
    inbound, _ = await next_inbound(fake, sink)
    assert inbound.is_private and inbound.addressed
    assert inbound.channel.chat_id == str(fake.dm_channel(ALICE))
    assert inbound.channel.thread_id is None
    assert inbound.author.id == str(ALICE) and inbound.author.name == "Alice A."
    assert inbound.text == "hello there"


async def test_guild_mention_addressing_and_stripping(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(fake.channel_id, ALICE, "just chatting")
    fake.user_message(fake.channel_id, ALICE, "what is 2+2?", mention_bot=True)
    first, _ = await next_inbound(fake, sink, 1)
    second, _ = await next_inbound(fake, sink, 2)
    assert not first.addressed and not first.is_private
    assert first.channel.chat_id == str(fake.channel_id)
    assert second.addressed and second.text == "what is 2+2?"


async def test_typed_command_when_addressed(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(fake.channel_id, ALICE, "/image a cat 2", mention_bot=True)
    inbound, _ = await next_inbound(fake, sink)
    assert inbound.command is not None and inbound.command.name == "image"
    assert inbound.command.args == {"prompt": "a cat 2"}


async def test_typed_subcommand_replying_to_a_message(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    first = fake.user_message(fake.channel_id, ALICE, "a picture", attachments=[
        (PNG, "a.png", "image/png")])
    fake.user_message(fake.channel_id, ALICE, "/tune speed 2", mention_bot=True,
                      reply_to=int(first["id"]))
    inbound, _ = await next_inbound(fake, sink, 2)
    assert inbound.command is not None and inbound.addressed
    assert (inbound.command.sub, inbound.command.args) == ("speed", {"speed": 2.0})
    assert inbound.reply_to is not None and inbound.reply_to.id == first["id"]
    assert [a.kind for a in inbound.reply_to.attachments] == ["image"]


async def test_reply_to_bot_is_addressed_and_quoted(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(fake.channel_id, ALICE, "hi", mention_bot=True)
    _, replier = await next_inbound(fake, sink)
    sent = await replier.send("I am the bot")
    fake.user_message(fake.channel_id, ALICE, "tell me more", reply_to=int(sent.id),
                      reply_ping=False)
    inbound, _ = await next_inbound(fake, sink, 2)
    assert inbound.addressed
    assert inbound.reply_to is not None and inbound.reply_to.from_self
    assert inbound.reply_to.text == "I am the bot" and inbound.reply_to.id == sent.id


async def test_thread_message_keys_parent_and_thread(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(fake.thread_id, ALICE, "in a thread", mention_bot=True)
    inbound, replier = await next_inbound(fake, sink)
    assert inbound.channel.chat_id == str(fake.channel_id)
    assert inbound.channel.thread_id == str(fake.thread_id)
    await replier.send("answer in thread")
    assert [m.content for m in fake.messages(fake.thread_id)] == ["answer in thread"]


async def test_image_and_voice_attachments(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    files = [
        (PNG, "pic.png", "image/png"),
        (b"GIF89a", "a.gif", "image/gif"),
        (b"%PDF-1.4", "doc.pdf", "application/pdf"),
    ]
    fake.user_message(fake.channel_id, ALICE, "look", mention_bot=True, attachments=files)
    inbound, _ = await next_inbound(fake, sink)
    assert [a.kind for a in inbound.attachments] == ["image", "image", "document"]
    assert await inbound.attachments[0].read() == PNG
    assert inbound.attachments[0].size == len(PNG)
    ogg = b"OggS" + bytes(100)
    fake.user_message(0, ALICE, "", dm=True, flags=IS_VOICE_MESSAGE,
                      attachments=[(ogg, "voice-message.ogg", "audio/ogg")])
    voice, _ = await next_inbound(fake, sink, 2)
    assert voice.attachments[0].kind == "voice" and voice.attachments[0].duration is not None
    assert await voice.attachments[0].read() == ogg


def test_attachment_kinds() -> None:
    assert attachment_kind("image/webp", "x.webp", False) == "image"
    assert attachment_kind("audio/ogg", "x.ogg", True) == "voice"
    assert attachment_kind("audio/ogg", "x.ogg", False) == "audio"
    assert attachment_kind("audio/mpeg", "x.mp3", True) == "audio"
    assert attachment_kind("video/mp4", "x.mp4", False) == "video"
    assert attachment_kind(None, "notes.txt", False) == "document"


async def test_bots_own_and_system_messages_are_ignored(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(fake.channel_id, 1300000000000000001, "beep", is_bot=True, mention_bot=True)
    fake.user_message(fake.channel_id, ALICE, "", message_type=7)  # member joined
    fake.user_message(fake.channel_id, ALICE, "marker", mention_bot=True)
    inbound, replier = await next_inbound(fake, sink)
    assert inbound.text == "marker"
    await replier.send("my own message comes back over the gateway")
    fake.user_message(fake.channel_id, ALICE, "marker 2", mention_bot=True)
    await next_inbound(fake, sink, 2)
    assert [i.text for i, _ in sink.got] == ["marker", "marker 2"]


# --------------------------------------------------------------------------- replies in channels


async def test_channel_send_and_edit(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(fake.channel_id, ALICE, "hi @everyone", mention_bot=True)
    inbound, replier = await next_inbound(fake, sink)
    sent = await replier.send("first @everyone")
    await replier.edit(sent, "first, edited")
    msgs = fake.messages(fake.channel_id)
    assert len(msgs) == 1 and msgs[0].content == "first, edited"
    # model output never pings everyone: neutralised in the text and in allowed_mentions
    assert [text for _, text in msgs[0].edits] == ["first @\u200beveryone", "first, edited"]
    assert msgs[0].message_reference is not None
    assert str(msgs[0].message_reference["message_id"]) == inbound.id
    assert msgs[0].allowed_mentions is not None and msgs[0].allowed_mentions["parse"] == []
    post = next(c for c in fake.calls if c.method == "POST" and c.path.endswith("/messages"))
    assert post.json["allowed_mentions"] == {"parse": [], "replied_user": False}


async def test_dm_replies_do_not_reference(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(0, ALICE, "hi", dm=True)
    _, replier = await next_inbound(fake, sink)
    await replier.send("hello")
    (msg,) = fake.messages(fake.dm_channel(ALICE))
    assert msg.content == "hello" and msg.message_reference is None


async def test_2001_chars_rejected_so_long_replies_are_split(bot: Any, fake: FakeDiscord) -> None:
    adapter, sink = bot
    with pytest.raises(discord.HTTPException) as info:
        await adapter.client.get_partial_messageable(fake.channel_id).send("x" * 2001)
    assert info.value.status == 400 and info.value.code == 50035
    assert "2000 or fewer" in str(info.value)
    fake.user_message(fake.channel_id, ALICE, "long please", mention_bot=True)
    _, replier = await next_inbound(fake, sink)
    await replier.reply_long("word " * 900)
    msgs = fake.messages(fake.channel_id)
    assert len(msgs) >= 3 and all(len(m.content) <= 2000 for m in msgs)


async def test_429_then_success(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(fake.channel_id, ALICE, "hi", mention_bot=True)
    _, replier = await next_inbound(fake, sink)
    fake.fail_next("POST", "/channels/*/messages", retry_after=0.3)
    await replier.send("after the rate limit")
    posts = [c for c in fake.calls if c.method == "POST" and c.path.endswith("/messages")]
    assert [c.status for c in posts] == [429, 200]
    assert posts[1].time - posts[0].time >= 0.3
    assert fake.messages(fake.channel_id)[-1].content == "after the rate limit"


@pytest.mark.parametrize("scope", ["user", "shared", "global"])
async def test_429_of_every_scope_is_waited_out(bot: Any, fake: FakeDiscord, scope: str) -> None:
    """discord.py reads the 429 (a global one locks every route of the process) and
    retries; the reply arrives once. The fake answers as Discord's rate-limit docs show."""
    _, sink = bot
    fake.user_message(fake.channel_id, ALICE, "hi", mention_bot=True)
    _, replier = await next_inbound(fake, sink)
    url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
    fake.fail_next("POST", "/channels/*/messages", retry_after=0.25, scope=scope)
    async with aiohttp.ClientSession() as http, http.post(
            url, json={"content": "x"}, headers={"Authorization": f"Bot {fake.token}"}) as resp:
        body, headers = await resp.json(), resp.headers
    assert resp.status == 429 and body["retry_after"] == 0.25
    assert body["global"] is (scope == "global") and headers["Retry-After"] == "1"
    assert headers["X-RateLimit-Scope"] == scope
    assert ("X-RateLimit-Global" in headers) is (scope == "global")
    assert ("X-RateLimit-Bucket" in headers) is (scope != "global")
    fake.fail_next("POST", "/channels/*/messages", retry_after=0.25, scope=scope)
    await replier.send("after the rate limit")
    posts = [c for c in fake.calls if c.method == "POST" and c.path.endswith("/messages")]
    assert [c.status for c in posts] == [429, 429, 200]
    assert posts[2].time - posts[1].time >= 0.25
    assert [m.content for m in fake.messages(fake.channel_id)] == ["after the rate limit"]


async def test_typing_and_images_in_one_message(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(fake.channel_id, ALICE, "draw", mention_bot=True)
    _, replier = await next_inbound(fake, sink)
    await replier.start_action("typing")
    assert fake.typing(fake.channel_id) == 1
    sent = await replier.send_files([
        OutFile(PNG, "a.png", "image/png", "image", caption="two cats"),
        OutFile(PNG, "b.png", "image/png", "image"),
    ])
    assert len(sent) == 2 and sent[0].id == sent[1].id
    (msg,) = fake.messages(fake.channel_id)
    assert msg.content == "two cats"
    assert [(a[0], a[1], a[2]) for a in msg.attachments] == [
        ("a.png", PNG, "image/png"), ("b.png", PNG, "image/png")]


# --------------------------------------------------------------------------- voice messages


def test_voice_waveform_shape() -> None:
    wave = base64.b64decode(voice_waveform([0.0, 0.5, -1.0, 0.25] * 1000))
    assert len(wave) == 256 and max(wave) == 255
    assert len(base64.b64decode(voice_waveform([1, -2, 3]))) == 3
    assert base64.b64decode(voice_waveform([])) == b"\x00"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
async def test_voice_metadata_from_the_ogg_sent() -> None:
    duration, waveform = await voice_metadata(OutFile(ogg_opus(2.0), "a.ogg", "audio/ogg",
                                                      "voice"))
    assert duration == pytest.approx(2.0, abs=0.05)
    wave = base64.b64decode(waveform)
    assert len(wave) == 256 and max(wave) == 255
    duration, waveform = await voice_metadata(OutFile(b"junk" * 10, "a.ogg", "audio/ogg",
                                                      "voice", duration=3.0))
    assert duration == 3.0 and len(set(base64.b64decode(waveform))) == 1


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
async def test_voice_outfile_is_a_native_voice_message(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.user_message(fake.channel_id, ALICE, "say it", mention_bot=True)
    _, replier = await next_inbound(fake, sink)
    audio = ogg_opus(1.5)
    await replier.send_file(OutFile(audio, "reply.ogg", "audio/ogg", "voice"))
    (msg,) = fake.messages(fake.channel_id)
    assert msg.flags & IS_VOICE_MESSAGE and msg.content == ""
    ((name, data, ctype, extra),) = msg.attachments
    assert data == audio and ctype == "audio/ogg" and name.endswith(".ogg")
    assert 1.3 <= extra["duration_secs"] <= 1.7
    wave = base64.b64decode(extra["waveform"])
    assert 0 < len(wave) <= 256 and max(wave) > 0
    paths = [(c.method, c.path.split("/")[-1]) for c in fake.calls]
    assert ("POST", "attachments") in paths and ("POST", "messages") in paths


async def test_voice_refused_falls_back_to_audio_file(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.disallow_voice(fake.channel_id)
    fake.user_message(fake.channel_id, ALICE, "say it", mention_bot=True)
    _, replier = await next_inbound(fake, sink)
    audio = b"OggS" + bytes(200)
    await replier.send_file(OutFile(audio, "reply.ogg", "audio/ogg", "voice", duration=2.0))
    (msg,) = fake.messages(fake.channel_id)
    assert not msg.flags & IS_VOICE_MESSAGE
    assert msg.attachments[0][1] == audio


# --------------------------------------------------------------------------- slash commands


async def test_slash_command_typed_and_deferred_by_working(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    release = asyncio.Event()

    async def handler(inbound: Inbound, replier: Replier) -> None:
        async with replier.working():
            await release.wait()
        sent = await replier.send("here is your picture")
        await replier.edit(sent, "here is your picture!")
        extra = await replier.send("and a followup")
        await replier.edit(extra, "and an edited followup")

    sink.handler = handler
    t0 = time.monotonic()
    payload = fake.slash("image", {"prompt": "a red fox", "count": 2},
                         channel_id=fake.channel_id, user_id=ALICE)
    iid = int(payload["id"])
    inbound, replier = await next_inbound(fake, sink)
    assert isinstance(replier, InteractionReplier)
    assert inbound.id == payload["id"] and inbound.addressed and not inbound.is_private
    assert inbound.command is not None
    assert inbound.command.name == "image"
    assert inbound.command.args == {"prompt": "a red fox", "count": 2}
    assert inbound.command.error is None
    await fake.wait_until(lambda: len(fake.interaction_responses(iid)) >= 1)
    deferred = fake.interaction_responses(iid)[0]
    # working() defers at once, well before the adapter's own 2 s safety net
    assert deferred["type"] == 5 and deferred["time"] - t0 < 1.0
    release.set()
    await fake.wait_until(lambda: len(fake.interaction_responses(iid)) >= 5)
    kinds = [r["kind"] for r in fake.interaction_responses(iid)]
    assert kinds == ["callback", "edit_original", "edit_original", "followup", "edit_followup"]
    msgs = fake.messages(fake.channel_id)
    assert [m.content for m in msgs] == ["here is your picture!", "and an edited followup"]
    assert all(m.via_interaction for m in msgs)


async def test_defer_happens_within_three_seconds(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    t0 = time.monotonic()
    payload = fake.slash("help", {}, channel_id=fake.channel_id, user_id=ALICE)
    iid = int(payload["id"])
    await next_inbound(fake, sink)  # no handler: the adapter's own safety net must defer
    await fake.wait_until(lambda: bool(fake.interaction_responses(iid)), timeout=3.0)
    first = fake.interaction_responses(iid)[0]
    assert first["type"] == 5 and first["time"] - t0 < 3.0


async def test_slash_send_before_defer_responds_directly(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    payload = fake.slash("model", {"name": "gpt-b"}, channel_id=fake.channel_id, user_id=ALICE)
    inbound, replier = await next_inbound(fake, sink)
    assert inbound.command is not None and inbound.command.args == {"name": "gpt-b"}
    sent = await replier.send("Model set to gpt-b")
    await replier.edit(sent, "Model set to **gpt-b**")
    responses = fake.interaction_responses(int(payload["id"]))
    assert responses[0]["type"] == 4
    assert responses[0]["json"]["data"]["allowed_mentions"]["parse"] == []
    (msg,) = fake.messages(fake.channel_id)
    assert msg.id == int(sent.id) and msg.content == "Model set to **gpt-b**"


async def test_slash_bad_args_become_command_error(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.slash("pick", {"item": "item99"}, channel_id=fake.channel_id, user_id=ALICE)
    inbound, _ = await next_inbound(fake, sink)
    assert inbound.command is not None and inbound.command.error is not None
    assert "must be one of" in inbound.command.error


async def test_fake_offers_only_what_discord_s_ui_can_send(bot: Any, fake: FakeDiscord) -> None:
    with pytest.raises(AssertionError, match=r"takes 1\.\.4"):
        fake.slash("image", {"prompt": "x", "count": 9}, channel_id=fake.channel_id,
                   user_id=ALICE)
    with pytest.raises(AssertionError, match="needs one of the subcommands"):
        fake.slash("tune", {}, channel_id=fake.channel_id, user_id=ALICE)
    with pytest.raises(AssertionError, match="offers only"):
        fake.slash("tune", {"name": "cy"}, sub="name", channel_id=fake.channel_id,
                   user_id=ALICE)


async def test_slash_subcommand_arrives_nested_and_typed(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    payload = fake.slash("tune", {"speed": 1.5}, sub="speed", channel_id=fake.channel_id,
                         user_id=ALICE)
    assert payload["data"]["options"] == [
        {"name": "speed", "type": 1, "options": [{"name": "speed", "type": 10, "value": 1.5}]}]
    inbound, _ = await next_inbound(fake, sink)
    call = inbound.command
    assert call is not None and call.error is None
    assert (call.name, call.sub, call.args) == ("tune", "speed", {"speed": 1.5})
    assert inbound.text == "/tune speed 1.5"
    fake.slash("tune", {}, sub="on", channel_id=fake.channel_id, user_id=ALICE)
    inbound, _ = await next_inbound(fake, sink, 2)
    assert inbound.command is not None and (inbound.command.sub, inbound.command.args) == (
        "on", {})


async def test_fake_validates_command_json_like_discord(fake: FakeDiscord) -> None:
    import aiohttp

    auth = {"Authorization": f"Bot {fake.token}"}
    url = f"{fake.api_base}/applications/{fake.application_id}/commands"

    def opt(name: str, otype: int = 3, **kw: Any) -> dict[str, Any]:
        return {"name": name, "description": "d", "type": otype, **kw}

    sub = opt("on", 1)
    bad = [
        {"name": "Caps", "description": "d"},
        {"name": "ok", "description": "x" * 101},
        {"name": "mixed", "description": "d", "options": [sub, opt("word")]},
        {"name": "deep", "description": "d", "options": [opt("on", 1, options=[opt("x", 1)])]},
        {"name": "group", "description": "d", "options": [opt("g", 2, options=[opt("w")])]},
        {"name": "many", "description": "d", "options": [opt(
            "w", choices=[{"name": f"c{i}", "value": f"c{i}"} for i in range(26)])]},
        {"name": "order", "description": "d", "options": [opt("a"), opt("b", required=True)]},
        {"name": "bound", "description": "d", "options": [opt("a", min_value=1)]},
        {"name": "huge", "description": "d", "options": [opt(f"o{i}", description="y" * 100,
            choices=[{"name": "n" * 100, "value": "v" * 100}] * 25) for i in range(2)]},
    ]
    async with aiohttp.ClientSession() as http:
        for cmd in bad:
            async with http.put(url, json=[cmd], headers=auth) as r:
                body = await r.json()
                assert r.status == 400 and body["code"] == 50035, (cmd["name"], body)
        good = {"name": "voice", "description": "d", "options": [
            sub, opt("speed", 1, options=[opt("speed", 10, required=True, min_value=0.25,
                                              max_value=4)]),
            opt("g", 2, options=[opt("x", 1, options=[opt("w", 11)])])]}
        async with http.put(url, json=[good], headers=auth) as r:
            assert r.status == 200, await r.text()


async def test_slash_attachment_and_dm_and_thread(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    fake.slash("describe", {"file": (PNG, "cat.png", "image/png"), "question": "what?"},
               channel_id=fake.thread_id, user_id=ALICE)
    inbound, _ = await next_inbound(fake, sink)
    assert inbound.channel.thread_id == str(fake.thread_id)
    assert inbound.command is not None and inbound.command.args["question"] == "what?"
    (att,) = inbound.attachments
    assert att.kind == "image" and await att.read() == PNG
    assert inbound.command.args["file"] is att
    fake.slash("help", {}, channel_id=0, user_id=ALICE, dm=True)
    dm, _ = await next_inbound(fake, sink, 2)
    assert dm.is_private and dm.channel.chat_id == str(fake.dm_channel(ALICE))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
async def test_slash_voice_reply_is_a_voice_followup(bot: Any, fake: FakeDiscord) -> None:
    _, sink = bot
    payload = fake.slash("help", {}, channel_id=fake.channel_id, user_id=ALICE)
    _, replier = await next_inbound(fake, sink)
    await replier.send_file(OutFile(ogg_opus(1.0), "speech.ogg", "audio/ogg", "voice"))
    kinds = [r["kind"] for r in fake.interaction_responses(int(payload["id"]))]
    assert kinds == ["callback", "followup"]
    (msg,) = fake.messages(fake.channel_id)
    assert msg.flags & IS_VOICE_MESSAGE
    assert {"duration_secs", "waveform"} <= set(msg.attachments[0][3])


# --------------------------------------------------------------------------- the fake itself


async def test_fake_answers_errors_like_discord(fake: FakeDiscord) -> None:
    import aiohttp

    auth = {"Authorization": f"Bot {fake.token}"}
    base = fake.api_base
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/users/@me") as r:
            assert r.status == 401 and await r.json() == {"message": "401: Unauthorized",
                                                          "code": 0}
        async with http.get(f"{base}/nope", headers=auth) as r:
            assert r.status == 404 and (await r.json())["message"] == "404: Not Found"
        url = f"{base}/channels/{fake.channel_id}/messages"
        async with http.post(url, json={"content": ""}, headers=auth) as r:
            assert r.status == 400 and (await r.json())["code"] == 50006
        async with http.post(url, json={"content": "y" * 2001}, headers=auth) as r:
            body = await r.json()
            assert body["code"] == 50035
            assert body["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
        async with http.patch(f"{url}/123456789012345678", json={"content": "x"},
                              headers=auth) as r:
            assert r.status == 404 and (await r.json())["code"] == 10008
        async with http.get(f"{base}/channels/42", headers=auth) as r:
            assert (await r.json())["code"] == 10003
        async with http.post(url, json={"content": "ok"}, headers=auth) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            assert int(r.headers["X-RateLimit-Remaining"]) >= 0
            assert r.headers["X-RateLimit-Bucket"]
        fake.fail_next("POST", "/channels/*/messages", retry_after=1.5)
        async with http.post(url, json={"content": "ok"}, headers=auth) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "2"
            assert r.headers["X-RateLimit-Scope"] == "user"
            assert await r.json() == {"message": "You are being rate limited.",
                                      "retry_after": 1.5, "global": False}


async def test_fake_interaction_deadline_and_double_ack(bot: Any, fake: FakeDiscord) -> None:
    import aiohttp

    late = fake.slash("help", {}, channel_id=fake.channel_id, user_id=ALICE)
    on_time = fake.slash("help", {}, channel_id=fake.channel_id, user_id=ALICE)
    async with aiohttp.ClientSession() as http:
        url = f"{fake.api_base}/interactions/{on_time['id']}/{on_time['token']}/callback"
        async with http.post(url, json={"type": 5}) as r:
            assert r.status == 204  # the adapter's own safety net waits 2 s
        async with http.post(url, json={"type": 5}) as r:
            assert r.status == 400 and (await r.json())["code"] == 40060
        fake.interaction_deadline = 0.0
        url = f"{fake.api_base}/interactions/{late['id']}/{late['token']}/callback"
        async with http.post(url, json={"type": 5}) as r:
            assert r.status == 404 and (await r.json())["code"] == 10062


async def test_fake_gateway_handshake(fake: FakeDiscord) -> None:
    import json
    import zlib

    import aiohttp

    async with aiohttp.ClientSession() as http:
        url = fake.gateway_url + "/?v=10&encoding=json&compress=zlib-stream"
        async with http.ws_connect(url) as ws:
            inflate = zlib.decompressobj()

            async def frame() -> dict[str, Any]:
                msg = await asyncio.wait_for(ws.receive(), 5)
                return json.loads(inflate.decompress(msg.data))  # type: ignore[no-any-return]

            assert (await frame())["op"] == 10
            await ws.send_str(json.dumps({"op": 1, "d": None}))
            assert (await frame())["op"] == 11
            intents = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15)
            await ws.send_str(json.dumps({"op": 2, "d": {"token": fake.token, "intents": intents,
                                                         "properties": {}}}))
            ready, guild = await frame(), await frame()
            assert (ready["t"], ready["s"], guild["t"], guild["s"]) == (
                "READY", 1, "GUILD_CREATE", 2)
            assert ready["d"]["application"]["id"] == str(fake.application_id)
            assert {c["id"] for c in guild["d"]["threads"]} == {str(fake.thread_id)}
        async with http.ws_connect(url) as ws:
            await ws.receive()
            await ws.send_str(json.dumps({"op": 2, "d": {"token": "wrong", "intents": 0}}))
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4004


# --------------------------------------------------------------------------- send-only worker


def _gateway_calls(fake: FakeDiscord, since: int) -> list[str]:
    """What only a receiving process does: dial the gateway, ask for shards, sync commands."""
    return [f"{c.method} {c.path}" for c in fake.calls[since:]
            if c.path in ("/gateway-ws", "/gateway", "/gateway/bot")
            or (c.method == "PUT" and c.path.endswith("/commands"))]


async def test_send_only_worker_answers_journal_restored_messages(
        bot: Any, fake: FakeDiscord) -> None:
    """receive=False (the worker role): HTTP login only, no gateway; a message and a
    slash command another process received, rebuilt from their journal JSON, are
    answered: channel replies of every kind, and the interaction through its token."""
    from bot.journal import dump_inbound, load_inbound, replier_for

    ingress, sink = bot
    fake.user_message(fake.channel_id, ALICE, "look", mention_bot=True,
                      attachments=[(PNG, "dot.png", "image/png")])
    message, _ = await next_inbound(fake, sink)
    payload = fake.slash("image", {"prompt": "a red fox"}, channel_id=fake.channel_id,
                         user_id=ALICE)
    command, ingress_replier = await next_inbound(fake, sink, 2)
    await ingress_replier.defer()  # the ingress acknowledged it ("thinking…")
    stored = [dump_inbound(message), dump_inbound(command)]
    assert "token" not in stored[0] and payload["token"] in stored[1]

    before = len(fake.calls)
    worker = DiscordAdapter(ingress.config)
    await worker.start(RecordingSink(ingress.config), receive=False)
    try:
        assert worker.connected and not worker.receiving
        restored = load_inbound(stored[0], worker)
        assert await restored.attachments[0].read() == PNG  # from the CDN URL
        replier = replier_for(worker, restored)
        await replier.start_action("typing")
        stream = replier.stream()
        stream.append("a small ")
        stream.append("**dot**")
        await stream.finish()
        sent = await replier.send("second")
        await replier.edit(sent, "second, edited")
        await replier.send_file(OutFile(ogg_opus(0.5), "a.ogg", "audio/ogg", kind="voice"))
        await replier.send_files([OutFile(PNG, f"{i}.png", "image/png", kind="image")
                                  for i in range(2)])
        await replier.reply_long("y " * 1500)  # split at 2000
        await replier.delete(sent)  # type: ignore[attr-defined]

        slash = load_inbound(stored[1], worker)
        answer = replier_for(worker, slash)
        assert isinstance(answer, InteractionReplier)
        first = await answer.send("here is your fox")  # fills the deferred response
        more = await answer.send("and more")  # a followup
        await answer.edit(more, "and more, edited")
    finally:
        await worker.stop()
    assert _gateway_calls(fake, before) == []
    assert fake.typing(fake.channel_id) >= 1
    msgs = [m for m in fake.messages(fake.channel_id) if not m.via_interaction]
    texts = [m.content for m in msgs]
    assert texts[0] == "a small **dot**" and "second, edited" not in texts
    assert str(msgs[0].message_reference["message_id"]) == message.id  # type: ignore[index]
    assert any(m.flags & IS_VOICE_MESSAGE for m in msgs)
    assert any(len(m.attachments) == 2 for m in msgs)
    kinds = [r["kind"] for r in fake.interaction_responses(int(payload["id"]))]
    assert kinds == ["callback", "edit_original", "followup", "edit_followup"]
    assert first.id == str(fake.interaction_responses(int(payload["id"]))[0]["message_id"])
    assert [m.content for m in fake.messages(fake.channel_id) if m.via_interaction] == [
        "here is your fox", "and more, edited"]


async def test_send_only_worker_answers_an_unacknowledged_slash_command(
        bot: Any, fake: FakeDiscord) -> None:
    """Picked up by a worker before the ingress deferred it: the worker's reply is the
    interaction's response; once Discord's 3 s are over unanswered, the channel."""
    from bot.journal import dump_inbound, load_inbound, replier_for

    ingress, sink = bot
    payload = fake.slash("help", {}, channel_id=fake.channel_id, user_id=ALICE)
    command, _ = await next_inbound(fake, sink)
    worker = DiscordAdapter(ingress.config)
    await worker.start(RecordingSink(ingress.config), receive=False)
    try:
        answer = replier_for(worker, load_inbound(dump_inbound(command), worker))
        await answer.send("what I can do")
    finally:
        await worker.stop()
    responses = fake.interaction_responses(int(payload["id"]))
    assert responses[0]["type"] == 4  # the worker answered first; the ingress's defer lost
    assert [m.content for m in fake.messages(fake.channel_id)] == ["what I can do"]


async def test_send_only_worker_answers_an_expired_interaction_in_its_channel(
        bot: Any, fake: FakeDiscord) -> None:
    """Nobody acknowledged the slash command in time (Discord: 10062 Unknown interaction):
    the worker's answer goes to the thread the command was run in, typing included."""
    from bot.journal import dump_inbound, load_inbound, replier_for

    ingress, sink = bot
    fake.slash("help", {}, channel_id=fake.thread_id, user_id=ALICE)
    command, _ = await next_inbound(fake, sink)
    fake.interaction_deadline = 0.0  # the 3 s are over
    worker = DiscordAdapter(ingress.config)
    await worker.start(RecordingSink(ingress.config), receive=False)
    try:
        answer = replier_for(worker, load_inbound(dump_inbound(command), worker))
        await answer.defer()
        await answer.start_action("typing")
        sent = await answer.send("what I can do")
        await answer.edit(sent, "what I can do, edited")
    finally:
        await worker.stop()
    assert [m.content for m in fake.messages(fake.thread_id)] == ["what I can do, edited"]
    assert not fake.messages(fake.thread_id)[0].via_interaction
    assert fake.typing(fake.thread_id) == 1


async def test_send_only_rejected_token_is_a_startup_error(fake: FakeDiscord) -> None:
    config = load_config(None, env={"OPENAI_API_KEY": "x", "DISCORD_BOT_TOKEN": "wrong"})
    adapter = DiscordAdapter(config)
    with pytest.raises(StartupError) as err:
        await adapter.start(RecordingSink(config), receive=False)
    assert err.value.exit_code == 2


# --------------------------------------------------------------------------- shards


INTENTS = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15)


async def test_fake_gateway_shards_like_discord(fake: FakeDiscord) -> None:
    """IDENTIFY's shard array: out of range is closed with 4010; READY lists the shard's
    guilds only and echoes the shard; guild events go to the guild's shard, DMs to 0."""
    import json

    other, other_channel = fake.add_guild(shard=(0, 2))
    assert fake.shard_of(other, 2) == 0 and fake.shard_of(fake.guild_id, 2) == 1
    async with aiohttp.ClientSession() as http:
        url = fake.gateway_url + "/?v=10&encoding=json"
        for bad in ([2, 2], [0, 0], [-1, 2], [0], "0,2", [True, 2]):
            async with http.ws_connect(url) as ws:
                await ws.receive()
                await ws.send_str(json.dumps({"op": 2, "d": {
                    "token": fake.token, "intents": INTENTS, "properties": {}, "shard": bad}}))
                msg = await asyncio.wait_for(ws.receive(), 5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4010, bad

        async def identify(ws: aiohttp.ClientWebSocketResponse, shard: list[int]
                           ) -> list[dict[str, Any]]:
            await ws.receive()  # HELLO
            await ws.send_str(json.dumps({"op": 2, "d": {
                "token": fake.token, "intents": INTENTS, "properties": {}, "shard": shard}}))
            return [json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
                    for _ in range(2)]

        async with http.ws_connect(url) as ws0, http.ws_connect(url) as ws1:
            ready0, guild0 = await identify(ws0, [0, 2])
            ready1, guild1 = await identify(ws1, [1, 2])
            assert ready0["d"]["shard"] == [0, 2] and ready1["d"]["shard"] == [1, 2]
            assert [g["id"] for g in ready0["d"]["guilds"]] == [str(other)]
            assert [g["id"] for g in ready1["d"]["guilds"]] == [str(fake.guild_id)]
            assert (guild0["d"]["id"], guild1["d"]["id"]) == (str(other), str(fake.guild_id))
            fake.user_message(other_channel, ALICE, "to shard 0")
            fake.user_message(fake.channel_id, ALICE, "to shard 1")
            fake.user_message(0, ALICE, "a DM", dm=True)

            async def texts(ws: aiohttp.ClientWebSocketResponse, n: int) -> list[str]:
                return [json.loads((await asyncio.wait_for(ws.receive(), 5)).data)["d"][
                    "content"] for _ in range(n)]

            assert await texts(ws0, 2) == ["to shard 0", "a DM"]
            assert await texts(ws1, 1) == ["to shard 1"]
    info = await _get_gateway_bot(fake)
    assert info["shards"] == 1 and info["session_start_limit"]["max_concurrency"] == 1
    assert info["session_start_limit"]["remaining"] == 998  # two sessions started


async def _get_gateway_bot(fake: FakeDiscord) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(
            fake.api_base + "/gateway/bot",
            headers={"Authorization": f"Bot {fake.token}"}) as resp:
        return await resp.json()  # type: ignore[no-any-return]


def _sharded_config(fake: FakeDiscord, tmp_path: Any, name: str, text: str) -> Config:
    path = tmp_path / f"{name}.toml"
    path.write_text(f"[discord]\n{text}\n")
    return load_config(path, env={"OPENAI_API_KEY": "x", "DISCORD_BOT_TOKEN": fake.token})


def _echo(sink: RecordingSink) -> None:
    async def handler(inbound: Inbound, replier: Replier) -> None:
        await replier.send(f"echo: {inbound.text}")

    sink.handler = handler


async def test_two_ingress_processes_split_the_shards(fake: FakeDiscord, tmp_path: Any) -> None:
    """shard_ids [0] and [1] of shard_count 2: between them every guild message arrives
    exactly once, DMs on shard 0, and each answers what it received."""
    fake.max_concurrency = 2  # both may identify at once (a bot with bucketed identify)
    guilds = [fake.add_guild(shard=(i % 2, 2), name=f"g{i}") for i in range(4)]
    channels = [c for _, c in guilds] + [fake.channel_id]
    adapters, sinks = [], []
    try:
        for shard in (0, 1):
            config = _sharded_config(fake, tmp_path, f"s{shard}",
                                     f"shard_count = 2\nshard_ids = [{shard}]")
            adapter = DiscordAdapter(config, guild_ready_timeout=0.05)
            sink = RecordingSink(config)
            _echo(sink)
            await adapter.start(sink)
            adapters.append(adapter)
            sinks.append(sink)
        assert [sorted(a.client.shards) for a in adapters] == [[0], [1]]
        assert sorted(s for _, s in fake.identifies) == [(0, 2), (1, 2)]
        sent = []
        for n, channel in enumerate(channels * 2):
            sent.append(fake.user_message(channel, ALICE, f"m{n}", mention_bot=True)["id"])
        fake.user_message(0, ALICE, "dm", dm=True)
        await fake.wait_until(lambda: sum(len(s.got) for s in sinks) >= len(sent) + 1)
        for sink in sinks:
            await asyncio.gather(*sink.tasks)
        got = [[i.id for i, _ in s.got] for s in sinks]
        assert sorted(got[0] + got[1]) == sorted([*sent, got[0][-1]])  # each exactly once
        for shard, sink in enumerate(sinks):
            for inbound, _ in sink.got:
                guild = fake._channels[int(inbound.channel.chat_id)].get("guild_id")
                assert (fake.shard_of(int(guild), 2) if guild else 0) == shard
        assert sinks[0].got[-1][0].is_private  # the DM: shard 0
        for channel in channels:  # every message answered once, by the shard that got it
            replies = [m.content for m in fake.messages(channel)]
            assert sorted(replies) == sorted(
                f"echo: {m['content'].split('> ', 1)[1]}"
                for m in fake._messages.values()
                if int(m["channel_id"]) == channel and m["author"]["id"] == str(ALICE))
        # commands are global: only the process with shard 0 registered them
        assert len([c for c in fake.calls if c.method == "PUT"
                    and c.path.endswith("/commands")]) == 1
    finally:
        for adapter in adapters:
            await adapter.stop()


async def test_one_process_runs_every_shard(fake: FakeDiscord, tmp_path: Any) -> None:
    """shard_count 2 and no shard_ids: AutoShardedClient opens both shards itself."""
    fake.max_concurrency = 2
    other, other_channel = fake.add_guild(shard=(0, 2))
    config = _sharded_config(fake, tmp_path, "all", "shard_count = 2")
    adapter = DiscordAdapter(config, guild_ready_timeout=0.05)
    sink = RecordingSink(config)
    _echo(sink)
    await adapter.start(sink)
    try:
        assert isinstance(adapter.client, discord.AutoShardedClient)
        assert sorted(adapter.client.shards) == [0, 1] and adapter.connected
        assert {g.id for g in adapter.client.guilds} == {other, fake.guild_id}
        fake.user_message(other_channel, ALICE, "a", mention_bot=True)
        fake.user_message(fake.channel_id, ALICE, "b", mention_bot=True)
        await fake.wait_until(lambda: len(sink.got) == 2)
        await asyncio.gather(*sink.tasks)
        assert [m.content for m in fake.messages(other_channel)] == ["echo: a"]
        assert [m.content for m in fake.messages(fake.channel_id)] == ["echo: b"]
    finally:
        await adapter.stop()


async def test_auto_shard_count_follows_discord_s_recommendation(
        fake: FakeDiscord, tmp_path: Any) -> None:
    fake.recommended_shards = 2
    fake.max_concurrency = 2
    config = _sharded_config(fake, tmp_path, "auto", 'shard_count = "auto"')
    adapter = DiscordAdapter(config, guild_ready_timeout=0.05)
    await adapter.start(RecordingSink(config))
    try:
        assert adapter.client.shard_count == 2 and sorted(adapter.client.shards) == [0, 1]
        assert any(c.path == "/gateway/bot" for c in fake.calls)
    finally:
        await adapter.stop()


@pytest.mark.parametrize(("text", "error"), [
    ('shard_count = "many"', 'discord.shard_count must be 0, "auto"'),
    ("shard_count = 2\nshard_ids = [2]", "discord.shard_ids: 2 is not a shard"),
    ("shard_ids = [0]", "discord.shard_ids needs a numeric discord.shard_count"),
    ('shard_count = "auto"\nshard_ids = [0]', "discord.shard_ids needs a numeric"),
    ("shard_count = 2\nshard_ids = [1, 1]", "discord.shard_ids lists a shard twice"),
    ("shard_count = -1", "discord.shard_count must not be negative"),
    ("shard_count = true", "discord.shard_count must be a whole number or a string"),
])
def test_shard_config_is_validated(tmp_path: Any, text: str, error: str) -> None:
    from bot.config import ConfigError

    path = tmp_path / "config.toml"
    path.write_text(f"[discord]\n{text}\n")
    with pytest.raises(ConfigError, match=error.replace("(", r"\(")):
        load_config(path, env={"OPENAI_API_KEY": "x"})


async def test_two_sharded_bots_each_answer_their_guilds(
        fake: FakeDiscord, openai_fake: Any, tmp_path: Any) -> None:
    """Two whole bots (router, handlers, the model) as ingress processes with shard_ids
    [0] and [1] of 2: every guild message reaches exactly one and is answered once."""
    from tests.harness import wait_for
    from tests.harness_platforms import DiscordDriver

    fake.max_concurrency = 2
    _, other_channel = fake.add_guild(shard=(0, 2))
    drivers = []
    for shard in (0, 1):
        (tmp_path / f"bot{shard}").mkdir()
        drivers.append(DiscordDriver(openai_fake, tmp_path / f"bot{shard}" / "bot.sqlite3",
                                     fake, f"[discord]\nshard_count = 2\nshard_ids = [{shard}]"))
    try:
        for driver in drivers:
            await driver.start()
        for n in range(3):
            fake.user_message(other_channel, ALICE, f"zero {n}", mention_bot=True)
            fake.user_message(fake.channel_id, ALICE, f"one {n}", mention_bot=True)
        await wait_for(lambda: len(fake.messages(other_channel)) == 3
                       and len(fake.messages(fake.channel_id)) == 3, 10, "six answers")
        for driver in drivers:
            assert driver.app is not None
            await driver.app.router.wait_idle(5)
        assert [d.received for d in drivers] == [3, 3]
        assert sorted(m.content for m in fake.messages(other_channel)) == [
            f"echo: alice: zero {n}" for n in range(3)]
        assert sorted(m.content for m in fake.messages(fake.channel_id)) == [
            f"echo: alice: one {n}" for n in range(3)]
    finally:
        for driver in reversed(drivers):
            await driver.stop()
            driver.close_redirect()


async def test_a_slash_command_cut_by_a_restart_is_answered_in_its_interaction(
        openai_fake: Any, tmp_path: Any) -> None:
    """The journal stores the interaction's token (Inbound.reply_via): after a restart the
    slash command's answer fills its "thinking…" response instead of going to the
    channel (the same path a worker process answers through)."""
    from tests.conftest import make_driver
    from tests.harness import ALICE as USER
    from tests.harness import wait_for

    driver, discord_fake = await make_driver("discord", openai_fake, tmp_path)
    try:
        await driver.start()
        openai_fake.hang_next(path="/audio/speech")
        await driver.send_text("/say hello there")
        await openai_fake.wait_until(lambda: bool(openai_fake.requests_to("/audio/speech")), 10)
        iid = max(discord_fake._interactions)
        await discord_fake.wait_until(lambda: bool(discord_fake.interaction_responses(iid)))
        assert driver.app is not None

        async def impatient(timeout: float = 30.0, close: Any = driver.app.router.close) -> None:
            await close(0.2)

        driver.app.router.close = impatient  # type: ignore[method-assign]
        await driver.stop()
        await driver.start()
        await wait_for(lambda: len(discord_fake.interaction_responses(iid)) >= 2, 20,
                       "the answer after the restart")
        kinds = [r["kind"] for r in discord_fake.interaction_responses(iid)]
        assert kinds == ["callback", "followup"]  # the deferred response, filled
        (reply,) = driver.replies(user=USER)
        assert reply.kind == "voice" and reply.files
        assert discord_fake.messages(driver.channel(False, False, USER))[0].via_interaction
    finally:
        await driver.stop()
        driver.close_redirect()  # type: ignore[attr-defined]
        await discord_fake.stop()
