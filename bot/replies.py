"""How handlers answer: the Replier protocol each adapter implements, bound to one Inbound."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

from bot.split import split_markdown
from bot.streaming import ReplyStream

ChatAction = Literal["typing", "upload_photo", "record_voice", "upload_voice", "upload_document"]
FileKind = Literal["image", "voice", "audio", "document"]


@dataclass(frozen=True, slots=True)
class Sent:
    """A message the bot sent; `id` is the platform's message id as a string."""

    id: str
    text: str = ""


@dataclass(frozen=True, slots=True)
class OutFile:
    """A file to send; kind="voice" becomes a native voice message on both platforms."""

    data: bytes
    filename: str
    mime: str
    kind: FileKind = "document"
    caption: str | None = None
    duration: float | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a platform tolerates and offers; the core reads these, never platform names."""

    max_text: int
    max_caption: int
    max_upload: int
    min_edit_interval: float
    voice_messages: bool
    edits: bool = True
    # how the platform counts max_text (Telegram: UTF-16 code units)
    measure: Callable[[str], int] = len
    # the platform's client sends /start when someone first opens a chat with the bot
    start_command: bool = False
    # users attach files by typing their path (the terminal)
    files_by_path: bool = False
    # limits of a native command UI: description / choice label length, choices per option
    max_description: int | None = None
    max_choices: int | None = None


class Replier:
    """Base class of every adapter's replier; `stream()` is shared, the rest per platform."""

    capabilities: Capabilities

    async def send(self, markdown: str) -> Sent:
        """Send one message of at most capabilities.max_text characters of Markdown."""
        raise NotImplementedError

    async def edit(self, sent: Sent, markdown: str) -> Sent:
        """Replace a sent message's text; "not modified" is not an error."""
        raise NotImplementedError

    async def send_file(self, file: OutFile) -> Sent:
        """Upload one file (image, voice, audio or document)."""
        raise NotImplementedError

    async def send_files(self, files: list[OutFile]) -> list[Sent]:
        """Send several files, as one album/message where the platform can."""
        return [await self.send_file(f) for f in files]

    async def start_action(self, action: ChatAction) -> None:
        """Show a chat action once (Telegram lasts 5 s, Discord typing 10 s)."""

    async def defer(self) -> None:
        """Acknowledge a slash command before the platform's deadline (Discord: 3 s)."""

    action_interval: float = 4.0
    # An answer that lands within this time needs no "typing…": skipping it saves a request.
    action_delay: float = 0.2

    @asynccontextmanager
    async def working(self, action: ChatAction = "typing") -> AsyncIterator[None]:
        """Keep a chat action alive while the body runs; defers interactions first."""
        await self.defer()

        async def keep_alive() -> None:
            await asyncio.sleep(self.action_delay)
            while True:
                with contextlib.suppress(Exception):
                    await self.start_action(action)
                await asyncio.sleep(self.action_interval)

        task = asyncio.create_task(keep_alive())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stream(self) -> ReplyStream[Sent]:
        """A growing reply: append deltas, edits are coalesced within platform limits."""
        return ReplyStream(self)

    def split(self, markdown: str) -> list[str]:
        """Chunks of at most max_text, counted the platform's way (Capabilities.measure)."""
        caps = self.capabilities
        return split_markdown(markdown, caps.max_text, measure=caps.measure)

    async def reply_long(self, markdown: str) -> list[Sent]:
        """Send a complete text, split at the platform limit."""
        s = self.stream()
        s.append(markdown)
        return await s.finish()
