"""Fake OpenAI Assistants API v2 (assistants, threads, messages, runs, run steps)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.fakes.openai_assistant import AssistantAPI

Add = Callable[[str, str, Callable[..., Awaitable[Any]]], None]


class LegacyAssistants:
    """The Assistants API v2 on top of the shared files and vector stores."""

    def __init__(self, api: AssistantAPI) -> None:
        self.api = api

    def mount(self, add: Add) -> None:
        """Register the routes."""

    async def stop(self) -> None:
        """Stop background runs."""
