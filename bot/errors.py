"""Errors whose text is meant for the user; everything else is logged and hidden."""

from __future__ import annotations


class UserError(Exception):
    """A failure the user caused or can act on; its message is shown verbatim."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelError(UserError):
    """The model service failed in a way the user should hear about (rate limit, quota...)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class Unsupported(ModelError):
    """The configured server or model lacks the endpoint or capability asked for."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "unsupported")


class RateLimited(Exception):
    """A platform asked us to slow down; adapters raise it, the streamer waits it out."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limited for {retry_after}s")
        self.retry_after = retry_after


class ChatForbidden(Exception):
    """The platform refuses every message to this chat (the bot was removed or blocked).

    Permanent: the reply is dropped with one log line, never retried and never answered
    with an error message into the same chat.
    """


class StartupError(Exception):
    """The bot cannot start (a platform rejected its token, or is unreachable).

    The message is one line naming the thing and what to do; `python -m bot` prints it and
    exits with exit_code (2: fix the configuration, 1: try again later).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
