"""Telegram and Discord drivers: a chat member's actions become fake-server events."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from bot.config import Config
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import FakeTelegram
from tests.harness import ALICE, BotReply, Driver, File, SentFile, User

TG_GROUP = -1001234567890
TG_TOPIC = 17
# webhook mode: the public URL Telegram posts to, served by "the owner's reverse proxy"
WEBHOOK_ORIGIN = "https://bot.example.test"
WEBHOOK_PATH = "/telegram/updates"
WEBHOOK_SECRET = "parity-suite_webhook-secret-0123456789"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_webhook(config_text: str, port: int) -> str:
    """The test's config.toml text plus the [telegram] webhook keys."""
    keys = (f'webhook_url = "{WEBHOOK_ORIGIN}{WEBHOOK_PATH}"\nwebhook_listen = "127.0.0.1"\n'
            f'webhook_port = {port}\nwebhook_secret = "{WEBHOOK_SECRET}"\n')
    if "[telegram]\n" in config_text:
        return config_text.replace("[telegram]\n", "[telegram]\n" + keys, 1)
    return f"{config_text}\n[telegram]\n{keys}"


async def start_telegram_fake() -> FakeTelegram:
    """A started fake Bot API server."""
    fake = FakeTelegram()
    await fake.start()
    return fake


async def start_discord_fake() -> FakeDiscord:
    """A started fake Discord server."""
    fake = FakeDiscord()
    await fake.start()
    return fake


class TelegramDriver(Driver):
    """Private chats are the user's id; the group is a forum supergroup with one topic.

    webhook=True: the bot listens on a free loopback port and the fake POSTs updates to
    WEBHOOK_ORIGIN + WEBHOOK_PATH, routed there (each start picks a new port).
    """

    platform = "telegram"

    def __init__(self, openai: FakeOpenAI, db_path: Any, fake: FakeTelegram,
                 config_text: str = "", *, webhook: bool = False) -> None:
        super().__init__(openai, db_path, {"TELEGRAM_BOT_TOKEN": fake.token,
                                           "TELEGRAM_API_URL": fake.url}, config_text)
        self.fake = fake
        self.webhook = webhook
        self.webhook_port = 0

    def config(self) -> Config:
        if not self.webhook:
            return super().config()
        self.webhook_port = free_port()
        self.fake.route(WEBHOOK_ORIGIN, f"http://127.0.0.1:{self.webhook_port}")
        plain = self.config_text
        self.config_text = with_webhook(plain, self.webhook_port)
        try:
            return super().config()
        finally:
            self.config_text = plain

    def make_adapter(self, config: Config) -> Any:
        from adapters.telegram_adapter import TelegramAdapter

        return TelegramAdapter(config)

    def chat_id(self, group: bool, user: User) -> int:
        return TG_GROUP if group else user.id

    async def send_text(self, text: str, *, user: User = ALICE, group: bool = False,
                        mention: bool = False, reply_to: str | None = None,
                        thread: bool = False, as_bot: bool = False,
                        files: list[File] | None = None, typed: bool = False) -> None:
        self.mark()
        where: dict[str, Any] = dict(
            first_name=user.name, chat_type="supergroup" if group or thread else "private",
            chat_title="Test group" if group or thread else None,
            reply_to=int(reply_to) if reply_to else None,
            thread_id=TG_TOPIC if thread else None, mention_bot=mention, is_bot=as_bot)
        chat = self.chat_id(group or thread, user)
        if not files:
            msg = self.fake.user_message(chat, user.id, text, **where)
            self.last_sent_id = str(msg["message_id"])
            return
        album = f"album-{len(self.fake.all_messages())}-{text[:8]}" if len(files) > 1 else None
        for i, f in enumerate(files):
            media: dict[str, Any] = {}
            if f.kind == "photo":
                media["photo"] = f.data
            elif f.kind == "voice":
                media.update(voice=f.data, voice_duration=f.duration)
            elif f.kind == "audio":
                media["audio"] = (f.data, f.filename, f.mime)
            else:
                media["document"] = (f.data, f.filename, f.mime)
            caption = text if i == 0 and text else None
            msg = self.fake.user_message(chat, user.id, None, caption=caption,
                                         media_group_id=album, **media, **where)
            if i == 0:
                self.last_sent_id = str(msg["message_id"])

    def replies(self, *, group: bool = False, thread: bool = False,
                user: User = ALICE) -> list[BotReply]:
        msgs = self.fake.messages(self.chat_id(group or thread, user),
                                  TG_TOPIC if thread else None)
        out = []
        for m in msgs:
            if m.deleted:
                continue
            files = []
            if m.file is not None:
                files.append(SentFile(m.filename or "", m.file, m.mime_type or "", m.kind))
            text = m.text if m.kind == "text" else (m.caption or "")
            out.append(BotReply(id=str(m.message_id), text=text, edits=list(m.edits),
                                kind=m.kind, files=files,
                                extra={"parse_mode": m.parse_mode,
                                       "media_group_id": m.media_group_id}))
        return out


class DiscordDriver(Driver):
    """DMs per user; the group is the fake guild's text channel (and its thread)."""

    platform = "discord"

    def __init__(self, openai: FakeOpenAI, db_path: Any, fake: FakeDiscord,
                 config_text: str = "") -> None:
        super().__init__(openai, db_path, {"DISCORD_BOT_TOKEN": fake.token}, config_text)
        self.fake = fake
        self._redirect: contextlib.ExitStack | None = None

    def make_adapter(self, config: Config) -> Any:
        from adapters.discord_adapter import DiscordAdapter

        return DiscordAdapter(config, guild_ready_timeout=0.05)

    async def start(self) -> None:
        if self._redirect is None:
            self._redirect = contextlib.ExitStack()
            self._redirect.enter_context(self.fake.redirect_discord_py())
        await super().start()

    async def stop(self) -> None:
        await super().stop()

    def close_redirect(self) -> None:
        """Restore discord.py's real URLs (end of test)."""
        if self._redirect is not None:
            self._redirect.close()
            self._redirect = None

    def channel(self, group: bool, thread: bool, user: User) -> int:
        if thread:
            return self.fake.thread_id
        if group:
            return self.fake.channel_id
        return self.fake.dm_channel(user.id)

    async def send_text(self, text: str, *, user: User = ALICE, group: bool = False,
                        mention: bool = False, reply_to: str | None = None,
                        thread: bool = False, as_bot: bool = False,
                        files: list[File] | None = None, typed: bool = False) -> None:
        self.mark()
        assert self.app is not None
        channel = self.channel(group, thread, user)
        commands = self.app.router.commands
        call = commands.parse(text, self.app.adapters[0].capabilities)
        spec = commands.by_name.get(call.name) if call is not None else None
        # what the slash-command UI can send: a known command with valid options (a group
        # only with a subcommand); anything else a user can only type as a message
        slash = (call is not None and spec is not None and not call.unknown
                 and not call.error and not as_bot and not typed
                 and not (spec.subcommands and call.sub is None))
        if slash and reply_to is not None:
            raise AssertionError("a slash command cannot reply to a message: pass typed=True")
        if slash:
            assert call is not None and spec is not None
            options: dict[str, object] = dict(call.args)
            found = spec.subcommand(call.sub) if call.sub else None
            params = found.params if found is not None else spec.params
            slots = [p.name for p in params if p.type == "attachment"]
            for name, f in zip(slots, files or [], strict=False):
                options[name] = (f.data, f.filename, f.mime)
            self.fake.slash(call.name, options, channel_id=channel, user_id=user.id,
                            username=user.name.lower(), dm=not (group or thread),
                            sub=call.sub)
            return
        attachments = [(f.data, f.filename, f.mime) for f in files or []]
        voice = any(f.kind == "voice" for f in files or [])
        msg = self.fake.user_message(channel, user.id, text, username=user.name.lower(),
                                     global_name=user.name, mention_bot=mention,
                                     reply_to=int(reply_to) if reply_to else None, is_bot=as_bot,
                                     dm=not (group or thread), attachments=attachments or None,
                                     flags=8192 if voice else 0)
        self.last_sent_id = str(msg["id"])

    def replies(self, *, group: bool = False, thread: bool = False,
                user: User = ALICE) -> list[BotReply]:
        msgs = self.fake.messages(self.channel(group, thread, user))
        out = []
        for m in msgs:
            files = [SentFile(name, data, ctype, "voice" if m.flags & 8192 else
                              ("image" if ctype.startswith("image/") else "file"), extra)
                     for name, data, ctype, extra in m.attachments]
            kind = files[0].kind if files else "text"
            out.append(BotReply(id=str(m.id), text=m.content, edits=list(m.edits), kind=kind,
                                files=files, extra={"flags": m.flags}))
        return out
