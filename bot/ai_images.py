"""What each Images API model family accepts: sizes, qualities, counts, endpoints, fields.

GPT-image (gpt-image-*, chatgpt-image-*), dall-e-3 and dall-e-2 follow OpenAI's API
reference; any other name (a model on a compatible server) is not second-guessed: any
WxH or "auto", every quality word, up to 10 images, every endpoint, and the server says
no if it disagrees. Requests are checked here before they are sent, so a user hears
which options the model takes instead of an API error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot.errors import UserError

GPT_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
DALLE3_SIZES = ("1024x1024", "1792x1024", "1024x1792")
DALLE2_SIZES = ("256x256", "512x512", "1024x1024")
GPT_QUALITIES = ("low", "medium", "high", "auto")
DALLE3_QUALITIES = ("standard", "hd")
ALL_SIZES = ("1024x1024", "1536x1024", "1024x1536", "1792x1024", "1024x1792", "512x512",
             "256x256", "auto")
ALL_QUALITIES = ("low", "medium", "high", "auto", "standard", "hd")
SHAPES = ("square", "landscape", "portrait")
MAX_API_COUNT = 10

SIZE_RE = re.compile(r"^\d{2,5}x\d{2,5}$")


@dataclass(frozen=True, slots=True)
class Family:
    """What an image model accepts: sizes, qualities, count, which endpoints."""

    name: str
    sizes: tuple[str, ...]
    qualities: tuple[str, ...]
    max_count: int
    edits: bool
    variations: bool
    square_inputs: bool = False
    flexible_sizes: bool = False
    shapes: tuple[str, str, str] = ("1024x1024", "1536x1024", "1024x1536")
    # dall-e models answer with URLs unless asked for base64; GPT-image rejects the field
    asks_base64: bool = False


def family_of(model: str) -> Family:
    """The option rules of a configured image model (unknown names are not second-guessed)."""
    name = model.lower()
    if name.startswith(("gpt-image", "chatgpt-image")):
        return Family("gpt-image", GPT_SIZES, GPT_QUALITIES, 4, edits=True, variations=False,
                      flexible_sizes=name.startswith("gpt-image-2"))
    if name.startswith("dall-e-3"):
        return Family("dall-e-3", DALLE3_SIZES, DALLE3_QUALITIES, 1, edits=False,
                      variations=False, shapes=("1024x1024", "1792x1024", "1024x1792"),
                      asks_base64=True)
    if name.startswith("dall-e-2"):
        return Family("dall-e-2", DALLE2_SIZES, ("standard",), 10, edits=True, variations=True,
                      square_inputs=True, shapes=("1024x1024", "", ""), asks_base64=True)
    return Family("other", (), ALL_QUALITIES, MAX_API_COUNT, edits=True, variations=True)


def _flexible_size_ok(size: str) -> bool:
    """gpt-image-2 also draws any WxH with sides divisible by 16, up to 3840x2160 and 3:1."""
    if not SIZE_RE.match(size):
        return False
    w, h = (int(x) for x in size.split("x"))
    return (w % 16 == 0 and h % 16 == 0 and max(w, h) <= 3 * min(w, h)
            and max(w, h) <= 3840 and w * h <= 3840 * 2160)


def check_size(family: Family, model: str, size: str) -> str:
    """A size (or square/landscape/portrait) valid for the model, else a reply naming them."""
    if size in SHAPES and family.shapes[SHAPES.index(size)]:
        return family.shapes[SHAPES.index(size)]
    if not family.sizes:  # an unknown model on a compatible server: its own business
        if size == "auto" or SIZE_RE.match(size):
            return size
    elif size in family.sizes or (family.flexible_sizes and _flexible_size_ok(size)):
        return size
    valid = ", ".join(family.sizes) if family.sizes else "WIDTHxHEIGHT, auto"
    extra = (" (or any WxH with sides divisible by 16, up to 3840x2160)"
             if family.flexible_sizes else "")
    raise UserError(f"`{size}` is not a size {model} can draw. Valid sizes: {valid}{extra}.")


def check_quality(family: Family, model: str, quality: str) -> str:
    """A quality valid for the model, or a reply naming the valid ones."""
    if quality in family.qualities:
        return quality
    raise UserError(f"`{quality}` is not a quality {model} offers. Valid qualities: "
                    f"{', '.join(family.qualities)}.")


def check_count(family: Family, model: str, limit: int, count: int) -> int:
    """1 to the model's own limit (lowered to `limit`, [images] max_count), or a reply."""
    top = max(1, min(family.max_count, limit))
    if 1 <= count <= top:
        return count
    if top == 1:
        raise UserError(f"{model} makes one image at a time.")
    raise UserError(f"{model} makes 1 to {top} images at a time here.")


def check_edits(family: Family, model: str, what: str) -> None:
    """Refuse /edit and /variation on models without the edit endpoint (dall-e-3)."""
    if not family.edits:
        raise UserError(f"{model} cannot {what}. An admin can set `[models] image` to "
                        "gpt-image-2 (or dall-e-2) in config.toml.")


def request_fields(model: str, *, size: str | None, quality: str | None,
                   **fields: Any) -> dict[str, Any]:
    """Request fields common to generations and edits (None = the API's default)."""
    kwargs: dict[str, Any] = {"model": model, **fields}
    if size:
        kwargs["size"] = size
    if quality:
        kwargs["quality"] = quality
    if family_of(model).asks_base64:
        kwargs["response_format"] = "b64_json"
    return kwargs
