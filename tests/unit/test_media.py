"""bot/media.py: sizes, token costs, and conversion of awkward inputs, on real encoded files.

The image generators here are shared with tests/test_vision.py.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from bot import media
from bot.ai import images_unsupported
from bot.errors import UserError
from bot.media import (
    PreparedImage,
    data_url,
    fits,
    image_tokens,
    prepare_image,
    sniff_mime,
    target_size,
)

# --------------------------------------------------------------------------- generators


def jpeg(width: int = 640, height: int = 480, colour: tuple[int, int, int] = (200, 30, 30),
         *, orientation: int | None = None, quality: int = 90) -> bytes:
    """A JPEG of one colour with a black square marking its top-left corner."""
    img = Image.new("RGB", (width, height), colour)
    img.paste((0, 0, 0), (0, 0, max(1, width // 4), max(1, height // 4)))
    buf = io.BytesIO()
    if orientation is None:
        img.save(buf, "JPEG", quality=quality)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def noisy_jpeg(width: int, height: int, seed: int = 1) -> bytes:
    """A photo-like JPEG (gradient + noise) that does not compress to nothing."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 255 // (width + height)],
                    -1).astype(np.int16)
    arr = np.clip(base + rng.integers(-30, 30, size=(height, width, 3)), 0, 255)
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, "JPEG", quality=88)
    return buf.getvalue()


def cmyk_jpeg(width: int = 200, height: int = 100) -> bytes:
    """A CMYK JPEG that is pure red (C=0, M=255, Y=255, K=0)."""
    img = Image.new("CMYK", (width, height), (0, 255, 255, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def gray16_png(width: int = 120, height: int = 80, value: int = 32768) -> bytes:
    """A 16-bit grayscale PNG at mid-gray (clipping to 8 bits would make it white)."""
    arr = np.full((height, width), value, dtype=np.uint16)
    img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    return buf.getvalue()


def transparent_png(width: int = 100, height: int = 100) -> bytes:
    """Fully transparent except an opaque blue left half (transparent pixels are black)."""
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    img.paste((0, 0, 255, 255), (0, 0, width // 2, height))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def animated_gif(width: int = 60, height: int = 40) -> bytes:
    """Three frames: green first, then red and blue."""
    frames = [Image.new("RGB", (width, height), c)
              for c in ((0, 200, 0), (200, 0, 0), (0, 0, 200))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def animated_webp(width: int = 60, height: int = 40) -> bytes:
    """Two frames: yellow first, then blue."""
    frames = [Image.new("RGB", (width, height), c) for c in ((230, 230, 0), (0, 0, 230))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100,
                   lossless=True)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    """Open encoded bytes fully."""
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def from_data_url(url: str) -> tuple[str, Image.Image]:
    """(mime, image) of a base64 data URL."""
    header, _, payload = url.partition(",")
    assert header.startswith("data:") and header.endswith(";base64"), header[:40]
    return header[5:-7], decode(base64.b64decode(payload))


def near(pixel: object, colour: tuple[int, ...], tol: int = 24) -> bool:
    """Colour equality within JPEG tolerance."""
    values = (pixel,) if isinstance(pixel, int) else tuple(pixel)  # type: ignore[arg-type]
    return all(abs(a - b) <= tol for a, b in zip(values, colour, strict=False))


# --------------------------------------------------------------------------- sizes, tokens


@pytest.mark.parametrize(("size", "detail", "expected"), [
    ((4000, 3000), "low", (512, 384)),
    ((3000, 4000), "low", (384, 512)),
    ((4000, 3000), "high", (1024, 768)),
    ((4000, 3000), "auto", (1024, 768)),
    ((6000, 1000), "high", (2000, 333)),      # a panorama: the long side binds
    ((700, 500), "high", (700, 500)),         # never upscaled
    ((300, 200), "low", (300, 200)),
    ((1, 10000), "high", (1, 2000)),
])
def test_target_size(size: tuple[int, int], detail: str, expected: tuple[int, int]) -> None:
    assert target_size(*size, detail) == expected
    w, h = expected
    if detail == "low":
        assert w <= 512 and h <= 512
    else:
        assert min(w, h) <= 768 and max(w, h) <= 2000


@pytest.mark.parametrize(("size", "detail", "tokens"), [
    ((1024, 1024), "high", 765),      # OpenAI's worked examples
    ((2048, 4096), "high", 1105),
    ((4096, 8192), "low", 85),
    ((512, 512), "high", 255),
    ((768, 1152), "auto", 85 + 170 * 6),
])
def test_image_tokens(size: tuple[int, int], detail: str, tokens: int) -> None:
    assert image_tokens(*size, detail) == tokens


def test_fits_and_data_url() -> None:
    assert fits(512, 300, "low") and not fits(600, 300, "low")
    assert fits(768, 2000, "high") and not fits(800, 900, "high")
    assert data_url(b"abc", "image/png") == "data:image/png;base64,YWJj"
    img = PreparedImage(b"abc", "image/jpeg", 10, 10, "low")
    assert img.part() == {"type": "image_url", "image_url": {
        "url": "data:image/jpeg;base64,YWJj", "detail": "low"}}
    assert img.tokens == 85


def test_sniff_mime() -> None:
    assert sniff_mime(jpeg(10, 10)) == "image/jpeg"
    assert sniff_mime(transparent_png()) == "image/png"
    assert sniff_mime(animated_gif()) == "image/gif"
    assert sniff_mime(animated_webp()) == "image/webp"
    assert sniff_mime(b"hello") is None


# --------------------------------------------------------------------------- conversion


def test_large_photo_is_downscaled_per_detail() -> None:
    data = noisy_jpeg(4000, 3000)
    high = prepare_image(data, "high")
    low = prepare_image(data, "low")
    assert (high.width, high.height) == (1024, 768) and high.mime == "image/jpeg"
    assert (low.width, low.height) == (512, 384)
    assert decode(high.data).size == (1024, 768)
    assert decode(low.data).size == (512, 384)
    assert len(high.data) < len(data) / 10


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_applied(orientation: int) -> None:
    # stored 400x200 with the black marker top-left; shown rotated per the tag
    img = decode(prepare_image(jpeg(400, 200, (30, 200, 30), orientation=orientation)).data)
    assert img.size == ((400, 200) if orientation == 3 else (200, 400))
    corners = {"tl": (5, 5), "tr": (img.width - 6, 5), "bl": (5, img.height - 6),
               "br": (img.width - 6, img.height - 6)}
    black = {3: "br", 6: "tr", 8: "bl"}[orientation]
    for name, xy in corners.items():
        assert near(img.getpixel(xy), (0, 0, 0)) == (name == black), (name, img.getpixel(xy))
    assert "exif" not in img.info  # metadata (location!) is stripped


def test_cmyk_becomes_rgb() -> None:
    out = prepare_image(cmyk_jpeg())
    img = decode(out.data)
    assert img.mode == "RGB" and out.mime == "image/jpeg"
    assert near(img.getpixel((50, 50)), (255, 0, 0), tol=40)


def test_sixteen_bit_scaled_not_clipped() -> None:
    out = prepare_image(gray16_png())
    img = decode(out.data)
    assert img.mode == "L"
    assert abs(img.getpixel((10, 10)) - 128) <= 2  # clipping would give 255


def test_transparency_composited_on_white_and_kept_png() -> None:
    out = prepare_image(transparent_png())
    img = decode(out.data)
    assert out.mime == "image/png" and img.mode == "RGB"
    assert near(img.getpixel((10, 50)), (0, 0, 255), tol=2)
    assert near(img.getpixel((90, 50)), (255, 255, 255), tol=2)  # not black


def test_palette_png_with_transparency() -> None:
    img = Image.new("P", (40, 40), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(0, (0, 0, 20, 40))
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=0)
    out = decode(prepare_image(buf.getvalue()).data)
    assert near(out.getpixel((5, 5)), (255, 255, 255), tol=2)
    assert near(out.getpixel((30, 5)), (255, 0, 0), tol=2)


@pytest.mark.parametrize(("maker", "colour"), [(animated_gif, (0, 200, 0)),
                                               (animated_webp, (230, 230, 0))])
def test_animation_first_frame(maker: object, colour: tuple[int, int, int]) -> None:
    out = prepare_image(maker())  # type: ignore[operator]
    img = decode(out.data)
    assert img.mode == "RGB"
    assert near(img.getpixel((10, 10)), colour, tol=8)


def test_opaque_png_stays_png_large_png_photo_becomes_jpeg() -> None:
    small = Image.new("RGB", (300, 200), (10, 20, 30))
    buf = io.BytesIO()
    small.save(buf, "PNG")
    assert prepare_image(buf.getvalue()).mime == "image/png"
    noisy = decode(noisy_jpeg(1600, 1200))
    buf = io.BytesIO()
    noisy.save(buf, "PNG")
    out = prepare_image(buf.getvalue(), "high")
    assert out.mime == "image/jpeg" and (out.width, out.height) == (1024, 768)


@pytest.mark.parametrize(("data", "message"), [
    (b"this is not an image at all", "can't read that file as an image"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "can't read that file as an image"),
    (jpeg(800, 600)[:700], "damaged or incomplete"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "damaged or incomplete"),
])
def test_bad_inputs_explained(data: bytes, message: str) -> None:
    with pytest.raises(UserError, match=message):
        prepare_image(data)


def test_postscript_is_never_decoded() -> None:
    """EPS would run Ghostscript on user input: it is not an image format we accept."""
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "EPS")
    with pytest.raises(UserError, match="can't read that file as an image"):
        prepare_image(buf.getvalue())


def test_pixel_cap_counts_what_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A JPEG over the cap still opens when libjpeg can decode it scaled down; a PNG
    (always decoded in full) of the same size is refused."""
    monkeypatch.setattr(media, "MAX_PIXELS", 1_000_000)
    out = prepare_image(jpeg(4000, 2000), "low")
    assert (out.width, out.height) == (512, 256)
    buf = io.BytesIO()
    Image.new("RGB", (4000, 2000)).save(buf, "PNG")
    with pytest.raises(UserError, match="too many pixels"):
        prepare_image(buf.getvalue(), "low")


def test_unknown_detail_is_a_bug() -> None:
    with pytest.raises(ValueError):
        prepare_image(jpeg(), "ultra")


@pytest.mark.parametrize(("message", "expected"), [
    ("Invalid content type. image_url is only supported by certain models.", True),
    ("Model does not support images. Please use a model that does.", True),
    ("image input is not supported - hint: you may need to provide the mmproj", True),
    ("llava is not a multimodal model", True),
    ("You uploaded an unsupported image. Please make sure your image has of one the "
     "following formats: ['png', 'jpeg', 'gif', 'webp'].", False),
    ("Invalid image URL: 'messages[1].content[1].image_url.url'. Expected a base64-encoded "
     "data URL with an image MIME type (e.g. 'data:image/png;base64,aW1n'), but got "
     "unsupported MIME type 'image/heic'.", False),
])
def test_image_unsupported_errors_recognised(message: str, expected: bool) -> None:
    assert images_unsupported(message) is expected
