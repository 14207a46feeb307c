"""What a handler gets: the message, a replier bound to it, and the bot's services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.config import Config
from bot.events import Inbound
from bot.replies import Replier, Sent

if TYPE_CHECKING:
    from bot.ai import AI
    from bot.commands import CommandTable
    from bot.store import Store


@dataclass(slots=True)
class Context:
    """One message being handled. Handlers reply only through `reply`."""

    inbound: Inbound
    reply: Replier
    config: Config
    store: Store
    ai: AI
    commands: CommandTable
    # a progress message the handler posted ("🎨 Drawing…"): an error reply replaces it
    placeholder: Sent | None = None

    @property
    def channel(self) -> str:
        """The channel key string that keys history and settings."""
        return str(self.inbound.channel)

    @property
    def args(self) -> dict[str, Any]:
        """The typed arguments of the command being handled ({} for plain messages)."""
        return self.inbound.command.args if self.inbound.command else {}

    @property
    def sub(self) -> str | None:
        """The subcommand being handled (`/voice speed 1.5` -> "speed"), or None."""
        return self.inbound.command.sub if self.inbound.command else None

    def text(self, name: str) -> str:
        """A str/text argument, "" when not given."""
        value = self.args.get(name)
        return value if isinstance(value, str) else ""

    def number(self, name: str) -> float | None:
        """A float argument (checked against its range by the Param), None when not given."""
        value = self.args.get(name)
        return float(value) if isinstance(value, int | float) else None

    def is_admin(self) -> bool:
        """Admins are listed as `platform:user_id` or bare ids in [access] admins."""
        return listed(self.config.access.admins, self.inbound.channel.platform,
                       self.inbound.author.id)

    async def setting(self, key: str, default: Any = None) -> Any:
        """A channel setting or its config default."""
        value = await self.store.setting(self.channel, key)
        return default if value is None else value


def listed(entries: tuple[str, ...], platform: str, ident: str) -> bool:
    """Access lists name users and chats as `platform:id` or a bare id."""
    return ident in entries or f"{platform}:{ident}" in entries
