"""Model deltas -> a few coalesced sends/edits, paced to what each platform tolerates.

The model can produce hundreds of deltas a second; Telegram tolerates about one edit a
second per chat and Discord five per five seconds per channel. A background flusher
sends the text as it stands at most once per `min_edit_interval`; `finish()` always
lands the final text, split at the platform limit, whatever happened before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Generic, Protocol, TypeVar

from bot.errors import ChatForbidden, RateLimited
from bot.render import fence_open

log = logging.getLogger(__name__)

# Wait this long after the first delta before the first send, so that a short answer that
# completes quickly goes out as one message instead of a send followed by a delayed edit.
FIRST_SEND_DELAY = 0.35
FINAL_ATTEMPTS = 4


S = TypeVar("S")


class Pacing(Protocol):
    """The part of Capabilities a stream paces itself by."""

    @property
    def min_edit_interval(self) -> float: ...

    @property
    def edits(self) -> bool: ...


class Target(Protocol[S]):
    """What a stream writes to: a Replier. Declared here, so that bot/replies.py imports this
    module and never the reverse."""

    @property
    def capabilities(self) -> Pacing: ...

    def split(self, markdown: str) -> list[str]: ...

    async def send(self, markdown: str) -> S: ...

    async def edit(self, sent: S, markdown: str) -> S: ...


class ReplyStream(Generic[S]):
    """One growing reply; may span several platform messages when it passes max_text."""

    def __init__(self, replier: Target[S], *,
                 first_send_delay: float = FIRST_SEND_DELAY) -> None:
        self.replier = replier
        self.text = ""
        self.sent: list[S] = []
        self._sent_text: list[str] = []
        self._first_delay = first_send_delay
        self._interval = replier.capabilities.min_edit_interval
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_call = 0.0
        self._first_delta_at: float | None = None
        self._lock = asyncio.Lock()
        self._finished = False
        self.calls = 0
        # a short line (e.g. "calculating…") shown below the text until more text comes
        self._status = ""

    def append(self, delta: str) -> None:
        """Add model output; never blocks, the flusher picks it up."""
        if not delta or self._finished:
            return
        self.text += delta
        self._status = ""
        if self._first_delta_at is None:
            self._first_delta_at = time.monotonic()
        self._dirty.set()
        if self._task is None and self.replier.capabilities.edits:
            self._task = asyncio.create_task(self._flusher())

    async def _flusher(self) -> None:
        try:
            while True:
                await self._dirty.wait()
                now = time.monotonic()
                due = max(self._last_call + self._interval, (self._first_delta_at or now) + (
                    self._first_delay if not self.sent else 0.0))
                if due > now:
                    await asyncio.sleep(due - now)
                self._dirty.clear()
                try:
                    # shielded: cancelling the flusher must not abandon a send half-way,
                    # or the final flush would not know that message exists
                    await asyncio.shield(self._flush())
                except RateLimited as e:
                    await asyncio.sleep(e.retry_after)
                    self._dirty.set()
                except ChatForbidden:
                    return  # permanent; finish() reports it
                except Exception:
                    log.warning("intermediate stream update failed", exc_info=True)
        except asyncio.CancelledError:
            pass

    def status(self, line: str) -> None:
        """Show a status line while work without output runs; the next text replaces it."""
        if self._finished or not line:
            return
        self._status = line
        if self._first_delta_at is None:
            self._first_delta_at = time.monotonic()
        self._dirty.set()
        if self._task is None and self.replier.capabilities.edits:
            self._task = asyncio.create_task(self._flusher())

    async def _flush(self) -> None:
        async with self._lock:
            text = self.text if self.text.strip() else ""
            if self._status and not self._finished:
                text = f"{text}\n\n_{self._status}_" if text else f"_{self._status}_"
            if not text:
                return
            chunks = self.replier.split(text)
            for i, chunk in enumerate(chunks):
                if i < len(self.sent):
                    if chunk == self._sent_text[i]:
                        continue
                    await self._pace()
                    self.sent[i] = await self.replier.edit(self.sent[i], chunk)
                    self._sent_text[i] = chunk
                else:
                    await self._pace()
                    self.sent.append(await self.replier.send(chunk))
                    self._sent_text.append(chunk)

    async def _pace(self) -> None:
        """Space platform calls by the interval; the final flush paces too, it just never skips."""
        wait = self._last_call + self._interval - time.monotonic()
        if wait > 0 and self.calls:
            await asyncio.sleep(wait)
        self._last_call = time.monotonic()
        self.calls += 1

    def append_note(self, note: str) -> None:
        """Add a closing remark (error, cut-off) outside any code block left open."""
        if fence_open(self.text):
            self.text += "\n```"
        self.append(f"\n\n{note}" if self.text else note)

    async def finish(self, note: str = "") -> list[S]:
        """Land the complete text (plus an optional note), retrying until it is there."""
        if note:
            self.append_note(note)
        self._finished = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for attempt in range(FINAL_ATTEMPTS):
            try:
                await self._flush()
                return self.sent
            except RateLimited as e:
                await asyncio.sleep(e.retry_after)
            except ChatForbidden:
                raise  # the chat refuses the bot: retrying cannot help
            except Exception:
                if attempt == FINAL_ATTEMPTS - 1:
                    raise
                log.warning("final stream update failed, retrying", exc_info=True)
                await asyncio.sleep(0.5 * (attempt + 1))
        return self.sent

    async def abort(self) -> None:
        """Stop the flusher without sending anything more (the caller reports the error)."""
        self._finished = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
