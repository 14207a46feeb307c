"""Inbound -> handler: per-channel order, cross-channel concurrency, access, error policy.

Each channel with pending messages has one worker task draining its own queue, so a
channel's messages are answered in the order they arrived while other channels proceed
concurrently. Workers exit when their queue is empty: idle channels cost no memory.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.ai import AI
from bot.commands import CommandTable, spec_of
from bot.config import Config
from bot.context import Context, listed
from bot.errors import ChatForbidden, UserError
from bot.events import Inbound
from bot.replies import Replier
from bot.store import Store
from bot.usage import CALLER, Caller

if TYPE_CHECKING:
    from bot.journal import Journal

log = logging.getLogger(__name__)

Handler = Callable[[Context], Awaitable[None]]
Predicate = Callable[[Inbound], bool]

INTERNAL_ERROR = "Sorry, something went wrong on my side (error id {id})."
NOT_ALLOWED = "Sorry, you are not allowed to use this bot here."
ADMIN_ONLY = "Only bot admins can use /{name} in group chats."
UNKNOWN_COMMAND = "Unknown command /{name}. Send /help to see what I can do."


@dataclass(frozen=True, slots=True)
class Registry:
    """What handlers/__init__.py declares: commands, message handlers, the passive recorder."""

    commands: list[Handler]
    messages: list[tuple[Predicate, Handler]]
    passive: Handler | None = None


class Router:
    """Receives Inbounds from every adapter and runs the right handler."""

    def __init__(self, config: Config, store: Store, ai: AI, registry: Registry,
                 journal: Journal | None = None) -> None:
        self.config = config
        self.store = store
        self.ai = ai
        self.registry = registry
        # records every message until answered (crash recovery, bot/journal.py)
        self.journal = journal
        # while held (start-up), messages are queued but not worked on, so that those a
        # crash left unanswered can still go ahead of them (release())
        self._held = False
        self.commands = CommandTable([spec_of(h) for h in registry.commands], config)
        self._queues: dict[str, deque[tuple[Inbound, Replier]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._immediate: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._refused: OrderedDict[str, None] = OrderedDict()
        self._closing = False
        self.received = 0

    async def submit(self, inbound: Inbound, replier: Replier) -> None:
        """Queue a message behind earlier ones of its channel; returns immediately."""
        if self._closing:
            log.info("shutting down; dropping message %s", inbound.id)
            return
        if self.journal is not None:
            journaled = await self.journal.receive(inbound, replier)
            if journaled is None:
                return  # a re-delivery of a message handled before
            replier = journaled
        self.received += 1
        if self._is_immediate(inbound):
            # e.g. /cancel: it must not wait behind the run it is meant to stop
            task = asyncio.create_task(self._run(inbound, replier), name="immediate")
            self._immediate.add(task)
            self._idle.clear()
            task.add_done_callback(self._immediate_done)
            return
        self._enqueue(inbound, replier)

    def _enqueue(self, inbound: Inbound, replier: Replier, *, front: bool = False) -> None:
        key = str(inbound.channel)
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        if front:
            queue.appendleft((inbound, replier))
        else:
            queue.append((inbound, replier))
        self._idle.clear()
        if key not in self._workers and not self._held:
            self._workers[key] = asyncio.create_task(self._work(key), name=f"channel {key}")

    def _is_immediate(self, inbound: Inbound) -> bool:
        call = inbound.command
        if call is None or call.unknown or call.error:
            return False
        spec = self.commands.by_name.get(call.name)
        return spec is not None and spec.immediate

    def _immediate_done(self, task: asyncio.Task[None]) -> None:
        self._immediate.discard(task)
        if not self._workers and not self._immediate:
            self._idle.set()

    def hold(self) -> None:
        """Queue what arrives but answer nothing until release() (start-up)."""
        self._held = True

    def release(self, first: Sequence[tuple[Inbound, Replier]] = ()) -> None:
        """Put `first` (messages a crash left unanswered, oldest first) ahead of everything
        queued in their channels, then start answering."""
        for inbound, replier in reversed(first):
            self._enqueue(inbound, replier, front=True)
        self._held = False
        for key in list(self._queues):
            if key not in self._workers:
                self._workers[key] = asyncio.create_task(self._work(key), name=f"channel {key}")
        if not self._queues and not self._immediate:
            self._idle.set()

    async def edit(self, inbound: Inbound) -> bool:
        """An edited message: a message still waiting is answered in its new form; the edit
        of one answered (or being answered) is ignored. True when it was applied."""
        key = str(inbound.channel)
        queue = self._queues.get(key)
        replaced: Replier | None = None
        if queue:
            busy = key in self._workers  # the head of a worked queue is being answered
            for i, (old, replier) in enumerate(queue):
                if old.id == inbound.id and (i > 0 or not busy):
                    queue[i] = (inbound, replier)
                    replaced = replier
                    break
        if replaced is None:
            log.info("edit of message %s in %s ignored: it was answered already",
                     inbound.id, inbound.channel)
        if self.journal is not None:
            await self.journal.edited(inbound, replaced)
        return replaced is not None

    async def _work(self, key: str) -> None:
        queue = self._queues[key]
        try:
            while queue:
                inbound, replier = queue[0]
                try:
                    await self._run(inbound, replier)
                finally:
                    queue.popleft()
        finally:
            del self._workers[key]
            del self._queues[key]
            if not self._workers and not self._immediate:
                self._idle.set()

    async def _run(self, inbound: Inbound, replier: Replier) -> None:
        """Handle one message, under its journal entry when there is a journal."""
        if self.journal is not None:
            await self.journal.run(inbound, replier, self.handle)
        else:
            await self.handle(inbound, replier)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Until no channel has pending work (tests, benchmarks, shutdown)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    async def close(self, timeout: float = 30.0) -> None:
        """Stop accepting work and let in-flight messages finish, so no row is half-written."""
        self._closing = True
        try:
            await self.wait_idle(timeout)
        except TimeoutError:
            log.warning("shutdown: %d channels still busy; cancelling", len(self._workers))
            for task in [*self._workers.values(), *self._immediate]:
                task.cancel()

    def allowed(self, inbound: Inbound) -> bool:
        """[access] lists: empty means everyone."""
        access = self.config.access
        platform = inbound.channel.platform
        if access.allowed_users and not listed(access.allowed_users, platform,
                                                inbound.author.id):
            return listed(access.admins, platform, inbound.author.id)
        return not (access.allowed_chats and not listed(
            access.allowed_chats, platform, inbound.channel.chat_id))

    async def handle(self, inbound: Inbound, replier: Replier) -> None:
        """Access, addressing and dispatch for one message, with the error policy."""
        if inbound.author.is_bot:
            return
        addressed = inbound.addressed or inbound.is_private or (
            self.config.bot.group_trigger == "always")
        inbound.addressed = addressed
        ctx = Context(inbound, replier, self.config, self.store, self.ai, self.commands)
        if not self.allowed(inbound):
            if addressed:
                await self._refuse(ctx)
            return
        # who pays: every model request made for this message is metered against it
        caller = Caller.of(inbound, admin=ctx.is_admin())
        token = CALLER.set(caller)
        try:
            if not addressed:
                if self.registry.passive is not None and self.config.bot.record_unaddressed:
                    await self.registry.passive(ctx)
                return
            await self._dispatch(ctx)
        except ChatForbidden as e:
            log.info("%s refuses messages from the bot (removed or blocked): %s; reply to %s "
                     "dropped", inbound.channel, e, inbound.id)
        except UserError as e:
            log.info("user error in %s: %s", inbound.channel, e.message)
            await self._say(ctx, e.message)
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("error %s handling message %s in %s", error_id, inbound.id,
                          inbound.channel)
            await self._say(ctx, INTERNAL_ERROR.format(id=error_id))
        finally:
            CALLER.reset(token)
        for notice in caller.notices:  # budget warnings, as their own message after the answer
            try:
                await ctx.reply.reply_long(notice)
            except Exception:
                log.exception("could not deliver a budget warning")

    async def _dispatch(self, ctx: Context) -> None:
        inbound = ctx.inbound
        call = inbound.command
        if call is not None:
            if call.unknown:
                raise UserError(UNKNOWN_COMMAND.format(name=call.name))
            if call.error:
                raise UserError(call.error)
            spec = self.commands.by_name[call.name]
            if spec.admin_in_groups and not inbound.is_private and not ctx.is_admin():
                raise UserError(ADMIN_ONLY.format(name=call.name))
            assert spec.handler is not None
            await spec.handler(ctx)
            return
        for wants, handler in self.registry.messages:
            if wants(inbound):
                await handler(ctx)
                return

    async def _refuse(self, ctx: Context) -> None:
        who = f"{ctx.inbound.channel.platform}:{ctx.inbound.author.id}"
        log.info("refused %s in %s", who, ctx.inbound.channel)
        if who in self._refused:
            return
        self._refused[who] = None
        if len(self._refused) > 10_000:
            self._refused.popitem(last=False)
        await self._say(ctx, NOT_ALLOWED)

    @staticmethod
    async def _say(ctx: Context, text: str) -> None:
        """Reply, or turn the handler's placeholder into the reply (a new one if it can't)."""
        if ctx.placeholder is not None:
            try:
                await ctx.reply.edit(ctx.placeholder, text)
                return
            except Exception:
                log.exception("could not edit the placeholder in %s", ctx.channel)
        try:
            await ctx.reply.reply_long(text)
        except ChatForbidden as e:
            log.info("could not deliver a reply: the chat refuses the bot (%s)", e)
        except Exception:
            log.exception("could not deliver a reply")
