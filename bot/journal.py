"""The inbox journal: nothing that reached the bot is lost when the process dies (issue #11).

Every inbound message is recorded when it arrives (Telegram: the update, before the
Updater acknowledges it; other platforms: when the adapter hands it over), then moves
received -> answering (part of its answer is out) -> answered. While an answer is sent,
the ids of its messages (and their text when first sent) are recorded, so that a reply cut
by a crash can be finished: after a restart the first messages of the new answer are
edits of the old ones and leftovers are deleted.
Turns written while a message is handled carry its entry (store.current_inbox), and the
answer's turn closes the entry in the same statement, so history holds each answer once.

At start-up, unfinished entries younger than `[bot] resume_minutes` are handled again,
ahead of anything new in their channel; older ones are logged and left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields
from typing import Any, Protocol

from bot.config import Config
from bot.errors import ChatForbidden
from bot.events import Attachment, Author, ChannelKey, CommandCall, Inbound, Quoted
from bot.replies import ChatAction, OutFile, Replier, Sent
from bot.store import InboxBind, InboxMark, InboxRow, Store, current_inbox

log = logging.getLogger(__name__)

# finished entries are kept this long (Telegram re-delivers an unconfirmed update for 24 h)
KEEP_FINISHED = 2 * 24 * 3600
# ...and removed at start-up and after every this many new entries
PRUNE_EVERY = 1000
# a cut reply that cannot be edited into the answer (nor deleted) gets this text
CUT_MARK = "(This answer was cut off by a restart; the complete answer follows.)"
# the complete answer on a platform that cannot edit starts with this line
RESUMED_NOTE = "(The answer above was cut off by a restart; here it is complete.)"

Reader = Callable[[], Awaitable[bytes]]


class Restorer(Protocol):
    """What the journal needs from an adapter to answer a stored message (adapters/base.py)."""

    name: str

    def replier_for(self, channel: ChannelKey, reply_to: str | None, *,
                    private: bool) -> Replier: ...
    # adapters that set Inbound.reply_via also take it back: replier_for(..., via=...)

    def attachment_reader(self, ref: str) -> Reader | None: ...


# --- Inbound <-> JSON -------------------------------------------------------------------


def _dump_attachment(a: Attachment) -> dict[str, Any]:
    return {"kind": a.kind, "filename": a.filename, "mime": a.mime, "size": a.size,
            "duration": a.duration, "max_size": a.max_size, "ref": a.ref}


def _dump_author(a: Author | None) -> list[Any] | None:
    return None if a is None else [a.id, a.name, a.is_bot]


def _dump_value(v: Any) -> Any:
    if isinstance(v, Attachment):
        return {"__attachment__": _dump_attachment(v)}
    return v


def dump_inbound(inbound: Inbound) -> str:
    """The message as JSON, files by reference (no bytes, no platform objects)."""
    quoted = inbound.reply_to
    command = inbound.command
    data = {
        "id": inbound.id,
        "channel": str(inbound.channel),
        "author": _dump_author(inbound.author),
        "text": inbound.text,
        "attachments": [_dump_attachment(a) for a in inbound.attachments],
        "reply_to": None if quoted is None else {
            "id": quoted.id, "author": _dump_author(quoted.author), "text": quoted.text,
            "attachments": [_dump_attachment(a) for a in quoted.attachments],
            "from_self": quoted.from_self},
        "is_private": inbound.is_private,
        "addressed": inbound.addressed,
        "command": None if command is None else {
            f.name: ({k: _dump_value(v) for k, v in command.args.items()}
                     if f.name == "args" else getattr(command, f.name))
            for f in fields(command)},
        "language": inbound.language,
        "unsupported": inbound.unsupported,
        "reply_via": inbound.reply_via,
    }
    return json.dumps(data, ensure_ascii=False)


def _missing_file(name: str) -> Reader:
    async def read() -> bytes:
        from bot.errors import UserError

        raise UserError(f"I can no longer get the file {name} after a restart; please send "
                        "it again.")
    return read


def _load_attachment(d: dict[str, Any], adapter: Restorer) -> Attachment:
    reader = adapter.attachment_reader(d["ref"]) if d.get("ref") else None
    return Attachment(kind=d["kind"], filename=d["filename"], mime=d["mime"], size=d["size"],
                      reader=reader or _missing_file(d["filename"]), duration=d["duration"],
                      max_size=d["max_size"], ref=d.get("ref"))


def _load_author(v: list[Any] | None) -> Author | None:
    return None if v is None else Author(str(v[0]), str(v[1]), bool(v[2]))


def load_inbound(text: str, adapter: Restorer) -> Inbound:
    """Rebuild a stored message; its files are read through the adapter again."""
    d = json.loads(text)
    quoted = None
    if d["reply_to"] is not None:
        q = d["reply_to"]
        quoted = Quoted(id=q["id"], author=_load_author(q["author"]), text=q["text"],
                        attachments=tuple(_load_attachment(a, adapter)
                                          for a in q["attachments"]),
                        from_self=q["from_self"])
    command = None
    if d["command"] is not None:
        c = dict(d["command"])
        c["args"] = {k: _load_attachment(v["__attachment__"], adapter)
                     if isinstance(v, dict) and "__attachment__" in v else v
                     for k, v in c["args"].items()}
        known = {f.name for f in fields(CommandCall)}
        command = CommandCall(**{k: v for k, v in c.items() if k in known})
    author = _load_author(d["author"])
    assert author is not None
    return Inbound(id=d["id"], channel=ChannelKey.parse(d["channel"]), author=author,
                   text=d["text"],
                   attachments=[_load_attachment(a, adapter) for a in d["attachments"]],
                   reply_to=quoted, is_private=d["is_private"], addressed=d["addressed"],
                   command=command, language=d["language"], unsupported=d.get("unsupported"),
                   reply_via=d.get("reply_via"))


def replier_for(adapter: Restorer, inbound: Inbound) -> Replier:
    """The adapter's replier for a stored (or another process's) message, with the way
    back the adapter recorded (Inbound.reply_via: a Discord interaction's token)."""
    if inbound.reply_via is None:
        return adapter.replier_for(inbound.channel, inbound.id, private=inbound.is_private)
    return adapter.replier_for(inbound.channel, inbound.id,  # type: ignore[call-arg]
                               private=inbound.is_private, via=inbound.reply_via)


# --- the replier that records an answer's progress ---------------------------------------


class JournaledReplier(Replier):
    """Wraps an adapter's replier: records what the answer sent; on a resumed message, the
    cut reply's messages are reused (edited) by the new answer, and leftovers deleted."""

    def __init__(self, inner: Replier, journal: Journal, entry_id: int,
                 stale: tuple[str, ...] = (), message_id: str = "",
                 bind: InboxBind | None = None) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.action_interval = inner.action_interval
        self.action_delay = inner.action_delay
        self.journal = journal
        self.entry_id = entry_id
        self.forbidden = False
        self._ids: list[str] = []
        self._texts: dict[str, str] = {}
        self._stale = list(stale)
        self._sends = len(stale)
        # nonces (where the adapter takes one, at most 25 characters) name this answer's n-th
        # new message across restarts; the message id keeps them apart from another
        # database's entry of the same number
        self._salt = f"{entry_id}.{message_id[-8:]}"
        # a platform without edits cannot fix the cut reply: the answer says so instead
        self._note = bool(stale) and not inner.capabilities.edits
        # the message itself, stored with the first progress (Journal.receive)
        self.bind = bind

    def __repr__(self) -> str:
        return f"JournaledReplier({self.inner!r}, entry={self.entry_id})"

    async def _guard(self, call: Awaitable[Any]) -> Any:
        if self.forbidden:  # one refusal is enough: nothing more goes to that chat
            close = getattr(call, "close", None)
            if close is not None:
                close()
            raise ChatForbidden("the chat refused an earlier message of this answer")
        try:
            return await call
        except ChatForbidden:
            self.forbidden = True
            raise

    async def _record(self, sent: Sent, text: str) -> None:
        """Recorded when the answer has a new message: a restart needs the ids (to edit
        the cut reply), and the text as far as it is recorded. A streamed answer edits its
        messages many times a minute; writing each edit was one more database write per
        edit for nothing a restart uses."""
        new = sent.id not in self._texts
        self._texts[sent.id] = text
        if not new:
            return
        self._ids.append(sent.id)
        partial = "\n\n".join(self._texts[i] for i in self._ids)
        bind, self.bind = self.bind, None
        await self.journal.store.inbox_progress(self.entry_id, self._ids, partial, bind)

    async def send(self, markdown: str) -> Sent:
        """Send one message, or reuse the next message of the cut reply by editing it."""
        if self._note:
            self._note = False
            self._stale.clear()
            markdown = f"{RESUMED_NOTE}\n\n{markdown}"
        sent: Sent | None = None
        while self._stale and sent is None:
            old = Sent(self._stale.pop(0))
            try:
                sent = await self._guard(self.inner.edit(old, markdown))
            except ChatForbidden:
                raise
            except Exception as e:
                log.info("could not reuse cut message %s (%s); removing it", old.id, e)
                await self._remove(old)
        if sent is None:
            if hasattr(self.inner, "nonce"):
                self.inner.nonce = f"{self._salt}.{self._sends}"
            self._sends += 1
            sent = await self._guard(self.inner.send(markdown))
        await self._record(sent, markdown)
        return sent

    async def edit(self, sent: Sent, markdown: str) -> Sent:
        """Edit, and record the text the message now shows."""
        out = await self._guard(self.inner.edit(sent, markdown))
        await self._record(out, markdown)
        return out

    async def send_file(self, file: OutFile) -> Sent:
        """Files are sent as they are; their ids are recorded too."""
        sent = await self._guard(self.inner.send_file(file))
        await self._record(sent, file.caption or "")
        return sent

    async def send_files(self, files: list[OutFile]) -> list[Sent]:
        """As send_file, several at once (albums stay albums)."""
        out = await self._guard(self.inner.send_files(files))
        for s, f in zip(out, files, strict=False):
            await self._record(s, f.caption or "")
        return out  # type: ignore[no-any-return]

    async def start_action(self, action: ChatAction) -> None:
        """The adapter's chat action."""
        await self.inner.start_action(action)

    async def defer(self) -> None:
        """The adapter's acknowledgement (Discord interactions)."""
        await self.inner.defer()

    def working(self, action: ChatAction = "typing") -> Any:
        """The adapter's own indicator (the console draws a spinner)."""
        return self.inner.working(action)

    def split(self, markdown: str) -> list[str]:
        """The adapter's splitting."""
        return self.inner.split(markdown)

    def stream(self) -> Any:
        """A stream through this replier (the console's live stream prints by itself)."""
        stream = self.inner.stream()
        if getattr(stream, "replier", None) is self.inner:
            stream.replier = self
        return stream

    async def _remove(self, old: Sent) -> None:
        delete = getattr(self.inner, "delete", None)
        try:
            if delete is not None:
                await delete(old)
                return
        except ChatForbidden:
            raise
        except Exception as e:
            log.info("could not delete cut message %s: %s", old.id, e)
        try:
            await self.inner.edit(old, CUT_MARK)
        except Exception as e:
            log.warning("cut message %s stays as it is: %s", old.id, e)

    async def settle(self) -> None:
        """After the handler: messages of the cut reply the new answer did not reuse go."""
        while self._stale:
            await self._remove(Sent(self._stale.pop(0)))


# --- the journal ---------------------------------------------------------------------------


class Journal:
    """Records inbound messages and their answers' progress; finds what a crash left."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.window = config.bot.resume_minutes * 60.0
        self._added = 0
        # deliveries stored by this run and not yet built into a message: (platform, key) ->
        # entry id, so handing the message over needs no query
        self._rows: dict[tuple[str, str], int] = {}
        # ...and what such a delivery's answer had sent before the last run died
        self._sent: dict[int, tuple[str, ...]] = {}
        self._writes: set[asyncio.Task[Any]] = set()

    # arrival ---------------------------------------------------------------------------

    async def delivered(self, platform: str, key: str, *, channel: str | None,
                        message_id: str | None, raw: str) -> bool:
        """A platform delivery, stored before it is acknowledged; False: seen before."""
        row = await self.store.inbox_add(platform, key, channel=channel, message_id=message_id,
                                         raw=raw)
        if row is None:
            log.info("%s delivery %s is known already (re-delivered); not handled again",
                     platform, key)
            return False
        self._rows[(platform, key)] = row
        return True

    async def dropped(self, platform: str, keys: list[str]) -> None:
        """Stored deliveries that carry nothing to handle (service messages, bots)."""
        for key in keys:
            self._rows.pop((platform, key), None)
        await self.store.inbox_keys_state(platform, keys, "skipped")

    async def undelivered(self, platform: str) -> list[str]:
        """Stored deliveries the last run never built into a message (or died before it
        recorded that it had): they are handled again, what they stored is removed."""
        rows = await self.store.inbox_open(undelivered=True, platform=platform)
        for r in rows:
            await self.store.inbox_discard_turns(r.id)
            self._rows[(platform, r.key)] = r.id
            if r.reply_ids:
                self._sent[r.id] = r.reply_ids
        return [r.raw for r in rows if r.raw is not None]

    def _addressed(self, inbound: Inbound) -> bool:
        return (inbound.addressed or inbound.is_private
                or self.config.bot.group_trigger == "always")

    def addressed(self, inbound: Inbound) -> bool:
        """Whether the bot is asked (what the entry records; bot/cluster.py's ingress)."""
        return self._addressed(inbound)

    def forget(self, platform: str, keys: list[str]) -> None:
        """Deliveries built into a message that another path stores (the cluster queue)."""
        for key in keys:
            self._rows.pop((platform, key), None)

    async def receive(self, inbound: Inbound, replier: Replier) -> JournaledReplier | None:
        """Record a message handed to the router; None when it was handled before."""
        platform = inbound.channel.platform
        data = dump_inbound(inbound)
        keys = list(inbound.receipts)
        known = self._rows.pop((platform, keys[0]), None) if keys else None
        for key in keys[1:]:
            self._rows.pop((platform, key), None)
        bind = None
        if known is not None and len(keys) == 1:
            # stored on arrival by this run: the message is written with its answer's first
            # progress, one write less per message (dying before that just means the
            # delivery is built again from what was stored, as the kill -9 tests check)
            entry: int | None = known
            bind = InboxBind(str(inbound.channel), inbound.id, data, self._addressed(inbound))
        elif known is not None:  # an album: its other deliveries are merged into the first
            entry = known
            task = asyncio.create_task(self.store.inbox_bind(
                platform, keys, channel=str(inbound.channel), message_id=inbound.id,
                inbound=data, addressed=self._addressed(inbound)))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        elif keys:
            entry = await self.store.inbox_bind(
                platform, keys, channel=str(inbound.channel),
                message_id=inbound.id, inbound=data, addressed=self._addressed(inbound))
        else:
            entry = await self.store.inbox_add(
                platform, inbound.id, channel=str(inbound.channel), message_id=inbound.id,
                inbound=data, addressed=self._addressed(inbound))
        if entry is None:
            log.info("message %s in %s was received before; not answered again", inbound.id,
                     inbound.channel)
            return None
        self._added += 1
        if self._added % PRUNE_EVERY == 0:
            await self.store.inbox_prune(time.time() - KEEP_FINISHED)
        return JournaledReplier(replier, self, entry, self._sent.pop(entry, ()),
                                message_id=inbound.id, bind=bind)

    async def edited(self, inbound: Inbound, replaced: Replier | None) -> None:
        """An edit: stored as the message's new form when it was still waiting."""
        platform = inbound.channel.platform
        if isinstance(replaced, JournaledReplier):
            await self.store.inbox_set_inbound(replaced.entry_id, dump_inbound(inbound))
            await self.store.inbox_keys_state(platform, list(inbound.receipts), "merged")
            return
        await self.store.inbox_keys_state(platform, list(inbound.receipts), "skipped")

    # handling --------------------------------------------------------------------------

    async def run(self, inbound: Inbound, replier: Replier,
                  handle: Callable[[Inbound, Replier], Awaitable[None]]) -> None:
        """Handle one message under its entry: answering, then answered (or failed)."""
        if not isinstance(replier, JournaledReplier):
            await handle(inbound, replier)
            return
        mark = InboxMark(replier.entry_id)
        token = current_inbox.set(mark)
        try:
            await handle(inbound, replier)
        finally:
            current_inbox.reset(token)
        try:
            await replier.settle()
        except Exception:
            log.warning("could not clear the cut reply of message %s", inbound.id,
                        exc_info=True)
        if replier.forbidden:
            await self.store.inbox_set_state([mark.id], "failed", only_open=True)
        elif not mark.answered:  # no answer turn closed it (commands, errors, records)
            await self.store.inbox_set_state([mark.id], "answered", only_open=True)

    # start-up ---------------------------------------------------------------------------

    async def recover(self) -> list[InboxRow]:
        """Before the adapters start: forget old finished entries, give up on unfinished
        ones older than resume_minutes (logged), and return the rest to answer."""
        now = time.time()
        pruned = await self.store.inbox_prune(now - KEEP_FINISHED)
        if pruned:
            log.debug("journal: %d old finished entries removed", pruned)
        for row in await self.store.inbox_expire(now - self.window):
            age = (now - row.received) / 60
            log.warning("not answering message %s in %s after the restart: it arrived %.0f "
                        "minutes ago (bot.resume_minutes = %d)", row.message_id or row.key,
                        row.channel or row.platform, age, self.config.bot.resume_minutes)
        rows = await self.store.inbox_open()
        if rows:
            log.info("journal: %d message(s) left unanswered by the last run will be answered",
                     len(rows))
        return rows

    async def restore(self, rows: list[InboxRow], adapters: dict[str, Restorer]
                      ) -> list[tuple[Inbound, Replier]]:
        """Stored messages with repliers from their adapters, oldest first."""
        out: list[tuple[Inbound, Replier]] = []
        for row in rows:
            adapter = adapters.get(row.platform)
            if adapter is None or row.inbound is None:
                log.info("message %s in %s waits for its platform (%s) to run again",
                         row.message_id, row.channel, row.platform)
                continue
            rebuilt = await self.rebuild(
                row, adapter, again="answering message {id} in {channel} again after a restart")
            if rebuilt is not None:
                out.append(rebuilt)
        return out

    async def rebuild(self, row: InboxRow, adapter: Restorer, *, again: str | None
                      ) -> tuple[Inbound, JournaledReplier] | None:
        """A stored message with its adapter's replier, or None when it cannot be rebuilt
        (logged, entry failed). `again`: the log line (with {id} and {channel}) when it is
        answered again; then the user turns an earlier attempt stored are removed, as they
        are stored again. Used by the restart (restore) and by cluster workers."""
        try:
            assert row.inbound is not None
            inbound = load_inbound(row.inbound, adapter)
            inner = replier_for(adapter, inbound)  # a slash command: its interaction
        except Exception:
            log.exception("cannot rebuild message %s in %s; left unanswered", row.message_id,
                          row.channel)
            await self.store.inbox_set_state([row.id], "failed")
            return None
        if again is not None:
            removed = await self.store.inbox_discard_turns(row.id)
            log.info("%s (%s%s)", again.format(id=inbound.id, channel=inbound.channel),
                     row.state, f", finishing a cut reply of {len(row.reply_ids)} message(s)"
                     if row.reply_ids else "")
            if removed:
                log.debug("removed %d turn(s) it had left in history", removed)
        return inbound, JournaledReplier(inner, self, row.id, row.reply_ids, inbound.id)

    async def recent_channels(self, platform: str) -> list[tuple[ChannelKey, str]]:
        """Channels where the bot was addressed within resume_minutes, each with the newest
        message id seen there (Discord catch-up)."""
        rows = await self.store.inbox_channels(platform, time.time() - self.window)
        return [(ChannelKey.parse(c), m) for c, m in rows]
