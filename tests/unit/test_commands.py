"""Command declaration and parsing, shared by every adapter."""

from __future__ import annotations

from bot.commands import CommandSpec, CommandTable, Param, split_command
from bot.events import ChannelKey
from bot.replies import Capabilities

TELEGRAM = Capabilities(4096, 1024, 50 << 20, 1.0, True, start_command=True)
DISCORD = Capabilities(2000, 2000, 10 << 20, 1.0, True, max_description=100, max_choices=25)

DRAW = CommandSpec("draw", "Draw", (
    Param("prompt", "What to draw", type="text", required=True),
))
SIZE = CommandSpec("size", "Pick", (
    Param("size", "Size", choices=("small", "large")),
    Param("count", "How many", type="int", min_value=1, max_value=4),
))
TABLE = CommandTable([DRAW, SIZE, CommandSpec("start", "Start", requires="start_command")])


def test_split_command_handles_bot_suffix() -> None:
    assert split_command("/help@test_bot  now", "test_bot") == ("help", "now")
    assert split_command("/help@other_bot", "test_bot") is None
    assert split_command("hello /help") is None
    assert split_command("/HELP") == ("help", "")


def test_text_param_takes_the_rest() -> None:
    call = TABLE.parse("/draw a red  car, at night", DISCORD)
    assert call is not None and call.args == {"prompt": "a red  car, at night"}


def test_choices_and_ints_validated_with_clear_errors() -> None:
    assert TABLE.parse("/size large 3", TELEGRAM).args == {"size": "large", "count": 3}
    bad = TABLE.parse("/size huge", TELEGRAM)
    assert bad.error == "`size` must be one of: small, large."
    assert TABLE.parse("/size small 9", TELEGRAM).error == "`count` must be at most 4."
    assert "whole number" in TABLE.parse("/size small x", TELEGRAM).error
    assert "Missing `prompt`" in TABLE.parse("/draw", TELEGRAM).error


def test_commands_needing_a_capability() -> None:
    assert TABLE.parse("/start", TELEGRAM).unknown is False
    assert TABLE.parse("/start", DISCORD).unknown is True
    assert [s.name for s in TABLE.for_platform(DISCORD)] == ["draw", "size"]


def test_usage_string() -> None:
    assert SIZE.usage() == "/size [small|large] [count]"


def test_channel_key_round_trip() -> None:
    for key in (ChannelKey("telegram", "-100123", "17"), ChannelKey("discord", "42")):
        assert ChannelKey.parse(str(key)) == key
    assert str(ChannelKey("telegram", "-100123", "17")) == "telegram:-100123:17"
