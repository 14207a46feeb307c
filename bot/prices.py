"""What a request consumed (Usage) and what that cost in US dollars (PriceTable).

The shipped table is bot/prices.toml (dated); `[usage] prices` names an owner's file in
the same format whose entries replace the shipped ones model by model. A model with no
price is still counted in tokens; its cost is None ("price unknown"), logged once.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MILLION = 1_000_000
# units a row can be billed in besides tokens
UNITS = ("seconds", "characters", "images", "sessions", "calls", "gb_days")
_SNAPSHOT = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class Usage:
    """What one request consumed, as the API reported it or, if `estimated`, as guessed.

    Token counts: `input_tokens` includes the cached, image and audio input tokens, which
    are billed at their own rates. `unit`/`units` carry the billing basis of requests not
    billed by tokens (audio seconds, speech characters, images, tool sessions/calls/GB-days);
    `variant` is the "quality size" of images, for per-image prices.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    image_input_tokens: int = 0
    audio_input_tokens: int = 0
    units: float = 0.0
    unit: str = ""
    variant: str = ""
    estimated: bool = False

    def __post_init__(self) -> None:
        if self.unit and self.unit not in UNITS:
            raise ValueError(f"unknown usage unit {self.unit!r}")


@dataclass(frozen=True, slots=True)
class Price:
    """One model's prices; None means "no price for that quantity"."""

    input: float | None = None
    cached_input: float | None = None
    output: float | None = None
    input_image: float | None = None
    cached_input_image: float | None = None
    input_audio: float | None = None
    per_minute: float | None = None
    characters: float | None = None
    per_image: dict[str, float] = field(default_factory=dict)
    per_unit: float | None = None

    def image_price(self, variant: str) -> float | None:
        """Per-image price of "quality size": exact, then quality, then size, then default."""
        words = variant.split()
        for key in (variant, *words, "default"):
            if key in self.per_image:
                return self.per_image[key]
        return None

    def cost(self, usage: Usage) -> float | None:
        """US dollars for one request; None when a quantity it used has no price."""
        if usage.unit == "seconds":
            return _times(self.per_minute, usage.units / 60)
        if usage.unit == "characters":
            return _times(self.characters, usage.units / MILLION)
        if usage.unit == "images":
            return _times(self.image_price(usage.variant), usage.units)
        if usage.unit:
            return _times(self.per_unit, usage.units)
        image = max(0, usage.image_input_tokens)
        audio = max(0, usage.audio_input_tokens)
        cached = max(0, usage.cached_tokens)
        text = max(0, usage.input_tokens - image - audio - cached)
        parts = [
            (text, self.input),
            (cached, self.cached_input if self.cached_input is not None else self.input),
            (image, self.input_image if self.input_image is not None else self.input),
            (audio, self.input_audio),
            (usage.output_tokens, self.output),
        ]
        total = 0.0
        for count, rate in parts:
            if count <= 0:
                continue
            if rate is None:
                return None
            total += count * rate / MILLION
        return total


def _times(rate: float | None, amount: float) -> float | None:
    if amount <= 0:
        return 0.0
    return None if rate is None else rate * amount


_FIELDS = {f.name for f in fields(Price)}


def _parse_price(name: str, raw: Any, where: str) -> Price:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: models.{name} must be a table")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FIELDS:
            raise ValueError(f"{where}: unknown field models.{name}.{key}")
        if key == "per_image":
            if not isinstance(value, dict) or not all(
                    _is_amount(v) for v in value.values()):
                raise ValueError(f"{where}: models.{name}.per_image must map names to "
                                 "prices")
            values[key] = {str(k): float(v) for k, v in value.items()}
            continue
        if not _is_amount(value):
            raise ValueError(f"{where}: models.{name}.{key} must be a number >= 0")
        values[key] = float(value)
    return Price(**values)


def _is_amount(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def parse_table(text: str, where: str) -> tuple[str, dict[str, Price]]:
    """(date, prices by model) from TOML text; ValueError names the bad entry."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{where} is not valid TOML: {e}") from None
    unknown = set(raw) - {"date", "source", "models"}
    if unknown:
        raise ValueError(f"{where}: unknown key {sorted(unknown)[0]}")
    models = raw.get("models", {})
    if not isinstance(models, dict):
        raise ValueError(f"{where}: [models] must be a table")
    return str(raw.get("date", "")), {
        str(name): _parse_price(str(name), value, where) for name, value in models.items()}


def load_override(path: str) -> dict[str, Price]:
    """An owner's price file (`[usage] prices`); ValueError says what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"file not found: {path}")
    return parse_table(p.read_text(encoding="utf-8"), path)[1]


class PriceTable:
    """Prices by model: the shipped table with an owner's overrides on top."""

    def __init__(self, override_path: str = "") -> None:
        text = resources.files("bot").joinpath("prices.toml").read_text(encoding="utf-8")
        self.date, self.prices = parse_table(text, "bot/prices.toml")
        if override_path:
            self.prices.update(load_override(override_path))
        self._unknown_logged: set[str] = set()

    def price(self, model: str) -> Price | None:
        """The entry of a model or of its base name (dated snapshots share it)."""
        found = self.prices.get(model)
        if found is None:
            found = self.prices.get(_SNAPSHOT.sub("", model))
        return found

    def cost(self, model: str, usage: Usage) -> float | None:
        """Dollars for a request, or None ("price unknown": logged once per model)."""
        price = self.price(model)
        cost = price.cost(usage) if price is not None else None
        if cost is None and model not in self._unknown_logged:
            self._unknown_logged.add(model)
            log.warning("no price for model %s (%s): its usage is counted in tokens and shown "
                        "as price unknown; add it to the [usage] prices file", model,
                        "not in the table" if price is None else "a quantity it used has "
                        "no price")
        return cost

    def estimate(self, model: str, usage: Usage) -> float:
        """Dollars to reserve against budgets before a request (0 when unknown, unlogged)."""
        price = self.price(model)
        cost = price.cost(usage) if price is not None else None
        return cost or 0.0
