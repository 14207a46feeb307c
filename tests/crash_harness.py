"""Kill -9 the bot process and restart it on the same database (tests/test_crash.py and
bench/crash.py): the bot runs as its own process (`python -m bot`), the fakes in this one.

Chats are addressed by a name; a question carries a token ("q7") that the fake model's
answer repeats, so every answer is known in advance and can be looked for in the chat.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.store import _connector
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import FakeTelegram

ROOT = Path(__file__).resolve().parents[1]
TG_GROUP = -1001234567890
FILLER = ("alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
          "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
          "zulu")
CONFIG = """
[bot]
log_level = "INFO"
[chat]
tokenizer = "estimate"
"""
TOKEN = re.compile(r"\bq\d+\b")


def answer_for(token: str) -> str:
    """The fake model's complete answer to the question carrying `token`."""
    return f"Answer {token}: {FILLER}."


def model_answer(body: dict[str, Any]) -> str:
    """reply_fn for FakeOpenAI: answers the newest user message by its token."""
    users = [m for m in body["messages"] if m.get("role") == "user"]
    text = FakeOpenAI.message_text(users[-1]) if users else ""
    found = TOKEN.findall(text)
    return answer_for(found[-1]) if found else "I see no question."


@dataclass(frozen=True)
class Chat:
    """A conversation: a user's private chat/DM, or the group (where the user mentions)."""

    user: int
    group: bool = False

    @property
    def name(self) -> str:
        return f"group/{self.user}" if self.group else f"dm/{self.user}"


class Platform:
    """The platform fake plus user actions and what the users see."""

    name = ""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def send(self, chat: Chat, text: str, *, while_down: bool = False) -> str:
        """Post a question; returns its message id."""
        raise NotImplementedError

    def shown(self, chat: Chat) -> list[tuple[str, str]]:
        """(id, text) of the bot's messages in a chat, oldest first, deleted ones left out."""
        raise NotImplementedError

    async def wait_until(self, predicate: Any, timeout: float) -> None:
        raise NotImplementedError

    def live_probe(self) -> Any:
        """Taken before a start: a predicate that holds once that bot is live."""
        raise NotImplementedError


class TelegramPlatform(Platform):
    """The fake Bot API; the group is a supergroup the users mention the bot in."""

    name = "telegram"

    def __init__(self) -> None:
        self.fake = FakeTelegram()
        self._polls = 0

    async def start(self) -> None:
        await self.fake.start()

    async def stop(self) -> None:
        await self.fake.stop()

    def env(self) -> dict[str, str]:
        return {"TELEGRAM_BOT_TOKEN": self.fake.token, "TELEGRAM_API_URL": self.fake.url}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bot"]

    def chat_id(self, chat: Chat) -> int:
        return TG_GROUP if chat.group else chat.user

    def send(self, chat: Chat, text: str, *, while_down: bool = False) -> str:
        kw: dict[str, Any] = {"first_name": f"User{chat.user}"}
        if chat.group:
            kw.update(chat_type="supergroup", chat_title="Test group", mention_bot=True)
        msg = self.fake.user_message(self.chat_id(chat), chat.user, text, **kw)
        return str(msg["message_id"])

    def shown(self, chat: Chat) -> list[tuple[str, str]]:
        return [(str(m.message_id), m.text) for m in self.fake.messages(self.chat_id(chat))
                if not m.deleted]

    def replied_to(self, chat: Chat, message_id: str) -> str | None:
        """The user message a bot message replies to (groups)."""
        for m in self.fake.messages(self.chat_id(chat)):
            if str(m.message_id) == message_id:
                return str(m.reply_to_message_id) if m.reply_to_message_id else None
        return None

    def acknowledged(self) -> bool:
        """Every update queued so far was confirmed by a getUpdates offset."""
        return self.fake.pending_updates == 0

    async def wait_until(self, predicate: Any, timeout: float) -> None:
        await self.fake.wait_until(predicate, timeout)

    def live_probe(self) -> Any:
        before = len(self.fake.calls_to("getUpdates"))
        return lambda: len(self.fake.calls_to("getUpdates")) > before


class DiscordPlatform(Platform):
    """The fake Discord; the group is its guild text channel."""

    name = "discord"

    def __init__(self) -> None:
        self.fake = FakeDiscord()

    async def start(self) -> None:
        await self.fake.start()

    async def stop(self) -> None:
        await self.fake.stop()

    def env(self) -> dict[str, str]:
        return {"DISCORD_BOT_TOKEN": self.fake.token}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.discord_process", self.fake.url]

    def channel(self, chat: Chat) -> int:
        return self.fake.channel_id if chat.group else self.fake.dm_channel(chat.user)

    def send(self, chat: Chat, text: str, *, while_down: bool = False) -> str:
        msg = self.fake.user_message(self.channel(chat), chat.user, text,
                                     username=f"user{chat.user}", mention_bot=chat.group,
                                     dm=not chat.group, while_down=while_down)
        return str(msg["id"])

    def shown(self, chat: Chat) -> list[tuple[str, str]]:
        return [(str(m.id), m.content) for m in self.fake.messages(self.channel(chat))]

    async def wait_until(self, predicate: Any, timeout: float) -> None:
        await self.fake.wait_until(predicate, timeout)

    def live_probe(self) -> Any:
        def synced() -> int:
            return sum(1 for c in self.fake.calls
                       if c.method == "PUT" and c.path.endswith("/commands"))

        before = synced()
        return lambda: synced() > before and any(
            s.conn is not None for s in self.fake._sessions.values())


def make_platform(name: str) -> Platform:
    """A platform (not started) by name."""
    return TelegramPlatform() if name == "telegram" else DiscordPlatform()


class BotProcess:
    """`python -m bot` against the fakes; its log goes to a file in `folder`."""

    def __init__(self, platform: Platform, ai: FakeOpenAI, folder: Path) -> None:
        self.platform = platform
        self.ai = ai
        self.folder = folder
        self.db = folder / "bot.sqlite3"
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0
        (folder / "config.toml").write_text(CONFIG)

    async def start(self, timeout: float = 60.0) -> None:
        """Start and wait until the bot is live on its platform."""
        self.runs += 1
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "OPENAI_API_KEY": self.ai.api_key, "OPENAI_BASE_URL": self.ai.url,
               "BOT_DATABASE": str(self.db), "BOT_CONFIG": str(self.folder / "config.toml"),
               "PYTHONPATH": str(ROOT), **self.platform.env()}
        probe = self.platform.live_probe()
        log = (self.folder / f"bot-{self.runs}.log").open("wb")
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.platform.command(), cwd=ROOT, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=log, stderr=log)
        finally:
            log.close()
        live = asyncio.create_task(self.platform.wait_until(probe, timeout))
        died = asyncio.create_task(self.proc.wait())
        done, _ = await asyncio.wait({live, died}, return_when=asyncio.FIRST_COMPLETED)
        if died in done:
            live.cancel()
            raise AssertionError(f"the bot exited at start-up:\n{self.log()}")
        died.cancel()
        live.result()

    def log(self, run: int | None = None) -> str:
        """The log of one run (default: the latest)."""
        path = self.folder / f"bot-{run or self.runs}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.proc = None

    async def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        self.proc = None
        return code

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the bot's database (WAL: safe while the bot runs)."""
        db = _connector(str(self.db))()  # the bot's own SQLite build
        db.execute("PRAGMA busy_timeout=10000")
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def open_entries(self) -> int:
        """Journal entries not yet answered."""
        if not self.db.exists():
            return 0
        try:
            rows = self.query("SELECT COUNT(*) FROM inbox WHERE state IN "
                              "('received', 'answering')")
        except Exception:  # no table yet (either SQLite build raises its own error class)
            return 0
        return int(rows[0][0])

    def recorded(self, token: str) -> bool:
        """Whether the answer to the question with `token` has its sent messages recorded."""
        try:
            rows = self.query("SELECT COUNT(*) FROM inbox WHERE reply_ids != '[]' AND inbound"
                              " LIKE ?", (f"%question {token},%",))
        except Exception:  # no table yet (either SQLite build raises its own error class)
            return False
        return bool(rows[0][0])

    def journaled(self) -> int:
        """Journal entries so far."""
        try:
            return int(self.query("SELECT COUNT(*) FROM inbox")[0][0])
        except Exception:  # no table yet (either SQLite build raises its own error class)
            return 0
