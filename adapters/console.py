"""Terminal adapter: chat with the bot on stdin/stdout; the default with only an API key.

Interactive (stdin and stdout are a terminal): a prompt_toolkit line editor (a paste is
one message, Alt-Enter or Esc-Enter adds a line, history with the arrow keys), answers
stream in as they arrive, rendered as Markdown by rich, with a "thinking..." spinner
until the first token. Ctrl-C cancels the answer in flight; a second Ctrl-C (or Ctrl-C
at an empty prompt, or Ctrl-D) quits.

Piped (`python -m bot < questions.txt`, `echo hi | python -m bot`, `< /dev/null`, a
closed stdin): one message per line, plain text out, no spinner. At end of input every
pending answer is waited for (only an answer that makes no progress for a long time is
given up on, and that is reported), then `finished` is set and the process exits 0.

Files are attached by path: `/image PATH [question]`, `/voice PATH`, `/audio PATH`,
`/file PATH [question]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import itertools
import logging
import mimetypes
import os
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from adapters.base import Sink
from bot.errors import StartupError
from bot.events import Attachment, AttachmentKind, Author, ChannelKey, CommandCall, Inbound
from bot.render import to_plain
from bot.replies import Capabilities, ChatAction, OutFile, Replier, Sent

if TYPE_CHECKING:
    from bot.config import Config

log = logging.getLogger(__name__)

CAPABILITIES = Capabilities(
    max_text=100_000,
    max_caption=100_000,
    max_upload=1 << 30,
    min_edit_interval=0.0,
    voice_messages=False,
    edits=False,
    files_by_path=True,
)

BANNER = ("Chatting in the terminal. /help lists commands. Enter sends; Alt-Enter (or "
          "Esc, Enter) starts a new line; a paste is one message.\n"
          "Ctrl-C stops an answer, a second Ctrl-C quits; Ctrl-D quits.\n")
THINKING = {"typing": "thinking...", "upload_photo": "drawing...",
            "record_voice": "recording...", "upload_voice": "recording...",
            "upload_document": "preparing the file..."}
# with no progress for this long after end of piped input, an answer is given up on
HUNG_MARGIN = 60.0

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic"}
_AUDIO_EXT = {".ogg", ".oga", ".opus", ".mp3", ".wav", ".m4a", ".flac", ".webm", ".mp4",
              ".mpeg", ".mpga", ".aac"}
_ATTACH_KINDS: dict[str, AttachmentKind | None] = {
    "/image": "image", "/voice": "voice", "/audio": "audio", "/file": None}


def _looks_like_path(word: str) -> bool:
    """`/voice WORD` attaches a file only when WORD names one (an existing file, a path
    with a separator, or an audio file name); otherwise it is the voice-reply setting."""
    p = Path(word).expanduser()
    return p.is_file() or "/" in word or "\\" in word or p.suffix.lower() in _AUDIO_EXT


def attachment_from_path(path: str) -> Attachment:
    """A local file as an Attachment (console users attach files by path)."""
    p = Path(path).expanduser()
    if not p.is_file():
        from bot.errors import UserError

        raise UserError(f"no such file: {path}")
    ext = p.suffix.lower()
    kind: AttachmentKind = "document"
    if ext in _IMAGE_EXT:
        kind = "image"
    elif ext in _AUDIO_EXT:
        kind = "audio"
    mime = mimetypes.guess_type(p.name)[0] or "application/octet-stream"

    async def read() -> bytes:
        return await asyncio.to_thread(p.read_bytes)

    return Attachment(kind=kind, filename=p.name, mime=mime, size=p.stat().st_size, reader=read,
                      ref=str(p.resolve()))


def console_logging(config: Config) -> None:
    """In console mode the terminal is the chat: log lines go to a file (its path printed
    once, on stderr) and only warnings and errors also reach stderr, marked as such."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler):
            root.removeHandler(handler)
    path = Path(config.database_path).expanduser().resolve().with_suffix(".log")
    try:
        file_handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as e:
        print(f"[log] cannot write {path} ({e.strerror}); warnings go to stderr",
              file=sys.stderr)
    else:
        file_handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
        print(f"[log] {path}", file=sys.stderr)
    warn = logging.StreamHandler(sys.stderr)
    warn.setLevel(logging.WARNING)
    tty = sys.stderr.isatty()
    fmt = "[log %(levelname)s] %(message)s"
    warn.setFormatter(logging.Formatter(f"\x1b[2m{fmt}\x1b[0m" if tty else fmt))
    root.addHandler(warn)


class ConsoleReplier(Replier):
    """Prints answers; files are written to a folder and their path printed."""

    capabilities = CAPABILITIES

    def __init__(self, adapter: ConsoleAdapter) -> None:
        self.adapter = adapter

    def _claim(self) -> None:
        """The task handling this message is the one Ctrl-C cancels."""
        self.adapter.inflight = asyncio.current_task()

    async def send(self, markdown: str) -> Sent:
        """Print one answer."""
        self._claim()
        self.adapter.show(markdown)
        return Sent(id=str(next(self.adapter.ids)), text=markdown)

    async def edit(self, sent: Sent, markdown: str) -> Sent:
        """The terminal cannot edit: print the corrected text again."""
        if markdown != sent.text:
            self.adapter.show(markdown)
        return Sent(id=sent.id, text=markdown)

    async def send_file(self, file: OutFile) -> Sent:
        """Save the file under the output folder and print where it is."""
        self._claim()
        folder = self.adapter.out_dir
        folder.mkdir(parents=True, exist_ok=True)
        msg_id = next(self.adapter.ids)
        target = folder / f"{msg_id}-{Path(file.filename).name}"
        await asyncio.to_thread(target.write_bytes, file.data)
        line = f"[{file.kind} saved to {target}]"
        if file.caption:
            line = f"{file.caption}\n\n{line}" if self.adapter.tty else (
                f"{to_plain(file.caption)}\n{line}")
        self.adapter.show(line)
        return Sent(id=str(msg_id), text=file.caption or "")

    @contextlib.asynccontextmanager
    async def working(self, action: ChatAction = "typing") -> AsyncIterator[None]:
        """A spinner on a terminal until the first output; nothing when piped."""
        self._claim()
        if not self.adapter.tty:
            yield
            return
        self.adapter.spinner(THINKING.get(action, "working..."))
        try:
            yield
        finally:
            self.adapter.end_live()

    def stream(self) -> Any:
        """On a terminal the answer is printed (as Markdown) while it arrives."""
        self._claim()
        if not self.adapter.tty:
            return super().stream()
        return LiveStream(self.adapter)


class LiveStream:
    """The ReplyStream interface, rendered live with rich instead of sent and edited."""

    def __init__(self, adapter: ConsoleAdapter) -> None:
        self.adapter = adapter
        self.text = ""
        self.sent: list[Sent] = []
        self._done = False

    def append(self, delta: str) -> None:
        """Show the answer so far."""
        if not delta or self._done:
            return
        self.text += delta
        self.adapter.live_markdown(self.text)

    def append_note(self, note: str) -> None:
        """A closing remark below the answer, outside any open code block."""
        from bot.render import fence_open

        if fence_open(self.text):
            self.text += "\n```"
        self.append(f"\n\n{note}" if self.text else note)

    async def finish(self, note: str = "") -> list[Sent]:
        """Leave the final rendering on screen."""
        if note:
            self.append_note(note)
        self._done = True
        if self.text.strip():
            self.adapter.live_markdown(self.text)
            self.adapter.end_live()
            self.adapter.printed += 1
            self.sent = [Sent(id=str(next(self.adapter.ids)), text=self.text)]
        return self.sent

    async def abort(self) -> None:
        """Remove what was shown (the error is printed next)."""
        self._done = True
        self.adapter.end_live(clear=True)


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
        interactive: bool | None = None,
        input: Any = None,
        output: Any = None,
    ) -> None:
        self._stdin = stdin
        self._stdout = stdout or sys.stdout
        self.out_dir = Path(out_dir)
        self.user = user or _username()
        self.channel = ChannelKey("console", "local")
        # message ids stay unique across restarts: the journal keys messages by them
        self.ids = itertools.count(time.time_ns() // 1000)
        self.finished = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.tty = _isatty(self._stdout) if prompt is None else prompt
        if interactive is None:
            interactive = stdin is None and self.tty and _isatty(sys.stdin)
        self.interactive = interactive
        self._pt_input = input  # prompt_toolkit Input/Output (tests pass pipes)
        self._pt_output = output
        self._sink: Sink | None = None
        self.inflight: asyncio.Task[Any] | None = None
        self.printed = 0  # answers shown: progress while draining piped input
        self.submitted = 0
        self._cancelled = False
        self._live: Any = None
        self._console: Any = None

    # ------------------------------------------------------------------ output

    @property
    def console(self) -> Any:
        """The rich Console on stdout (terminal mode only)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self._stdout, force_terminal=True,
                                    highlight=False, soft_wrap=False)
        return self._console

    def write(self, text: str) -> None:
        """One plain answer on stdout, separated by a blank line."""
        self._stdout.write(f"{text}\n\n")
        self._stdout.flush()

    def show(self, markdown: str) -> None:
        """One complete message: Markdown on a terminal, plain text when piped."""
        self.printed += 1
        if not self.tty:
            self.write(to_plain(markdown))
            return
        from rich.markdown import Markdown

        self.end_live(clear=True)
        self.console.print(Markdown(markdown))
        self.console.print()

    def spinner(self, label: str) -> None:
        """A transient "thinking..." line until the first output."""
        from rich.live import Live
        from rich.spinner import Spinner

        self.end_live(clear=True)
        self._live = Live(Spinner("dots", text=label, style="dim"), console=self.console,
                          transient=True, refresh_per_second=10)
        self._live.start()
        self._live.spinner = True

    def live_markdown(self, text: str) -> None:
        """Replace the spinner, or update the answer being streamed."""
        from rich.live import Live
        from rich.markdown import Markdown

        if self._live is not None and getattr(self._live, "spinner", False):
            self.end_live(clear=True)
        if self._live is None:
            self._live = Live(console=self.console, auto_refresh=True, refresh_per_second=8,
                              vertical_overflow="visible", transient=False)
            self._live.start()
        self._live.update(Markdown(text), refresh=True)

    def end_live(self, clear: bool = False) -> None:
        """Stop the spinner or freeze the streamed answer where it is."""
        live, self._live = self._live, None
        if live is None:
            return
        spinner = getattr(live, "spinner", False)
        if clear:
            live.transient = True
        live.stop()
        if not clear and not spinner:
            self.console.print()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, sink: Sink, *, receive: bool = True) -> None:
        """Begin reading input; returns immediately.

        receive=False is refused: the terminal is one conversation in one process, which
        no other process can receive for."""
        if not receive:
            raise StartupError("the console cannot run as a send-only worker (--role worker "
                               "answers Telegram and Discord only); run `python -m bot "
                               "--console` on its own")
        self._sink = sink
        if self.interactive:
            self._stdout.write(BANNER + "\n")
            self._stdout.flush()
            loop = asyncio.get_running_loop()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGINT, self._interrupt)
            self._task = asyncio.create_task(self._interactive_loop())
        else:
            self._task = asyncio.create_task(self._read_loop())

    def replier_for(self, channel: ChannelKey, reply_to: str | None, *,
                    private: bool) -> ConsoleReplier:
        """The terminal has one conversation: stored messages are answered here too."""
        return ConsoleReplier(self)

    def attachment_reader(self, ref: str) -> Callable[[], Awaitable[bytes]]:
        """A stored message's file is read again from its path."""
        async def read() -> bytes:
            return await asyncio.to_thread(Path(ref).read_bytes)

        return read

    async def stop(self) -> None:
        """Stop reading input."""
        self.end_live(clear=True)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ------------------------------------------------------------------ interactive

    def _interrupt(self) -> None:
        """SIGINT while an answer is being produced: cancel it; a second one quits."""
        task = self.inflight
        if self._cancelled or task is None or task.done():
            self.end_live(clear=True)
            self.finished.set()
            return
        self._cancelled = True
        task.cancel()

    async def _interactive_loop(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        keys = KeyBindings()

        @keys.add("escape", "enter")
        def _newline(event: Any) -> None:
            event.current_buffer.insert_text("\n")

        session: PromptSession[str] = PromptSession(
            history=InMemoryHistory(), key_bindings=keys, input=self._pt_input,
            output=self._pt_output, multiline=False, enable_open_in_editor=False)
        try:
            while True:
                try:
                    # Ctrl-C at the prompt is a key press; our SIGINT handler must stay
                    text = await session.prompt_async("> ", handle_sigint=False)
                except KeyboardInterrupt:
                    if session.default_buffer.text:
                        continue
                    break
                except EOFError:
                    break
                if not text.strip():
                    continue
                await self._submit_and_wait(text)
        finally:
            self.finished.set()

    async def _submit_and_wait(self, text: str) -> None:
        """Hand one message over and wait for its answer (Ctrl-C cancels it)."""
        self._cancelled = False
        self.inflight = None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
        await self.submit_line(text)
        idle = getattr(self._sink, "wait_idle", None)
        if idle is not None:
            await idle()
        self.inflight = None
        if self._cancelled:
            self.end_live(clear=True)
            self._stdout.write("[answer cancelled]\n\n")
            self._stdout.flush()
        self._cancelled = False

    # ------------------------------------------------------------------ piped

    async def _lines(self) -> asyncio.StreamReader | None:
        """A reader for pipes and sockets; None for anything else (a file, /dev/null),
        which is read with blocking calls in a thread: event loops cannot watch those
        (uvloop aborts the process on a regular file, asyncio raises PermissionError)."""
        if self._stdin is not None:
            return self._stdin
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        except (ValueError, OSError):
            return None
        return reader

    async def _read_loop(self) -> None:
        try:
            source = _stdin_kind() if self._stdin is None else "pipe"
            if source == "closed":
                log.info("no standard input: nothing to answer")
            else:
                reader = await self._lines() if source == "pipe" else None
                while True:
                    if reader is not None:
                        raw = await reader.readline()
                        line = raw.decode("utf-8", errors="replace") if raw else ""
                    else:
                        line = await asyncio.to_thread(_readline)
                    if not line:
                        break
                    text = line.strip()
                    if text:
                        await self.submit_line(text)
                await self._drain()
        finally:
            self.finished.set()

    async def _drain(self) -> None:
        """End of input: wait for every pending answer. Only when nothing is printed for
        longer than a request can take (timeout x attempts, plus a margin) is the rest
        given up on, and that is said on stderr."""
        idle = getattr(self._sink, "wait_idle", None)
        if idle is None or not self.submitted:
            return
        config = getattr(self._sink, "config", None)
        per_answer = HUNG_MARGIN
        if config is not None:
            attempts = config.openai.max_retries + 1
            per_answer += config.openai.timeout * attempts * 2
        while True:
            before = self.printed
            try:
                await asyncio.wait_for(idle(), per_answer)
                return
            except TimeoutError:
                if self.printed == before:
                    msg = (f"no answer for {per_answer:.0f} s after the end of input; the AI "
                           "server seems hung, giving up on the remaining messages")
                    log.error("%s", msg)
                    print(f"error: {msg}", file=sys.stderr)
                    return

    # ------------------------------------------------------------------ messages

    async def submit_line(self, text: str) -> None:
        """Turn one typed line into an Inbound (commands parsed, files attached by path).

        `/image PATH [text]`, `/voice PATH [text]`, `/audio PATH` and `/file PATH [text]`
        attach a local file, as a photo, a voice note or a document would be on the other
        platforms; the text after it is the caption (and may itself be a command, e.g.
        `/edit ...`). A path that is no file gets "no such file: PATH".
        """
        assert self._sink is not None
        self.submitted += 1
        msg_id = str(next(self.ids))
        author = Author(id=self.user, name=self.user)
        attachments: list[Attachment] = []
        command: CommandCall | None = None
        attached = _attachment_line(text)
        if isinstance(attached, CommandCall):
            command = attached
        elif attached is not None:
            attachment, text = attached
            attachments.append(attachment)
        inbound = Inbound(id=msg_id, channel=self.channel, author=author, text=text,
                          attachments=attachments, is_private=True, addressed=True)
        inbound.command = command or self._sink.commands.parse(text, CAPABILITIES)
        await self._sink.submit(inbound, ConsoleReplier(self))


def _attachment_line(text: str) -> tuple[Attachment, str] | CommandCall | None:
    """`/image PATH rest` -> (attachment, rest); a missing file -> a command whose error
    the router replies with (in order with the answers before it); None otherwise."""
    parts = text.split(maxsplit=2)
    if not parts or parts[0].lower() not in _ATTACH_KINDS:
        return None
    verb = parts[0].lower()
    if verb == "/voice" and (len(parts) < 2 or not _looks_like_path(parts[1])):
        return None  # the voice-reply setting (`/voice off`, `/voice nova`, `/voice speed 2`)
    name = verb[1:]
    if len(parts) < 2:
        usage = f"Usage: {verb} PATH" + (" [question]" if verb in ("/image", "/file") else "")
        return CommandCall(name=name, args={}, raw="", error=usage)
    path = Path(parts[1]).expanduser()
    if not path.is_file():
        return CommandCall(name=name, args={}, raw=text, error=f"no such file: {parts[1]}")
    attachment = attachment_from_path(str(path))
    kind = _ATTACH_KINDS[verb]
    if kind is not None:
        attachment.kind = kind
    return attachment, parts[2] if len(parts) > 2 else ""


def _stdin_kind() -> str:
    """"pipe" (a pipe or socket the loop can watch), "file" (anything else readable:
    a regular file, /dev/null, a terminal) or "closed"."""
    if sys.stdin is None:
        return "closed"
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError):
        return "closed"
    return "pipe" if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) else "file"


def _readline() -> str:
    try:
        return sys.stdin.readline()
    except (OSError, ValueError):  # closed or unreadable: end of input
        return ""


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (OSError, ValueError):
        return False


def _username() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "you"
