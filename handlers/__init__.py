"""The ordered handler registry: explicit imports, no discovery."""

from __future__ import annotations

from bot.router import Registry
from handlers import admin, chat


def registry() -> Registry:
    """Commands in /help order; message handlers tried in order, chat last."""
    return Registry(
        commands=[admin.help_cmd, admin.start_cmd, admin.reset_cmd, admin.persona_cmd,
                  admin.model_cmd],
        messages=[(chat.wants_text, chat.chat)],
        passive=chat.record,
    )
