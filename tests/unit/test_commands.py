"""Command declaration and parsing, shared by every adapter."""

from __future__ import annotations

import pytest

from bot.commands import (
    CommandSpec,
    CommandTable,
    Param,
    Subcommand,
    command,
    spec_of,
    split_command,
)
from bot.config import load_config
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
TUNE = CommandSpec("tune", "Tune", subcommands=(
    Subcommand("on", "Switch on"),
    Subcommand("speed", "Speed", (
        Param("speed", "How fast", type="float", required=True, min_value=0.25, max_value=4),)),
    Subcommand("pick", "Pick one", (Param("name", "Which", required=True,
                                          choices_from="voice.voices"),)),
    Subcommand("note", "A note", (Param("text", "Words", type="text", required=True),)),
))
TABLE = CommandTable([DRAW, SIZE, TUNE, CommandSpec("start", "Start", requires="start_command")],
                     load_config(None, env={"OPENAI_API_KEY": "x"}))


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
    assert TABLE.parse("/size LARGE", TELEGRAM).args == {"size": "large"}
    bad = TABLE.parse("/size huge", TELEGRAM)
    assert bad.error == "`size` must be one of: small, large."
    assert TABLE.parse("/size small 9", TELEGRAM).error == "`count` must be between 1 and 4."
    assert "whole number" in TABLE.parse("/size small x", TELEGRAM).error
    assert "Missing `prompt`" in TABLE.parse("/draw", TELEGRAM).error


@pytest.mark.parametrize("caps", [TELEGRAM, DISCORD], ids=["telegram", "discord"])
def test_subcommands_parse_the_same_everywhere(caps: Capabilities) -> None:
    call = TABLE.parse("/tune speed 1.5", caps)
    assert (call.sub, call.args, call.error) == ("speed", {"speed": 1.5}, None)
    assert isinstance(call.args["speed"], float)
    assert TABLE.parse("/tune ON", caps).sub == "on"
    bare = TABLE.parse("/tune", caps)
    assert (bare.sub, bare.args, bare.error) == (None, {}, None)
    note = TABLE.parse("/tune note  calm and   warm ", caps)
    assert note.args == {"text": "calm and   warm"}
    assert TABLE.parse("/tune pick NOVA", caps).args == {"name": "nova"}  # from [voice] voices


def test_subcommand_errors_name_the_valid_forms() -> None:
    assert TABLE.parse("/tune speed 9", TELEGRAM).error == "`speed` must be between 0.25 and 4."
    assert "must be a number" in TABLE.parse("/tune speed fast", TELEGRAM).error
    missing = TABLE.parse("/tune speed", TELEGRAM).error
    assert missing == "Missing `speed`. Usage: `/tune speed <0.25-4>`"
    unknown = TABLE.parse("/tune loud", TELEGRAM).error
    assert unknown.startswith("`/tune` has no option `loud`.")
    assert "`/tune speed <0.25-4>` — Speed" in unknown
    assert TABLE.parse("/tune on now", TELEGRAM).error == "Too many arguments. Usage: `/tune on`"
    assert "must be one of" in TABLE.parse("/tune pick robot", TELEGRAM).error


def test_typed_options_are_checked_per_subcommand() -> None:
    spec = TABLE.by_name["tune"]
    assert spec.check({"speed": 2}, "speed") == {"speed": 2.0}
    with pytest.raises(Exception, match="Unknown option `name`"):
        spec.check({"name": "x"}, "speed")
    with pytest.raises(Exception, match=r"between 0\.25 and 4"):
        spec.check({"speed": 0.1}, "speed")


def test_commands_needing_a_capability() -> None:
    assert TABLE.parse("/start", TELEGRAM).unknown is False
    assert TABLE.parse("/start", DISCORD).unknown is True
    assert [s.name for s in TABLE.for_platform(DISCORD)] == ["draw", "size", "tune"]


def test_usage_strings() -> None:
    assert SIZE.usage() == "/size [small|large] [count 1-4]"
    assert TUNE.usage() == "/tune on|speed|pick|note"
    assert TUNE.usage_text().splitlines()[1] == "`/tune speed <0.25-4>` — Speed"


def test_declaration_mistakes_fail_at_import() -> None:
    async def handler(ctx: object) -> None:
        """Doc"""

    with pytest.raises(ValueError, match="mixes"):
        command("x", Param("a", "A"), Subcommand("b", "B"))(handler)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown capability"):
        command("x", requires="telepathy")
    with pytest.raises(ValueError, match="invalid command name"):
        command("Bad-Name")
    spec = spec_of(command("long")(handler))  # type: ignore[arg-type]
    assert spec.description == "Doc"  # no platform limit applied in the core


def test_channel_key_round_trip() -> None:
    for key in (ChannelKey("telegram", "-100123", "17"), ChannelKey("discord", "42")):
        assert ChannelKey.parse(str(key)) == key
    assert str(ChannelKey("telegram", "-100123", "17")) == "telegram:-100123:17"
