"""Prices: the shipped table covers the default models; costs per billing basis; overrides."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.config import ModelsSection
from bot.prices import Price, PriceTable, Usage, load_override

M = 1_000_000


def test_shipped_table_is_dated_and_prices_every_default_model() -> None:
    table = PriceTable()
    assert table.date >= "2026-01-01"
    models = ModelsSection()
    for name in (*models.choices, models.chat, models.vision, models.image, models.transcribe,
                 models.tts, models.embedding, "code_interpreter", "file_search",
                 "vector_storage"):
        assert table.price(name) is not None, name


def test_token_costs_with_cached_image_and_audio_rates() -> None:
    price = Price(input=2.0, cached_input=0.5, output=8.0, input_image=10.0, input_audio=6.0)
    usage = Usage(input_tokens=1000, cached_tokens=200, image_input_tokens=300,
                  audio_input_tokens=100, output_tokens=50)
    expected = (400 * 2.0 + 200 * 0.5 + 300 * 10.0 + 100 * 6.0 + 50 * 8.0) / M
    assert price.cost(usage) == pytest.approx(expected)


def test_missing_rates_fall_back_or_make_the_price_unknown() -> None:
    # cached and image input without their own rate cost the plain input rate
    assert Price(input=1.0, output=2.0).cost(
        Usage(input_tokens=100, cached_tokens=40, output_tokens=10)) == pytest.approx(120 / M)
    # audio input without a rate, or output without one, is unknown
    assert Price(input=1.0).cost(Usage(input_tokens=10, audio_input_tokens=5)) is None
    assert Price(input=1.0).cost(Usage(input_tokens=10, output_tokens=1)) is None


def test_unit_billing() -> None:
    table = PriceTable()
    whisper = Usage(unit="seconds", units=90)
    assert table.cost("whisper-1", whisper) == pytest.approx(0.006 * 1.5)
    assert table.cost("tts-1", Usage(unit="characters", units=1000)) == pytest.approx(0.015)
    hd = Usage(unit="images", units=2, variant="hd 1792x1024")
    assert table.cost("dall-e-3", hd) == pytest.approx(0.24)
    auto = Usage(unit="images", units=1, variant="auto 1792x1024")
    assert table.cost("dall-e-3", auto) == pytest.approx(0.08)
    assert table.cost("dall-e-2", Usage(unit="images", units=3, variant="standard 256x256")
                      ) == pytest.approx(0.048)
    assert table.cost("file_search", Usage(unit="calls", units=4)) == pytest.approx(0.01)
    assert table.cost("code_interpreter", Usage(unit="sessions", units=1)) == pytest.approx(0.03)


def test_snapshots_use_the_base_entry() -> None:
    table = PriceTable()
    usage = Usage(input_tokens=M, output_tokens=M)
    assert table.cost("gpt-5.4-mini-2026-03-17", usage) == pytest.approx(0.75 + 4.5)


def test_unknown_model_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable()
    caplog.set_level(logging.WARNING, "bot.prices")
    for _ in range(3):
        assert table.cost("llama3.1:8b", Usage(input_tokens=10, output_tokens=5)) is None
    assert table.estimate("llama3.1:8b", Usage(input_tokens=10)) == 0.0
    assert len([r for r in caplog.records if "llama3.1:8b" in r.getMessage()]) == 1


def test_override_file_replaces_entries(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('date = "2027-01-01"\n[models."gpt-5.4-mini"]\ninput = 1.0\noutput = 2.0\n'
                    '[models."my-local-model"]\ninput = 0\noutput = 0\n')
    table = PriceTable(str(path))
    usage = Usage(input_tokens=M, output_tokens=M, cached_tokens=M // 2)
    assert table.cost("gpt-5.4-mini", usage) == pytest.approx(3.0)  # no cached rate now
    assert table.cost("my-local-model", usage) == 0.0
    assert table.cost("gpt-5.5", Usage(output_tokens=M)) == pytest.approx(30.0)


@pytest.mark.parametrize(("text", "message"), [
    ("[models.x]\ninput = -1\n", "models.x.input must be a number >= 0"),
    ("[models.x]\ninput_price = 1\n", "unknown field models.x.input_price"),
    ("[models.x]\nper_image = 3\n", "models.x.per_image must map names to prices"),
    ("currency = 'EUR'\n", "unknown key currency"),
    ("[models\n", "not valid TOML"),
])
def test_bad_override_files_name_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_override(str(path))
