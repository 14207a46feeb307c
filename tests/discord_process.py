"""`python -m tests.discord_process URL [bot args]`: the bot's own `python -m bot`, run with
discord.py pointed at a fake Discord at URL (what FakeDiscord.redirect_discord_py does in
process: discord.py has no setting for its API root)."""

from __future__ import annotations

import runpy
import sys

import discord.gateway
import discord.http
import yarl


def main() -> None:
    """Redirect discord.py, then run the bot's __main__ exactly as `python -m bot` does."""
    root = sys.argv.pop(1).rstrip("/")
    discord.http.Route.BASE = f"{root}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(
        root.replace("http://", "ws://", 1) + "/")
    sys.argv[0] = "bot"
    runpy.run_module("bot", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
