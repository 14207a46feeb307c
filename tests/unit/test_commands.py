"""Command declaration and parsing, shared by every adapter."""

from __future__ import annotations

from bot.commands import CommandSpec, CommandTable, Param, split_command
from bot.events import ChannelKey

DRAW = CommandSpec("draw", "Draw", (
    Param("prompt", "What to draw", type="text", required=True),
))
SIZE = CommandSpec("size", "Pick", (
    Param("size", "Size", choices=("small", "large")),
    Param("count", "How many", type="int", min_value=1, max_value=4),
))
TABLE = CommandTable([DRAW, SIZE, CommandSpec("start", "Start", platforms=("telegram",))])


def test_split_command_handles_bot_suffix() -> None:
    assert split_command("/help@test_bot  now", "test_bot") == ("help", "now")
    assert split_command("/help@other_bot", "test_bot") is None
    assert split_command("hello /help") is None
    assert split_command("/HELP") == ("help", "")


def test_text_param_takes_the_rest() -> None:
    call = TABLE.parse("/draw a red  car, at night", "discord")
    assert call is not None and call.args == {"prompt": "a red  car, at night"}


def test_choices_and_ints_validated_with_clear_errors() -> None:
    assert TABLE.parse("/size large 3", "telegram").args == {"size": "large", "count": 3}
    bad = TABLE.parse("/size huge", "telegram")
    assert bad.error == "`size` must be one of: small, large."
    assert TABLE.parse("/size small 9", "telegram").error == "`count` must be at most 4."
    assert "whole number" in TABLE.parse("/size small x", "telegram").error
    assert "Missing `prompt`" in TABLE.parse("/draw", "telegram").error


def test_platform_only_commands() -> None:
    assert TABLE.parse("/start", "telegram").unknown is False
    assert TABLE.parse("/start", "discord").unknown is True
    assert [s.name for s in TABLE.for_platform("discord")] == ["draw", "size"]


def test_usage_string() -> None:
    assert SIZE.usage() == "/size [small|large] [count]"


def test_channel_key_round_trip() -> None:
    for key in (ChannelKey("telegram", "-100123", "17"), ChannelKey("discord", "42")):
        assert ChannelKey.parse(str(key)) == key
    assert str(ChannelKey("telegram", "-100123", "17")) == "telegram:-100123:17"
