"""Shared fixtures: a loopback-only network guard, the fakes, one driver per platform."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_api import FakeOpenAI
from tests.harness import ConsoleDriver, Driver

# pg_server and pg_url are fixtures (a PostgreSQL server per process, a database per test)
from tests.pg import create_database, drop_database, pg_server, pg_url  # noqa: F401

PLATFORMS = ["telegram", "discord", "console"]
STORAGES = ["sqlite", "postgres"]

_real_getaddrinfo = socket.getaddrinfo
_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _loopback(host: Any) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _loopback(host):
        raise OSError(f"tests may only reach loopback, not {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def _check_address(address: Any) -> None:
    if isinstance(address, tuple) and address and not _loopback(address[0]):
        raise OSError(f"tests may only connect to loopback, not {address!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def loopback_only() -> Iterator[None]:
    """Any non-loopback connection fails the test: nothing may leave this machine."""
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    yield
    socket.getaddrinfo = _real_getaddrinfo
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture
async def openai_fake() -> AsyncIterator[FakeOpenAI]:
    """The fake OpenAI-compatible server."""
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.stop()


async def make_driver(platform: str, openai_fake: FakeOpenAI, tmp_path: Path,
                      config_text: str = "", database_url: str = "") -> tuple[Driver, Any]:
    """A driver (not started) and the platform fake it drives (started); `database_url`
    (BOT_DATABASE_URL) puts the bot on PostgreSQL instead of a SQLite file."""
    db = tmp_path / "bot.sqlite3"
    driver: Driver
    fake: Any = None
    if platform == "console":
        driver = ConsoleDriver(openai_fake, db, {}, config_text)
    elif platform == "telegram":
        from tests.harness_platforms import TelegramDriver, start_telegram_fake

        fake = await start_telegram_fake()
        driver = TelegramDriver(openai_fake, db, fake, config_text)
    else:
        from tests.harness_platforms import DiscordDriver, start_discord_fake

        fake = await start_discord_fake()
        driver = DiscordDriver(openai_fake, db, fake, config_text)
    if database_url:
        driver.env = {**driver.env, "BOT_DATABASE_URL": database_url}
    return driver, fake


@pytest.fixture
def storage() -> str:
    """The bot's database backend: "sqlite" unless a test or module parametrizes it over
    STORAGES (`@pytest.mark.parametrize("storage", STORAGES)`)."""
    return "sqlite"


@pytest.fixture
async def database_url(request: pytest.FixtureRequest, storage: str) -> AsyncIterator[str]:
    """BOT_DATABASE_URL for the `storage` backend: a fresh PostgreSQL database, or ""
    (the driver's SQLite file)."""
    if storage == "sqlite":
        yield ""
        return
    assert storage == "postgres", storage
    server = request.getfixturevalue("pg_server")  # only tests on PostgreSQL start it
    url = await create_database(server)
    yield url
    await drop_database(server, url)


@pytest.fixture
def config_text() -> str:
    """Extra config.toml text for a test (override with a fixture or parametrize)."""
    return ""


@pytest.fixture(params=PLATFORMS)
async def chat(request: pytest.FixtureRequest, openai_fake: FakeOpenAI, tmp_path: Path,
               config_text: str, database_url: str) -> AsyncIterator[Driver]:
    """A running bot on each platform (on the `storage` backend): the parity suite's
    fixture."""
    driver, fake = await make_driver(request.param, openai_fake, tmp_path, config_text,
                                     database_url)
    try:
        await driver.start()
        yield driver
    finally:
        await driver.stop()
        if hasattr(driver, "close_redirect"):
            driver.close_redirect()
        if fake is not None:
            await fake.stop()
