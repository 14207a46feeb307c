"""The contract between adapters and the core: adapters translate, the router decides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from bot.commands import CommandTable
from bot.config import Config
from bot.events import ChannelKey, Inbound
from bot.replies import Capabilities, Replier

if TYPE_CHECKING:
    from bot.journal import Journal


class Sink(Protocol):
    """What an adapter hands inbound messages to (the Router)."""

    config: Config
    commands: CommandTable
    # records deliveries before they are acknowledged (None: no crash recovery)
    journal: Journal | None

    async def submit(self, inbound: Inbound, replier: Replier) -> None:
        """Queue a message for its channel and return at once (never blocks the poller)."""

    async def edit(self, inbound: Inbound) -> bool:
        """A message was edited (same id): answered in its new form if still waiting."""


class Adapter(Protocol):
    """One platform connection."""

    name: str
    capabilities: Capabilities

    async def start(self, sink: Sink, *, receive: bool = True) -> None:
        """Connect, register commands, begin delivering Inbounds to the sink; returns once live.

        receive=False: a worker that answers messages another process received (issue
        #14): only the platform's HTTP API is opened (no polling, webhook or gateway);
        replier_for() and attachment_reader() work. The console refuses it."""

    async def stop(self) -> None:
        """Stop receiving, finish in-flight sends, close connections."""

    def replier_for(self, channel: ChannelKey, reply_to: str | None, *,
                    private: bool) -> Replier:
        """A Replier for a stored message (answered after a restart, or by a worker): the
        channel and the id of the message to reply to are enough, no live platform object
        is needed. An adapter that sets Inbound.reply_via takes it back as `via=`
        (bot.journal.replier_for passes it)."""

    def attachment_reader(self, ref: str) -> Callable[[], Awaitable[bytes]] | None:
        """How to read a stored message's file again from its Attachment.ref."""
