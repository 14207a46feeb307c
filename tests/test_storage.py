"""Choosing the database: `[storage] url` / BOT_DATABASE_URL, start-up errors about it as one
line (password blanked, exit 2), the doctor's check, and a whole `python -m bot` process
answering on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.doctor import check_database
from bot.storage import open_store
from tests.fakes.openai_api import FakeOpenAI
from tests.test_startup import bot_process, closed_port, one_line

ENV = {"OPENAI_API_KEY": "sk-x"}


def config_at(tmp_path: Path, text: str, **env: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path, env={**ENV, **env})


@pytest.mark.parametrize(("text", "env", "postgres", "where"), [
    ("", {}, False, "bot.sqlite3"),
    ('[storage]\nurl = "sqlite:///data/x.sqlite3"\n', {}, False, "/data/x.sqlite3"),
    ('[storage]\nurl = "y.sqlite3"\n', {}, False, "y.sqlite3"),
    ('[storage]\nurl = "postgresql://u:p@h/db"\n', {}, True, "postgresql://u:p@h/db"),
    ('[storage]\nurl = "postgresql://u:p@h/db"\n', {"BOT_DATABASE": "/b.db"}, False,
     "/b.db"),
    ('[storage]\npath = "a.db"\n', {"BOT_DATABASE_URL": "postgres://h/db"}, True,
     "postgres://h/db"),
    ("", {"BOT_DATABASE_URL": "postgres://h/db", "BOT_DATABASE": "/b.db"}, True,
     "postgres://h/db"),
])
def test_the_environment_wins_and_a_url_over_a_path(
        tmp_path: Path, text: str, env: dict[str, str], postgres: bool, where: str) -> None:
    config = config_at(tmp_path, text, **env)
    assert config.postgres is postgres
    assert (config.database_url if postgres else config.database_path) == where


@pytest.mark.parametrize(("text", "env", "key"), [
    ('[storage]\nurl = "mysql://h/db"\n', {}, "config: storage.url"),
    ("", {"BOT_DATABASE_URL": "redis://h"}, "BOT_DATABASE_URL"),
    ('[storage]\nurl = "sqlite://x.db"\n', {}, "config: storage.url"),
])
def test_bad_database_urls_name_the_key(tmp_path: Path, text: str, env: dict[str, str],
                                        key: str) -> None:
    with pytest.raises(ConfigError) as e:
        config_at(tmp_path, text, **env)
    assert str(e.value).startswith(key)


async def test_open_store_picks_the_backend(tmp_path: Path, pg_url: str) -> None:
    sqlite = await open_store(config_at(tmp_path, "", BOT_DATABASE=str(tmp_path / "a.db")))
    postgres = await open_store(config_at(tmp_path, "", BOT_DATABASE_URL=pg_url))
    try:
        assert sqlite.backend == "sqlite" and postgres.backend == "postgres"
        assert postgres.pool.get_max_size() >= 1  # type: ignore[union-attr]
    finally:
        await sqlite.close()
        await postgres.close()


def unreachable_url() -> str:
    return f"postgresql://gptbot:Sup3r-s3cret@127.0.0.1:{closed_port()}/gptbot"


async def test_unreachable_database_is_one_line_without_the_password(
        openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    code, _, err = await bot_process(
        "--console", cwd=tmp_path, env={"OPENAI_API_KEY": openai_fake.api_key,
                                        "OPENAI_BASE_URL": openai_fake.url,
                                        "BOT_DATABASE_URL": unreachable_url()})
    assert code == 2
    line = one_line(err)
    assert "cannot connect to postgresql://gptbot:***@127.0.0.1:" in line
    assert "Sup3r-s3cret" not in err and "BOT_DATABASE_URL" in line


async def test_a_login_refused_is_one_line_without_the_password(
        openai_fake: FakeOpenAI, tmp_path: Path, pg_url: str) -> None:
    url = pg_url.replace("postgres:@", "nobody:Sup3r-s3cret@")
    code, _, err = await bot_process(
        "--console", cwd=tmp_path, env={"OPENAI_API_KEY": openai_fake.api_key,
                                        "OPENAI_BASE_URL": openai_fake.url,
                                        "BOT_DATABASE_URL": url})
    assert code == 2
    line = one_line(err)
    assert "refused the login" in line and "nobody:***@" in line
    assert "Sup3r-s3cret" not in err


async def test_the_bot_process_answers_on_postgres_and_keeps_history(
        openai_fake: FakeOpenAI, tmp_path: Path, pg_url: str) -> None:
    env = {"OPENAI_API_KEY": openai_fake.api_key, "OPENAI_BASE_URL": openai_fake.url,
           "BOT_DATABASE_URL": pg_url}
    code, out, err = await bot_process("--console", cwd=tmp_path, env=env,
                                       stdin=b"my name is Zed\n")
    assert code == 0, err
    assert "echo: my name is Zed" in out
    code, out, err = await bot_process("--console", cwd=tmp_path, env=env,
                                       stdin=b"what is my name?\n")
    assert code == 0, err
    texts = [m["content"] for m in openai_fake.chat_requests[-1]["messages"][1:]]
    assert texts == ["my name is Zed", "echo: my name is Zed", "what is my name?"]
    assert not (tmp_path / "bot.sqlite3").exists()  # nothing went to SQLite


async def test_doctor_checks_the_postgres_database(tmp_path: Path, pg_url: str) -> None:
    good = await check_database(config_at(tmp_path, "", BOT_DATABASE_URL=pg_url))
    assert good.status == "ok" and "pgvector" in good.detail
    bad = await check_database(config_at(tmp_path, "", BOT_DATABASE_URL=unreachable_url()))
    assert bad.status == "fail" and "cannot connect" in bad.detail
    assert "Sup3r-s3cret" not in bad.detail
