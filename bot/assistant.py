"""Assistant workspaces: a chat's files on the AI server, code interpreter and file search,
one durable server-side conversation per chat.

Two backends sit behind one interface (`[assistant] backend`): the Responses API with
Conversations, containers and vector stores (assistant_responses.py), and the legacy
Assistants API v2 with threads and runs (assistant_legacy.py). This module holds what both
share: limits, the workspace records in the store, expiry, run orchestration (one run per
channel, /cancel, `run_timeout`), usage rows and turning sandbox links into file names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import re
import shutil
import subprocess
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import openai

from bot.ai import AI, map_error
from bot.config import Config
from bot.errors import ModelError, Unsupported, UserError
from bot.prices import Usage
from bot.store import Store, WorkspaceFile

log = logging.getLogger(__name__)

NO_ENDPOINTS = "This AI server can't run code or read files."
STOPPED = "⏹ Stopped."
TIMED_OUT = "⏱ That took longer than {seconds} s, so I stopped it. Try a smaller request."
FAILED = "⚠️ The assistant run failed: {detail}"
EXPIRED = "⚠️ The run expired on the AI server before it finished. Please try again."
INCOMPLETE = "⚠️ The answer is incomplete ({reason})."

# file_search indexes these (OpenAI's supported-files table); the rest are code-only
SEARCHABLE = frozenset({
    "c", "cpp", "cs", "css", "doc", "docx", "go", "html", "java", "js", "json", "md", "pdf",
    "php", "pptx", "py", "rb", "sh", "tex", "ts", "txt",
})
IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg",
               "gif": "image/gif", "webp": "image/webp"}
FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "C:/Windows/Fonts/msyh.ttc",
)
SWEEP_INTERVAL = 3600.0
_SANDBOX_LINK = re.compile(r"\[([^\]]*)\]\(sandbox:(/mnt/data/[^)\s]+)\)")
_SANDBOX_BARE = re.compile(r"sandbox:(/mnt/data/[^\s)\]]+)")

Stage = Literal["queued", "thinking", "code", "search", "writing"]
Progress = Callable[[Stage], None]


class RunStopped(UserError):
    """The run was cancelled by /cancel."""

    def __init__(self) -> None:
        super().__init__(STOPPED)


@dataclass(frozen=True, slots=True)
class Produced:
    """A file the code interpreter made, downloaded."""

    name: str
    data: bytes

    @property
    def mime(self) -> str:
        """From the name; images are sent as pictures."""
        ext = self.name.rsplit(".", 1)[-1].lower() if "." in self.name else ""
        return IMAGE_TYPES.get(ext) or mimetypes.guess_type(self.name)[0] or (
            "application/octet-stream")

    @property
    def is_image(self) -> bool:
        """Pictures go out as photos / image attachments."""
        return self.mime.startswith("image/")


@dataclass(slots=True)
class RunResult:
    """What a run produced, ready for the chat."""

    text: str
    model: str
    files: list[Produced] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    code_calls: int = 0
    search_calls: int = 0
    incomplete: str | None = None

    def display(self) -> str:
        """The answer text with cited sources and an incompleteness note."""
        text = self.text.strip()
        if self.sources:
            text += ("\n\n" if text else "") + "Sources: " + ", ".join(self.sources)
        if self.incomplete:
            text += ("\n\n" if text else "") + INCOMPLETE.format(reason=self.incomplete)
        return text


@dataclass(slots=True)
class RunRequest:
    """One user turn for the assistant."""

    channel: str
    text: str
    persona: str
    model: str
    history: Callable[[], Awaitable[list[tuple[str, str]]]]
    progress: Progress
    code: bool = False


@dataclass(slots=True)
class Active:
    """A run in flight: its server-side id (once known) and the cancel signal."""

    run_id: str | None = None
    thread_id: str | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


class FileRejected(UserError):
    """A file that cannot go into the workspace; the message names it and says why."""


# --------------------------------------------------------------------------- helpers


def extension(name: str) -> str:
    """Lower-case extension without the dot ('' when none)."""
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def human_size(size: int) -> str:
    """1234 -> '1.2 KB'."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def safe_name(name: str) -> str:
    """A file name without directories or control characters (never empty)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip().lstrip(".")
    return base[:120] or "file"


def rewrite_links(text: str, spans: list[tuple[int, int, str]]) -> str:
    """Replace annotated spans (sandbox links) with file names, then any links left."""
    for start, end, name in sorted(spans, reverse=True):
        if 0 <= start < end <= len(text):
            text = text[:start] + name + text[end:]
    text = _SANDBOX_LINK.sub(lambda m: m.group(2).rsplit("/", 1)[-1], text)
    return _SANDBOX_BARE.sub(lambda m: m.group(1).rsplit("/", 1)[-1], text)


def sandbox_paths(text: str) -> list[str]:
    """/mnt/data paths a text links to, once each, in order."""
    return list(dict.fromkeys(m.group(1) for m in _SANDBOX_BARE.finditer(text)))


def find_cjk_font() -> Path | None:
    """A system font with CJK glyphs: known locations first, then fontconfig."""
    for candidate in FONT_CANDIDATES:
        p = Path(candidate)
        if p.is_file():
            return p
    if shutil.which("fc-list"):
        try:
            out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True,
                                 text=True, timeout=5, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        paths = sorted(line.split(":", 1)[0].strip() for line in out.splitlines() if line)
        for path in paths:
            if Path(path).is_file():
                return Path(path)
    return None


def font_notes(path: str) -> str:
    """What the sandbox must do before plotting so CJK text renders (not as empty boxes)."""
    return (
        f"A font with Chinese/Japanese/Korean glyphs is at {path}. Before plotting anything "
        "with matplotlib, register it and make it the default, or CJK text shows as empty "
        "boxes:\n"
        "from matplotlib import font_manager as fm; import matplotlib.pyplot as plt\n"
        f"fm.fontManager.addfont({path!r})\n"
        f"plt.rcParams['font.family'] = fm.FontProperties(fname={path!r}).get_name()\n"
        "plt.rcParams['axes.unicode_minus'] = False"
    )


def instructions(persona: str, files: list[tuple[str, str, int]], *, search: bool,
                 font: str | None, code: bool) -> str:
    """Persona plus what the sandbox holds and how results reach the chat.

    `files` are (path in the sandbox, file name, size).
    """
    lines = [persona.strip(), "",
             "You can write and run Python with the python tool (code interpreter)"
             + (" and search this chat's documents with file search." if search else ".")]
    if files:
        lines.append("This chat's files in the sandbox:")
        lines += [f"- {path} ({name}, {human_size(size)})" for path, name, size in files]
    lines.append(
        "Save every file you make for the user (charts as PNG, tables, documents) under "
        "/mnt/data and link it once as [name](sandbox:/mnt/data/name): the chat shows charts "
        "as pictures and sends other files as attachments. Keep the text answer short.")
    if code:
        lines.append("Use the python tool for this request.")
    if font:
        lines.append(font_notes(font))
    return "\n".join(lines)


def translate(e: openai.OpenAIError, model: str) -> ModelError:
    """SDK error -> user error; a server without these endpoints gets one clear sentence."""
    err = map_error(e, model=model, what="code and files")
    if isinstance(err, Unsupported):
        return Unsupported(NO_ENDPOINTS)
    return err


def gone(e: Exception, what: str) -> bool:
    """Whether an API error says a container / conversation / thread no longer exists."""
    if not isinstance(e, openai.BadRequestError | openai.NotFoundError):
        return False
    message = str(getattr(e, "message", "") or e).lower()
    return what in message and ("expired" in message or "not found" in message
                                or "no such" in message or "does not exist" in message)


# --------------------------------------------------------------------------- backends


class Backend:
    """What both backends share: the Files API and the per-channel vector store."""

    name = ""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant
        self.store = assistant.store
        self.config = assistant.config

    @property
    def client(self) -> openai.AsyncOpenAI:
        """The openai client held by bot/ai.py."""
        return self.assistant.ai.client

    async def upload(self, name: str, data: bytes, mime: str, model: str) -> str:
        """Files API upload; expires on the server too after file_ttl_days (max 30)."""
        seconds = min(max(self.config.assistant.file_ttl_days * 86_400, 3600), 2_592_000)
        try:
            f = await self.client.files.create(
                file=(name, data, mime), purpose="assistants",
                expires_after={"anchor": "created_at", "seconds": seconds})
        except openai.BadRequestError as e:
            raise FileRejected(f"{name}: the AI server refused it ({_detail(e)}).") from e
        except openai.OpenAIError as e:
            raise translate(e, model) from e
        return f.id

    async def vector_store(self, channel: str, model: str, *, create: bool) -> str | None:
        """The channel's vector store id (made on first use when `create`)."""
        got = await self.store.conversation_id(channel, "vector_store")
        if got or not create:
            return got
        try:
            vs = await self.client.vector_stores.create(
                name=f"gptbot {channel}"[:200],
                expires_after={"anchor": "last_active_at",
                               "days": max(self.config.assistant.file_ttl_days, 1)})
        except openai.OpenAIError as e:
            raise translate(e, model) from e
        await self.store.set_conversation_id(channel, "vector_store", vs.id)
        return vs.id

    async def index(self, channel: str, name: str, file_id: str, model: str) -> None:
        """Add a file to the channel's vector store and wait until it is processed."""
        vs_id = await self.vector_store(channel, model, create=True)
        assert vs_id is not None
        try:
            vf = await self.client.vector_stores.files.create_and_poll(
                file_id=file_id, vector_store_id=vs_id, max_wait_seconds=120)
        except TimeoutError as e:
            raise FileRejected(f"{name}: the AI server took too long to read it.") from e
        except openai.NotFoundError as e:
            if not gone(e, "vector store"):
                raise translate(e, model) from e
            await self.store.set_conversation_id(channel, "vector_store", None)
            return await self.index(channel, name, file_id, model)
        except openai.OpenAIError as e:
            raise translate(e, model) from e
        if vf.status != "completed":
            reason = vf.last_error.message if vf.last_error else vf.status
            raise FileRejected(f"{name}: the AI server could not process it ({reason}).")

    async def delete_remote(self, channel: str, f: WorkspaceFile) -> None:
        """Delete a workspace file on the server (vector store entry, then the file)."""
        if f.searchable:
            vs_id = await self.store.conversation_id(channel, "vector_store")
            if vs_id:
                await self._quietly(self.client.vector_stores.files.delete(
                    f.remote_id, vector_store_id=vs_id))
        await self._quietly(self.client.files.delete(f.remote_id))

    async def drop_vector_store(self, channel: str) -> None:
        """Delete the channel's vector store."""
        vs_id = await self.store.conversation_id(channel, "vector_store")
        if vs_id:
            await self._quietly(self.client.vector_stores.delete(vs_id))
        await self.store.set_conversation_id(channel, "vector_store", None)

    @staticmethod
    async def _quietly(call: Awaitable[Any]) -> None:
        """Best-effort cleanup: a file already gone on the server is not an error."""
        try:
            await call
        except openai.NotFoundError:
            pass
        except openai.OpenAIError as e:
            log.warning("assistant cleanup failed: %s", _detail(e))

    # backend-specific --------------------------------------------------------------------

    async def place(self, channel: str, f: WorkspaceFile, model: str) -> None:
        """Make a new workspace file available to the code interpreter."""
        raise NotImplementedError

    async def forget(self, channel: str, f: WorkspaceFile) -> None:
        """Remove a file from the code interpreter's view (before it is deleted)."""
        raise NotImplementedError

    async def run(self, req: RunRequest, active: Active) -> RunResult:
        """Run one turn to its end (completed, failed, incomplete)."""
        raise NotImplementedError

    async def cancel(self, active: Active) -> None:
        """Cancel the run on the server."""
        raise NotImplementedError

    async def end(self, channel: str) -> None:
        """End the channel's conversation and drop its code sandbox."""
        raise NotImplementedError


def _detail(e: Exception) -> str:
    message = str(getattr(e, "message", "") or e)
    if "'message': '" in message:
        message = message.split("'message': '", 1)[1].split("'", 1)[0]
    message = " ".join(message.split())
    return message[:200].rstrip(".")


# --------------------------------------------------------------------------- the service


_INSTANCES: weakref.WeakKeyDictionary[Store, Assistant] = weakref.WeakKeyDictionary()


class Assistant:
    """One per running bot (keyed by its store): workspaces, runs in flight, the font."""

    def __init__(self, config: Config, store: Store, ai: AI) -> None:
        self.config = config
        self.store = store
        self.ai = ai
        self.active: dict[str, Active] = {}
        self._font: tuple[str, bytes] | None = None
        self._font_loaded = False
        self._last_sweep = 0.0
        self._sweeping: asyncio.Task[None] | None = None
        if config.assistant.backend == "assistants":
            from bot.assistant_legacy import AssistantsBackend

            self.backend: Backend = AssistantsBackend(self)
        else:
            from bot.assistant_responses import ResponsesBackend

            self.backend = ResponsesBackend(self)

    @classmethod
    def of(cls, config: Config, store: Store, ai: AI) -> Assistant:
        """The bot's assistant service (created on first use)."""
        inst = _INSTANCES.get(store)
        if inst is None or inst.ai is not ai:
            inst = _INSTANCES[store] = cls(config, store, ai)
        return inst

    # --- limits ----------------------------------------------------------------------------

    def check(self, name: str, size: int | None) -> None:
        """Refuse by type and size before downloading anything."""
        cfg = self.config.assistant
        ext = extension(name)
        if ext not in cfg.allowed_types:
            shown = f".{ext} files" if ext else "files without an extension"
            raise FileRejected(f"{name}: {shown} are not supported here. I can work with "
                               f"{', '.join(cfg.allowed_types[:12])}"
                               + (", …" if len(cfg.allowed_types) > 12 else "") + ".")
        if size is not None and size > cfg.max_file_mb * 1024 * 1024:
            raise FileRejected(f"{name}: too large ({human_size(size)}; the limit is "
                               f"{cfg.max_file_mb} MB).")
        if size == 0:
            raise FileRejected(f"{name}: the file is empty.")

    # --- workspace -------------------------------------------------------------------------

    async def add(self, channel: str, name: str, data: bytes, mime: str, *, model: str,
                  author_id: str | None, author_name: str | None
                  ) -> WorkspaceFile:
        """Upload a file into the channel's workspace (code interpreter + file search)."""
        name = safe_name(name)
        self.check(name, len(data))
        await self.sweep()
        existing = [f for f in await self.store.workspace_files(channel) if f.name == name]
        searchable = extension(name) in SEARCHABLE
        remote_id = await self.backend.upload(name, data, mime, model)
        try:
            if searchable:
                await self.backend.index(channel, name, remote_id, model)
            record = await self.store.add_workspace_file(
                channel, name, len(data), mime, remote_id, searchable=searchable,
                author_id=author_id, author_name=author_name)
            try:
                await self.backend.place(channel, record, model)
            except BaseException:
                await self.store.remove_workspace_file(channel, record.id)
                raise
        except BaseException:
            await self.backend.delete_remote(channel, _bare(channel, name, remote_id,
                                                            searchable))
            raise
        for old in existing:  # a new version replaces the file of the same name
            await self._delete(channel, old)
        log.info("assistant: %s added %s (%s) to %s", author_id, name, human_size(len(data)),
                 channel)
        return record

    async def files(self, channel: str) -> list[WorkspaceFile]:
        """The channel's workspace after expiry."""
        await self.sweep()
        return await self.store.workspace_files(channel)

    async def remove(self, channel: str, name: str) -> WorkspaceFile:
        """Delete one file (here and on the server)."""
        files = await self.files(channel)
        match = [f for f in files if f.name == name] or [
            f for f in files if f.name.lower() == name.lower()]
        if not match:
            listed = ", ".join(f.name for f in files) or "none"
            raise UserError(f"There is no file named {name} here. Files: {listed}.")
        await self._delete(channel, match[-1])
        if not await self.store.workspace_files(channel):
            await self.backend.drop_vector_store(channel)
        return match[-1]

    async def clear(self, channel: str) -> int:
        """Delete every file, the sandbox, the vector store; end the conversation."""
        files = await self.store.workspace_files(channel)
        for f in files:
            await self.backend.delete_remote(channel, f)
            await self.store.remove_workspace_file(channel, f.id)
        await self.backend.end(channel)
        await self.backend.drop_vector_store(channel)
        log.info("assistant: cleared %d files in %s", len(files), channel)
        return len(files)

    async def _delete(self, channel: str, f: WorkspaceFile) -> None:
        await self.backend.forget(channel, f)
        await self.backend.delete_remote(channel, f)
        await self.store.remove_workspace_file(channel, f.id)

    async def sweep(self) -> None:
        """Delete files older than file_ttl_days, everywhere (at most once an hour)."""
        now = time.time()
        if now - self._last_sweep < SWEEP_INTERVAL:
            return
        self._last_sweep = now
        cutoff = now - self.config.assistant.file_ttl_days * 86_400
        for f in await self.store.workspace_files_before(cutoff):
            log.info("assistant: %s in %s expired; deleting", f.name, f.channel)
            await self._delete(f.channel, f)
            if not await self.store.workspace_files(f.channel):
                await self.backend.drop_vector_store(f.channel)

    # --- the CJK font ----------------------------------------------------------------------

    async def font(self) -> tuple[str, bytes] | None:
        """(file name, bytes) of the CJK font to put in each sandbox, or None."""
        if not self._font_loaded:
            self._font_loaded = True
            setting = self.config.assistant.cjk_font
            path: Path | None = None
            if setting == "auto":
                path = await asyncio.to_thread(find_cjk_font)
                if path is None:
                    log.warning("assistant: no font with CJK glyphs found (install "
                                "fonts-noto-cjk or set [assistant] cjk_font); Chinese text "
                                "in charts may show as empty boxes")
            elif setting:
                path = Path(setting)
            if path is not None:
                try:
                    data = await asyncio.to_thread(path.read_bytes)
                    self._font = (safe_name(path.name), data)
                    log.info("assistant: CJK font %s (%s)", path, human_size(len(data)))
                except OSError as e:
                    log.warning("assistant: cannot read the CJK font %s: %s", path, e)
        return self._font

    # --- runs ------------------------------------------------------------------------------

    def running(self, channel: str) -> bool:
        """Whether a run is in flight in this channel."""
        return channel in self.active

    def cancel(self, channel: str) -> bool:
        """Ask the channel's run to stop; False when nothing is running."""
        active = self.active.get(channel)
        if active is None:
            return False
        active.cancelled.set()
        return True

    async def ask(self, req: RunRequest) -> RunResult:
        """Run one turn with /cancel and the run timeout, through the usage meter (the
        budget is checked before anything is sent)."""
        await self.sweep()
        estimate = Usage(input_tokens=self.ai.tokenizer.count(req.persona + req.text) + 500,
                         output_tokens=self.config.chat.max_output_tokens)
        charge = await self.ai.meter.start("assistant", req.model, estimate)
        active = Active()
        self.active[req.channel] = active
        work = asyncio.create_task(self.backend.run(req, active))
        stop = asyncio.create_task(active.cancelled.wait())
        try:
            done, _ = await asyncio.wait({work, stop}, timeout=self.config.assistant.run_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                result = work.result()
            else:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
                with contextlib.suppress(Exception):
                    await self.backend.cancel(active)
                if stop in done:
                    log.info("assistant: run cancelled in %s", req.channel)
                    raise RunStopped()
                log.warning("assistant: run timed out in %s", req.channel)
                raise UserError(TIMED_OUT.format(
                    seconds=int(self.config.assistant.run_timeout)))
        except BaseException:
            charge.cancel()
            raise
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
            self.active.pop(req.channel, None)
        reported = result.input_tokens or result.output_tokens
        await charge.done(Usage(input_tokens=result.input_tokens,
                                output_tokens=result.output_tokens) if reported else None)
        if result.search_calls:
            calls = Usage(units=result.search_calls, unit="calls")
            async with self.ai.meter.request("assistant", "file_search", calls) as c:
                await c.done(calls)
        return result

    async def record_session(self) -> None:
        """One code-interpreter session (billed per container / session)."""
        session = Usage(units=1, unit="sessions")
        async with self.ai.meter.request("assistant", "code_interpreter", session) as c:
            await c.done(session)

    async def end(self, channel: str) -> None:
        """End the conversation, keep the files (a new one starts on the next message)."""
        await self.backend.end(channel)


def _bare(channel: str, name: str, remote_id: str, searchable: bool) -> WorkspaceFile:
    """A workspace-file value for cleanup of an upload that never got a row."""
    return WorkspaceFile(0, channel, name, 0, "", remote_id, searchable, None, None, None,
                         None, 0.0)
