"""`python -m bot`: config -> store -> ai -> router -> adapters; runs until SIGINT/SIGTERM.

Every platform whose token is set is started; with none (or --console) the terminal
adapter is. A bad setting stops start-up with one line naming it and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from bot.ai import AI, Tokenizer
from bot.config import Config, ConfigError, load_config
from bot.router import Router
from bot.store import Store
from bot.usage import Meter

log = logging.getLogger("bot")


@dataclass
class App:
    """A running bot: what tests and benchmarks start and stop in-process."""

    config: Config
    store: Store
    ai: AI
    router: Router
    adapters: list[Any] = field(default_factory=list)

    async def stop(self) -> None:
        """Stop receiving, finish in-flight answers, then close storage and the client."""
        for adapter in reversed(self.adapters):
            try:
                await adapter.stop()
            except Exception:
                log.exception("error stopping %s", getattr(adapter, "name", adapter))
        await self.router.close()
        await self.store.close()
        await self.ai.close()


def choose_adapters(config: Config, *, console: bool) -> list[Any]:
    """Telegram and Discord when their tokens are set; the console otherwise or on request."""
    adapters: list[Any] = []
    if config.secrets.telegram_token and not console:
        from adapters.telegram_adapter import TelegramAdapter

        adapters.append(TelegramAdapter(config))
    if config.secrets.discord_token and not console:
        from adapters.discord_adapter import DiscordAdapter

        adapters.append(DiscordAdapter(config))
    if not adapters:
        from adapters.console import ConsoleAdapter

        adapters.append(ConsoleAdapter())
    return adapters


async def start_app(
    config: Config, adapters: list[Any], *, tokenizer: Tokenizer | None = None
) -> App:
    """Open storage, build the router and start each adapter."""
    from handlers import registry

    store = Store(config.database_path)
    await store.open()
    meter = Meter(config, store)
    await meter.open()
    ai = AI(config, tokenizer or Tokenizer(config.chat.tokenizer), meter=meter)
    ai.start_probe()  # in the background: a slow or absent AI server never delays start-up
    router = Router(config, store, ai, registry())
    app = App(config, store, ai, router)
    try:
        for adapter in adapters:
            await adapter.start(router)
            app.adapters.append(adapter)
            log.info("%s adapter started", adapter.name)
    except BaseException:
        await app.stop()
        raise
    return app


async def run(config: Config, *, console: bool) -> int:
    """Run until a signal (or, for a piped console, end of input)."""
    adapters = choose_adapters(config, console=console)
    if any(a.name == "console" for a in adapters):
        from adapters.console import console_logging

        console_logging(config)  # the terminal is the chat: logs to a file
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    app = await start_app(config, adapters)
    waiters = [asyncio.create_task(stop.wait())]
    waiters += [asyncio.create_task(a.finished.wait()) for a in adapters if hasattr(a, "finished")]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    log.info("shutting down")
    await app.stop()
    return 0


def _loop_factory() -> Any:
    """uvloop when installed (it roughly halves the event loop's share of the CPU per
    message); the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def reserve_std_fds() -> None:
    """Put /dev/null on a closed stdin/stdout/stderr (`docker run` without -i, `<&-`).

    Otherwise the next file opened gets that number: libuv aborts the process when it
    closes such a descriptor (uvloop: SIGABRT), and a print could land in the database.
    sys.stdin stays None, so the console still sees a closed stdin (end of input).
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bot` and the `gptbot` script."""
    reserve_std_fds()
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument("--config", default=None,
                        help="path to config.toml (default: $BOT_CONFIG or ./config.toml)")
    parser.add_argument("--console", action="store_true",
                        help="chat in the terminal even when platform tokens are set")
    args = parser.parse_args(argv)
    path = args.config or os.environ.get("BOT_CONFIG") or "config.toml"
    required = bool(args.config or os.environ.get("BOT_CONFIG"))
    try:
        config = load_config(path, required=required)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.bot.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpx2", "httpcore", "discord.gateway", "telegram.ext"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(run(config, console=args.console))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
