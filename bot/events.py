"""Platform-neutral inbound events: what every adapter turns a platform message into."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.errors import UserError

AttachmentKind = Literal["image", "voice", "audio", "video", "document"]


@dataclass(frozen=True, slots=True)
class CommandCall:
    """A parsed command call; `unknown` marks a /word matching no command, `error` bad args.

    `args` hold values already checked and converted by the command's Params (str, int,
    float, Attachment); `sub` is the subcommand (`/voice speed 1.5` -> "speed"), if any.
    """

    name: str
    args: dict[str, Any]
    raw: str = ""
    unknown: bool = False
    error: str | None = None
    sub: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelKey:
    """One conversation: a chat, or a thread/topic inside it; keys history and settings."""

    platform: str
    chat_id: str
    thread_id: str | None = None

    def __str__(self) -> str:
        base = f"{self.platform}:{self.chat_id}"
        return f"{base}:{self.thread_id}" if self.thread_id else base

    @classmethod
    def parse(cls, text: str) -> ChannelKey:
        """Reverse of str(); chat ids may be negative numbers but never contain ':'."""
        parts = text.split(":")
        if len(parts) == 2:
            return cls(parts[0], parts[1])
        if len(parts) == 3:
            return cls(parts[0], parts[1], parts[2])
        raise ValueError(f"not a channel key: {text!r}")


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote a message; the name labels speakers in group history."""

    id: str
    name: str
    is_bot: bool = False


@dataclass(slots=True)
class Attachment:
    """A file on a message. There is deliberately no URL: Telegram's contain the bot token."""

    kind: AttachmentKind
    filename: str
    mime: str
    size: int | None
    reader: Callable[[], Awaitable[bytes]] = field(repr=False)
    duration: float | None = None
    max_size: int = 25 * 1024 * 1024
    # a recording the user made in the chat app to be heard (set by the adapter, e.g. for
    # Telegram's round video notes): listened to and answered like a voice note
    voice_note: bool = False
    # the platform's handle for the file (Telegram file_id, Discord CDN URL, a local path):
    # what the journal keeps so that a message answered after a restart still has its files
    ref: str | None = None

    async def read(self) -> bytes:
        """Download the file, refusing anything over the size limit before and after."""
        if self.size is not None and self.size > self.max_size:
            raise UserError(f"That file is too large ({file_size(self.size, up=True)}; "
                            f"the limit is {file_size(self.max_size)}).")
        data = await self.reader()
        if len(data) > self.max_size:
            raise UserError(f"That file is too large ({file_size(len(data), up=True)}; "
                            f"the limit is {file_size(self.max_size)}).")
        return data


def file_size(n: int, *, up: bool = False) -> str:
    """Bytes for a refusal, to a tenth of a MB; `up` rounds up, so a file just over a limit
    never reads as the limit itself ("1 MB; the limit is 1 MB")."""
    tenths = n * 10 / (1024 * 1024)
    tenths = math.ceil(tenths) if up else round(tenths)
    if tenths == 0:
        return f"{math.ceil(n / 1024) if up else max(1, round(n / 1024))} KB"
    return f"{tenths // 10} MB" if tenths % 10 == 0 else f"{tenths / 10:.1f} MB"


@dataclass(frozen=True, slots=True)
class Quoted:
    """The message an inbound replies to."""

    id: str
    author: Author | None
    text: str
    attachments: tuple[Attachment, ...] = ()
    from_self: bool = False


@dataclass(slots=True)
class Inbound:
    """One user message (a Telegram album arrives as one) in platform-neutral form."""

    id: str
    channel: ChannelKey
    author: Author
    text: str
    attachments: list[Attachment] = field(default_factory=list)
    reply_to: Quoted | None = None
    is_private: bool = False
    addressed: bool = False
    command: CommandCall | None = None
    # the sender's interface language (IETF code, e.g. "de") when the platform says
    language: str | None = None
    # the platform's delivery ids this message came in (Telegram update ids, several for an
    # album): the journal ties the stored updates to the message
    receipts: tuple[str, ...] = ()
    # what the message was when it carries nothing the bot can use ("stickers", ...)
    unsupported: str | None = None
    # how another process answers it through the platform, opaque to the core (adapter
    # JSON: a Discord slash command's interaction token, valid 15 minutes); stored with the
    # message so a worker or a restarted bot can answer where the user is waiting
    reply_via: str | None = None
