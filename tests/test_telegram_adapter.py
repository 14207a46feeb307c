"""The real PTB Application inside TelegramAdapter against the loopback fake Bot API."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.telegram_adapter import SendLimiter, TelegramAdapter
from bot.commands import CommandSpec, CommandTable, Param
from bot.config import Config, load_config
from bot.errors import RateLimited, StartupError
from bot.events import Author, ChannelKey, Inbound
from bot.replies import OutFile, Replier
from tests.fakes.telegram_api import FakeTelegram, parse_html
from tests.harness import wait_for

GROUP = -1001234567890
USER = 1001
BOB = 1002


class RecordingSink:
    """Collects what the adapter submits, like the Router would receive it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.commands = CommandTable([
            CommandSpec("help", "Show what I can do"),
            CommandSpec("image", "Draw a picture",
                        params=(Param("prompt", "What to draw", "text", required=True),)),
            CommandSpec("start", "Say hello", requires="start_command"),
            CommandSpec("secret", "Hidden", hidden=True),
        ])
        self.received: list[tuple[Inbound, Replier]] = []

    async def submit(self, inbound: Inbound, replier: Replier) -> None:
        """Record and return at once."""
        self.received.append((inbound, replier))

    async def next(self, count: int = 1) -> tuple[Inbound, Replier]:
        """Wait until `count` inbounds arrived; return the last one."""
        await wait_for(lambda: len(self.received) >= count, 5.0, f"{count} inbound(s)")
        return self.received[count - 1]


def png(color: str = "red", size: tuple[int, int] = (640, 480)) -> bytes:
    """A real image so the fake can make PhotoSize thumbnails."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    """A started fake Bot API."""
    f = FakeTelegram()
    await f.start()
    yield f
    await f.stop()


Running = tuple[TelegramAdapter, RecordingSink]


@pytest.fixture
async def bot(fake: FakeTelegram, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    """A started adapter polling the fake, with a short album wait.

    Proxy variables point at a black hole: a loopback API must never go through a proxy.
    """
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://10.255.255.1:9")
    cfg = tmp_path / "config.toml"
    cfg.write_text("[telegram]\nalbum_wait = 0.3\npoll_timeout = 10\n")
    config = load_config(cfg, env={"OPENAI_API_KEY": "x", "TELEGRAM_BOT_TOKEN": fake.token,
                                   "TELEGRAM_API_URL": fake.url})
    adapter = TelegramAdapter(config)
    sink = RecordingSink(config)
    await adapter.start(sink)
    yield adapter, sink
    await adapter.stop()


async def group_inbound(fake: FakeTelegram, sink: RecordingSink, text: str,
                        n: int = 1, **kw: Any) -> tuple[Inbound, Replier]:
    """A message in the test supergroup, as received."""
    fake.user_message(GROUP, USER, text, chat_type="supergroup", chat_title="Test group", **kw)
    return await sink.next(n)


# ---------------------------------------------------------------------------- inbound


async def test_private_text(fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    msg = fake.user_message(USER, USER, "hello there", first_name="Alice", username="alice")
    inbound, _ = await sink.next()
    assert inbound.id == str(msg["message_id"])
    assert inbound.channel == ChannelKey("telegram", str(USER), None)
    assert inbound.author == Author(str(USER), "Alice", False)
    assert inbound.text == "hello there"
    assert inbound.is_private and inbound.addressed
    assert inbound.command is None and inbound.reply_to is None and not inbound.attachments


async def test_group_mentions_and_replies(
        fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    plain, _ = await group_inbound(fake, sink, "just chatting")
    assert not plain.addressed and not plain.is_private
    assert plain.channel == ChannelKey("telegram", str(GROUP), None)

    mention, replier = await group_inbound(fake, sink, "what is up?", 2, mention_bot=True)
    assert mention.addressed
    assert mention.text == "what is up?"

    sent = await replier.send("an answer")
    [bot_msg] = fake.messages(GROUP)
    assert bot_msg.reply_to_message_id == int(mention.id)  # groups: replies quote the question

    reply, _ = await group_inbound(fake, sink, "and then?", 3, reply_to=int(sent.id))
    assert reply.addressed
    assert reply.reply_to is not None
    assert reply.reply_to.from_self and reply.reply_to.text == "an answer"
    assert reply.reply_to.id == sent.id

    other, _ = await group_inbound(fake, sink, "me too", 4, reply_to=int(plain.id))
    assert not other.addressed
    assert other.reply_to is not None and not other.reply_to.from_self
    assert other.reply_to.author == Author(str(USER), "Alice", False)


async def test_commands(fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    ours, _ = await group_inbound(fake, sink, "/help@test_bot")
    assert ours.command is not None and ours.command.name == "help"
    assert ours.addressed

    theirs, _ = await group_inbound(fake, sink, "/help@other_bot", 2)
    assert theirs.command is None and not theirs.addressed

    unknown, _ = await group_inbound(fake, sink, "/dance", 3)
    assert unknown.command is None and not unknown.addressed  # maybe another bot's command

    fake.user_message(USER, USER, "/image a red cat")
    private, _ = await sink.next(4)
    assert private.command is not None
    assert private.command.name == "image" and private.command.args == {"prompt": "a red cat"}

    mention_cmd, _ = await group_inbound(fake, sink, "/help", 5, mention_bot=True)
    assert mention_cmd.command is not None and mention_cmd.command.name == "help"


async def test_commands_registered(
        fake: FakeTelegram, bot: Running) -> None:
    assert fake.my_commands == [
        {"command": "help", "description": "Show what I can do"},
        {"command": "image", "description": "Draw a picture"},
        {"command": "start", "description": "Say hello"},
    ]


async def test_forum_topic(fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    inbound, replier = await group_inbound(fake, sink, "in a topic", thread_id=17,
                                           mention_bot=True)
    assert inbound.channel == ChannelKey("telegram", str(GROUP), "17")
    assert str(inbound.channel) == f"telegram:{GROUP}:17"
    assert inbound.reply_to is None  # the topic root is not a quoted message
    await replier.send("topic answer")
    [msg] = fake.messages(GROUP, 17)
    assert msg.text == "topic answer" and msg.reply_to_message_id == int(inbound.id)
    assert fake.messages(GROUP) == []


async def test_photo_attachment(
        fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    data = png()
    fake.user_message(USER, USER, photo=data, caption="what is this?")
    inbound, _ = await sink.next()
    assert inbound.text == "what is this?"
    [att] = inbound.attachments
    assert att.kind == "image" and att.mime == "image/jpeg"
    assert await att.read() == data
    assert fake.token not in repr(inbound)
    assert "file/bot" not in repr(inbound)


async def test_voice_and_document_attachments(
        fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    fake.user_message(USER, USER, voice=b"OggS-voice", voice_duration=3)
    voice, _ = await sink.next()
    [att] = voice.attachments
    assert (att.kind, att.mime, att.filename, att.duration) == ("voice", "audio/ogg",
                                                                "voice.ogg", 3.0)
    assert await att.read() == b"OggS-voice"

    fake.user_message(USER, USER, document=(b"%PDF-1.4", "paper.pdf", "application/pdf"))
    doc, _ = await sink.next(2)
    assert doc.attachments[0].kind == "document"
    assert doc.attachments[0].filename == "paper.pdf"

    fake.user_message(USER, USER, document=(png(), "scan.png", "image/png"))
    img, _ = await sink.next(3)
    assert img.attachments[0].kind == "image" and img.attachments[0].mime == "image/png"


async def test_album_is_one_inbound(
        fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    images = [png(c) for c in ("red", "green", "blue")]
    fake.user_message(USER, USER, photo=images[0], media_group_id="g1")
    fake.user_message(USER, USER, photo=images[1], media_group_id="g1", caption="compare")
    fake.user_message(USER, USER, photo=images[2], media_group_id="g1")
    fake.user_message(USER, USER, "after the album")
    first, _ = await sink.next()
    second, _ = await sink.next(2)
    album, text = (first, second) if first.attachments else (second, first)
    assert text.text == "after the album"
    assert album.text == "compare"
    assert [await a.read() for a in album.attachments] == images
    assert len(sink.received) == 2


async def test_service_edits_and_bots_are_ignored(
        fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    fake.add_service_message(GROUP, USER, "new_chat_members", chat_type="supergroup")
    fake.user_message(GROUP, 555, "beep", chat_type="supergroup", is_bot=True, first_name="Bot")
    mine = fake.user_message(USER, USER, "original")
    fake.user_edit(USER, mine["message_id"], "edited")
    fake.user_message(USER, USER, "last")
    await sink.next(2)
    assert [i.text for i, _ in sink.received] == ["original", "last"]


async def test_anonymous_group_admin_is_a_user(fake: FakeTelegram, bot: Running) -> None:
    """Admins posting as the group arrive from @GroupAnonymousBot with sender_chat set."""
    _, sink = bot
    fake.user_message(GROUP, USER, "warm up", chat_type="supergroup", chat_title="Test group")
    await sink.next()
    fake.queue_update("message", {
        "message_id": 9001, "date": 1_700_000_000, "text": "@test_bot status?",
        "entities": [{"type": "mention", "offset": 0, "length": 9}],
        "chat": {"id": GROUP, "type": "supergroup", "title": "Test group"},
        "from": {"id": 1087968824, "is_bot": True, "first_name": "Group",
                 "username": "GroupAnonymousBot"},
        "sender_chat": {"id": GROUP, "type": "supergroup", "title": "Test group"},
    })
    inbound, _ = await sink.next(2)
    assert inbound.text == "status?" and inbound.addressed
    assert inbound.author == Author(f"chat{GROUP}", "Test group", False)


# ---------------------------------------------------------------------------- replies


async def test_send_renders_html(
        fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    fake.user_message(USER, USER, "hi")
    _, replier = await sink.next()
    sent = await replier.send("**bold** move & <ok>")
    [msg] = fake.messages(USER)
    assert sent.id == str(msg.message_id)
    assert msg.parse_mode == "HTML" and "<b>bold</b>" in msg.raw_text
    assert msg.text == "bold move & <ok>"
    assert {"offset": 0, "length": 4, "type": "bold"} in msg.entities
    assert msg.reply_to_message_id is None  # private chats: no quoting
    call = fake.calls_to("sendMessage")[-1]
    assert "reply_parameters" not in call.params


ENTITY_ERROR = 'Bad Request: can\'t parse entities: Unsupported start tag "foo" at byte offset 0'


async def test_bad_entities_fall_back_to_plain(fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    fake.user_message(USER, USER, "hi")
    _, replier = await sink.next()
    fake.fail_next("sendMessage", error_code=400, description=ENTITY_ERROR, parse_mode="HTML")
    await replier.send("**still** readable")
    [msg] = fake.messages(USER)
    assert msg.parse_mode is None
    assert msg.text == "still readable"
    first, second = fake.calls_to("sendMessage")
    assert first.params["parse_mode"] == "HTML" and first.status == 400
    assert first.response["description"] == ENTITY_ERROR
    assert "parse_mode" not in second.params and second.status == 200


async def test_edit(fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    fake.user_message(USER, USER, "hi")
    _, replier = await sink.next()
    sent = await replier.send("draft")
    await replier.edit(sent, "draft")  # "message is not modified" is swallowed
    assert fake.calls_to("editMessageText")[-1].status == 400
    await replier.edit(sent, "final *answer*")
    [msg] = fake.messages(USER)
    assert [text for _, text in msg.edits] == ["draft", "final answer"]


async def test_rate_limit_is_waited_out(
        fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    fake.user_message(USER, USER, "hi")
    _, replier = await sink.next()
    fake.fail_next("sendMessage", retry_after=1)
    await replier.send("eventually")
    assert [m.text for m in fake.messages(USER)] == ["eventually"]
    failed, ok = fake.calls_to("sendMessage")
    assert failed.status == 429 and failed.response["parameters"] == {"retry_after": 1}
    assert ok.time - failed.time >= 0.95


async def test_rate_limit_waits_only_in_its_chat(
        fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    fake.user_message(USER, USER, "hi")
    _, alice = await sink.next()
    fake.user_message(BOB, BOB, "hi", first_name="Bob")
    _, bob = await sink.next(2)
    fake.fail_next("sendMessage", retry_after=2)
    waiting = asyncio.create_task(alice.send("later"))
    await fake.wait_until(lambda: any(c.status == 429 for c in fake.calls))
    await bob.send("right away")
    assert not waiting.done()
    assert [m.text for m in fake.messages(BOB)] == ["right away"]
    await waiting
    assert [m.text for m in fake.messages(USER)] == ["later"]


async def test_rate_limit_gives_up_after_three_retries(
        fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    fake.user_message(USER, USER, "hi")
    _, replier = await sink.next()
    fake.fail_next("sendMessage", retry_after=1, times=4)
    with pytest.raises(RateLimited):
        await replier.send("never")
    assert len(fake.calls_to("sendMessage")) == 4
    assert fake.messages(USER) == []


async def test_send_limiter_spreads_a_burst() -> None:
    limiter = SendLimiter(per_minute=2, window=0.3)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(3):
        await limiter.acquire(GROUP)
    assert loop.time() - start >= 0.29
    other = loop.time()
    await limiter.acquire(GROUP + 1)  # another chat is not held up
    assert loop.time() - other < 0.1


async def test_send_limiter_paces_the_whole_bot_at_its_share() -> None:
    """[telegram] global_rate: one second's worth goes at once, then the rate holds over
    every chat, private ones included (each worker of N gets 30 / N)."""
    limiter = SendLimiter(global_rate=4)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for chat in range(4):  # the bucket's one second's worth
        await limiter.acquire(USER + chat, group=False)
    assert loop.time() - start < 0.2
    for chat in range(2):  # then 4 per second, whatever the chat
        await limiter.acquire(GROUP - chat)
    assert loop.time() - start >= 0.49
    assert SendLimiter().global_rate == 0  # off unless configured


async def test_global_rate_comes_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[telegram]\nglobal_rate = 7.5\n")
    env = {"OPENAI_API_KEY": "x", "TELEGRAM_BOT_TOKEN": "1:x"}
    for config, rate in ((load_config(cfg, env=env), 7.5), (load_config(None, env=env), 30)):
        adapter = TelegramAdapter(config)
        assert adapter.limiter.global_rate == rate
        await adapter.stop()
    cfg.write_text("[telegram]\nglobal_rate = -1\n")
    with pytest.raises(Exception, match=r"telegram\.global_rate must not be negative"):
        load_config(cfg, env=env)


async def test_files(fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    fake.user_message(USER, USER, "hi")
    _, replier = await sink.next()
    voice = b"OggS\x00\x02" + b"\x00" * 64
    await replier.send_file(OutFile(voice, "answer.ogg", "audio/ogg", kind="voice",
                                    caption="**spoken**", duration=2.0))
    [msg] = fake.messages(USER)
    assert msg.sent_as == "sendVoice" and msg.kind == "voice" and msg.file == voice
    assert msg.caption == "spoken"

    fake.fail_next("sendVoice", error_code=400,
                   description="Bad Request: VOICE_MESSAGES_FORBIDDEN")
    await replier.send_file(OutFile(voice, "answer.ogg", "audio/ogg", kind="voice"))
    assert fake.messages(USER)[-1].kind == "document"
    assert fake.messages(USER)[-1].file == voice

    image = png()
    await replier.send_file(OutFile(image, "cat.png", "image/png", kind="image",
                                    caption="x" * 1500))
    photo = fake.messages(USER)[-1]
    assert photo.kind == "photo" and photo.file == image
    assert photo.caption is not None and len(photo.caption) <= 1024


async def test_send_files_album_and_chat_action(
        fake: FakeTelegram, bot: Running) -> None:
    _, sink = bot
    _, replier = await group_inbound(fake, sink, "draw", mention_bot=True)
    files = [OutFile(png(c), f"{c}.png", "image/png", kind="image",
                     caption="three cats" if c == "red" else None)
             for c in ("red", "green", "blue")]
    sent = await replier.send_files(files)
    msgs = fake.messages(GROUP)
    assert [s.id for s in sent] == [str(m.message_id) for m in msgs]
    assert len({m.media_group_id for m in msgs}) == 1 and msgs[0].media_group_id
    assert msgs[0].caption == "three cats"
    await replier.start_action("upload_photo")
    assert fake.chat_actions(GROUP) == ["upload_photo"]


async def test_token_never_logged(fake: FakeTelegram, tmp_path: Path,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = load_config(None, env={"OPENAI_API_KEY": "x", "TELEGRAM_BOT_TOKEN": fake.token,
                                    "TELEGRAM_API_URL": fake.url})
    adapter = TelegramAdapter(config)
    sink = RecordingSink(config)
    await adapter.start(sink)
    try:
        fake.user_message(USER, USER, photo=png())
        inbound, replier = await sink.next()
        await inbound.attachments[0].read()
        fake.fail_next("sendMessage", error_code=403)
        with pytest.raises(Exception) as info:
            await replier.send("blocked")
        assert fake.token not in str(info.value)
    finally:
        await adapter.stop()
    assert caplog.records
    encoded = fake.token.replace(":", "%3A")
    assert fake.token not in caplog.text and encoded not in caplog.text
    leaks = [(r.name, r.getMessage()[:300]) for r in caplog.records if fake.token in r.getMessage()
             or encoded in r.getMessage()]
    assert not leaks, leaks


async def test_rejected_token_stops_start_up_with_exit_2(fake: FakeTelegram) -> None:
    wrong = "999:WRONG-secret-token"
    config = load_config(None, env={"OPENAI_API_KEY": "x", "TELEGRAM_BOT_TOKEN": wrong,
                                    "TELEGRAM_API_URL": fake.url})
    adapter = TelegramAdapter(config)
    with pytest.raises(StartupError) as info:
        await adapter.start(RecordingSink(config))
    await adapter.stop()  # harmless after a failed start
    assert info.value.exit_code == 2
    assert str(info.value).startswith("Telegram rejected TELEGRAM_BOT_TOKEN (")
    assert "\n" not in str(info.value) and "@BotFather" in str(info.value)
    assert wrong not in str(info.value) and info.value.__cause__ is None
    assert [c.status for c in fake.calls_to("getMe")] == [401]
    assert not fake.calls_to("getUpdates")


@pytest.mark.parametrize("how", ["closed port", "bad gateway"])
async def test_unreachable_api_stops_start_up_with_exit_1(fake: FakeTelegram, tmp_path: Path,
                                                          how: str) -> None:
    url = fake.url
    if how == "closed port":
        await fake.stop()  # nothing listens there any more
    else:
        fake.fail_next("getMe", error_code=502, description="Bad Gateway")
    config = load_config(None, env={"OPENAI_API_KEY": "x", "TELEGRAM_BOT_TOKEN": fake.token,
                                    "TELEGRAM_API_URL": url})
    adapter = TelegramAdapter(config)
    with pytest.raises(StartupError) as info:
        await adapter.start(RecordingSink(config))
    assert info.value.exit_code == 1
    message = str(info.value)
    assert message.startswith(f"cannot reach the Telegram Bot API at {url} (")
    assert "TELEGRAM_API_URL" in message and fake.token not in message and "\n" not in message


# ---------------------------------------------------------------------------- the fake itself


async def test_fake_rejects_like_telegram(fake: FakeTelegram) -> None:
    fake.add_chat(USER)
    async with aiohttp.ClientSession() as http:
        async def call(method: str, token: str = fake.token, **data: Any) -> tuple[int, Any]:
            async with http.post(f"{fake.url}/bot{token}/{method}", json=data) as r:
                return r.status, await r.json()

        assert await call("getMe", token="1:wrong") == (
            401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        assert await call("fooBar") == (
            404, {"ok": False, "error_code": 404, "description": "Not Found"})
        status, body = await call("sendMessage", chat_id=USER, text="")
        assert (status, body["description"]) == (400, "Bad Request: message text is empty")
        status, body = await call("sendMessage", chat_id=USER, text="x" * 4097)
        assert body["description"] == "Bad Request: message is too long"
        status, body = await call("sendMessage", chat_id=USER, text="<b>" + "x" * 4096 + "</b>",
                                  parse_mode="HTML")
        assert status == 200  # the limit applies after entity parsing
        status, body = await call("sendMessage", chat_id=USER, text="😀" * 2049)
        assert body["description"] == "Bad Request: message is too long"  # UTF-16 units
        status, body = await call("sendMessage", chat_id=42, text="hi")
        assert body["description"] == "Bad Request: chat not found"
        status, body = await call("sendMessage", chat_id=USER, text="a <foo> b",
                                  parse_mode="HTML")
        assert body["description"] == (
            "Bad Request: can't parse entities: Unsupported start tag \"foo\" at byte offset 2")
        status, body = await call("getMe")
        assert status == 200 and body["result"]["is_bot"] and body["result"]["username"]
        status, body = await call("setMyCommands", commands=[{"command": "Bad-Name",
                                                              "description": "x"}])
        assert body["description"] == "Bad Request: BOT_COMMAND_INVALID"
        status, body = await call("sendChatAction", chat_id=USER, action="dancing")
        assert status == 400


def test_html_parser_matches_tdlib() -> None:
    assert parse_html("<b>a</b> &lt;&amp;&gt; <i>b</i>") == (
        "a <&> b", [{"offset": 0, "length": 1, "type": "bold"},
                    {"offset": 6, "length": 1, "type": "italic"}])
    assert parse_html('<pre><code class="language-py">x</code></pre>')[1] == [
        {"offset": 0, "length": 1, "type": "pre", "language": "py"}]
    for bad, message in [
        ("<b>x", "Can't find end tag corresponding to start tag \"b\""),
        ("<b>x</i>", "Unmatched end tag at byte offset 4, expected \"</b>\", found \"</i>\""),
        ("a < b", "Unsupported start tag \"\" at byte offset 2"),
        ("</b>", "Unexpected end tag at byte offset 0"),
    ]:
        with pytest.raises(Exception, match=message.replace("(", r"\(")):
            parse_html(bad)


# ---------------------------------------------------------------------- send-only worker


# what only a receiving process may call: a worker calling them would steal updates,
# drop the ingress's webhook or re-register commands
RECEIVING_METHODS = {"getupdates", "setwebhook", "deletewebhook", "setmycommands"}


async def test_send_only_worker_answers_a_journal_restored_message(
        fake: FakeTelegram, tmp_path: Path) -> None:
    """receive=False (the worker role): getMe only, then a message another process
    received, rebuilt from its journal JSON, is answered with every kind of reply."""
    from bot.journal import dump_inbound, load_inbound, replier_for

    env = {"OPENAI_API_KEY": "x", "TELEGRAM_BOT_TOKEN": fake.token,
           "TELEGRAM_API_URL": fake.url}
    config = load_config(None, env=env)
    ingress = TelegramAdapter(config)
    ingress_sink = RecordingSink(config)
    await ingress.start(ingress_sink)
    picture = png("blue")
    fake.user_message(GROUP, USER, None, caption="what is this? " + "long " * 5,
                      photo=picture, chat_type="supergroup", chat_title="Test group",
                      mention_bot=True)
    received, _ = await ingress_sink.next()
    stored = dump_inbound(received)
    await ingress.stop()

    # the same config.toml as a webhook ingress: the worker must leave the webhook alone
    from tests.harness_platforms import with_webhook

    cfg = tmp_path / "config.toml"
    cfg.write_text(with_webhook("", 8443))
    worker_config = load_config(cfg, env=env)
    assert worker_config.telegram.webhook_url
    before = len(fake.calls)
    worker = TelegramAdapter(worker_config)
    await worker.start(RecordingSink(worker_config), receive=False)
    try:
        assert worker.connected and not worker.receiving
        inbound = load_inbound(stored, worker)
        assert inbound.channel == received.channel and inbound.addressed
        assert await inbound.attachments[0].read() == picture  # getFile + download
        replier = replier_for(worker, inbound)
        async with replier.working("typing"):
            stream = replier.stream()
            stream.append("A **blue** square")
            stream.append(", nothing else.")
            await stream.finish()
        sent = await replier.send("first")
        await replier.edit(sent, "first, edited")
        voice = b"OggS\x00\x02" + b"\x00" * 64
        await replier.send_file(OutFile(voice, "a.ogg", "audio/ogg", kind="voice"))
        await replier.send_files([OutFile(png(c), f"{c}.png", "image/png", kind="image")
                                  for c in ("red", "green")])
        await replier.reply_long("x " * 3000)  # split at 4096
        assert hasattr(replier, "delete")
        await replier.delete(sent)  # type: ignore[attr-defined]
    finally:
        await worker.stop()
    msgs = fake.messages(GROUP)
    texts = [m.text for m in msgs if m.kind == "text" and not m.deleted]
    assert texts[0] == "A blue square, nothing else."
    assert msgs[0].reply_to_message_id == int(received.id)  # replies to the user's message
    assert next(m for m in msgs if m.deleted).text == "first, edited"
    assert any(m.kind == "voice" for m in msgs)
    assert len({m.media_group_id for m in msgs if m.kind == "photo"}) == 1
    assert len(texts) >= 3  # the long reply was split
    worker_calls = {c.method.lower() for c in fake.calls[before:]}
    assert "getme" in worker_calls and "sendmessage" in worker_calls
    assert not worker_calls & RECEIVING_METHODS, worker_calls & RECEIVING_METHODS


async def test_console_refuses_send_only_mode(tmp_path: Path) -> None:
    from adapters.console import ConsoleAdapter

    config = load_config(None, env={"OPENAI_API_KEY": "x"})
    adapter = ConsoleAdapter(stdin=asyncio.StreamReader(), stdout=io.StringIO(),
                             out_dir=tmp_path, user="alice")
    with pytest.raises(StartupError, match="console cannot run as a send-only worker"):
        await adapter.start(RecordingSink(config), receive=False)
