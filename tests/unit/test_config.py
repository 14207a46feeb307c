"""Config loading: the shipped file equals the defaults; bad settings stop start-up clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {"OPENAI_API_KEY": "sk-x"}


def test_shipped_config_documents_exactly_the_defaults() -> None:
    assert load_config(ROOT / "config.toml", env=ENV) == load_config(None, env=ENV)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[bot]\ngroup_triger = 'always'\n", "unknown key bot.group_triger"),
        ("[bots]\n", "unknown section [bots]"),
        ("[bot]\ngroup_trigger = 'sometimes'\n", "bot.group_trigger must be one of"),
        ("[chat]\nhistory_tokens = 'many'\n", "chat.history_tokens must be a int"),
        ("[openai]\napi_key = 'sk-secret'\n", "openai.api_key looks like a secret"),
        ("[access]\nadmins = 'me'\n", "access.admins must be a list"),
        ("[bot\n", "not valid TOML"),
        ("[voice]\nspeed = 9\n", "voice.speed must be between 0.25 and 4.0"),
        ("[voice]\nvoice = 'robot'\n", "voice.voice must be one of voice.voices"),
        ("[openai]\nconnection_pools = 0\n", "openai.connection_pools must be between 1 and 64"),
        ("[budgets]\ntimezone = 'Mars/Olympus'\n", "budgets.timezone: unknown timezone"),
        ("[budgets]\nuser_daily = -1\n", "budgets.user_daily must not be negative"),
        ("[budgets]\nglobal_monthly = 'lots'\n", "budgets.global_monthly must be a float"),
        ("[usage]\nprices = 'no-such-prices.toml'\n", "usage.prices: file not found"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(write(tmp_path, text), env=ENV)


def test_missing_api_key_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        load_config(None, env={})


def test_env_secrets_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[storage]\npath = 'a.db'\n"), env={
        **ENV, "BOT_DATABASE": "/tmp/b.db", "TELEGRAM_API_URL": "http://127.0.0.1:9/",
        "TELEGRAM_BOT_TOKEN": "1:x"})
    assert isinstance(cfg, Config)
    assert cfg.database_path == "/tmp/b.db"
    assert cfg.secrets.telegram_api_url == "http://127.0.0.1:9"
    assert cfg.secrets.telegram_token == "1:x"


def test_cli_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[bot]\nnope = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(cfg)], capture_output=True, text=True,
        env={"OPENAI_API_KEY": "x", "PATH": "/usr/bin:/bin"}, cwd=tmp_path, timeout=60,
        check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: config: unknown key bot.nope"


def test_cli_missing_explicit_config(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(tmp_path / "nope.toml")],
        capture_output=True, text=True, env={"OPENAI_API_KEY": "x", "PATH": "/usr/bin:/bin"},
        cwd=tmp_path, timeout=60, check=False)
    assert proc.returncode == 2 and "file not found" in proc.stderr
