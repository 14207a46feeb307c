"""Messages the bot cannot use (Telegram stickers, locations, contacts) get a short answer
instead of silence."""

from __future__ import annotations

from bot.context import Context
from bot.errors import UserError
from bot.events import Inbound

CANNOT_USE = ("I can't do anything with {what}. Send me a message in words, a picture or a "
              "voice message.")


def wants_unusable(inbound: Inbound) -> bool:
    """A message that carries only something the bot cannot read or hear."""
    return inbound.unsupported is not None and not inbound.text and not inbound.attachments


async def unusable(ctx: Context) -> None:
    """Say briefly what the bot cannot use (through the router's user-error path)."""
    raise UserError(CANNOT_USE.format(what=ctx.inbound.unsupported))
