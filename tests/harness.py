"""A chat driver in user terms, one per platform, over the real adapters and the fakes.

`send_text` / `send_photo` / `send_voice` act as a chat member would; `replies()` reads
what the bot put in the chat (final texts, after edits), `settle()` waits until the bot
has received and finished handling everything sent so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.__main__ import App, start_app
from bot.ai import Tokenizer
from bot.config import Config, load_config
from tests.fakes.openai_api import FakeOpenAI


@dataclass(frozen=True)
class User:
    """A chat member."""

    id: int
    name: str


ALICE = User(1001, "Alice")
BOB = User(1002, "Bob")


@dataclass(frozen=True)
class File:
    """A file a user sends. kind: photo (Telegram-compressed picture), document, voice
    (a voice note / Discord voice message), audio (a music/audio file)."""

    data: bytes
    filename: str = "photo.jpg"
    mime: str = "image/jpeg"
    kind: str = "photo"
    duration: int = 1


@dataclass(frozen=True)
class SentFile:
    """A file the bot sent."""

    filename: str
    data: bytes
    mime: str
    kind: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BotReply:
    """A message the bot sent, as the user sees it now (text, or caption of files)."""

    id: str
    text: str
    edits: list[tuple[float, str]] = field(default_factory=list)
    kind: str = "text"
    files: list[SentFile] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll a condition on the loop (no fixed sleeps in tests)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.005)


class Driver:
    """Common part: the bot app, the fake model, restarts."""

    platform = ""
    supports_groups = True

    def __init__(self, openai: FakeOpenAI, db_path: Path, env: dict[str, str],
                 config_text: str = "") -> None:
        self.openai = openai
        self.db_path = db_path
        self.env = env
        self.config_text = config_text
        self.app: App | None = None
        self._received_before = 0
        # id of the user's latest message (the first of an album); None on the console
        self.last_sent_id: str | None = None

    def config(self) -> Config:
        """Config from the test's TOML text plus env pointing at the fakes."""
        path = self.db_path.parent / "config.toml"
        text = self.config_text
        if "[memory]" not in text:
            # semantic memory embeds in the background (metered calls, extra requests):
            # off unless a test turns it on (tests/test_memory.py)
            text += "\n[memory]\nenabled = false\n"
        path.write_text(text)
        env = {"OPENAI_API_KEY": self.openai.api_key, "OPENAI_BASE_URL": self.openai.url,
               "BOT_DATABASE": str(self.db_path), **self.env}
        return load_config(path, env=env)

    def make_adapter(self, config: Config) -> Any:
        raise NotImplementedError

    async def start(self) -> None:
        """Start the bot (real adapter) against the fakes."""
        config = self.config()
        self.app = await start_app(config, [self.make_adapter(config)],
                                   tokenizer=Tokenizer("estimate"))

    async def stop(self) -> None:
        """Stop the bot cleanly."""
        if self.app is not None:
            await self.app.stop()
            self.app = None

    async def restart(self) -> None:
        """Stop and start again on the same database."""
        await self.stop()
        await self.start()

    @property
    def received(self) -> int:
        assert self.app is not None
        return self.app.router.received

    def mark(self) -> None:
        """Remember how many messages the bot had received before a send."""
        self._received_before = self.received

    async def settle(self, expect: int = 1, timeout: float = 10.0) -> None:
        """Wait until `expect` more messages reached the bot and all work is done."""
        assert self.app is not None
        target = self._received_before + expect
        await wait_for(lambda: self.received >= target, timeout,
                       f"{expect} message(s) to reach the bot")
        await self.app.router.wait_idle(timeout)

    async def ask(self, text: str, **kw: Any) -> str:
        """Send, wait for the bot to finish, return the text of its newest reply."""
        where = {"group": kw.get("group", False), "thread": kw.get("thread", False),
                 "user": kw.get("user", ALICE)}
        before = len(self.replies(**where))
        await self.send_text(text, **kw)
        await self.settle()
        replies = self.replies(**where)
        assert len(replies) > before, f"no reply to {text!r}"
        return "\n".join(r.text for r in replies[before:])

    # platform specifics ------------------------------------------------------------------
    async def send_text(self, text: str, *, user: User = ALICE, group: bool = False,
                        mention: bool = False, reply_to: str | None = None,
                        thread: bool = False, as_bot: bool = False,
                        files: list[File] | None = None, typed: bool = False) -> None:
        """Post a message, optionally with files. On Discord a known command is run as a
        slash command (files go into its attachment options, in order) unless `typed`:
        then it is typed as a message, as it must be when it replies to another one."""
        raise NotImplementedError

    def replies(self, *, group: bool = False, thread: bool = False,
                user: User = ALICE) -> list[BotReply]:
        raise NotImplementedError


class RecordingOut(io.StringIO):
    """stdout stand-in that keeps each answer as one entry."""

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[str, str]] = []
        self.current_user = ""

    def write(self, s: str) -> int:
        if s.endswith("\n\n"):
            self.entries.append((self.current_user, s[:-2]))
        return len(s)

    def isatty(self) -> bool:
        return False


class ConsoleDriver(Driver):
    """The terminal: one private conversation."""

    platform = "console"
    supports_groups = False

    def make_adapter(self, config: Config) -> Any:
        from adapters.console import ConsoleAdapter

        self.stdin = asyncio.StreamReader()
        if not hasattr(self, "out"):
            self.out = RecordingOut()
        self.adapter = ConsoleAdapter(stdin=self.stdin, stdout=self.out,
                                      out_dir=self.db_path.parent / "console_files",
                                      user="alice")
        return self.adapter

    async def send_text(self, text: str, *, user: User = ALICE, group: bool = False,
                        mention: bool = False, reply_to: str | None = None,
                        thread: bool = False, as_bot: bool = False,
                        files: list[File] | None = None, typed: bool = False) -> None:
        assert not group, "the console has no groups"
        self.mark()
        # one terminal, but the refused-user test needs a second person at it
        self.adapter.user = user.name.lower()
        self.out.current_user = self.adapter.user
        if files:
            if len(files) > 1:
                import pytest

                pytest.skip("the console attaches one file per line")
            f = files[0]
            # a folder per upload keeps the file's own name (the bot shows and uses it)
            path = self.db_path.parent / f"upload-{len(self.out.entries)}" / f.filename
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(f.data)
            verb = {"photo": "/image", "voice": "/voice", "audio": "/audio"}.get(f.kind, "/file")
            if f.kind == "document" and f.mime.startswith("image/"):
                verb = "/image"
            text = f"{verb} {path} {text}".rstrip()
        self.stdin.feed_data((text + "\n").encode())

    def replies(self, *, group: bool = False, thread: bool = False,
                user: User = ALICE) -> list[BotReply]:
        who = user.name.lower()
        out = []
        for i, (u, t) in enumerate(self.out.entries):
            if u != who:
                continue
            files = []
            kind = "text"
            for m in _SAVED.finditer(t):
                kind = m.group(1)
                data = Path(m.group(2)).read_bytes()
                files.append(SentFile(Path(m.group(2)).name, data, "", m.group(1)))
            text = _SAVED.sub("", t).strip()
            out.append(BotReply(id=str(i), text=text, kind=kind, files=files))
        return out


_SAVED = re.compile(r"\[(\w+) saved to (.+?)\]")


@contextlib.asynccontextmanager
async def running(driver: Driver):  # type: ignore[no-untyped-def]
    """Start a driver and always stop it."""
    await driver.start()
    try:
        yield driver
    finally:
        await driver.stop()
