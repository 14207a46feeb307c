"""/json, /seed, /temperature and /info on Telegram, Discord and the console."""

from __future__ import annotations

import json

import pytest

from tests.conftest import STORAGES
from tests.harness import Driver, File

pytestmark = pytest.mark.usefixtures("chat")

SCHEMA = {
    "type": "object",
    "properties": {"colour": {"type": "string"}, "hex": {"type": "string"}},
    "required": ["colour", "hex"],
    "additionalProperties": False,
}


async def test_json_mode_pretty_prints(chat: Driver) -> None:
    chat.openai.reply('{"colours":["red","green"],"count":2}')
    answer = await chat.ask("/json list two colours")
    assert "```json" in answer or '"colours": [' in answer  # console shows plain text
    assert '"colours": [\n    "red",\n    "green"\n  ],\n  "count": 2' in answer
    body = chat.openai.chat_requests[-1]
    assert body["response_format"] == {"type": "json_object"}
    assert "JSON" in body["messages"][0]["content"]
    assert body["messages"][-1]["content"] == "list two colours"


async def test_json_from_a_server_ignoring_the_mode_is_flagged(chat: Driver) -> None:
    chat.openai.reply("Sure! Here are colours: red, green")
    answer = await chat.ask("/json list two colours")
    assert "did not return valid JSON" in answer
    assert "Here are colours: red, green" in answer


async def test_json_schema_file_uses_structured_output(chat: Driver) -> None:
    schema = File(json.dumps(SCHEMA).encode(), filename="colour.schema.json",
                  mime="application/json", kind="document")
    before = len(chat.replies())
    await chat.send_text("/json the colour of the sky", files=[schema])
    await chat.settle()
    answer = "\n".join(r.text for r in chat.replies()[before:])
    body = chat.openai.chat_requests[-1]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == SCHEMA
    # the fake answers with an instance of the schema
    assert '"colour": "text"' in answer and '"hex": "text"' in answer


async def test_seed_and_temperature_reach_the_request(chat: Driver) -> None:
    assert "42" in await chat.ask("/seed 42")
    await chat.ask("hello")
    assert chat.openai.chat_requests[-1]["seed"] == 42
    assert "must be a whole number" in await chat.ask("/seed soon")
    await chat.ask("/seed off")
    await chat.ask("hello again")
    assert "seed" not in chat.openai.chat_requests[-1]
    assert "from 0 to 2" in await chat.ask("/temperature 3")


@pytest.mark.parametrize("config_text", ['[models]\nchat = "gpt-4o-mini"\n'])
async def test_temperature_is_sent(chat: Driver) -> None:
    await chat.ask("/temperature 0.3")
    await chat.ask("be precise")
    assert chat.openai.chat_requests[-1]["temperature"] == 0.3


async def test_temperature_left_out_for_models_that_reject_it(chat: Driver) -> None:
    await chat.ask("/temperature 0.3")
    assert await chat.ask("be creative") == "echo: be creative"
    rejected, accepted = chat.openai.chat_requests[-2:]
    assert rejected["temperature"] == 0.3 and "temperature" not in accepted
    assert "not accepted by this model" in await chat.ask("/info")


@pytest.mark.parametrize("config_text", ["[memory]\nenabled = true\n"])
async def test_info_shows_settings_and_the_last_answer(chat: Driver) -> None:
    chat.openai.system_fingerprint = "fp_info_test"
    await chat.ask("/seed 7")
    await chat.ask("hello")
    info = await chat.ask("/info")
    assert "gpt-5.4-mini" in info
    assert "fp_info_test" in info
    assert "Seed: 7" in info.replace("`", "")
    assert "calculate" in info and "History: 2 messages" in info
    assert "prompt +" in info and "completion tokens" in info
    assert "Image detail: auto" in info.replace("`", "")
    assert "Memory: on" in info


@pytest.mark.parametrize("storage", STORAGES)
async def test_the_last_answer_is_shown_after_a_restart(chat: Driver) -> None:
    """The answer's details are stored with its turn (one write): /info in a new run shows
    them, on either database."""
    chat.openai.system_fingerprint = "fp_before_restart"
    assert await chat.ask("hello") == "echo: hello"
    await chat.restart()
    info = await chat.ask("/info")
    assert "fp_before_restart" in info and "gpt-5.4-mini" in info
    assert "History: 2 messages" in info
