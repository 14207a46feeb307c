"""Files and code: documents go to the chat's workspace, the assistant answers over them.

A document sent in a private chat (or addressed to the bot in a group) is uploaded to the
channel's workspace and its caption answered; without a caption the bot says in two or
three lines what the file holds and what it can do with it. While the workspace holds
files, every addressed text message goes to the assistant (code interpreter + file search,
one server-side conversation per channel). `/code` runs Python with or without files,
`/files` lists / removes / clears, `/cancel` stops the run in flight.

One status message follows a run (queued -> running code -> searching files -> writing)
and is replaced by the answer; charts come back as pictures, other files as documents.
Every turn is also kept in the local history, so normal chat continues after /files clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from bot.assistant import (
    NO_ENDPOINTS,
    STOPPED,
    Assistant,
    FileRejected,
    Produced,
    RunRequest,
    RunResult,
    RunStopped,
    Stage,
    human_size,
)
from bot.commands import Param, command
from bot.context import Context
from bot.errors import RateLimited, Unsupported, UserError
from bot.events import Attachment, Inbound
from bot.replies import OutFile, Replier, Sent
from handlers.chat import chat_model, store_user_turn, system_prompt, user_content
from handlers.voice import is_audio

log = logging.getLogger(__name__)

Handler = Callable[[Context], Awaitable[None]]

STAGES: dict[Stage, str] = {
    "queued": "⏳ Queued…",
    "thinking": "🤔 Thinking…",
    "code": "🐍 Running code…",
    "search": "🔎 Searching your files…",
    "writing": "✍️ Writing…",
}
# a run that lands sooner needs no status message at all
STATUS_DELAY = 0.35
DESCRIBE = ("I just added {names} to our workspace. In two or three short lines, say what "
            "it holds and what you can do with it for me (charts, summaries, answers). Look "
            "inside with the python tool if you need to.")
NO_CODE_REQUEST = "Tell me what to compute, e.g. `/code plot y = sin x from 0 to 10`."
FILES_EMPTY = ("No files here yet. Send me a document (CSV, XLSX, PDF, DOCX, code…) and I'll "
               "work with it; `/code` runs Python without files too.")


def is_document(att: Attachment) -> bool:
    """Files for the workspace: documents that are not pictures or recordings."""
    return att.kind == "document" and not att.mime.startswith("image/") and not is_audio(att)


def wants_document(inbound: Inbound) -> bool:
    """Messages bringing documents go to the workspace before chat sees them."""
    return inbound.command is None and any(is_document(a) for a in inbound.attachments)


def service(ctx: Context) -> Assistant:
    """The bot's assistant service."""
    return Assistant.of(ctx.config, ctx.store, ctx.ai)


# --------------------------------------------------------------------------- status


class Status:
    """One status message edited through a run, within the platform's edit budget."""

    def __init__(self, reply: Replier, delay: float = STATUS_DELAY) -> None:
        self.reply = reply
        self.text = STAGES["queued"]
        self.sent: Sent | None = None
        self._shown = ""
        self._delay = delay
        self._interval = reply.capabilities.min_edit_interval
        self._last = 0.0
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        if reply.capabilities.edits:  # a terminal cannot edit: no status lines there
            self._task = asyncio.create_task(self._loop())

    def set(self, stage: Stage) -> None:
        """Move to a stage; shown at the next allowed edit."""
        text = STAGES[stage]
        if text != self.text:
            self.text = text
            self._changed.set()

    async def _loop(self) -> None:
        await asyncio.sleep(self._delay)
        while True:
            self._changed.clear()
            async with self._lock:
                await self._show(self.text)
            await self._changed.wait()
            wait = self._last + self._interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)

    async def _show(self, text: str) -> None:
        if text == self._shown:
            return
        try:
            if self.sent is None:
                self.sent = await self.reply.send(text)
            else:
                self.sent = await self.reply.edit(self.sent, text)
            self._shown = text
        except RateLimited as e:
            await asyncio.sleep(e.retry_after)
            self._changed.set()
        except Exception:
            log.warning("status update failed", exc_info=True)
        self._last = time.monotonic()

    async def stop(self) -> Sent | None:
        """Stop updating (never in the middle of a send); the status message, if any."""
        if self._task is not None:
            async with self._lock:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        return self.sent

    async def replace(self, text: str) -> None:
        """Put the final text in place of the status message (or send it)."""
        sent = await self.stop()
        if sent is None:
            await self.reply.reply_long(text)
            return
        chunks = self.reply.split(text) or [text]
        for attempt in range(4):
            wait = self._last + self._interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self.reply.edit(sent, chunks[0])
                break
            except RateLimited as e:
                await asyncio.sleep(e.retry_after)
            except Exception:
                if attempt == 3:
                    raise
                log.warning("final status edit failed, retrying", exc_info=True)
                self._last = time.monotonic()
        for chunk in chunks[1:]:
            await self.reply.send(chunk)


# --------------------------------------------------------------------------- running


async def history(ctx: Context, persona: str) -> list[tuple[str, str]]:
    """Recent turns within history_tokens, oldest first, to seed a new conversation."""
    budget = ctx.config.chat.history_tokens - ctx.ai.tokenizer.count(persona)
    turns = await ctx.store.recent_turns(ctx.channel, max(budget, 0),
                                         ctx.config.chat.history_messages)
    return [(t.role, t.content) for t in turns]


async def run(ctx: Context, text: str, *, code: bool = False, stored: str | None = None
              ) -> None:
    """One assistant turn: status message, the run, the answer and files, local history."""
    assistant = service(ctx)
    persona = await system_prompt(ctx)
    model = ctx.config.assistant.model or await chat_model(ctx)
    content = user_content(ctx.inbound, text)
    status = Status(ctx.reply)
    request = RunRequest(
        channel=ctx.channel, text=content, persona=persona, model=model,
        history=lambda: history(ctx, persona), progress=status.set, code=code)
    result: RunResult | None = None
    try:
        async with ctx.reply.working("typing"):
            try:
                result = await assistant.ask(request)
            except RunStopped:
                if status.sent is not None:
                    await status.replace(STOPPED)
                else:
                    await status.stop()
                return
            except UserError:
                # the router's error policy turns the status message into the reply
                ctx.placeholder = await status.stop()
                raise
            except BaseException:
                await status.stop()
                raise
            await deliver(ctx, status, result)
    finally:
        await store_user_turn(ctx, user_content(ctx.inbound, stored or text))
        if result is not None:
            answer = result.display()
            if result.files:
                answer += ("\n" if answer else "") + "[files sent: " + ", ".join(
                    f.name for f in result.files) + "]"
            await ctx.store.append_turn(ctx.channel, "assistant", answer,
                                        ctx.ai.tokenizer.count(answer))


async def deliver(ctx: Context, status: Status, result: RunResult) -> None:
    """The answer replaces the status message; charts as pictures, other files as
    documents under their own names."""
    text = result.display()
    files, notes = outgoing(ctx, result.files)
    if notes:
        text += ("\n\n" if text else "") + "\n".join(notes)
    if not text:
        text = "Here you go:" if files else "Done (the assistant had nothing to add)."
    await status.replace(text)
    if files:
        async with ctx.reply.working("upload_document"):
            await ctx.reply.send_files(files)


def outgoing(ctx: Context, produced: list[Produced]) -> tuple[list[OutFile], list[str]]:
    """Files that fit the platform, and a note for each that does not."""
    limit = ctx.reply.capabilities.max_upload
    files: list[OutFile] = []
    notes: list[str] = []
    for p in produced:
        if len(p.data) > limit:
            notes.append(f"⚠️ {p.name} is too large to send here ({human_size(len(p.data))}).")
            continue
        files.append(OutFile(data=p.data, filename=p.name, mime=p.mime,
                             kind="image" if p.is_image else "document"))
    return files, notes


async def ingest(ctx: Context, attachments: list[Attachment]) -> tuple[list[str], list[str]]:
    """Add documents to the workspace: (names added, one problem line per bad file)."""
    assistant = service(ctx)
    model = ctx.config.assistant.model or await chat_model(ctx)
    added: list[str] = []
    problems: list[str] = []
    for att in attachments:
        try:
            assistant.check(att.filename, att.size)
            async with ctx.reply.working("typing"):
                data = await att.read()
                record = await assistant.add(
                    ctx.channel, att.filename, data, att.mime, model=model,
                    author_id=ctx.inbound.author.id,
                    author_name=ctx.inbound.author.name)
            added.append(record.name)
        except Unsupported:
            log.info("assistant: the AI server has no files/code endpoints (%s)", ctx.channel)
            raise UserError(NO_ENDPOINTS) from None
        except FileRejected as e:
            log.info("assistant: rejected a file in %s: %s", ctx.channel, e.message)
            problems.append(e.message)
        except UserError as e:
            problems.append(f"{Path(att.filename).name}: {e.message}")
    return added, problems


async def take_files(ctx: Context, attachments: list[Attachment]) -> list[str]:
    """Ingest and report bad files; raises when nothing usable came in."""
    added, problems = await ingest(ctx, attachments)
    if problems and not added:
        raise UserError("\n".join(problems))
    if problems:
        await ctx.reply.reply_long("\n".join(problems))
    return added


async def document(ctx: Context) -> None:
    """Documents in: add to the workspace, answer the caption (or describe the file)."""
    docs = [a for a in ctx.inbound.attachments if is_document(a)]
    added = await take_files(ctx, docs)
    caption = ctx.inbound.text.strip()
    names = ", ".join(added)
    note = f"[added {names} to the workspace]"
    if caption:
        await guarded(ctx, f"{note}\n{caption}", stored=f"{note} {caption}")
    else:
        await guarded(ctx, DESCRIBE.format(names=names), stored=note)


async def guarded(ctx: Context, text: str, *, code: bool = False, stored: str | None = None
                  ) -> None:
    """run(), with a server lacking the endpoints answered in one clear sentence."""
    try:
        await run(ctx, text, code=code, stored=stored)
    except Unsupported:
        log.info("assistant: the AI server has no responses/code endpoints (%s)", ctx.channel)
        raise UserError(NO_ENDPOINTS) from None


async def message(ctx: Context) -> None:
    """An addressed text message in a channel whose workspace holds files."""
    text = ctx.inbound.text.strip()
    if not text:
        raise UserError("Ask me something about your files.")
    await guarded(ctx, text)


def with_workspace(fallback: Handler) -> Handler:
    """Text messages go to the assistant while the channel's workspace holds files."""

    async def handle(ctx: Context) -> None:
        if ctx.inbound.text.strip() and await ctx.store.has_workspace(ctx.channel):
            await message(ctx)
        else:
            await fallback(ctx)

    handle.__doc__ = fallback.__doc__
    return handle


# --------------------------------------------------------------------------- commands


@command(
    "code",
    Param("request", "What to compute, analyse or plot", type="text"),
    Param("file", "A file to work on (optional)", type="attachment"),
)
async def code_cmd(ctx: Context) -> None:
    """Run Python for you: math, data analysis, charts (with or without files)"""
    request = str(ctx.args.get("request", "")).strip()
    docs = [a for a in ctx.inbound.attachments if is_document(a)]
    added = await take_files(ctx, docs) if docs else []
    if not request and not added:
        raise UserError(NO_CODE_REQUEST)
    if added and not request:
        request = DESCRIBE.format(names=", ".join(added))
    elif added:
        request = f"[added {', '.join(added)} to the workspace]\n{request}"
    await guarded(ctx, request, code=True, stored=f"/code {request}")


@command(
    "files",
    Param("action", "What to do", choices=("list", "add", "remove", "clear")),
    Param("name", "The file to remove", type="text"),
    Param("file", "A file to add", type="attachment"),
)
async def files_cmd(ctx: Context) -> None:
    """List this chat's files; add, remove NAME, or clear them all"""
    action = str(ctx.args.get("action", "list") or "list")
    assistant = service(ctx)
    if action == "add":
        docs = [a for a in ctx.inbound.attachments if is_document(a)]
        if not docs:
            raise UserError("Attach the file to add (or just send it to me).")
        added = await take_files(ctx, docs)
        await guarded(ctx, DESCRIBE.format(names=", ".join(added)),
                      stored=f"[added {', '.join(added)} to the workspace]")
        return
    if action == "remove":
        name = str(ctx.args.get("name", "")).strip()
        if not name:
            raise UserError("Which file? Usage: `/files remove NAME`.")
        removed = await assistant.remove(ctx.channel, name)
        left = await ctx.store.workspace_files(ctx.channel)
        tail = "" if left else " The workspace is empty now; we're back to normal chat."
        await ctx.reply.reply_long(f"Removed {removed.name}.{tail}")
        return
    if action == "clear":
        count = await assistant.clear(ctx.channel)
        await ctx.reply.reply_long(
            f"Deleted {count} file{'s' if count != 1 else ''} and ended the assistant "
            "conversation here. We're back to normal chat.")
        return
    files = await assistant.files(ctx.channel)
    if not files:
        await ctx.reply.reply_long(FILES_EMPTY)
        return
    lines = [f"**Files here** ({len(files)})"]
    for f in files:
        when = datetime.fromtimestamp(f.created, UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"• {f.name} — {human_size(f.size)}, added by {f.author_name or '?'}, "
                     f"{when}")
    lines.append("\n`/files remove NAME` deletes one, `/files clear` deletes all.")
    await ctx.reply.reply_long("\n".join(lines))


@command("cancel", immediate=True)
async def cancel_cmd(ctx: Context) -> None:
    """Stop the request running in this chat"""
    if service(ctx).cancel(ctx.channel):
        await ctx.reply.reply_long("⏹ Stopping the request in progress.")
    else:
        await ctx.reply.reply_long("Nothing is running here.")
