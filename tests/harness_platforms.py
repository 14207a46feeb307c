"""Telegram and Discord drivers: a chat member's actions become fake-server events."""

from __future__ import annotations

import contextlib
from typing import Any

from bot.config import Config
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import FakeTelegram
from tests.harness import ALICE, BotReply, Driver, User

TG_GROUP = -1001234567890
TG_TOPIC = 17


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
    """Private chats are the user's id; the group is a forum supergroup with one topic."""

    platform = "telegram"

    def __init__(self, openai: FakeOpenAI, db_path: Any, fake: FakeTelegram,
                 config_text: str = "") -> None:
        super().__init__(openai, db_path, {"TELEGRAM_BOT_TOKEN": fake.token,
                                           "TELEGRAM_API_URL": fake.url}, config_text)
        self.fake = fake

    def make_adapter(self, config: Config) -> Any:
        from adapters.telegram_adapter import TelegramAdapter

        return TelegramAdapter(config)

    def chat_id(self, group: bool, user: User) -> int:
        return TG_GROUP if group else user.id

    async def send_text(self, text: str, *, user: User = ALICE, group: bool = False,
                        mention: bool = False, reply_to: str | None = None,
                        thread: bool = False, as_bot: bool = False) -> None:
        self.mark()
        self.fake.user_message(
            self.chat_id(group or thread, user), user.id, text, first_name=user.name,
            chat_type="supergroup" if group or thread else "private",
            chat_title="Test group" if group or thread else None,
            reply_to=int(reply_to) if reply_to else None,
            thread_id=TG_TOPIC if thread else None, mention_bot=mention, is_bot=as_bot)

    def replies(self, *, group: bool = False, thread: bool = False,
                user: User = ALICE) -> list[BotReply]:
        msgs = self.fake.messages(self.chat_id(group or thread, user),
                                  TG_TOPIC if thread else None)
        return [BotReply(id=str(m.message_id), text=m.text, edits=list(m.edits), kind=m.kind,
                         data=m.file, extra={"parse_mode": m.parse_mode, "caption": m.caption})
                for m in msgs if not m.deleted]


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
                        thread: bool = False, as_bot: bool = False) -> None:
        self.mark()
        assert self.app is not None
        channel = self.channel(group, thread, user)
        call = self.app.router.commands.parse(text, "discord")
        if call is not None and not call.unknown and not call.error and not as_bot:
            # a Discord user runs a known command through the slash-command UI
            self.fake.slash(call.name, dict(call.args), channel_id=channel, user_id=user.id,
                            username=user.name.lower(), dm=not (group or thread))
            return
        self.fake.user_message(channel, user.id, text, username=user.name.lower(),
                               global_name=user.name, mention_bot=mention,
                               reply_to=int(reply_to) if reply_to else None, is_bot=as_bot,
                               dm=not (group or thread))

    def replies(self, *, group: bool = False, thread: bool = False,
                user: User = ALICE) -> list[BotReply]:
        msgs = self.fake.messages(self.channel(group, thread, user))
        return [BotReply(id=str(m.id), text=m.content, edits=list(m.edits),
                         extra={"flags": m.flags, "attachments": m.attachments})
                for m in msgs]
