"""The /usage picture: a PNG bar chart of the last 30 days, stacked by feature (Pillow).

Drawn with Pillow's built-in scalable font so it looks the same in a slim container as on
a desktop. Bars are dollars per day; when nothing has a price (a local server), they are
requests per day instead, and the axis says so.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass
from datetime import date

from PIL import Image, ImageDraw, ImageFont

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies
COLOURS = {
    "chat": (0, 114, 178), "vision": (86, 180, 233), "images": (230, 159, 0),
    "voice_in": (0, 158, 115), "speech_out": (204, 121, 167), "assistant": (213, 94, 0),
    "tools": (240, 228, 66), "embeddings": (110, 110, 110),
}
WIDTH, HEIGHT = 960, 540
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 90, 30, 70, 120
INK = (33, 33, 33)
GRID = (225, 225, 225)
WHITE = (255, 255, 255)


@functools.cache
def _palette() -> Image.Image:
    """Every colour the chart uses plus an ink-to-white ramp for smooth text edges: the PNG
    is saved as a palette image, a third of the bytes to filter and compress."""
    colours = [WHITE, INK, GRID, *COLOURS.values()]
    colours += [tuple(round(i + (255 - i) * k / 15) for i in INK) for k in range(1, 15)]
    flat = [c for colour in colours for c in colour]
    pal = Image.new("P", (1, 1))
    pal.putpalette(flat + [0] * (768 - len(flat)))
    return pal


@dataclass(frozen=True, slots=True)
class Series:
    """Values per day (oldest first) for one feature."""

    feature: str
    label: str
    values: list[float]


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def nice_step(top: float, ticks: int = 5) -> float:
    """A round axis step (1, 2 or 5 times a power of ten) giving about `ticks` lines."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _money(value: float, step: float) -> str:
    if step >= 1:
        return f"${value:,.0f}"
    decimals = min(6, max(2, 1 - math.floor(math.log10(step))))
    text = f"{value:.{decimals}f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def render(days: list[str], series: list[Series], *, title: str, dollars: bool = True,
           timezone: str = "UTC") -> bytes:
    """PNG bytes of a stacked bar chart: one bar per day, one colour per feature."""
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    title_font, font, small = _font(22), _font(15), _font(13)
    draw.text((MARGIN_LEFT, 18), title, fill=INK, font=title_font)
    left, top = MARGIN_LEFT, MARGIN_TOP
    right, bottom = WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM
    totals = [sum(s.values[i] for s in series) for i in range(len(days))]
    peak = max(totals, default=0.0)
    step = nice_step(peak)
    ceiling = step * max(1, math.ceil(peak / step - 1e-9))
    # horizontal grid and the y axis labels
    lines = round(ceiling / step)
    for k in range(lines + 1):
        value = k * step
        y = bottom - (bottom - top) * value / ceiling
        draw.line((left, y, right, y), fill=GRID, width=1)
        label = _money(value, step) if dollars else f"{value:,.0f}"
        w = draw.textlength(label, font=small)
        draw.text((left - 8 - w, y - 8), label, fill=INK, font=small)
    draw.line((left, top, left, bottom), fill=INK, width=2)
    draw.line((left, bottom, right, bottom), fill=INK, width=2)
    # bars
    n = max(1, len(days))
    slot = (right - left) / n
    bar = max(2.0, slot * 0.72)
    for i in range(len(days)):
        x0 = left + i * slot + (slot - bar) / 2
        base = float(bottom)
        for s in series:
            value = s.values[i]
            if value <= 0:
                continue
            h = (bottom - top) * value / ceiling
            draw.rectangle((x0, base - h, x0 + bar, base), fill=COLOURS.get(s.feature, INK))
            base -= h
    # x labels: every 5th day and the last one
    for i, day in enumerate(days):
        if i % 5 and i != len(days) - 1:
            continue
        d = date.fromisoformat(day)
        label = f"{d:%b} {d.day}"
        x = left + i * slot + slot / 2
        draw.line((x, bottom, x, bottom + 5), fill=INK, width=1)
        w = draw.textlength(label, font=small)
        draw.text((x - w / 2, bottom + 8), label, fill=INK, font=small)
    # axis titles
    x_title = f"Day ({timezone})"
    draw.text(((left + right) / 2 - draw.textlength(x_title, font=font) / 2, bottom + 30),
              x_title, fill=INK, font=font)
    y_title = "US dollars per day" if dollars else "Requests per day"
    y_img = Image.new("RGBA", (int(draw.textlength(y_title, font=font)) + 4, 22), (0, 0, 0, 0))
    ImageDraw.Draw(y_img).text((2, 0), y_title, fill=INK, font=font)
    y_img = y_img.rotate(90, expand=True)
    img.paste(y_img, (8, int((top + bottom) / 2 - y_img.height / 2)), y_img)
    # legend: every feature with something in the period
    x, y = float(left), HEIGHT - 40
    shown = [s for s in series if any(v > 0 for v in s.values)] or series[:1]
    for s in shown:
        draw.rectangle((x, y + 2, x + 16, y + 18), fill=COLOURS.get(s.feature, INK))
        draw.text((x + 22, y + 1), s.label, fill=INK, font=font)
        x += 22 + draw.textlength(s.label, font=font) + 26
    out = io.BytesIO()
    img.quantize(palette=_palette(), dither=Image.Dither.NONE).save(out, "PNG", compress_level=1)
    return out.getvalue()
