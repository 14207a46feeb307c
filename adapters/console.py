"""Terminal adapter: chat with the bot on stdin/stdout; the default with only an API key.

Works interactively and piped (`echo hi | python -m bot`): at end of input it waits for
the pending answers and reports `finished`, so the process exits by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import itertools
import logging
import mimetypes
import os
import sys
from pathlib import Path
from typing import IO

from adapters.base import Sink
from adapters.markup import to_plain
from bot.events import Attachment, AttachmentKind, Author, ChannelKey, Inbound
from bot.replies import Capabilities, OutFile, Replier, Sent

log = logging.getLogger(__name__)

CAPABILITIES = Capabilities(
    max_text=100_000,
    max_caption=100_000,
    max_upload=1 << 30,
    min_edit_interval=0.0,
    voice_messages=False,
    markup="plain",
    edits=False,
)

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic"}
_AUDIO_EXT = {".ogg", ".oga", ".opus", ".mp3", ".wav", ".m4a", ".flac", ".webm", ".mp4",
              ".mpeg", ".mpga", ".aac"}


def attachment_from_path(path: str) -> Attachment:
    """A local file as an Attachment (console users attach files by path)."""
    p = Path(path).expanduser()
    if not p.is_file():
        from bot.errors import UserError

        raise UserError(f"No such file: {path}")
    ext = p.suffix.lower()
    kind: AttachmentKind = "document"
    if ext in _IMAGE_EXT:
        kind = "image"
    elif ext in _AUDIO_EXT:
        kind = "audio"
    mime = mimetypes.guess_type(p.name)[0] or "application/octet-stream"

    async def read() -> bytes:
        return await asyncio.to_thread(p.read_bytes)

    return Attachment(kind=kind, filename=p.name, mime=mime, size=p.stat().st_size, reader=read)


class ConsoleReplier(Replier):
    """Prints answers; files are written to a folder and their path printed."""

    capabilities = CAPABILITIES

    def __init__(self, adapter: ConsoleAdapter) -> None:
        self.adapter = adapter

    async def send(self, markdown: str) -> Sent:
        """Print one answer."""
        self.adapter.write(to_plain(markdown))
        return Sent(id=str(next(self.adapter.ids)), text=markdown)

    async def edit(self, sent: Sent, markdown: str) -> Sent:
        """The terminal cannot edit: print the corrected text again."""
        if markdown != sent.text:
            self.adapter.write(to_plain(markdown))
        return Sent(id=sent.id, text=markdown)

    async def send_file(self, file: OutFile) -> Sent:
        """Save the file under the output folder and print where it is."""
        folder = self.adapter.out_dir
        folder.mkdir(parents=True, exist_ok=True)
        msg_id = next(self.adapter.ids)
        target = folder / f"{msg_id}-{Path(file.filename).name}"
        await asyncio.to_thread(target.write_bytes, file.data)
        line = f"[{file.kind} saved to {target}]"
        if file.caption:
            line = f"{to_plain(file.caption)}\n{line}"
        self.adapter.write(line)
        return Sent(id=str(msg_id), text=file.caption or "")


class ConsoleAdapter:
    """stdin/stdout chat as one private conversation."""

    name = "console"
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        stdin: asyncio.StreamReader | None = None,
        stdout: IO[str] | None = None,
        out_dir: str | os.PathLike[str] = "console_files",
        user: str | None = None,
        prompt: bool | None = None,
    ) -> None:
        self._stdin = stdin
        self._stdout = stdout or sys.stdout
        self.out_dir = Path(out_dir)
        self.user = user or _username()
        self.channel = ChannelKey("console", "local")
        self.ids = itertools.count(1)
        self.finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._prompt = self._stdout.isatty() if prompt is None else prompt
        self._sink: Sink | None = None

    def write(self, text: str) -> None:
        """One answer on stdout, separated by a blank line."""
        self._stdout.write(f"{text}\n\n")
        self._stdout.flush()

    async def start(self, sink: Sink) -> None:
        """Begin reading lines; returns immediately."""
        self._sink = sink
        if self._prompt:
            self._stdout.write("Chatting in the terminal. /help lists commands; Ctrl-D quits.\n\n")
            self._stdout.flush()
        self._task = asyncio.create_task(self._read_loop())

    async def stop(self) -> None:
        """Stop reading input."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _lines(self) -> asyncio.StreamReader | None:
        if self._stdin is not None:
            return self._stdin
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        except (ValueError, OSError):
            return None  # a regular file: read it with blocking calls in a thread
        return reader

    async def _read_loop(self) -> None:
        reader = await self._lines()
        while True:
            if reader is not None:
                raw = await reader.readline()
                line = raw.decode("utf-8", errors="replace") if raw else ""
            else:
                line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                break
            text = line.strip()
            if text:
                await self.submit_line(text)
        self.finished.set()

    async def submit_line(self, text: str) -> None:
        """Turn one typed line into an Inbound (commands parsed, files attached by path).

        `/image PATH [text]`, `/voice PATH [text]` and `/file PATH [text]` attach a local
        file, as a photo, a voice note or a document would be on the other platforms; the
        text after it is the caption (and may itself be a command, e.g. `/edit ...`).
        """
        assert self._sink is not None
        msg_id = str(next(self.ids))
        author = Author(id=self.user, name=self.user)
        attachments: list[Attachment] = []
        attached = _attachment_line(text)
        if attached is not None:
            attachment, text = attached
            attachments.append(attachment)
        inbound = Inbound(id=msg_id, channel=self.channel, author=author, text=text,
                          attachments=attachments, is_private=True, addressed=True)
        inbound.command = self._sink.commands.parse(text, "console")
        await self._sink.submit(inbound, ConsoleReplier(self))


_ATTACH_KINDS: dict[str, AttachmentKind | None] = {
    "/image": "image", "/voice": "voice", "/audio": "audio", "/file": None}


def _attachment_line(text: str) -> tuple[Attachment, str] | None:
    """`/image PATH rest` -> (attachment, rest) when PATH is an existing file."""
    parts = text.split(maxsplit=2)
    if len(parts) < 2 or parts[0].lower() not in _ATTACH_KINDS:
        return None
    path = Path(parts[1]).expanduser()
    if not path.is_file():
        return None
    attachment = attachment_from_path(str(path))
    kind = _ATTACH_KINDS[parts[0].lower()]
    if kind is not None:
        attachment.kind = kind
    return attachment, parts[2] if len(parts) > 2 else ""


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "you"
