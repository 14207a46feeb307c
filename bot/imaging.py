"""Image conversions for the Images API (/draw, /edit, /variation): pure Pillow functions.

The edit and variation endpoints are picky: PNG with an alpha channel, a mask exactly the
image's size whose fully transparent pixels mark the area to repaint, and for dall-e-2 a
square under 4 MB. Everything a user can send (JPEG photos, WebP, GIF, CMYK, 16-bit,
EXIF-rotated, palette images with transparency) is turned into that here, or refused
with a sentence saying why (decoding, and its refusals, are bot/media.py's
`decode_image`, shared with the vision path). Nothing here does I/O; callers run these in
a thread.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from bot.errors import UserError
from bot.media import FORMATS, MB, decode_image

DALLE2_LIMIT = 4 * MB  # the API wants strictly less than this
DALLE2_SIDES = (1024, 768, 512, 256)
EDIT_MAX_SIDE = 1536  # GPT-image models work at up to 1536 px; more only costs upload time
# a mask of another size is scaled when its aspect ratio is this close to the image's
MASK_ASPECT_TOLERANCE = 0.02


@dataclass(frozen=True, slots=True)
class EditInputs:
    """What the edit endpoint gets: PNG RGBA image, optional PNG mask of the same size."""

    image: bytes
    mask: bytes | None
    size: tuple[int, int]
    notes: tuple[str, ...] = ()


def open_image(data: bytes, *, max_side: int | None = None,
               min_short: int | None = None) -> Image.Image:
    """Decode the first frame, upright (EXIF orientation applied), or explain the refusal.

    JPEGs that will be downscaled anyway are decoded at a reduced scale (much faster for
    12-megapixel photos) that still leaves the long side >= `max_side`, or the short side
    >= `min_short`.
    """

    def needed(width: int, height: int) -> tuple[int, int]:
        if min_short:
            scale = min_short / min(width, height)
        elif max_side:
            scale = max_side / max(width, height)
        else:
            return width, height
        return math.ceil(width * min(scale, 1)), math.ceil(height * min(scale, 1))

    img, _ = decode_image(data, needed)
    upright = ImageOps.exif_transpose(img)
    return upright if upright is not None else img


def to_rgba(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGBA: 16-bit and float greys scaled, CMYK and palettes converted."""
    if img.mode == "RGBA":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = img.convert("I") if img.mode != "I" else img
        lo, hi = grey.getextrema()  # type: ignore[misc]
        scale = 255 / 65535 if hi > 255 else 1.0
        img = grey.point(lambda v: v * scale).convert("L")  # type: ignore[arg-type,operator]
    elif img.mode == "F":
        lo, hi = img.getextrema()  # type: ignore[misc]
        span = (hi - lo) or 1.0
        img = img.point(lambda v: (v - lo) * 255 / span).convert("L")  # type: ignore[arg-type,operator]
    elif img.mode == "P" and "transparency" not in img.info:
        img = img.convert("RGB")
    try:
        return img.convert("RGBA")
    except ValueError:  # modes without a direct path (LAB, HSV...)
        return img.convert("RGB").convert("RGBA")


def encode_png(img: Image.Image) -> bytes:
    """PNG bytes (fast compression: the API does not care, users wait less)."""
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=3)
    return buf.getvalue()


def has_transparent_area(img: Image.Image) -> bool:
    """Whether an RGBA image has fully transparent pixels (the area dall-e repaints)."""
    alpha = img.getchannel("A")
    lo, _hi = alpha.getextrema()  # type: ignore[misc]
    return bool(lo == 0)


def _alpha_mask(alpha: Image.Image) -> Image.Image:
    """An RGBA mask: black, transparent where `alpha` is below half (the part to edit)."""
    binary = alpha.point(lambda a: 0 if a < 128 else 255)
    mask = Image.new("RGBA", alpha.size, (0, 0, 0, 255))
    mask.putalpha(binary)
    return mask


def mask_from_image(mask: Image.Image) -> Image.Image:
    """A user's mask -> RGBA mask: its transparency if it has any, else white = edit.

    Photos (a Telegram photo is always JPEG) have no alpha channel, so a mask sent as a
    photo is read as a drawing: light areas are repainted, dark ones kept.
    """
    rgba = to_rgba(mask)
    if has_transparent_area(rgba):
        return _alpha_mask(rgba.getchannel("A"))
    light = rgba.convert("L").point(lambda v: 0 if v >= 128 else 255)
    return _alpha_mask(light)


def fit_within(img: Image.Image, side: int) -> Image.Image:
    """Downscale (never up) so both sides are at most `side`."""
    if max(img.size) <= side:
        return img
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def center_square(img: Image.Image) -> Image.Image:
    """The largest centred square (dall-e-2 only takes squares)."""
    side = min(img.size)
    left = (img.width - side) // 2
    top = (img.height - side) // 2
    return img.crop((left, top, left + side, top + side))


def _match_mask(mask: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, bool]:
    """Scale a mask of the same shape to the image's size; refuse a different shape."""
    if mask.size == size:
        return mask, False
    mask_ratio = mask.width / mask.height
    image_ratio = size[0] / size[1]
    if abs(mask_ratio / image_ratio - 1) > MASK_ASPECT_TOLERANCE:
        raise UserError(
            f"The mask ({mask.width}x{mask.height}) does not have the image's shape "
            f"({size[0]}x{size[1]}). Draw the mask on a copy of the image, or send a PNG "
            "whose transparent area marks what to change."
        )
    alpha = mask.getchannel("A").resize(size, Image.Resampling.BILINEAR)
    return _alpha_mask(alpha), True


def prepare_edit(image: bytes, mask: bytes | None = None, *, dalle2: bool = False,
                 max_side: int = EDIT_MAX_SIDE) -> EditInputs:
    """Image (+ mask) -> what the edit endpoint accepts.

    The mask is the second image when given, else the image's own transparent area when
    it has one. GPT-image models get both at most `max_side` px; dall-e-2 gets a centred
    square of at most 1024 px, made smaller until the PNG is under 4 MB.
    """
    notes: list[str] = []
    decode = {"min_short": DALLE2_SIDES[0]} if dalle2 else {"max_side": max_side}
    img = to_rgba(open_image(image, **decode))
    mask_img: Image.Image | None = None
    if mask is not None:
        mask_img = mask_from_image(open_image(mask, **decode))
        mask_img, scaled = _match_mask(mask_img, img.size)
        if scaled:
            notes.append("the mask was scaled to the image's size")
    elif has_transparent_area(img):
        mask_img = _alpha_mask(img.getchannel("A"))
        notes.append("the transparent area is what gets repainted")
    if dalle2:
        if img.width != img.height:
            img = center_square(img)
            mask_img = center_square(mask_img) if mask_img is not None else None
            notes.append("cropped to a centred square (dall-e-2 only edits squares)")
        for side in DALLE2_SIDES:
            small = fit_within(img, side)
            data = encode_png(small)
            if len(data) < DALLE2_LIMIT:
                break
        else:
            raise UserError("That image is too detailed to fit dall-e-2's 4 MB limit.")
        if small.size != img.size and mask_img is not None:
            mask_img = mask_img.resize(small.size, Image.Resampling.NEAREST)
        img = small
    else:
        img = fit_within(img, max_side)
        if mask_img is not None and mask_img.size != img.size:
            mask_img = mask_img.resize(img.size, Image.Resampling.NEAREST)
        data = encode_png(img)
    mask_data = encode_png(mask_img) if mask_img is not None else None
    return EditInputs(data, mask_data, img.size, tuple(notes))


def prepare_variation(image: bytes) -> bytes:
    """Image -> dall-e-2 variation input: square PNG under 4 MB."""
    return prepare_edit(image, None, dalle2=True).image


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the header only; None when unreadable."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            return img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
