"""Several bot processes over one PostgreSQL database (issue #14): `--role ingress|worker`.

- **Ingress** starts the adapters receiving. Each message goes into the inbox journal as
  JSON (the queue: bot/journal.py's format, so a worker rebuilds it with the adapter's
  Restorer) and wakes the workers (NOTIFY); nothing is answered here. Telegram by polling
  allows one ingress (a lease row), by webhook any number behind a load balancer; Discord
  splits its shards across ingress processes ([discord] shard_ids).
- **Workers** start the adapters send-only (`receive=False`), lease channels with queued
  messages (bot/store_cluster.py) and answer each leased channel's messages in order, up
  to `[cluster] channels_per_worker` channels at once. A lease is renewed while held; a
  worker that dies loses its channels after `lease_seconds` and another one answers what
  is left, finishing a cut reply exactly as a restart does (JournaledReplier).

Nothing is answered twice: the answer's history row closes its journal entry in the same
statement (the trigger on turns), and a worker starts only on open entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from bot.commands import CommandTable
from bot.config import Config
from bot.errors import StartupError
from bot.events import Inbound
from bot.journal import (
    KEEP_FINISHED,
    PRUNE_EVERY,
    Journal,
    dump_inbound,
)
from bot.replies import Replier
from bot.store_cluster import IMMEDIATE, ClusterStore, channel_lease

log = logging.getLogger(__name__)

ROLES = ("ingress", "worker")
# the one Telegram ingress allowed to poll holds this lease
POLLING_LEASE = "telegram:polling"
# the one worker whose semantic memory embeds new turns (every worker searches)
EMBEDDER_LEASE = "memory:embedder"
# seconds a stopping worker lets its channels finish the message in hand
STOP_GRACE = 30.0


def holder_name(role: str) -> str:
    """Names this process in lease rows and logs: host, pid and a random part (a pid is
    reused after a restart; the old process's leases must not look like ours)."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def sqlite_refusal(role: str) -> StartupError:
    """The one line for `--role` on a SQLite database."""
    return StartupError(
        f"--role {role} needs PostgreSQL: several processes share one database through it. "
        'Set [storage] url = "postgresql://..." (or BOT_DATABASE_URL), or run `python -m bot` '
        "without --role (one process on SQLite)", 2)


def immediate(commands: CommandTable, inbound: Inbound) -> bool:
    """A command answered on arrival, ahead of its channel's queue (CommandSpec.immediate)."""
    call = inbound.command
    if call is None or call.unknown or call.error:
        return False
    spec = commands.by_name.get(call.name)
    return spec is not None and spec.immediate


class Ingress:
    """The sink adapters hand messages to in the ingress role: queued, not answered."""

    def __init__(self, config: Config, journal: Journal, commands: CommandTable,
                 cluster: ClusterStore) -> None:
        self.config = config
        # Telegram stores each delivery through it before acknowledging (as in one process)
        self.journal = journal
        self.commands = commands
        self.cluster = cluster
        self.received = 0

    async def submit(self, inbound: Inbound, replier: Replier) -> None:
        """Queue the message for the workers and wake them; returns at once."""
        platform = inbound.channel.platform
        keys = list(inbound.receipts)
        self.journal.forget(platform, keys)
        data = dump_inbound(inbound)
        addressed = self.journal.addressed(inbound)
        channel = str(inbound.channel)
        # /cancel: the worker answering the channel runs it at once (see Worker.notified)
        wake = IMMEDIATE + channel if immediate(self.commands, inbound) else channel
        if keys:
            entry = await self.cluster.enqueue_bind(
                platform, keys, channel=channel, message_id=inbound.id, inbound=data,
                addressed=addressed, wake=wake)
        else:
            entry = await self.cluster.enqueue(
                platform, inbound.id, channel=channel, message_id=inbound.id, inbound=data,
                addressed=addressed, wake=wake)
        if entry is None:
            log.info("message %s in %s was received before; not queued again", inbound.id,
                     inbound.channel)
            return
        self.received += 1
        if self.received % PRUNE_EVERY == 0:
            await self.journal.store.inbox_prune(time.time() - KEEP_FINISHED)

    async def edit(self, inbound: Inbound) -> bool:
        """An edit replaces a message no worker has started on; otherwise it is ignored."""
        platform = inbound.channel.platform
        replaced = await self.cluster.replace_waiting(
            platform, str(inbound.channel), inbound.id, dump_inbound(inbound))
        if not replaced:
            log.info("edit of message %s in %s ignored: it was answered already",
                     inbound.id, inbound.channel)
        await self.journal.store.inbox_keys_state(platform, list(inbound.receipts),
                                                  "merged" if replaced else "skipped")
        return replaced


class Worker:
    """Leases channels with queued messages and answers them, each channel in order."""

    def __init__(self, config: Config, cluster: ClusterStore, journal: Journal, router: Any,
                 adapters: dict[str, Any], holder: str) -> None:
        self.config = config
        self.cluster = cluster
        self.journal = journal
        self.store = journal.store
        self.router = router
        self.adapters = adapters
        self.holder = holder
        section = config.cluster
        self.lease = section.lease_seconds
        self.poll = section.poll_seconds
        self.capacity = section.channels_per_worker
        self.answered = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # immediate commands running beside their channel's task; entries being answered
        self._side: set[asyncio.Task[None]] = set()
        self._started: set[int] = set()
        # when each channel was (re)leased: a renewal begun before that cannot list it
        self._since: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Listen for new messages, then claim and renew in the background."""
        try:
            await self.cluster.listen(self.notified)
        except Exception as e:  # the poll fallback still finds everything
            log.warning("cluster: cannot LISTEN (%s); checking the queue every %.1f s",
                        e, self.poll)
        self._loops = [asyncio.create_task(self._claim_loop(), name="cluster claims"),
                       asyncio.create_task(self._renew_loop(), name="cluster leases")]
        log.info("cluster: worker %s answers up to %d channels at once (lease %.0f s)",
                 self.holder, self.capacity, self.lease)

    def notified(self, payload: str) -> None:
        """A message was queued: claim its channel unless this worker is answering it; an
        immediate command in a channel this worker answers is run at once."""
        channel = payload.removeprefix(IMMEDIATE)
        if channel not in self._tasks:
            self._wake.set()
        elif payload.startswith(IMMEDIATE):
            task = asyncio.create_task(self._immediate(channel), name=f"immediate {channel}")
            self._side.add(task)
            task.add_done_callback(self._side.discard)

    async def _immediate(self, channel: str) -> None:
        """Run the channel's queued immediate commands now, out of turn (as the router
        does in one process); the channel's task skips them as answered."""
        try:
            for entry, form in await self.cluster.queued_forms(channel):
                call = json.loads(form).get("command") or {}
                spec = self.router.commands.by_name.get(call.get("name") or "")
                if spec is not None and spec.immediate and not call.get("error"):
                    await self._answer(entry)
        except Exception:
            log.exception("cluster: could not run an immediate command in %s", channel)

    async def stop(self) -> None:
        """Stop claiming, let each channel finish the message in hand, give leases back."""
        self._stopping = True
        self._wake.set()
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        tasks = [*self._tasks.values(), *self._side]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            if late:
                log.warning("cluster: %d channel(s) cut at shutdown; another worker finishes "
                            "them", len(late))
                await asyncio.wait(late)
        with contextlib.suppress(Exception):
            await self.cluster.unlisten()
        try:
            await self.cluster.release_all(self.holder)
        except Exception as e:
            log.warning("cluster: could not give the leases back (%s); they expire in %.0f s",
                        e, self.lease)

    @property
    def busy(self) -> int:
        """Channels being answered now."""
        return len(self._tasks)

    async def _claim_loop(self) -> None:
        platforms = list(self.adapters)
        while not self._stopping:
            self._wake.clear()
            free = self.capacity - len(self._tasks)
            got: list[str] = []
            if free > 0:
                try:
                    got = await self.cluster.claim(self.holder, self.lease, free, platforms)
                except Exception as e:
                    log.warning("cluster: could not claim work (%s); trying again", e)
                for channel in got:
                    if channel in self._tasks:  # our own lease had run out; renewed now
                        continue
                    self._since[channel] = time.monotonic()
                    self._tasks[channel] = asyncio.create_task(
                        self._serve(channel), name=f"channel {channel}")
            if got and len(self._tasks) < self.capacity:
                continue  # more channels may be waiting
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)

    async def _renew_loop(self) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.lease / 3)
            asked = time.monotonic()
            try:
                held = await self.cluster.renew(self.holder, self.lease)
            except Exception as e:
                log.warning("cluster: could not renew leases (%s)", e)
                if time.monotonic() - renewed > self.lease:
                    held = set()  # they have run out: others may be answering those channels
                else:
                    continue
            else:
                renewed = time.monotonic()
            for channel, task in list(self._tasks.items()):
                if self._since.get(channel, 0.0) >= asked:
                    continue  # leased while the renewal ran: not in its answer
                if channel_lease(channel) not in held and not task.done():
                    log.warning("cluster: lease of %s lost (this worker was too slow to "
                                "renew it); leaving the channel to another worker", channel)
                    task.cancel()

    async def _serve(self, channel: str) -> None:
        """Answer a leased channel's messages oldest first until none is left."""
        name = channel_lease(channel)
        try:
            while not self._stopping:
                entries = await self.cluster.queued(channel)
                if entries and all(e in self._started for e in entries) and self._side:
                    # only immediate commands are left, and they are running
                    await asyncio.wait(list(self._side))
                    continue
                if not entries:
                    # not ours for a moment: a renewal meanwhile must not count it as lost
                    self._since[channel] = float("inf")
                    await self.cluster.release(name, self.holder)
                    # a message queued in the meantime woke workers while we still held
                    # the channel: look once more, now that others may take it too
                    if not await self.cluster.queued(channel, 1):
                        return
                    taken, _, _ = await self.cluster.acquire(name, self.holder, self.lease)
                    if not taken:
                        return
                    self._since[channel] = time.monotonic()
                    continue
                for entry in entries:
                    if self._stopping:
                        break
                    await self._answer(entry)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cluster: channel %s failed; its messages stay queued", channel)
        finally:
            self._tasks.pop(channel, None)
            self._since.pop(channel, None)
            if not self._stopping:
                # only while still ours (a lease another worker took is left alone); a
                # lease kept after its task ended would be renewed with no one answering
                with contextlib.suppress(Exception):
                    await self.cluster.release(name, self.holder)
            self._wake.set()

    async def _answer(self, entry: int) -> None:
        if entry in self._started:  # an immediate command run beside the channel's task
            return
        self._started.add(entry)
        try:
            await self._answer_one(entry)
        finally:
            self._started.discard(entry)

    async def _answer_one(self, entry: int) -> None:
        got = await self.cluster.begin(entry)
        if got is None:
            return  # answered, or replaced, meanwhile
        row, attempts = got
        window = self.journal.window
        age = time.time() - row.received
        if (window > 0 and age > window) or (window <= 0 and attempts > 1):
            log.warning("not answering message %s in %s: it arrived %.0f minutes ago "
                        "(bot.resume_minutes = %d)", row.message_id, row.channel, age / 60,
                        self.config.bot.resume_minutes)
            await self.cluster.expire(row.id)
            return
        adapter = self.adapters.get(row.platform)
        if adapter is None:
            log.error("cannot answer message %s in %s: no %s adapter in this worker; left "
                      "unanswered", row.message_id, row.channel, row.platform)
            await self.store.inbox_set_state([row.id], "failed")
            return
        rebuilt = await self.journal.rebuild(
            row, adapter, again="taking over message {id} in {channel} from a worker that "
            "stopped" if attempts > 1 else None)
        if rebuilt is None:
            return
        inbound, replier = rebuilt
        await self.journal.run(inbound, replier, self.router.handle)
        self.answered += 1


@dataclass
class RoleApp:
    """A running ingress or worker process (what `python -m bot --role` starts)."""

    role: str
    config: Config
    store: Any
    holder: str
    cluster: ClusterStore
    adapters: list[Any] = field(default_factory=list)
    ai: Any = None
    memory: Any = None
    worker: Worker | None = None
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    _keeper: asyncio.Task[None] | None = None

    async def stop(self) -> None:
        """Stop receiving (ingress) or answering (worker), then close everything."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self.worker is not None:
            await self.worker.stop()
        for adapter in reversed(self.adapters):
            try:
                await adapter.stop()
            except Exception:
                log.exception("error stopping %s", getattr(adapter, "name", adapter))
        if self.role == "ingress":
            with contextlib.suppress(Exception):
                await self.cluster.release_all(self.holder)
        if self.memory is not None:
            await self.memory.stop()
        await self.store.close()
        if self.ai is not None:
            await self.ai.close()


async def _keep_ingress_leases(app: RoleApp) -> None:
    """Renew the polling lease; losing it stops this ingress (another one polls now)."""
    lease = app.config.cluster.lease_seconds
    while True:
        await asyncio.sleep(lease / 3)
        try:
            held = await app.cluster.renew(app.holder, lease)
        except Exception as e:
            log.warning("cluster: could not renew the Telegram polling lease (%s)", e)
            continue
        if POLLING_LEASE not in held:
            log.error("cluster: the Telegram polling lease was lost (this process was too "
                      "slow to renew it); stopping so that one ingress polls")
            app.lost.set()
            return


async def _keep_embedder(app: RoleApp) -> None:
    """One worker embeds new turns for semantic memory (the others would embed the same
    backlog again, each paying for it); every worker's memory searches. The lease moves
    to another worker when its holder dies."""
    from bot import memory

    lease = app.config.cluster.lease_seconds
    leader = True  # memory.start() began embedding
    while True:
        try:
            taken, _, _ = await app.cluster.acquire(EMBEDDER_LEASE, app.holder, lease)
        except Exception as e:
            log.warning("cluster: could not check the embedder lease (%s)", e)
            taken = leader
        if taken and not leader:
            old = app.memory
            app.memory = await memory.start(app.config, app.store, app.ai)
            if old is not None:
                await old.stop()
            log.info("cluster: this worker now embeds new turns for semantic memory")
        elif leader and not taken and app.memory is not None:
            await app.memory.stop()  # searching goes on; embedding is another worker's
        leader = taken
        await asyncio.sleep(lease / 3)


async def start_role(role: str, config: Config, store: Any, adapters: list[Any]) -> RoleApp:
    """Start an ingress or a worker on an open PostgreSQL store; the caller closes the store
    if this raises before returning."""
    if getattr(store, "backend", "sqlite") != "postgres":
        raise sqlite_refusal(role)
    holder = holder_name(role)
    cluster = ClusterStore(store.pool, getattr(store, "url", None))
    app = RoleApp(role, config, store, holder, cluster)
    try:
        if role == "ingress":
            await _start_ingress(app, adapters)
        else:
            await _start_worker(app, adapters)
    except BaseException:
        await app.stop()
        raise
    return app


async def _start_adapter(app: RoleApp, adapter: Any, sink: Any, *, receive: bool) -> None:
    try:
        await adapter.start(sink, receive=receive)
    except BaseException as e:
        if isinstance(e, Exception):
            e.add_note(f"while starting the {adapter.name} adapter")
        with contextlib.suppress(Exception):
            await adapter.stop()
        raise
    app.adapters.append(adapter)
    log.info("%s adapter started (%s)", adapter.name,
             "receiving" if receive else "sending only")


async def _start_ingress(app: RoleApp, adapters: list[Any]) -> None:
    from bot.commands import spec_of
    from handlers import registry

    config = app.config
    journal = Journal(app.store, config)
    await app.store.inbox_prune(time.time() - KEEP_FINISHED)
    commands = CommandTable([spec_of(h) for h in registry().commands], config)
    sink = Ingress(config, journal, commands, app.cluster)
    polls = any(a.name == "telegram" for a in adapters) and not config.telegram.webhook_url
    if polls:
        taken, who, left = await app.cluster.acquire(POLLING_LEASE, app.holder,
                                                     config.cluster.lease_seconds)
        if not taken:
            raise StartupError(
                f"another ingress ({who}) is polling Telegram, and only one may: run a single "
                "polling ingress, or set [telegram] webhook_url so that several receive "
                f"behind a load balancer (if that one has died, its lease ends in {left:.0f} s)",
                2)
        app._keeper = asyncio.create_task(_keep_ingress_leases(app), name="polling lease")
    for adapter in adapters:
        await _start_adapter(app, adapter, sink, receive=True)
    log.info("cluster: ingress %s queues what arrives for the workers", app.holder)


async def _start_worker(app: RoleApp, adapters: list[Any]) -> None:
    from bot import memory
    from bot.ai import AI, Tokenizer
    from bot.router import Router
    from bot.usage import Meter
    from handlers import registry

    config = app.config
    meter = Meter(config, app.store)
    meter.budgets.shared = True  # other workers spend too: sums come from the database
    await meter.open()
    app.ai = AI(config, Tokenizer(config.chat.tokenizer), meter=meter)
    journal = Journal(app.store, config)
    await app.store.inbox_prune(time.time() - KEEP_FINISHED)
    router = Router(config, app.store, app.ai, registry(), journal)
    app.memory = await memory.start(config, app.store, app.ai)
    app._keeper = asyncio.create_task(_keep_embedder(app), name="embedder lease")
    for adapter in adapters:
        await _start_adapter(app, adapter, router, receive=False)
    app.worker = Worker(config, app.cluster, journal, router,
                        {a.name: a for a in app.adapters}, app.holder)
    await app.worker.start()
    app.ai.start_probe()
