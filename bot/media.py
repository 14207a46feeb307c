"""Image preparation for the vision model: decode, orient, convert, downscale, encode.

Follows OpenAI's image guide: `low` detail fits 512x512; `high` (and `auto`) keeps the
short side <= 768 px and the long side <= 2000 px. Whatever arrives (EXIF-rotated photos,
CMYK, 16-bit, palette or transparent images, animated GIF/WebP) leaves as an 8-bit RGB
(or grayscale) JPEG, or a PNG for lossless sources, with all metadata stripped, ready to
go to the model as a base64 data URL.

`decode_image` is the one decoder for every image a user sends (here for the vision model,
in bot/imaging.py for the Images API): one list of formats, one pixel cap, one set of
refusal texts. JPEGs are decoded with libjpeg's DCT scaling (`draft`), so a 12-megapixel
photo is never fully decoded; work runs on a small dedicated thread pool, which bounds how
many images are being decoded at once (and so peak memory) however many arrive together.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from PIL import Image, UnidentifiedImageError

from bot.errors import UserError
from bot.events import Attachment

log = logging.getLogger(__name__)

DETAILS = ("low", "high", "auto")
LOW_BOX = 512
HIGH_SHORT = 768
HIGH_LONG = 2000
JPEG_QUALITY = 85
# a PNG larger than this after downscaling is re-encoded as JPEG (photos saved as PNG)
PNG_LIMIT = 1024 * 1024
MB = 1024 * 1024
# the most pixels we decode (60 MP RGBA is 240 MB); JPEGs are decoded at 1/2..1/8 scale when
# less is needed, so larger photos still open (up to Pillow's own bomb limit, ~179 MP)
MAX_PIXELS = 60_000_000
PREP_WORKERS = max(1, min(4, os.cpu_count() or 1))
_LOSSLESS = {"PNG", "GIF", "BMP", "TIFF"}
# formats we decode; never EPS/PS (Ghostscript) or other exotic plugins on user input
Image.init()  # register every plugin so that the list below can be checked against them
FORMATS = tuple(f for f in ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF")
                if f in Image.OPEN)

NOT_AN_IMAGE = ("I can't read that file as an image. Send a JPEG, PNG, GIF or WebP "
                "picture.")
DAMAGED = "That image seems to be damaged or incomplete, so I couldn't open it."
TOO_MANY_PIXELS = ("That image has too many pixels for me to open. Send a smaller copy (up to "
                   f"{MAX_PIXELS // 1_000_000} megapixels).")

# EXIF orientation -> the transpose that shows the image upright
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_pool = ThreadPoolExecutor(max_workers=PREP_WORKERS, thread_name_prefix="image-prep")


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """An image ready for the model: encoded bytes, their size, and the detail to ask for."""

    data: bytes
    mime: str
    width: int
    height: int
    detail: str = "auto"

    @property
    def tokens(self) -> int:
        """What the model will charge for it (OpenAI's formula)."""
        return image_tokens(self.width, self.height, self.detail)

    def data_url(self) -> str:
        """The base64 data URL the chat API accepts (never an http URL)."""
        return data_url(self.data, self.mime)

    def part(self) -> dict[str, object]:
        """The `image_url` content part of a chat message."""
        return image_part(self.data, self.mime, self.detail)


def data_url(data: bytes, mime: str) -> str:
    """`data:<mime>;base64,...` for the chat API."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_part(data: bytes, mime: str, detail: str) -> dict[str, object]:
    """A chat content part carrying one image with its detail level."""
    return {"type": "image_url", "image_url": {"url": data_url(data, mime), "detail": detail}}


def target_size(width: int, height: int, detail: str) -> tuple[int, int]:
    """The size to send: `low` fits 512x512; `high`/`auto` short <= 768, long <= 2000.

    Images are only ever made smaller, and the aspect ratio is kept.
    """
    if width <= 0 or height <= 0:
        raise ValueError("image size must be positive")
    if detail == "low":
        scale = min(1.0, LOW_BOX / width, LOW_BOX / height)
        bound_w = bound_h = LOW_BOX
    else:
        scale = min(1.0, HIGH_SHORT / min(width, height), HIGH_LONG / max(width, height))
        bound_w = HIGH_SHORT if width <= height else HIGH_LONG
        bound_h = HIGH_SHORT if height < width else HIGH_LONG
    if scale >= 1.0:
        return width, height
    w = min(max(1, round(width * scale)), bound_w)
    h = min(max(1, round(height * scale)), bound_h)
    return w, h


def image_tokens(width: int, height: int, detail: str) -> int:
    """OpenAI's image token cost: low = 85; high = 85 + 170 per 512 px tile.

    For high (and auto, counted as high so budgets are never exceeded) the image is first
    scaled to fit 2048x2048, then so that its short side is at most 768 px.
    """
    if detail == "low":
        return 85
    w, h = float(width), float(height)
    if max(w, h) > 2048:
        s = 2048 / max(w, h)
        w, h = w * s, h * s
    if min(w, h) > 768:
        s = 768 / min(w, h)
        w, h = w * s, h * s
    tiles = math.ceil(w / 512) * math.ceil(h / 512)
    return 85 + 170 * tiles


def sniff_mime(data: bytes) -> str | None:
    """The image MIME type from magic bytes, or None when it is not a known image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


async def read_image(attachment: Attachment, limit_mb: int) -> bytes:
    """Download an image within `limit_mb` ([vision] max_image_mb) and the platform's own
    limit; Attachment.read is the one size check (declared size, then the bytes)."""
    limit = min(attachment.max_size, limit_mb * MB)
    return await replace(attachment, max_size=limit).read()


def decode_image(
    data: bytes, needed: Callable[[int, int], tuple[int, int]] | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """The first frame of any image we accept, decoded in its stored orientation, and its
    full size.

    `needed(width, height)` is the smallest size the caller will use; JPEGs are then decoded
    at a reduced scale that is still at least that large. Raises UserError with the reason
    for non-images, damaged files and images with more than MAX_PIXELS to decode.
    """
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        # a known signature that Pillow cannot parse is a broken image, not another format
        raise UserError(DAMAGED if sniff_mime(data) else NOT_AN_IMAGE) from None
    except Image.DecompressionBombError:
        raise UserError(TOO_MANY_PIXELS) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        log.info("image open failed: %s", type(e).__name__)
        raise UserError(DAMAGED) from None
    full = img.size
    try:
        if needed is not None and img.format in ("JPEG", "MPO"):
            img.draft(None, needed(*img.size))  # libjpeg scales by 1/2, 1/4 or 1/8
        if img.width * img.height > MAX_PIXELS:
            raise UserError(TOO_MANY_PIXELS)
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animated GIF/WebP/APNG: the first frame
        img.load()
    except UserError:
        img.close()
        raise
    except Image.DecompressionBombError:
        img.close()
        raise UserError(TOO_MANY_PIXELS) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        log.info("image decode failed (%s): %s", img.format, type(e).__name__)
        img.close()
        raise UserError(DAMAGED) from None
    return img, full


def prepare_image(data: bytes, detail: str = "auto") -> PreparedImage:
    """Decode any image we accept and return the downscaled copy for the model.

    Raises UserError with a short explanation for non-images, damaged files and images
    with more pixels than we are willing to decode.
    """
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}")
    # the target is the same whether the image is stored rotated or not (only swapped)
    img, full = decode_image(data, lambda w, h: target_size(w, h, detail))
    with img:
        try:
            return _prepare(img, full, detail)
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
            log.info("image conversion failed (%s): %s", img.format, type(e).__name__)
            raise UserError(DAMAGED) from None


async def prepare_image_async(data: bytes, detail: str = "auto") -> PreparedImage:
    """prepare_image on the bounded image thread pool (keeps the event loop free)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, prepare_image, data, detail)


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # broken EXIF blocks are common; they just mean "upright"
        return 1
    return value if isinstance(value, int) and value in _ORIENT else 1


def _prepare(img: Image.Image, full: tuple[int, int], detail: str) -> PreparedImage:
    """A decoded image (of `full` size before DCT scaling) -> upright, 8-bit, downscaled
    for `detail`, encoded."""
    fmt = img.format or ""
    orientation = _orientation(img)
    swapped = orientation in (5, 6, 7, 8)
    width, height = full
    upright = (height, width) if swapped else (width, height)
    tw, th = target_size(*upright, detail)
    # target in the stored orientation (resize first, rotate the small result)
    sw, sh = (th, tw) if swapped else (tw, th)
    work, had_alpha = _normalize(img)
    if work.size != (sw, sh):
        work = work.resize((sw, sh), Image.Resampling.BICUBIC, reducing_gap=2.0)
    if orientation in _ORIENT:
        work = work.transpose(_ORIENT[orientation])
    if work.mode in ("RGBA", "LA"):
        work = _on_white(work)
    lossless = fmt in _LOSSLESS or (fmt == "WEBP" and had_alpha)
    return _encode(work, detail, lossless)


def _normalize(img: Image.Image) -> tuple[Image.Image, bool]:
    """Any mode -> L, RGB, LA or RGBA with 8 bits per channel; reports real transparency."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (or 32-bit integer) samples: scale to 8 bits instead of clipping
        as_int = img if mode == "I" else img.convert("I")
        hi = float(as_int.getextrema()[1])  # type: ignore[arg-type]
        scale = 1 / 257  # 16-bit data
        if mode == "I" and not 255 < hi <= 65535:
            scale = 1.0 if hi <= 255 else 255 / hi
        return as_int.point(lambda v: v * scale).convert("L"), False
    if mode == "F":
        lo, hi = img.getextrema()
        span = float(hi) - float(lo) or 1.0
        return img.point(lambda v: (v - lo) * 255 / span).convert("L"), False
    if mode == "CMYK":
        return _cmyk_to_rgb(img), False
    if mode == "1":
        return img.convert("L"), False
    transparent = "transparency" in img.info
    if mode in ("P", "PA") or (mode in ("L", "RGB") and transparent):
        img = img.convert("RGBA")
        mode = "RGBA"
    elif mode in ("RGBa", "La"):
        img = img.convert("RGBA" if mode == "RGBa" else "LA")
        mode = img.mode
    if mode in ("RGBA", "LA"):
        alpha = img.getchannel("A")
        if alpha.getextrema()[0] >= 255:
            return img.convert("RGB" if mode == "RGBA" else "L"), False
        return img, True
    if mode in ("L", "RGB"):
        return img, False
    return img.convert("RGB"), False


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    """CMYK -> sRGB through the embedded ICC profile when there is one."""
    icc = img.info.get("icc_profile")
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
            if out is not None:
                return out
        except Exception as e:  # a broken profile: the plain conversion is still right-ish
            log.info("CMYK profile conversion failed: %s", type(e).__name__)
    return img.convert("RGB")


def _on_white(img: Image.Image) -> Image.Image:
    """Composite a transparent image on white (what chat apps show on a light theme)."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def _encode(img: Image.Image, detail: str, lossless: bool) -> PreparedImage:
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    if lossless:
        buf = io.BytesIO()
        img.save(buf, "PNG", compress_level=6)
        if buf.tell() <= PNG_LIMIT:
            return PreparedImage(buf.getvalue(), "image/png", img.width, img.height, detail)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=JPEG_QUALITY)
    return PreparedImage(buf.getvalue(), "image/jpeg", img.width, img.height, detail)


def fits(width: int, height: int, detail: str) -> bool:
    """Whether an already prepared image is within the bounds for `detail`."""
    return target_size(width, height, detail) == (width, height)

