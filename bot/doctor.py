"""`python -m bot doctor` and `init`: what a first run depends on, one line per check.

The doctor is a diagnostic tool, so it talks to Telegram, Discord and the AI server with
their libraries directly, the way the adapters will, and tells the owner what to do.
`doctor --live` only reads the health file a running bot keeps (the Docker HEALTHCHECK).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from bot.config import Config, ConfigError, load_config
from bot.errors import StartupError

Status = Literal["ok", "warn", "fail", "skip"]
CHECK_TIMEOUT = 20.0
# Discord application flags (Get Current Application): the message-content intent is on
# when either is set (LIMITED: the switch in the portal, for bots in under 100 servers)
GATEWAY_MESSAGE_CONTENT = 1 << 18
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
CJK_FONT_NAMES = ("cjk", "wqy", "droidsansfallback", "sourcehansans", "notosanssc",
                  "notosansjp", "notosanskr", "ipagothic", "unifont")
# the running bot rewrites its health file every 10 s; older than this means it is stuck
HEALTH_MAX_AGE = 45.0


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report; `more` are indented detail lines under it."""

    name: str
    status: Status
    detail: str
    more: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """`ok   config     /path is valid` and its detail lines."""
        head = f"{self.status.upper() if self.status == 'fail' else self.status:<5}"
        return [f"{head}{self.name:<10} {self.detail}", *(f"{'':15} {m}" for m in self.more)]


def format_report(checks: list[Check]) -> str:
    """The whole report plus a verdict line."""
    lines = [line for c in checks for line in c.lines()]
    failed = [c.name for c in checks if c.status == "fail"]
    lines.append(f"\n{len(failed)} problem(s) stop the bot: {', '.join(failed)}" if failed
                 else "\nThe bot can run.")
    return "\n".join(lines)


# --- the checks --------------------------------------------------------------------------

def check_config(path: str, required: bool) -> tuple[Check, Config | None]:
    """Found, readable and valid (secrets included)."""
    shown = Path(path).absolute()
    try:
        config = load_config(path, required=required)
    except ConfigError as e:
        return Check("config", "fail", f"{e} (fix it, then run the doctor again)"), None
    if not shown.is_file():
        return Check("config", "ok", f"{shown} not found: defaults apply "
                                     "(`python -m bot init` writes a commented one)"), config
    return Check("config", "ok", f"{shown} is valid"), config


def database_access_error(path: str) -> PermissionError | None:
    """What would stop SQLite opening `path` for writing, found before it tries.

    SQLite writes its journal beside the file, so the directory must be writable too; a
    missing directory is created, so its nearest existing parent must be. Checking first
    gives a clear message and spares aiosqlite a failed connect (whose worker thread then
    outlives the event loop and prints a traceback at exit).
    """
    if path == ":memory:" or path.startswith("file:"):
        return None
    target = Path(path).absolute()
    if target.exists() and not os.access(target, os.R_OK | os.W_OK):
        return PermissionError(13, "the file is not writable", str(target))
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return PermissionError(13, "its directory is not writable", str(parent))
    return None


def explain_database_error(path: str, e: BaseException) -> str:
    """One line naming the database file and what to do."""
    where = Path(path).absolute()
    if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
        return (f"database: {where} is not a usable SQLite database ({e}); move it away or "
                "set BOT_DATABASE to another file")
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    fix = Path(e.filename) if isinstance(e, OSError) and e.filename else where.parent
    uid = os.geteuid() if hasattr(os, "geteuid") else "?"
    return (f"database: cannot open {where} ({reason}): make {fix} writable for the user "
            f"running the bot (uid {uid}), e.g. `chown {uid} {fix}`, or set BOT_DATABASE to "
            "a writable path")


async def check_database(config: Config) -> Check:
    """Open (create, migrate) the database the bot would use, as the bot does."""
    from bot.storage import open_store

    try:
        store = await open_store(config)
    except StartupError as e:
        return Check("database", "fail", e.message)
    with contextlib.suppress(Exception):
        await store.close()
    if config.postgres:
        from bot.store_pg import redact

        return Check("database", "ok", f"{redact(config.database_url)} is reachable, with "
                                       "pgvector, schema up to date")
    return Check("database", "ok", f"{_absolute(config.database_path)} is writable")


def _absolute(path: str) -> str:
    return str(Path(path).absolute())


async def check_telegram(config: Config) -> Check:
    """getMe with the token, through python-telegram-bot as the adapter uses it."""
    from telegram import Bot
    from telegram.error import InvalidToken, TelegramError
    from telegram.request import HTTPXRequest

    root = config.secrets.telegram_api_url
    bot = Bot(config.secrets.telegram_token, base_url=f"{root}/bot",
              base_file_url=f"{root}/file/bot",
              request=HTTPXRequest(connect_timeout=10.0, read_timeout=10.0))
    try:
        async with bot:
            me = bot.bot
    except InvalidToken:
        return Check("telegram", "fail", "TELEGRAM_BOT_TOKEN was rejected: copy the token "
                                         "again from @BotFather (/mybots -> API Token)")
    except TelegramError as e:
        return Check("telegram", "fail", f"cannot reach {root} ({_safe(e, config)}): check "
                                         "the network, a proxy, or TELEGRAM_API_URL")
    detail = f"token accepted: @{me.username}"
    wants_all = config.bot.group_trigger == "always" or config.bot.record_unaddressed
    if me.can_read_all_group_messages is False and wants_all:
        status: Status = "warn" if config.bot.group_trigger == "always" else "ok"
        return Check("telegram", status, f"{detail}; privacy mode is on, so in groups it only "
                     "sees commands, mentions and replies (@BotFather /setprivacy -> Disable, "
                     "then re-add the bot to the group)")
    return Check("telegram", "ok", detail)


async def check_discord(config: Config) -> Check:
    """Log in (GET /users/@me) and read the application's flags (GET /applications/@me)."""
    import aiohttp
    import discord
    from discord.http import HTTPClient, Route

    http = HTTPClient(asyncio.get_running_loop())
    try:
        try:
            me = await http.static_login(config.secrets.discord_token)
        except discord.LoginFailure:
            return Check("discord", "fail", "DISCORD_BOT_TOKEN was rejected: reset and copy "
                         "the token under Bot in the Discord developer portal")
        except (aiohttp.ClientError, OSError, discord.HTTPException) as e:
            return Check("discord", "fail", f"cannot reach Discord ({_safe(e, config)}): "
                                            "check the network or a proxy")
        try:
            app = await http.request(Route("GET", "/applications/@me"))
        except (aiohttp.ClientError, OSError, discord.HTTPException) as e:
            return Check("discord", "warn", f"logged in as {me.get('username')}, but the "
                         f"application's settings could not be read ({_safe(e, config)})")
    finally:
        await http.close()
    flags = int(app.get("flags") or 0)
    name = me.get("username", "?")
    if not flags & (GATEWAY_MESSAGE_CONTENT | GATEWAY_MESSAGE_CONTENT_LIMITED):
        return Check("discord", "fail", f"logged in as {name}, but the Message Content Intent "
                     "is off: developer portal -> your application -> Bot -> Privileged "
                     "Gateway Intents -> Message Content Intent")
    return Check("discord", "ok", f"logged in as {name}; Message Content Intent is on")


async def check_ai_server(config: Config) -> Check:
    """The AI server answers with this key, and offers the chat model."""
    from bot.ai import AI, Tokenizer

    where = config.secrets.openai_base_url or "https://api.openai.com/v1"
    ai = AI(config, Tokenizer("estimate"))
    try:
        # the key and the models first: the probe reads a 401 as "no model list"
        result = await _list_models(ai, where)
        if isinstance(result, Check):
            return result
        models = result
        # ---- AI server capability report: bot/probe.py, the same probe the bot runs -----
        # (models, context window, images, audio, tools, Responses API), printed under
        # this check's line
        from bot.probe import probe_server

        info = await probe_server(ai)
        more = tuple(info.lines()) if info.reachable else (f"probe: {info.error}",)
    finally:
        await ai.close()
    chat = config.models.chat
    if models is not None and chat not in models:
        return Check("ai-server", "fail", f"{where} answers, but has no model `{chat}`: set "
                     "[models] chat in config.toml to one it has", more)
    offered = "" if models is None else f"; offers `{chat}`"
    return Check("ai-server", "ok", f"{where} answers with this key{offered}", more)


async def _list_models(ai: object, where: str) -> tuple[str, ...] | Check | None:
    import openai

    client = ai.client.with_options(max_retries=0, timeout=15.0)  # type: ignore[attr-defined]
    try:
        return tuple([m.id async for m in client.models.list()])
    except openai.AuthenticationError:
        return Check("ai-server", "fail", f"{where} rejected OPENAI_API_KEY (401): check the key")
    except openai.PermissionDeniedError as e:
        return Check("ai-server", "fail", f"{where} refused this key (403): {e.message}")
    except openai.NotFoundError:
        return None  # a server without GET /models: it may still chat
    except openai.APIConnectionError as e:
        return Check("ai-server", "fail", f"cannot reach {where} ({type(e).__name__}): is the "
                     "server running and OPENAI_BASE_URL right?")
    except openai.APIStatusError as e:
        return Check("ai-server", "warn", f"{where} answered {e.status_code} to GET /models")


def _some(models: tuple[str, ...], limit: int = 8) -> str:
    shown = ", ".join(models[:limit])
    return shown + (f" and {len(models) - limit} more" if len(models) > limit else "")


def check_ffmpeg() -> Check:
    """Voice notes and spoken answers are converted with ffmpeg."""
    path = shutil.which("ffmpeg")
    if path is None:
        return Check("ffmpeg", "warn", "not found: voice notes and spoken answers will not "
                     "work; install it (Debian/Ubuntu: apt-get install ffmpeg)")
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=15,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("ffmpeg", "warn", f"{path} does not run ({e}): reinstall ffmpeg")
    version = out.split("\n", 1)[0].split(" Copyright")[0]
    return Check("ffmpeg", "ok", f"{version} ({path})")


def check_cjk_font() -> Check:
    """Charts the assistant draws need a font with Chinese/Japanese/Korean glyphs."""
    found = _fc_list_cjk() or _scan_fonts()
    if found:
        return Check("cjk-font", "ok", found)
    return Check("cjk-font", "warn", "no CJK font: Chinese/Japanese/Korean text in charts shows "
                 "as boxes; install one (Debian/Ubuntu: apt-get install fonts-noto-cjk)")


def _fc_list_cjk() -> str | None:
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return None
    try:
        out = subprocess.run([fc_list, ":lang=zh", "file"], capture_output=True, text=True,
                             timeout=15, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    files = [line.split(":")[0] for line in out.splitlines() if line.strip()]
    return min(files) if files else None


def _scan_fonts() -> str | None:
    for root in FONT_DIRS:
        base = Path(root).expanduser()
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*")):
            if p.suffix.lower() in (".ttf", ".otf", ".ttc", ".otc") and any(
                    n in p.name.lower().replace("-", "").replace("_", "") for n in CJK_FONT_NAMES):
                return str(p)
    return None


def check_tiktoken(config: Config) -> Check:
    """The token counter's encoding ships with the package; verify it loads offline."""
    if config.chat.tokenizer == "estimate":
        return Check("tiktoken", "skip", "[chat] tokenizer = \"estimate\": not used")
    from bot.encodings import EncodingDataError, o200k_base

    try:
        enc = o200k_base()
    except EncodingDataError as e:
        return Check("tiktoken", "warn", f"{e}: reinstall gptbot (the size estimate is used)")
    except ImportError:
        return Check("tiktoken", "warn", "the tiktoken package is missing: reinstall gptbot "
                                         "(the size estimate is used)")
    return Check("tiktoken", "ok", f"{enc.name} loaded from the package, checksum verified")


async def run_checks(path: str, required: bool) -> list[Check]:
    """Every check, in the order a first run meets them."""
    checks = []
    config_check, config = check_config(path, required)
    checks.append(config_check)
    if config is None:
        checks += [Check(name, "skip", "needs a valid configuration")
                   for name in ("database", "platforms", "ai-server")]
    else:
        checks.append(await _bounded("database", check_database(config)))
        if config.secrets.telegram_token:
            checks.append(await _bounded("telegram", check_telegram(config)))
        if config.secrets.discord_token:
            checks.append(await _bounded("discord", check_discord(config)))
        if not (config.secrets.telegram_token or config.secrets.discord_token):
            checks.append(Check("platforms", "ok", "no TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN: "
                                "the bot chats in the terminal"))
        checks.append(await _bounded("ai-server", check_ai_server(config)))
    checks += [check_ffmpeg(), check_cjk_font()]
    if config is not None:
        checks.append(check_tiktoken(config))
    return checks


async def _bounded(name: str, check: Awaitable[Check]) -> Check:
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT)
    except TimeoutError:
        return Check(name, "fail", f"no answer within {CHECK_TIMEOUT:.0f} s: check the network")


def _safe(e: BaseException, config: Config) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    for secret in (config.secrets.telegram_token, config.secrets.discord_token,
                   config.secrets.openai_api_key):
        if len(secret) >= 6:  # shorter ones are placeholders ("x") found inside words
            text = text.replace(secret, "***")
    return text[:200]


# --- doctor --live: the health file of a running bot -------------------------------------

def check_live(path: str, required: bool, now: Callable[[], float] = time.time) -> Check:
    """Healthy when the running bot rewrote its health file lately, all platforms up."""
    try:
        config = load_config(path, required=required)
    except ConfigError as e:
        return Check("live", "fail", str(e))
    health = Path(config.health_path)
    try:
        status = json.loads(health.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Check("live", "fail", f"{health} does not exist: the bot is not running (or "
                     "BOT_HEALTH_FILE differs between the bot and this check)")
    except (OSError, ValueError) as e:
        return Check("live", "fail", f"{health} cannot be read: {e}")
    age = now() - float(status.get("updated", 0))
    if age > HEALTH_MAX_AGE:
        return Check("live", "fail", f"{health} was last written {age:.0f} s ago: the bot is "
                     "stuck or stopped")
    down = [name for name, up in status.get("platforms", {}).items() if not up]
    if down:
        return Check("live", "fail", f"not connected: {', '.join(down)}")
    up = ", ".join(status.get("platforms", {})) or "no platform"
    return Check("live", "ok", f"bot pid {status.get('pid')} alive; connected: {up}")


def doctor_main(path: str, required: bool, *, live: bool = False) -> int:
    """Print the report; 0 when the bot can run (or, with --live, is running healthily)."""
    if live:
        check = check_live(path, required)
        print("\n".join(check.lines()))
        return 0 if check.status == "ok" else 1
    checks = asyncio.run(run_checks(path, required))
    print(format_report(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


# --- init --------------------------------------------------------------------------------

TEMPLATES = {"config.toml": "config.toml", ".env.example": "env.example"}


def init_files(where: Path) -> int:
    """Write the commented config.toml and .env.example; an existing file is never touched."""
    targets = {where / name: source for name, source in TEMPLATES.items()}
    kept = [p for p in targets if p.exists()]
    if len(kept) == len(targets):
        print(f"error: {' and '.join(map(str, kept))} already exist; nothing written (move "
              "them away to get fresh copies)", file=sys.stderr)
        return 1
    written = []
    try:
        for target, source in targets.items():
            if target in kept:
                continue
            text = resources.files("bot").joinpath(source).read_text(encoding="utf-8")
            with open(target, "x", encoding="utf-8") as f:
                f.write(text)
            written.append(str(target))
    except OSError as e:
        print(f"error: cannot write in {where.absolute()} ({e.strerror})", file=sys.stderr)
        return 1
    note = f" ({', '.join(map(str, kept))} already there: kept as it is)" if kept else ""
    print(f"Wrote {' and '.join(written)}{note}.\nNext: cp .env.example .env, fill in "
          "OPENAI_API_KEY (and a platform token), then `python -m bot doctor`.")
    return 0
