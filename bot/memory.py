"""Semantic memory: stored messages embedded in the background, recalled by similarity.

A background task walks the turns table in id order (a cursor in the database), embeds
new messages in batches with `[models] embedding` and stores the vectors next to them
(search index: sqlite-vec, see bot/store.py). When a question is answered, its own
embedding (bounded by `[memory] recall_timeout`) finds up to `[memory] recall_k` older
turns of the same channel that fell outside the history window; they go into the
context, labelled with date and speaker. The embeddings endpoint is never on the answer's
critical path for longer than that timeout: on failure the answer goes without recall,
the endpoint is left alone for a while, and the backlog is embedded later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from bot.errors import ModelError, Unsupported

if TYPE_CHECKING:
    from bot.ai import AI
    from bot.config import Config
    from bot.context import Context
    from bot.store import Recalled, Store, Turn

log = logging.getLogger(__name__)

EMBED_CHARS = 6000  # ~1,500 tokens: far under the 8,192-token input limit
SNIPPET = 400
IDLE_POLL = 2.0
# A batch that drained the backlog is followed by the next one no sooner than this: under
# steady traffic one request carries every turn of the last second (up to batch_size)
# instead of one request per message (before: ~1 embeddings request + ~10 database calls
# per answered message in `bench/load.py overhead`; now ~1 request per 30-60 messages).
BATCH_INTERVAL = 1.0
NONE_TTL = 60.0
NONE_CACHE = 10_000
MAX_BACKOFF = 300.0
RECALL_HEADER = ("Older messages from this chat that may be relevant (recalled from memory; "
                 "times in UTC):")

_instances: weakref.WeakKeyDictionary[Any, Memory] = weakref.WeakKeyDictionary()


class Memory:
    """The embedder task and the search front of one store."""

    def __init__(self, config: Config, store: Store, ai: AI) -> None:
        self.config = config
        self.store = store
        self.ai = ai
        self.model = config.models.embedding
        self.active = False
        self.off_reason = ""
        self.dims: int | None = None
        self.embedded = 0
        self.embed_seconds = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._cancellable = True
        self._wake = asyncio.Event()
        self._down_until = 0.0
        self._backoff = 2.0
        self._failing = False
        self._not_before = 0.0
        self._queries: OrderedDict[str, bytes] = OrderedDict()
        # channel -> (turn id below which it has no vector, when that was seen): recall
        # asks on every answered message, and most chats have nothing older than their
        # history window, so the answer is kept instead of asking the database each time
        self._none_below: OrderedDict[str, tuple[int, float]] = OrderedDict()

    async def start(self) -> None:
        """Turn memory on when configured and possible (one log line when not)."""
        _instances[self.store] = self
        if not self.config.memory.enabled or not self.model:
            self.off_reason = "semantic memory is turned off in config.toml"
            return
        if not self.store.vec:
            self.off_reason = "the sqlite-vec extension cannot be loaded on this machine"
            return
        added = await self.store.rebuild_memory_index()
        if added:
            log.info("memory: indexed %d stored vectors", added)
        self.active = True
        self._task = asyncio.create_task(self._run(), name="memory embedder")

    async def stop(self) -> None:
        """Stop the embedder (the cursor is in the database: the backlog waits)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # cancelled only while waiting on the network or idle: a database call cut
            # half-way would leave its statement open on the shared connection
            if self._cancellable:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def notify(self) -> None:
        """New turns were stored: embed them soon."""
        self._wake.set()

    def _off(self, reason: str) -> None:
        self.active = False
        self.off_reason = reason
        log.warning("semantic memory is off: %s", reason)

    # --- background embedding -------------------------------------------------------

    async def _run(self) -> None:
        batch = self.config.memory.batch_size
        while self.active and not self._stopping:
            self._wake.clear()  # a notify from here on is seen after this batch
            now = time.monotonic()
            if self._down_until > now:  # backing off (a notify asks again sooner)
                await self._pause(self._down_until - now)
                continue
            if self._not_before > now:  # gathering the next batch: no wake-up per message
                self._cancellable = True
                try:
                    await asyncio.sleep(self._not_before - now)
                finally:
                    self._cancellable = False
                continue
            self._cancellable = False
            try:
                done = await self.embed_backlog_once()
            except Unsupported:
                self._off(f"the AI server offers no embeddings (model {self.model})")
                return
            except (ModelError, TimeoutError) as e:
                self._fail(getattr(e, "kind", "timeout"))
                done = 0
            except Exception:
                log.exception("memory: embedding batch failed")
                self._fail("error")
                done = 0
            if self._stopping:
                break
            if done >= batch:
                continue  # a full batch: more may be waiting
            if done:
                # the backlog is drained: what arrives next waits for the next batch
                self._not_before = time.monotonic() + BATCH_INTERVAL
            if not self._wake.is_set():
                await self._pause(IDLE_POLL)

    async def _pause(self, seconds: float) -> None:
        """Wait until notified or `seconds` have passed (stop() may cancel the wait)."""
        self._cancellable = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), seconds)
        finally:
            self._cancellable = False

    def _fail(self, kind: str) -> None:
        if not self._failing:
            log.warning("memory: embeddings failing (%s); answers go without recall, the "
                        "backlog is embedded when the service is back", kind)
        self._failing = True
        self._down_until = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)

    def _ok(self) -> None:
        if self._failing:
            log.info("memory: embeddings are back")
        self._failing = False
        self._backoff = 2.0
        self._down_until = 0.0

    async def embed_backlog_once(self) -> int:
        """Embed one batch of not yet embedded turns; returns how many turns it dealt with."""
        if time.monotonic() < self._down_until:
            return 0
        cursor = await self.store.memory_cursor()
        rows = await self.store.memory_backlog(cursor, self.config.memory.batch_size)
        if not rows:
            return 0
        wanted = []
        for tid, ch, text in rows:
            forgotten = await self.store.setting(ch, "memory_forget_at")
            if _worth(text) and (forgotten is None or tid > int(forgotten)):
                wanted.append((tid, ch, _embed_text(text)))
        last = rows[-1][0]
        if not wanted:
            await self.store.set_memory_cursor(last)
            return len(rows)
        started = time.perf_counter()
        self._cancellable = True
        try:
            vectors = await self._embed([t for _, _, t in wanted])
        finally:
            self._cancellable = False
        if self._stopping:
            return 0
        dims = len(vectors[0]) // 4
        if dims % 8:
            self._off(f"{self.model} makes {dims}-dimensional vectors; a multiple of 8 is "
                      "needed")
            return 0
        self.dims = dims
        await self.store.add_vectors(
            [(tid, ch, self.model, v) for (tid, ch, _), v in zip(wanted, vectors, strict=True)],
            dims, last)
        for tid, ch, _ in wanted:
            seen = self._none_below.get(ch)
            if seen is not None and tid < seen[0]:
                self._none_below[ch] = (tid, seen[1])
        self.embedded += len(wanted)
        self.embed_seconds += time.perf_counter() - started
        self._ok()
        return len(rows)

    async def _embed(self, texts: list[str]) -> list[bytes]:
        cached = [self._queries.get(t) for t in texts]
        missing = [t for t, v in zip(texts, cached, strict=True) if v is None]
        fresh: dict[str, bytes] = {}
        if missing:
            vectors = await self.ai.embed_vectors(self.model, missing,
                                                  dimensions=self.config.memory.dimensions)
            fresh = dict(zip(missing, vectors, strict=True))
        return [v if v is not None else fresh[t] for t, v in zip(texts, cached, strict=True)]

    # --- search -----------------------------------------------------------------------

    async def query_vector(self, text: str, *, timeout: float | None) -> bytes | None:
        """The question's embedding, or None when the service is down or too slow."""
        text = _embed_text(text)
        cached = self._queries.get(text)
        if cached is not None:
            return cached
        if time.monotonic() < self._down_until:
            return None
        try:
            vectors = await asyncio.wait_for(
                self.ai.embed_vectors(self.model, [text],
                                      dimensions=self.config.memory.dimensions), timeout)
        except Unsupported:
            self._off(f"the AI server offers no embeddings (model {self.model})")
            return None
        except (ModelError, TimeoutError) as e:
            self._fail(getattr(e, "kind", "timeout"))
            return None
        self._ok()
        self._queries[text] = vectors[0]
        if len(self._queries) > 256:
            self._queries.popitem(last=False)
        return vectors[0]

    async def has_older(self, channel: str, before: int) -> bool:
        """Whether the channel has an embedded turn older than `before` (one index seek,
        skipped while an earlier answer says no: vectors this embedder adds update that
        answer, and it is asked again after NONE_TTL in case another process added some)."""
        seen = self._none_below.get(channel)
        now = time.monotonic()
        if seen is not None and before <= seen[0] and now - seen[1] < NONE_TTL:
            self._none_below.move_to_end(channel)
            return False
        found = await self.store.memory_has_older(channel, before)
        if found:
            self._none_below.pop(channel, None)
        else:
            self._none_below[channel] = (before, now)
            self._none_below.move_to_end(channel)
            if len(self._none_below) > NONE_CACHE:
                self._none_below.popitem(last=False)
        return found

    async def search(self, channel: str, text: str, *, k: int, before: int = 1 << 62,
                     timeout: float | None = None) -> list[Recalled] | None:
        """This channel's stored turns most similar to a text; None if it cannot be asked."""
        if not self.active:
            return None
        vector = await self.query_vector(text, timeout=timeout)
        if vector is None:
            return None
        dims = len(vector) // 4
        return await self.store.memory_search(channel, vector, dims, before=before, k=k)


def of(ctx: Context) -> Memory | None:
    """The memory of the bot handling this message (None when not started)."""
    return _instances.get(ctx.store)


async def start(config: Config, store: Store, ai: AI) -> Memory:
    """Create and start the memory of a running bot (bot/__main__.py)."""
    memory = Memory(config, store, ai)
    await memory.start()
    if not memory.active and config.memory.enabled:
        log.warning("semantic memory is off: %s", memory.off_reason)
    return memory


def _worth(text: str) -> bool:
    return len(text.strip()) >= 3


def _embed_text(text: str) -> str:
    text = " ".join(text.split())
    return text[:EMBED_CHARS] or "."


def label(hit: Recalled) -> str:
    """`2025-05-01 14:03 Alice` for a recalled turn."""
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(hit.created))
    who = "assistant (you)" if hit.role == "assistant" else (hit.author_name or "user")
    return f"{when} {who}"


def snippet(text: str, limit: int = SNIPPET) -> str:
    """One line, cut at `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def recall_message(ctx: Context, current: str, turns: list[Turn],
                         available: int) -> tuple[dict[str, Any] | None, int]:
    """Hook for context assembly: a system message with the recalled turns and its tokens.

    Only turns older than the history window are searched; the block takes at most a
    third of the budget left for history, and never waits longer than recall_timeout.
    """
    memory = of(ctx)
    k = ctx.config.memory.recall_k
    if memory is None or not memory.active or k <= 0 or available <= 0:
        return None, 0
    memory.notify()
    before = turns[0].id if turns else 1 << 62
    if not await memory.has_older(ctx.channel, before):
        return None, 0
    try:
        hits = await memory.search(ctx.channel, current, k=k, before=before,
                                   timeout=ctx.config.memory.recall_timeout)
    except Exception:
        log.exception("memory: recall failed in %s", ctx.channel)
        return None, 0
    if not hits:
        return None, 0
    count = ctx.ai.tokenizer.count
    cap = available // 3
    used = count(RECALL_HEADER) + 4
    chosen: list[tuple[Recalled, str]] = []
    for hit in hits:  # most similar first
        line = f"- [{label(hit)}] {snippet(hit.content)}"
        cost = count(line) + 1
        if used + cost > cap:
            continue
        used += cost
        chosen.append((hit, line))
    if not chosen:
        return None, 0
    chosen.sort(key=lambda c: c[0].turn_id)
    text = "\n".join([RECALL_HEADER, *(line for _, line in chosen)])
    log.debug("memory: recalled %d turn(s) in %s", len(chosen), ctx.channel)
    return {"role": "system", "content": text}, used
