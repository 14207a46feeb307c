"""`python -m bot`: config -> store -> ai -> router -> adapters; runs until SIGINT/SIGTERM.

Every platform whose token is set is started; with none (or --console) the terminal
adapter is. Anything that stops start-up is one line on stderr: exit code 2 when a setting,
token or file permission must be changed, 1 when something failed at run time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot.config import Config, ConfigError, apply_dotenv, load_config
from bot.errors import StartupError

if TYPE_CHECKING:  # imported when the bot starts: --help, init and doctor --live stay light
    from bot.ai import AI, Tokenizer
    from bot.router import Router
    from bot.store import Store
    from bot.store_pg import PgStore

log = logging.getLogger("bot")

_T = TypeVar("_T")


@dataclass
class App:
    """A running bot: what tests and benchmarks start and stop in-process."""

    config: Config
    store: Store | PgStore
    ai: AI
    router: Router
    adapters: list[Any] = field(default_factory=list)
    memory: Any = None

    async def stop(self) -> None:
        """Stop receiving, finish in-flight answers, then close storage and the client."""
        for adapter in reversed(self.adapters):
            try:
                await adapter.stop()
            except Exception:
                log.exception("error stopping %s", getattr(adapter, "name", adapter))
        await self.router.close()
        if self.memory is not None:
            await self.memory.stop()
        await self.store.close()
        await self.ai.close()


def choose_adapters(config: Config, *, console: bool) -> list[Any]:
    """Telegram and Discord when their tokens are set; the console otherwise or on request.

    The composition root, this module, is the one place in bot/ that imports adapters/,
    lazily, so that only the platforms in use are loaded (see docs/architecture.md).
    """
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
    from bot.ai import AI, Tokenizer
    from bot.journal import Journal
    from bot.router import Router
    from bot.storage import open_store
    from bot.usage import Meter
    from handlers import registry

    store = await open_store(config)
    meter = Meter(config, store)
    await meter.open()
    ai = AI(config, tokenizer or Tokenizer(config.chat.tokenizer), meter=meter)
    journal = Journal(store, config)
    unanswered = await journal.recover()  # what the last run left (crash recovery)
    router = Router(config, store, ai, registry(), journal)
    router.hold()  # what arrives while starting waits behind the messages left unanswered
    app = App(config, store, ai, router)
    try:
        from bot import memory

        app.memory = await memory.start(config, store, ai)
    except BaseException:
        await app.stop()
        raise
    for adapter in adapters:
        try:
            await adapter.start(router)
        except BaseException as e:
            if isinstance(e, Exception):
                e.add_note(f"while starting the {adapter.name} adapter")
            # the failed adapter may hold sessions of its own ("Unclosed client session")
            with contextlib.suppress(Exception):
                await adapter.stop()
            router.release()
            await app.stop()
            raise
        app.adapters.append(adapter)
        log.info("%s adapter started", adapter.name)
    # messages a crash left unanswered go first in their channels, then everything flows
    router.release(await journal.restore(unanswered, {a.name: a for a in adapters}))
    # in the background: a slow or absent AI server never delays start-up; begun once the
    # platforms are up, so a failed start-up is one line, not a probe warning as well
    ai.start_probe()
    return app


async def run(config: Config, *, console: bool) -> int:
    """Run until a signal (or, for a piped console, end of input)."""
    adapters = choose_adapters(config, console=console)
    from bot.doctor import database_access_error, explain_database_error

    # before the console's log file is opened (a start-up error stays one line on stderr)
    if config.postgres:
        from bot.store_pg import PgStore

        await PgStore(config.database_url).ping()
    elif (problem := database_access_error(config.database_path)) is not None:
        raise StartupError(explain_database_error(config.database_path, problem), 2)
    if any(a.name == "console" for a in adapters):
        from adapters.console import console_logging

        console_logging(config)  # the terminal is the chat: logs to a file
    with _stop_on_signals() as stop:
        app = await _one_line_failures(start_app(config, adapters), config)
        await _serve(app, adapters, config, [stop])
        return 0


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[asyncio.Event]:
    """An event that SIGINT and SIGTERM set while the block runs."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


async def _serve(app: Any, adapters: list[Any], config: Config,
                 until: list[asyncio.Event]) -> None:
    """Keep the health file until one of `until` is set or an adapter ends; then stop."""
    health = asyncio.create_task(_keep_health_file(app, Path(config.health_path)))
    waiters = [asyncio.create_task(e.wait()) for e in until]
    waiters += [asyncio.create_task(a.finished.wait()) for a in adapters if hasattr(a, "finished")]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for w in waiters:
        w.cancel()
    log.info("shutting down")
    health.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await health
    await app.stop()


async def run_role(config: Config, role: str) -> int:
    """`--role ingress|worker`: one part of a bot spread over processes (bot/cluster.py)."""
    from bot.cluster import sqlite_refusal, start_role

    if not config.postgres:
        raise sqlite_refusal(role)
    adapters = choose_adapters(config, console=False)
    if any(a.name == "console" for a in adapters):
        raise StartupError(f"--role {role} serves Telegram and Discord: set TELEGRAM_BOT_TOKEN "
                           "and/or DISCORD_BOT_TOKEN (the console is one process: run "
                           "`python -m bot`)", 2)
    from bot.storage import open_store

    with _stop_on_signals() as stop:
        store = await open_store(config)
        app = await _one_line_failures(start_role(role, config, store, adapters), config)
        await _serve(app, adapters, config, [stop, app.lost])
        return 1 if app.lost.is_set() else 0


async def _one_line_failures(starting: Awaitable[_T], config: Config) -> _T:
    """Await a start-up; a failure leaves as one StartupError line. Adapters raise
    StartupError for what they recognise; anything else still gets one line (exit 1; the
    traceback is in the log at DEBUG level), a ConfigError exit 2."""
    try:
        return await starting
    except (StartupError, KeyboardInterrupt, asyncio.CancelledError):
        raise
    except ConfigError as e:
        raise StartupError(str(e), 2) from e
    except Exception as e:
        log.debug("start-up failed", exc_info=True)
        raise StartupError(_one_line(e, config), 1) from e


def _one_line(e: BaseException, config: Config) -> str:
    """`<where>: <what>` with secrets blanked (library messages may quote a token)."""
    where = " ".join(getattr(e, "__notes__", ())) or "during start-up"
    text = " ".join(str(e).split()) or type(e).__name__
    for secret in (config.secrets.telegram_token, config.secrets.discord_token,
                   config.secrets.openai_api_key):
        if len(secret) >= 6:  # shorter ones are placeholders ("x") found inside words
            text = text.replace(secret, "***")
    return (f"{type(e).__name__} {where}: {text[:300]} (check the network and the tokens; "
            "`python -m bot doctor` tests each one)")


# --- health file: what `python -m bot doctor --live` (the Docker HEALTHCHECK) reads ------

HEALTH_INTERVAL = 10.0


def health_status(app: App) -> dict[str, Any]:
    """Alive now, and whether each platform connection is up (adapters may say `connected`)."""
    return {"pid": os.getpid(), "updated": time.time(),
            "platforms": {a.name: bool(getattr(a, "connected", True)) for a in app.adapters}}


def write_health_file(path: Path, status: dict[str, Any]) -> None:
    """Atomically replace the health file (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status), encoding="utf-8")
    os.replace(tmp, path)


async def _keep_health_file(app: App, path: Path) -> None:
    """Rewrite the health file every HEALTH_INTERVAL seconds; remove it on the way out.

    A few dozen bytes every ten seconds: cheaper than a thread hop, so written inline.
    """
    warned = False
    try:
        while True:
            try:
                write_health_file(path, health_status(app))
            except OSError as e:
                if not warned:
                    log.warning("cannot write the health file %s (%s); set BOT_HEALTH_FILE "
                                "to a writable path for `doctor --live`", path, e.strerror)
                    warned = True
            await asyncio.sleep(HEALTH_INTERVAL)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


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


# --- command line ------------------------------------------------------------------------

ENVIRONMENT = (
    ("OPENAI_API_KEY", "API key of the AI server (any value for local servers without one)"),
    ("OPENAI_BASE_URL", "an OpenAI-compatible server, e.g. http://localhost:11434/v1"),
    ("TELEGRAM_BOT_TOKEN", "starts the Telegram adapter (token from @BotFather)"),
    ("TELEGRAM_API_URL", "root of a self-hosted Bot API server"),
    ("TELEGRAM_WEBHOOK_SECRET", "[telegram] webhook_secret, kept out of config.toml"),
    ("DISCORD_BOT_TOKEN", "starts the Discord adapter"),
    ("BOT_CONFIG", "path of config.toml (like --config)"),
    ("BOT_DATABASE", "SQLite database file (overrides [storage] path)"),
    ("BOT_DATABASE_URL", "postgresql://user:password@host/db (overrides [storage] url)"),
    ("BOT_HEALTH_FILE", "where the running bot writes its health (default: <database>.health)"),
)


def version() -> str:
    """The installed package's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("gptbot")
    except PackageNotFoundError:
        return "unknown (not installed)"


def config_location(explicit: str | None) -> tuple[str, bool, str]:
    """(path, required, where it came from): --config, then BOT_CONFIG, then ./config.toml."""
    if explicit:
        return explicit, True, "--config"
    if os.environ.get("BOT_CONFIG"):
        return os.environ["BOT_CONFIG"], True, "BOT_CONFIG"
    return "config.toml", False, "default"


def build_parser(prog: str) -> argparse.ArgumentParser:
    """The CLI; its epilog shows the environment and the config file this run would use."""
    path, _, origin = config_location(None)
    shown = Path(path).absolute()
    state = "found" if shown.is_file() else "not found: defaults apply"
    env_lines = "\n".join(f"  {name:<19} {text}" for name, text in ENVIRONMENT)
    epilog = (
        f"commands:\n  (none)   run the bot\n  init     write a commented config.toml and "
        f".env.example here\n  doctor   check everything the bot needs, one line each\n"
        f"  migrate  copy a SQLite database into PostgreSQL\n\n"
        f"environment (also read from ./.env; the real environment wins):\n{env_lines}\n\n"
        f"config file: {shown} ({origin}; {state})\n\n"
        "exit codes: 0 stopped cleanly, 1 runtime failure (e.g. a platform unreachable),\n"
        "            2 configuration (bad setting, rejected token, unreadable file),\n"
        "            130 interrupted"
    )
    parser = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog,
        description="gptbot: an AI chat bot for Telegram, Discord and the terminal.")
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="config.toml to read (default: $BOT_CONFIG, else ./config.toml)")
    parser.add_argument("--console", action="store_true",
                        help="chat in the terminal even when platform tokens are set")
    parser.add_argument("--role", choices=("ingress", "worker"), default=None,
                        help="several processes on one PostgreSQL database: ingress receives "
                             "and queues, workers answer (default: one process does both)")
    parser.add_argument("--version", action="version", version=f"gptbot {version()}")
    sub = parser.add_subparsers(dest="command", metavar="{init,doctor,migrate}")
    init = sub.add_parser("init", help="write a commented config.toml and .env.example here")
    init.add_argument("--dir", default=".", help="where to write them (default: here)")
    doctor = sub.add_parser("doctor", help="check config, database, tokens, AI server, tools")
    doctor.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="config.toml to check")
    doctor.add_argument("--live", action="store_true",
                        help="only: is a running bot alive with its platforms connected "
                             "(reads its health file; for HEALTHCHECK)")
    migrate = sub.add_parser(
        "migrate", help="copy a SQLite database into PostgreSQL (stop the bot first)")
    migrate.add_argument("--from", dest="source", required=True, metavar="SQLITE",
                         help="sqlite:///path/bot.sqlite3 or a path")
    migrate.add_argument("--to", dest="target", required=True, metavar="POSTGRES_URL",
                         help="postgresql://user:password@host/database (empty)")
    migrate.add_argument("--replace", action="store_true",
                         help="empty the target's bot tables first instead of refusing")
    return parser


def _prog() -> str:
    return "gptbot" if Path(sys.argv[0]).name == "gptbot" else "python -m bot"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m bot` and the `gptbot` script."""
    reserve_std_fds()
    try:
        apply_dotenv()  # before anything reads the environment (BOT_CONFIG included)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = build_parser(_prog()).parse_args(argv)
    if args.command == "init":
        from bot.doctor import init_files

        return init_files(Path(args.dir))
    if args.command == "migrate":
        from bot.migrate import migrate_main

        return migrate_main(args.source, args.target, replace=args.replace)
    path, required, _ = config_location(args.config)
    if args.command == "doctor":
        from bot.doctor import doctor_main

        return doctor_main(path, required, live=args.live)
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
            if args.role is not None:
                return runner.run(run_role(config, args.role))
            return runner.run(run(config, console=args.console))
    except StartupError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
