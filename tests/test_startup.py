"""First run as a bot owner meets it: --help, --version, init, .env, one-line start-up
errors with the documented exit codes, and the doctor against the fakes."""

from __future__ import annotations

import asyncio
import gc
import importlib.metadata
import json
import logging
import os
import shutil
import signal
import socket
import stat
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import bot.doctor as doctor
from bot.__main__ import main, run
from bot.config import load_config
from bot.doctor import Check, check_live, format_report, run_checks
from bot.errors import StartupError
from tests.fakes.discord_api import FakeDiscord
from tests.fakes.openai_api import FakeOpenAI
from tests.fakes.telegram_api import FakeTelegram
from tests.harness import wait_for

ROOT = Path(__file__).resolve().parents[1]
BASE_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unprivileged() -> list[str]:
    """A command prefix that makes file permissions bind (root ignores them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


async def bot_process(*args: str, cwd: Path, env: dict[str, str], stdin: bytes | None = b"",
                      prefix: list[str] | None = None, timeout: float = 60
                      ) -> tuple[int, str, str]:
    """Run `python -m bot ARGS` to completion: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *(prefix or []), sys.executable, "-m", "bot", *args, cwd=cwd, env={**BASE_ENV, **env},
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def one_line(err: str) -> str:
    """stderr must be exactly one `error: ...` line."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture
async def telegram_fake() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    with fake.redirect_discord_py():
        yield fake
    await fake.stop()


def ai_env(fake: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    return {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.url,
            "BOT_DATABASE": str(tmp_path / "bot.sqlite3")}


# --- --help, --version, init ----------------------------------------------------------

async def test_help_lists_flags_environment_and_the_config_path(tmp_path: Path) -> None:
    code, out, _ = await bot_process("--help", cwd=tmp_path, env={})
    assert code == 0
    for flag in ("--config", "--console", "--version", "init", "doctor"):
        assert flag in out
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "TELEGRAM_BOT_TOKEN", "TELEGRAM_API_URL",
                "DISCORD_BOT_TOKEN", "BOT_CONFIG", "BOT_DATABASE", "BOT_HEALTH_FILE"):
        assert var in out
    assert f"config file: {tmp_path / 'config.toml'} (default; not found" in out
    assert "2 configuration" in out and "1 runtime" in out
    (tmp_path / ".env").write_text("BOT_CONFIG=/etc/gptbot/bot.toml\n")
    code, out, _ = await bot_process("--help", cwd=tmp_path, env={})
    assert "config file: /etc/gptbot/bot.toml (BOT_CONFIG; not found" in out


async def test_gptbot_script_and_version(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "gptbot"
    if not script.exists():
        pytest.skip("the gptbot script is not installed in this environment")
    proc = await asyncio.create_subprocess_exec(
        str(script), "--help", cwd=tmp_path, env=BASE_ENV, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out.decode().startswith("usage: gptbot ")
    code, out, _ = await bot_process("--version", cwd=tmp_path, env={})
    assert code == 0
    assert out.strip() == f"gptbot {importlib.metadata.version('gptbot')}"


async def test_init_writes_commented_templates_and_never_overwrites(tmp_path: Path) -> None:
    code, out, _ = await bot_process("init", cwd=tmp_path, env={})
    assert code == 0 and "python -m bot doctor" in out
    config = (tmp_path / "config.toml").read_text()
    assert config == (ROOT / "bot" / "config.toml").read_text()
    assert config.count("\n# ") > 50  # commented
    assert load_config(tmp_path / "config.toml", env={"OPENAI_API_KEY": "x"}) == load_config(
        None, env={"OPENAI_API_KEY": "x"})
    example = (tmp_path / ".env.example").read_text()
    assert "OPENAI_API_KEY=" in example and "TELEGRAM_BOT_TOKEN=" in example
    (tmp_path / "config.toml").write_text("# mine\n")
    code, _, err = await bot_process("init", cwd=tmp_path, env={})
    assert code == 1 and "already exist; nothing written" in one_line(err)
    assert (tmp_path / "config.toml").read_text() == "# mine\n"
    # one of the two missing (a clone has .env.example): the other is written, none replaced
    (tmp_path / "config.toml").unlink()
    (tmp_path / ".env.example").write_text("# mine\n")
    code, out, _ = await bot_process("init", cwd=tmp_path, env={})
    assert code == 0 and ".env.example already there: kept" in out
    assert (tmp_path / ".env.example").read_text() == "# mine\n"
    assert (tmp_path / "config.toml").read_text() == (ROOT / "bot" / "config.toml").read_text()


def test_repository_env_example_is_the_packaged_one() -> None:
    assert (ROOT / ".env.example").read_text() == (ROOT / "bot" / "env.example").read_text()


# --- .env -------------------------------------------------------------------------------

async def test_dotenv_inline_comments_and_bot_config(openai_fake: FakeOpenAI,
                                                     tmp_path: Path) -> None:
    (tmp_path / "custom.toml").write_text(
        '[chat]\ntokenizer = "estimate"\n[storage]\npath = "from-custom.sqlite3"\n')
    (tmp_path / ".env").write_text(
        f'OPENAI_API_KEY="{openai_fake.api_key}"  # the key, with a note\n'
        f"OPENAI_BASE_URL={openai_fake.url} # unquoted, commented\n"
        "export BOT_CONFIG=custom.toml\n")
    code, out, err = await bot_process("--console", cwd=tmp_path, env={}, stdin=b"hello\n")
    assert code == 0, err
    assert out.strip() == "echo: hello"  # the fake accepted the key: no comment in it
    assert (tmp_path / "from-custom.sqlite3").exists()  # BOT_CONFIG from .env was used


async def test_real_environment_wins_over_dotenv(openai_fake: FakeOpenAI,
                                                 tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-wrong\nOPENAI_BASE_URL=http://127.0.0.1:9\n")
    (tmp_path / "config.toml").write_text('[chat]\ntokenizer = "estimate"\n')
    code, out, err = await bot_process("--console", cwd=tmp_path,
                                       env=ai_env(openai_fake, tmp_path), stdin=b"hi\n")
    assert code == 0, err
    assert out.strip() == "echo: hi"


# --- one line, documented exit code -----------------------------------------------------

@pytest.mark.parametrize(("text", "key"), [
    ("[openai]\ntimeout = 0\n", "openai.timeout"),
    ("[openai]\ntimeout = -1\n", "openai.timeout"),
    ("[chat]\nmax_output_tokens = 0\n", "chat.max_output_tokens"),
    ('[images]\nsize = "huge"\n', "images.size"),
])
async def test_validation_holes_stop_start_up(tmp_path: Path, text: str, key: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    code, _, err = await bot_process(cwd=tmp_path, env={"OPENAI_API_KEY": "x"})
    assert code == 2
    assert one_line(err).startswith(f"error: config: {key} must")


async def test_unreadable_config_file(tmp_path: Path) -> None:
    prefix = unprivileged()
    cfg = tmp_path / "config.toml"
    cfg.write_text("[bot]\n")
    os.chmod(cfg, 0)
    code, _, err = await bot_process(cwd=tmp_path, env={"OPENAI_API_KEY": "x"}, prefix=prefix)
    assert code == 2
    line = one_line(err)
    assert str(cfg) in line and "permission denied" in line


@pytest.mark.parametrize("where", ["data/bot.sqlite3", "data/new/bot.sqlite3"])
async def test_unwritable_database_directory(tmp_path: Path, where: str) -> None:
    prefix = unprivileged()
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    db = tmp_path / where
    try:
        code, _, err = await bot_process(
            "--console", cwd=tmp_path, prefix=prefix,
            env={"OPENAI_API_KEY": "x", "BOT_DATABASE": str(db)})
    finally:
        os.chmod(data, 0o755)
    assert code == 2
    line = one_line(err)
    assert str(db) in line and "writable" in line and "BOT_DATABASE" in line


async def test_telegram_token_rejected(telegram_fake: FakeTelegram, tmp_path: Path) -> None:
    code, _, err = await bot_process(cwd=tmp_path, stdin=None, env={
        "OPENAI_API_KEY": "x", "BOT_DATABASE": str(tmp_path / "db"),
        "TELEGRAM_BOT_TOKEN": "123456:wrong", "TELEGRAM_API_URL": telegram_fake.url})
    assert code == 2
    line = one_line(err)
    assert "TELEGRAM_BOT_TOKEN" in line and "wrong" not in line


async def test_telegram_unreachable(tmp_path: Path) -> None:
    code, _, err = await bot_process(cwd=tmp_path, stdin=None, env={
        "OPENAI_API_KEY": "x", "BOT_DATABASE": str(tmp_path / "db"),
        "TELEGRAM_BOT_TOKEN": "123456:abc", "TELEGRAM_API_URL": f"http://127.0.0.1:{closed_port()}"})
    assert code == 1
    line = one_line(err)
    assert "Telegram" in line or "telegram" in line
    assert "123456:abc" not in line


def discord_config(tmp_path: Path, token: str) -> Any:
    return load_config(None, env={"OPENAI_API_KEY": "x", "DISCORD_BOT_TOKEN": token,
                                  "BOT_DATABASE": str(tmp_path / "db")})


async def assert_no_unclosed_sessions(caplog: pytest.LogCaptureFixture) -> None:
    gc.collect()
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if "Unclosed" in r.getMessage()]


async def test_discord_token_rejected(discord_fake: FakeDiscord, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(StartupError) as info:
        await run(discord_config(tmp_path, "not-the-token"), console=False)
    # the Discord adapter's own StartupError says exit 2 (rejected token); until it is
    # there, __main__'s net turns discord.py's LoginFailure into one line, exit 1
    assert info.value.exit_code in (1, 2)
    assert "\n" not in info.value.message and "discord" in info.value.message.lower()
    assert "not-the-token" not in info.value.message
    await assert_no_unclosed_sessions(caplog)


async def test_discord_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   caplog: pytest.LogCaptureFixture) -> None:
    import discord.http

    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{closed_port()}/api/v10")
    with pytest.raises(StartupError) as info:
        await run(discord_config(tmp_path, "some-token"), console=False)
    assert info.value.exit_code == 1
    assert "\n" not in info.value.message and "discord" in info.value.message.lower()
    await assert_no_unclosed_sessions(caplog)


class _FailingAdapter:
    name = "telegram"

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.stopped = False

    async def start(self, sink: object) -> None:
        raise self.error

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def restore_logging() -> Any:
    """main() configures logging for the process; put it back for the tests after this one."""
    root = logging.getLogger()
    names = ("", "httpx", "httpx2", "httpcore", "discord.gateway", "telegram.ext")
    levels = {name: logging.getLogger(name).level for name in names}
    handlers = list(root.handlers)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    root.handlers[:] = handlers


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(("error", "code", "text"), [
    (StartupError("TELEGRAM_BOT_TOKEN was rejected by Telegram: ask @BotFather", 2), 2,
     "error: TELEGRAM_BOT_TOKEN was rejected by Telegram: ask @BotFather"),
    (StartupError("Telegram is unreachable (api.telegram.org): check the network"), 1,
     "error: Telegram is unreachable (api.telegram.org): check the network"),
    (RuntimeError("boom with 123:secret-token inside\nand a second line"), 1,
     "error: RuntimeError while starting the telegram adapter: boom with *** inside and a "
     "second line"),
])
def test_main_prints_start_up_errors_as_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        error: BaseException, code: int, text: str) -> None:
    adapter = _FailingAdapter(error)
    monkeypatch.setattr("bot.__main__.choose_adapters", lambda config, console: [adapter])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:secret-token")
    assert main([]) == code
    err = capsys.readouterr().err
    assert one_line(err).startswith(text)
    assert adapter.stopped  # its sessions were closed


# --- doctor -----------------------------------------------------------------------------

@pytest.fixture
def fonts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A font directory the doctor scans instead of the machine's."""
    d = tmp_path / "fonts"
    d.mkdir()
    (d / "NotoSansCJK-Regular.ttc").write_bytes(b"")
    monkeypatch.setattr(doctor, "FONT_DIRS", (str(d),))
    monkeypatch.setattr(doctor, "_fc_list_cjk", lambda: None)
    return d


@pytest.fixture
def everything(openai_fake: FakeOpenAI, telegram_fake: FakeTelegram,
               discord_fake: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               fonts: Path) -> dict[str, str]:
    """Environment for a bot on both platforms, pointed at the fakes."""
    env = {**ai_env(openai_fake, tmp_path), "TELEGRAM_BOT_TOKEN": telegram_fake.token,
           "TELEGRAM_API_URL": telegram_fake.url, "DISCORD_BOT_TOKEN": discord_fake.token}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (scripts/test installs it)")
    return env


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


async def test_doctor_all_good(everything: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[chat]\nmax_output_tokens = 500\n")
    checks = await run_checks(str(tmp_path / "config.toml"), True)
    report = format_report(checks)
    assert [c.name for c in checks] == ["config", "database", "telegram", "discord",
                                        "ai-server", "ffmpeg", "cjk-font", "tiktoken"]
    assert all(c.status == "ok" for c in checks), report
    assert report.endswith("The bot can run.")
    assert "@test_bot" in by_name(checks)["telegram"].detail
    assert "Message Content Intent is on" in by_name(checks)["discord"].detail
    assert "gpt-5.4-mini" in by_name(checks)["ai-server"].detail
    # the capability report is the bot's own probe
    assert any(line.startswith("context window") for line in by_name(checks)["ai-server"].more)
    assert (tmp_path / "bot.sqlite3").exists()


class _NoIntentDiscord(FakeDiscord):
    async def _get_application(self, request: Any) -> tuple[int, Any, Any]:
        status, body, extra = await super()._get_application(request)
        return status, {**body, "flags": body["flags"] & ~((1 << 18) | (1 << 19))}, extra


async def test_doctor_discord_message_content_intent_off(
        everything: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _NoIntentDiscord()
    await fake.start()
    try:
        with fake.redirect_discord_py():
            monkeypatch.setenv("DISCORD_BOT_TOKEN", fake.token)
            checks = by_name(await run_checks("config.toml", False))
    finally:
        await fake.stop()
    assert checks["discord"].status == "fail"
    assert "Message Content Intent is off" in checks["discord"].detail
    assert "Privileged Gateway Intents" in checks["discord"].detail


@pytest.mark.parametrize(("change", "name", "status", "words"), [
    ({"config": "[chat]\nmax_output_tokens = 0\n"}, "config", "fail",
     "chat.max_output_tokens must be at least 1"),
    ({"BOT_DATABASE": "{tmp}/config.toml/bot.sqlite3"}, "database", "fail",
     "set BOT_DATABASE to a writable path"),
    ({"TELEGRAM_BOT_TOKEN": "123456:wrong"}, "telegram", "fail", "was rejected"),
    ({"TELEGRAM_API_URL": "http://127.0.0.1:{closed}"}, "telegram", "fail", "cannot reach"),
    ({"DISCORD_BOT_TOKEN": "wrong"}, "discord", "fail", "was rejected"),
    ({"OPENAI_API_KEY": "sk-wrong"}, "ai-server", "fail", "rejected OPENAI_API_KEY"),
    ({"OPENAI_BASE_URL": "http://127.0.0.1:{closed}/v1"}, "ai-server", "fail",
     "cannot reach"),
    ({"config": '[models]\nchat = "no-such-model"\n'}, "ai-server", "fail",
     "has no model `no-such-model`"),
    ({"PATH": "{tmp}/empty"}, "ffmpeg", "warn", "apt-get install ffmpeg"),
    ({"fonts": ""}, "cjk-font", "warn", "fonts-noto-cjk"),
    ({"tiktoken": ""}, "tiktoken", "warn", "has SHA-256 446a9538cb6c…, expected 000000000000"),
])
async def test_doctor_each_check_failing(
        everything: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        change: dict[str, str], name: str, status: str, words: str) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(change.get("config", ""))
    (tmp_path / "empty").mkdir()
    for key, value in change.items():
        if key.isupper():
            monkeypatch.setenv(key, value.format(tmp=tmp_path, closed=closed_port()))
    if "fonts" in change:
        monkeypatch.setattr(doctor, "FONT_DIRS", (str(tmp_path / "empty"),))
    if "tiktoken" in change:
        monkeypatch.setattr("bot.encodings.SHA256", "0" * 64)
    checks = await run_checks(str(cfg), True)
    got = by_name(checks)[name]
    assert got.status == status, format_report(checks)
    assert words in got.detail
    others = [c for c in checks if c.name != name and c.status not in ("ok", "skip")]
    assert not others, format_report(checks)
    assert format_report(checks).endswith("The bot can run.") == (status != "fail")


async def test_doctor_process_exit_codes(openai_fake: FakeOpenAI,
                                         telegram_fake: FakeTelegram, tmp_path: Path) -> None:
    env = {**ai_env(openai_fake, tmp_path), "TELEGRAM_BOT_TOKEN": telegram_fake.token,
           "TELEGRAM_API_URL": telegram_fake.url}
    code, out, err = await bot_process("doctor", cwd=tmp_path, env=env)
    assert code == 0, out + err
    assert "telegram   token accepted: @" in out
    code, out, _ = await bot_process("doctor", cwd=tmp_path,
                                     env={**env, "TELEGRAM_BOT_TOKEN": "123456:nope"})
    assert code == 1
    assert "FAIL telegram" in out and "1 problem(s) stop the bot: telegram" in out


# --- doctor --live: the HEALTHCHECK -----------------------------------------------------

async def test_live_check_follows_the_running_bot(openai_fake: FakeOpenAI,
                                                  tmp_path: Path) -> None:
    health = tmp_path / "health.json"
    env = {**ai_env(openai_fake, tmp_path), "BOT_HEALTH_FILE": str(health)}
    (tmp_path / "config.toml").write_text('[chat]\ntokenizer = "estimate"\n')
    code, out, _ = await bot_process("doctor", "--live", cwd=tmp_path, env=env)
    assert code == 1 and "does not exist: the bot is not running" in out
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--console", cwd=tmp_path, env={**BASE_ENV, **env},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        await wait_for(health.exists, 30, "the health file")
        code, out, _ = await bot_process("doctor", "--live", cwd=tmp_path, env=env)
        assert code == 0, out
        assert f"bot pid {proc.pid} alive; connected: console" in out
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert not health.exists()
    code, _, _ = await bot_process("doctor", "--live", cwd=tmp_path, env=env)
    assert code == 1


def test_live_check_stale_or_disconnected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    health = tmp_path / "h.json"
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    monkeypatch.setenv("BOT_HEALTH_FILE", str(health))
    now = time.time()
    health.write_text(json.dumps({"pid": 7, "updated": now - 120, "platforms": {"discord": True}}))
    assert "last written 120 s ago" in check_live("none.toml", False, now=lambda: now).detail
    health.write_text(json.dumps({"pid": 7, "updated": now,
                                  "platforms": {"telegram": True, "discord": False}}))
    got = check_live("none.toml", False, now=lambda: now)
    assert got.status == "fail" and got.detail == "not connected: discord"
    health.write_text(json.dumps({"pid": 7, "updated": now, "platforms": {"telegram": True}}))
    assert check_live("none.toml", False, now=lambda: now).status == "ok"


# --- packaging bits ---------------------------------------------------------------------

@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")
                                          if p.name not in ("__init__.py", "common.py")))
async def test_bench_scripts_answer_help(script: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, f"bench/{script}", "--help", cwd=ROOT, env=BASE_ENV,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().startswith("usage:")


def test_shipped_encoding_matches_tiktoken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our o200k_base is tiktoken's: same pattern, specials, published hash, and ranks."""
    import tiktoken_ext.openai_public as public

    from bot import encodings

    seen: dict[str, Any] = {}

    def fake_load(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        seen.update(url=url, expected_hash=expected_hash)
        return encodings.mergeable_ranks()

    monkeypatch.setattr(public, "load_tiktoken_bpe", fake_load)
    definition = public.o200k_base()
    assert seen["expected_hash"] == encodings.SHA256
    assert definition["pat_str"] == encodings.PATTERN
    assert definition["special_tokens"] == encodings.SPECIAL_TOKENS
    enc = encodings.o200k_base()
    assert enc.encode("hello world") == [24912, 2375]
    assert enc.n_vocab == 200019


def test_tokenizer_needs_no_download(monkeypatch: pytest.MonkeyPatch,
                                     caplog: pytest.LogCaptureFixture) -> None:
    import tiktoken.load

    def no_network(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("tiktoken tried to download")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    from bot.ai import Tokenizer

    with caplog.at_level(logging.WARNING):
        tok = Tokenizer("tiktoken")
    assert tok.mode == "tiktoken" and tok.count("hello world") == 2


def test_deployment_files_say_what_the_readme_promises() -> None:
    docker = (ROOT / "Dockerfile").read_text()
    steps = [line.split()[0] for line in docker.splitlines() if line and line[0].isupper()]
    assert "HEALTHCHECK" in steps and "USER" in steps
    # dependencies are installed from pyproject.toml alone, before any source is copied
    assert docker.index("COPY pyproject.toml") < docker.index("pip install --no-cache-dir -r")
    assert docker.index("pip install --no-cache-dir -r") < docker.index("COPY bot ")
    assert "fonts-noto-cjk" in docker and "ffmpeg" in docker
    assert "tiktoken" not in docker.replace("tiktoken's", "")  # nothing fetched at build
    compose = (ROOT / "compose.yaml").read_text()
    for needle in ("restart: unless-stopped", "env_file: .env", "stop_grace_period:",
                   "gptbot-data:/data"):
        assert needle in compose
    ignored = (ROOT / ".gitignore").read_text().split()
    assert {"console_files/", ".env", "*.health", "*.sqlite3-wal"} <= set(ignored)
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
