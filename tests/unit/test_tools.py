"""The tool registry's schemas and API shapes, the calculator, fetch_url's address rules."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Literal

import pytest

from bot import tools
from bot.builtin_tools import address_allowed, calculate, evaluate, format_number
from bot.config import ConfigError, load_config
from bot.context import Context
from bot.tools import ToolCall, ToolError, make_tool


async def weather(ctx: Context, city: str, days: int = 3,
                  unit: Literal["C", "F"] | None = None) -> str:
    """Forecast for a city.

    Args:
        city: City name.
        days: How many days ahead.
    """
    return f"{city} {days} {unit}"


def test_schema_from_signature_is_strict() -> None:
    tool = make_tool(weather)
    assert tool.description == "Forecast for a city."
    assert tool.context_params == ("ctx",)
    assert tool.strict
    assert tool.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name."},
            "days": {"type": ["integer", "null"], "description": "How many days ahead."},
            "unit": {"type": ["string", "null"], "enum": ["C", "F", None]},
        },
        "required": ["city", "days", "unit"],
        "additionalProperties": False,
    }


def test_binding_defaults_nulls_and_errors() -> None:
    tool = make_tool(weather)
    assert tool.bind('{"city": "Oslo", "days": null, "unit": null}') == {
        "city": "Oslo", "days": 3, "unit": None}
    assert tool.bind('{"city": "Oslo", "days": 2.0, "unit": "F"}')["days"] == 2
    for args, message in [
        ("{", "invalid JSON"), ("[]", "must be a JSON object"), ("{}", "missing argument"),
        ('{"city": 5}', "`city` must be a str"), ('{"city": "a", "x": 1}', "unknown argument"),
        ('{"city": "a", "unit": "K"}', "`unit` must be one of"),
    ]:
        with pytest.raises(ToolError, match=message):
            tool.bind(args)


def test_api_shapes() -> None:
    registry = tools.ToolRegistry([make_tool(weather)])
    (chat,) = registry.chat_tools()
    assert chat["type"] == "function" and chat["function"]["strict"] is True
    (resp,) = registry.responses_tools()
    assert resp["type"] == "function" and resp["name"] == "weather"
    assert resp["parameters"] == chat["function"]["parameters"]
    assert registry.assistants_tools() == registry.chat_tools()
    calls = tools.calls_from_responses([
        {"type": "message"},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"}])
    assert calls == [ToolCall("c1", "weather", "{}")]
    action = {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [
        {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}
    assert tools.calls_from_assistants(action) == [ToolCall("c2", "weather", "{}")]
    result = tools.ToolResult("c2", "weather", "sunny")
    assert tools.assistants_outputs([result]) == [{"tool_call_id": "c2", "output": "sunny"}]
    assert tools.responses_outputs([result]) == [
        {"type": "function_call_output", "call_id": "c2", "output": "sunny"}]
    messages = tools.chat_messages([ToolCall("c2", "weather", "{}")], [result])
    assert messages[0]["tool_calls"][0]["id"] == "c2" and messages[1]["tool_call_id"] == "c2"
    assert tools.history_messages('[{"role": "tool", "tool_call_id": "x"}]') == []


async def test_run_calls_without_context_never_raises() -> None:
    registry = tools.ToolRegistry([make_tool(weather), make_tool(calculate)])
    (a, b) = await registry.run_calls([ToolCall("1", "weather", '{"city": "Oslo"}'),
                                       ToolCall("2", "calculate", '{"expression": "3**3"}')])
    assert not a.ok and "not available" in a.output
    assert b.ok and b.output == "27"


@pytest.mark.parametrize(("expression", "value"), [
    ("2**100 % 97", "16"), ("10 // 3 + 10 % 3", "4"), ("sqrt(16) + log(8, 2)", "7"),
    ("factorial(25)", "15511210043330985984000000"), ("-(2**64)", "-18446744073709551616"),
    ("round(pi, 3)", "3.142"), ("1/3", "0.333333333333333"), ("max(3, 9, 4)", "9"),
])
def test_calculator(expression: str, value: str) -> None:
    assert format_number(evaluate(expression)) == value


@pytest.mark.parametrize(("expression", "message"), [
    ("9**9**9", "too large"), ("10**100000", "too large"), ("factorial(100000)", "limited"),
    ("__import__('os')", "unknown function"), ("().__class__", "not allowed"),
    ("open('x')", "unknown function"), ("x", "unknown name"), ("1/0", "division by zero"),
    ("2^8", "use \\*\\*"), ("'a' * 3", "only numbers"), ("(-8) ** 0.5", "not a real"),
    ("exp(1000)", "too large"), ("2 +", "not a valid expression"),
])
def test_calculator_refuses(expression: str, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ToolError, match=message):
        evaluate(expression)
    assert time.perf_counter() - started < 1.0  # refused, not computed


@pytest.mark.parametrize(("ip", "allowed"), [
    ("93.184.216.34", True), ("2606:4700::1111", True), ("127.0.0.1", False),
    ("10.0.0.1", False), ("172.16.5.4", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.100.100.200", False), ("::1", False),
    ("::ffff:127.0.0.1", False), ("fd00:ec2::254", False), ("0.0.0.0", False),
    ("224.0.0.1", False), ("fe80::1", False),
])
def test_fetch_address_rules(ip: str, allowed: bool) -> None:
    assert address_allowed(ip) is allowed


def test_loopback_only_with_the_test_setting() -> None:
    assert address_allowed("127.0.0.1", allow_loopback=True)
    assert not address_allowed("10.0.0.1", allow_loopback=True)


@pytest.mark.parametrize(("text", "message"), [
    ('[tools]\nenabled = ["calculate", "shell"]\n', "tools.enabled: unknown tool 'shell'"),
    ("[tools]\nmax_rounds = 50\n", "tools.max_rounds"),
    ("[tools]\ntimeout = 0\n", "tools.timeout"),
    ("[memory]\ndimensions = 100\n", "memory.dimensions"),
    ("[memory]\nrecall_k = -1\n", "memory.recall_k"),
    ("[memory]\nenabled = 1\n", "memory.enabled must be true or false"),
])
def test_config_names_the_bad_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, env={"OPENAI_API_KEY": "x"})


def test_shipped_config_toml_loads() -> None:
    shipped = Path(__file__).parents[2] / "bot" / "config.toml"
    config = load_config(shipped, env={"OPENAI_API_KEY": "x"})
    assert "fetch_url" not in config.tools.enabled and config.memory.enabled
