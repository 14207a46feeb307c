"""Config loading: the shipped file equals the defaults; bad settings stop start-up clearly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
ENV = {"OPENAI_API_KEY": "sk-x"}


def test_shipped_config_documents_exactly_the_defaults() -> None:
    assert load_config(ROOT / "bot" / "config.toml", env=ENV) == load_config(None, env=ENV)


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
        ("[chat]\nhistory_tokens = 'many'\n", "chat.history_tokens must be a whole number"),
        ("[openai]\napi_key = 'sk-secret'\n", "openai.api_key looks like a secret"),
        ("[access]\nadmins = 'me'\n", "access.admins must be a list"),
        ("[bot\n", "not valid TOML"),
        ("[voice]\nspeed = 9\n", "voice.speed must be between 0.25 and 4.0"),
        ("[voice]\nvoice = 'robot'\n", "voice.voice must be one of voice.voices"),
        ("[openai]\nconnection_pools = 0\n", "openai.connection_pools must be between 1 and 64"),
        ("[budgets]\ntimezone = 'Mars/Olympus'\n", "budgets.timezone: unknown timezone"),
        ("[budgets]\nuser_daily = -1\n", "budgets.user_daily must not be negative"),
        ("[budgets]\nglobal_monthly = 'lots'\n", "budgets.global_monthly must be a number"),
        ("[usage]\nprices = 'no-such-prices.toml'\n", "usage.prices: file not found"),
        ("[openai]\ntimeout = 0\n", "openai.timeout must be more than 0 (got 0.0)"),
        ("[openai]\ntimeout = -1\n", "openai.timeout must be more than 0 (got -1.0)"),
        ("[openai]\nmax_retries = 50\n", "openai.max_retries must be between 0 and 10"),
        ("[chat]\nmax_output_tokens = 0\n", "chat.max_output_tokens must be at least 1"),
        ("[chat]\nhistory_messages = 0\n", "chat.history_messages must be at least 1"),
        ("[chat]\nhistory_tokens = 10\n", "chat.history_tokens must be at least 100"),
        ("[images]\nsize = 'huge'\n", "images.size must be auto, square, landscape"),
        ("[images]\nmax_count = 0\n", "images.max_count must be between 1 and 10"),
        ("[images]\nmax_count = 11\n", "images.max_count must be between 1 and 10"),
        ("[images]\nquality = 'ultra'\n", "images.quality must be one of"),
        ("[vision]\nmax_image_mb = 0\n", "vision.max_image_mb must be at least 1"),
        ("[vision]\ndetail = 'max'\n", "vision.detail must be one of low, high, auto"),
        ("[vision]\nkeep_images = -1\n", "vision.keep_images must be at least 0"),
        ("[voice]\nchunk_minutes = 0\n", "voice.chunk_minutes must be at least 1"),
        ("[voice]\nmax_audio_minutes = 0\n", "voice.max_audio_minutes must be at least 1"),
        ("[voice]\nreply_voice = 'loud'\n", "voice.reply_voice must be one of"),
        ("[telegram]\npoll_timeout = -5\n", "telegram.poll_timeout must be at least 0"),
        ("[telegram]\nalbum_wait = 600\n", "telegram.album_wait must be between 0 and 60"),
        ("[models]\nchat = ''\n", "models.chat must name a model"),
        ("[chat]\ntokenizer = 'gpt2'\n", "chat.tokenizer must be one of"),
        ("[bot]\nrecord_unaddressed = 'yes'\n", "bot.record_unaddressed must be true or false"),
        ("[assistant]\nbackend = 'threads'\n", "assistant.backend must be one of"),
        ("[assistant]\nmax_file_mb = 0\n", "assistant.max_file_mb must be between"),
        ("[assistant]\ncjk_font = '/no/such.ttc'\n", "assistant.cjk_font: no such file"),
        ("[assistant]\nallowed_types = ['.CSV']\n", "assistant.allowed_types"),
        ("[assistant]\ncontainer_minutes = 60\n", "assistant.container_minutes"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
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


@pytest.mark.parametrize("text", [
    "[images]\nsize = '1536x1024'\n", "[images]\nsize = 'portrait'\n",
    "[openai]\ntimeout = 0.5\n", "[telegram]\npoll_timeout = 0\n"])
def test_valid_edges_are_accepted(tmp_path: Path, text: str) -> None:
    load_config(write(tmp_path, text), env=ENV)


def test_missing_keys_and_sections_take_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[chat]\nmax_output_tokens = 500\n"), env=ENV)
    assert cfg.chat.max_output_tokens == 500
    assert cfg.chat.history_tokens == Config().chat.history_tokens
    assert cfg.voice == Config().voice


def test_top_level_config_is_the_shipped_one() -> None:
    """The repository's config.toml (what a clone runs with) and the one shipped in the
    package (what `init` writes) are one text: a change to one must reach the other."""
    root = Path(__file__).resolve().parents[2]
    assert (root / "config.toml").read_text() == (root / "bot" / "config.toml").read_text()
