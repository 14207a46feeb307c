"""The contract between adapters and the core: adapters translate, the router decides."""

from __future__ import annotations

from typing import Protocol

from bot.commands import CommandTable
from bot.config import Config
from bot.events import Inbound
from bot.replies import Capabilities, Replier


class Sink(Protocol):
    """What an adapter hands inbound messages to (the Router)."""

    config: Config
    commands: CommandTable

    async def submit(self, inbound: Inbound, replier: Replier) -> None:
        """Queue a message for its channel and return at once (never blocks the poller)."""


class Adapter(Protocol):
    """One platform connection."""

    name: str
    capabilities: Capabilities

    async def start(self, sink: Sink) -> None:
        """Connect, register commands, begin delivering Inbounds to the sink; returns once live."""

    async def stop(self) -> None:
        """Stop receiving, finish in-flight sends, close connections."""
