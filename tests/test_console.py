"""The terminal console as people use it (issue #12 items 7, 8, 12-15; #13 item 1):
stdin from a file, /dev/null or closed, with and without uvloop; piped output plain; logs
in a file; and a real pseudo-terminal for the interactive line editor."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.openai_api import FakeOpenAI
from tests.harness import ConsoleDriver, wait_for
from tests.test_process import turns

LAUNCH = ("import sys\n"
          "if sys.argv[1] == 'no-uvloop':\n"
          "    sys.modules['uvloop'] = None  # importing it fails: the standard loop\n"
          "from bot.__main__ import main\n"
          "sys.exit(main(['--console']))\n")
ROOT = Path(__file__).resolve().parent.parent


def bot_env(fake: FakeOpenAI, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "config.toml").write_text('[chat]\ntokenizer = "estimate"\n')
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "OPENAI_API_KEY": fake.api_key,
            "OPENAI_BASE_URL": fake.url, "BOT_DATABASE": str(tmp_path / "bot.sqlite3"),
            "PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}


async def run_bot(fake: FakeOpenAI, tmp_path: Path, stdin: str, loop: str = "uvloop",
                  data: bytes = b"") -> tuple[int, str, str]:
    """Run `python -m bot --console` with stdin "file", "devnull", "closed" or "pipe"."""
    env = bot_env(fake, tmp_path)
    args = [sys.executable, "-c", LAUNCH, loop]
    if stdin == "closed":
        args = ["sh", "-c", 'exec "$0" "$@" <&-', *args]
    kwargs: dict = {"cwd": tmp_path, "env": env, "stdout": asyncio.subprocess.PIPE,
                    "stderr": asyncio.subprocess.PIPE}
    handle = None
    if stdin == "file":
        (tmp_path / "questions.txt").write_bytes(data)
        handle = (tmp_path / "questions.txt").open("rb")
        kwargs["stdin"] = handle
    elif stdin == "devnull":
        kwargs["stdin"] = asyncio.subprocess.DEVNULL
    elif stdin == "pipe":
        kwargs["stdin"] = asyncio.subprocess.PIPE
    try:
        proc = await asyncio.create_subprocess_exec(*args, **kwargs)
        out, err = await asyncio.wait_for(
            proc.communicate(data if stdin == "pipe" else None), 60)
    finally:
        if handle is not None:
            handle.close()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# ------------------------------------------------------- #13 item 1: redirected stdin


@pytest.mark.parametrize("loop", ["uvloop", "no-uvloop"])
@pytest.mark.parametrize("stdin", ["file", "devnull", "closed"])
async def test_redirected_stdin_works(openai_fake: FakeOpenAI, tmp_path: Path, stdin: str,
                                      loop: str) -> None:
    data = b"first question\n\n  second question  \n" if stdin == "file" else b""
    code, out, err = await run_bot(openai_fake, tmp_path, stdin, loop, data)
    assert code == 0, err
    assert "Traceback" not in err and "Aborted" not in err
    if stdin == "file":
        assert out.split("\n\n")[:2] == ["echo: first question", "echo: second question"]
        assert [c for _, c in turns(tmp_path)] == [
            "first question", "echo: first question", "second question",
            "echo: second question"]
    else:
        assert out == ""


# ------------------------------------------------------- items 7, 8, 15: piped mode


async def test_piped_output_is_plain_and_logs_go_to_a_file(openai_fake: FakeOpenAI,
                                                          tmp_path: Path) -> None:
    openai_fake.fail_next(500)  # the client retries: "Retrying request" goes to the log
    openai_fake.reply("## Title\n\n**bold** and a list:\n\n- one\n- two")
    code, out, err = await run_bot(openai_fake, tmp_path, "pipe",
                                   data=b"hello\n/frobnicate\n")
    assert code == 0, err
    assert "\x1b" not in out and "thinking" not in out
    assert out.split("\n\n")[0].startswith("Title")
    assert "Unknown command /frobnicate" in out
    log_path = tmp_path / "bot.log"
    assert err.count("[log]") == 1 and str(log_path) in err
    for noise in ("Retrying request", "adapter started", "tiktoken", "Unknown command"):
        assert noise not in err, noise
    logged = log_path.read_text()
    assert "Retrying request" in logged and "console adapter started" in logged
    assert out.count("Unknown command /frobnicate") == 1


async def test_end_of_input_waits_for_every_pending_answer(openai_fake: FakeOpenAI,
                                                           tmp_path: Path) -> None:
    openai_fake.latency = 0.3
    driver = ConsoleDriver(openai_fake, tmp_path / "bot.sqlite3", {})
    await driver.start()
    try:
        for i in range(3):
            driver.stdin.feed_data(f"question {i}\n".encode())
        driver.stdin.feed_eof()
        await asyncio.wait_for(driver.adapter.finished.wait(), 30)
        # finished (the process would exit now) only once every answer is printed
        assert [t for _, t in driver.out.entries] == [f"echo: question {i}" for i in range(3)]
    finally:
        await driver.stop()


# ------------------------------------------------------- item 14: files by path


async def test_help_shows_file_commands_and_bad_path_is_named(openai_fake: FakeOpenAI,
                                                              tmp_path: Path) -> None:
    driver = ConsoleDriver(openai_fake, tmp_path / "bot.sqlite3", {})
    await driver.start()
    try:
        text = await driver.ask("/help")
        for usage in ("/image <path> [question]", "/audio <path>", "/file <path> [question]",
                      "/voice PATH"):
            assert usage in text, usage
        assert await driver.ask("/image /nope/cat.png what is it?") == (
            "no such file: /nope/cat.png")
        assert await driver.ask("/voice missing.ogg") == "no such file: missing.ogg"
        assert "Unknown command" not in await driver.ask("/image")
        assert openai_fake.chat_requests == []
    finally:
        await driver.stop()


# ------------------------------------------------------- items 7, 12, 13: a terminal


class Terminal:
    """The bot on a pseudo-terminal: keystrokes in, screen bytes out."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

        def controlling_tty() -> None:  # runs in the child after setsid
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "--console"], cwd=cwd, env=env, stdin=slave,
            stdout=slave, stderr=slave, start_new_session=True, preexec_fn=controlling_tty)
        os.close(slave)
        self.buffer = b""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.buffer += chunk

    @property
    def screen(self) -> str:
        """Everything printed so far, escape sequences removed."""
        with self._lock:
            raw = self.buffer.decode("utf-8", "replace")
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]|\r", "", raw)

    def raw(self) -> str:
        with self._lock:
            return self.buffer.decode("utf-8", "replace")

    def type(self, data: str) -> None:
        os.write(self.master, data.encode())

    async def wait(self, text: str, timeout: float = 30.0, after: int = 0) -> None:
        await wait_for(lambda: text in self.screen[after:], timeout, f"{text!r} on screen")

    async def prompt(self, count: int = 1) -> None:
        """Until the line editor is waiting for input for the `count`-th time (it turns
        bracketed paste on each time it prompts)."""
        await wait_for(lambda: self.raw().count("\x1b[?2004h") >= count, 30,
                       f"prompt number {count}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        with contextlib.suppress(OSError):
            os.close(self.master)


@pytest.fixture
def terminal(openai_fake: FakeOpenAI, tmp_path: Path) -> Iterator[Terminal]:
    term = Terminal(bot_env(openai_fake, tmp_path), tmp_path)
    yield term
    term.close()


async def test_terminal_paste_is_one_message_streamed_as_markdown(
        terminal: Terminal, openai_fake: FakeOpenAI, tmp_path: Path) -> None:
    await terminal.wait("Ctrl-D quits")
    await terminal.prompt()
    paste = "first line\n    indented second line\n" + "x" * 5000
    openai_fake.reply("# Answer\n\nSome **bold** text.\n\n```python\nprint('hi')\n```\n")
    openai_fake.chunk_size = 3
    openai_fake.chunk_delay = 0.05
    terminal.type(f"\x1b[200~{paste}\x1b[201~")
    terminal.type("\r")
    await terminal.wait("Some bold text.")
    (body,) = openai_fake.chat_requests  # one paste, one message, whole
    assert body["messages"][-1]["content"] == paste
    raw = terminal.raw()
    assert "thinking..." in raw  # the spinner until the first token
    assert "**bold**" not in terminal.screen and "# Answer" not in terminal.screen
    assert "\x1b[1m" in raw  # bold rendered by rich
    await terminal.wait("print('hi')")
    assert "```" not in terminal.screen.split("Some bold text.")[1]
    assert next(c for _, c in turns(tmp_path)) == paste


async def test_terminal_ctrl_c_cancels_then_quits(terminal: Terminal,
                                                  openai_fake: FakeOpenAI) -> None:
    await terminal.prompt()
    openai_fake.reply(" ".join(f"w{i}" for i in range(400)))
    openai_fake.chunk_size = 4
    openai_fake.chunk_delay = 0.05
    terminal.type("tell me everything\r")
    await terminal.wait("w1 w2")
    terminal.type("\x03")
    await terminal.wait("[answer cancelled]")
    await terminal.prompt(2)
    terminal.type("\x03")  # Ctrl-C at an empty prompt: quit
    await wait_for(lambda: terminal.proc.poll() is not None, 30, "the bot to quit")
    assert terminal.proc.returncode == 0
    assert "w399" not in terminal.screen
