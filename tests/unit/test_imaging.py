"""Pure image conversions for the Images API and the /draw option rules."""

from __future__ import annotations

import io
import os
import struct
import zlib

import pytest
from PIL import Image

from bot import imaging, media
from bot.ai_images import family_of
from bot.config import ImagesSection
from bot.errors import UserError
from handlers.images import resolve_draw, split_options


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def huge_png(width: int = 8_000, height: int = 8_000) -> bytes:
    """A valid PNG header declaring more pixels than the cap (no need to hold them)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


# --------------------------------------------------------------------------- decoding


def test_exif_rotation_is_applied() -> None:
    img = Image.new("RGB", (400, 200), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    upright = imaging.open_image(encode(img, "JPEG", exif=exif))
    assert upright.size == (200, 400)


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("P", (40, 30), i) for i in (1, 2, 3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    img = imaging.open_image(data)
    assert img.size == (40, 30) and img.tell() == 0


@pytest.mark.parametrize(("data", "message"), [
    (b"", media.NOT_AN_IMAGE),
    (b"not an image at all", media.NOT_AN_IMAGE),
    (b"\x89PNG\r\n\x1a\n broken", media.DAMAGED),
    (huge_png(), media.TOO_MANY_PIXELS),
], ids=["empty", "text", "broken-png", "too-many-pixels"])
def test_refusals_are_the_vision_paths(data: bytes, message: str) -> None:
    """One decoder: /edit refuses an image with the same sentence a vision question gets."""
    with pytest.raises(UserError) as edit:
        imaging.prepare_edit(data)
    with pytest.raises(UserError) as vision:
        media.prepare_image(data)
    assert edit.value.message == vision.value.message == message


def test_postscript_is_never_decoded_for_edits() -> None:
    """EPS would run Ghostscript on user input: /edit refuses it like the vision path."""
    with pytest.raises(UserError, match="can't read that file as an image"):
        imaging.prepare_edit(encode(Image.new("RGB", (20, 20)), "EPS"))


def test_cmyk_becomes_rgba() -> None:
    img = imaging.to_rgba(Image.new("CMYK", (8, 8), (0, 255, 255, 0)))
    assert img.mode == "RGBA" and img.getpixel((0, 0)) == (255, 0, 0, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    img = Image.new("I;16", (4, 4), 32768)
    rgba = imaging.to_rgba(imaging.open_image(encode(img)))
    assert rgba.mode == "RGBA" and 126 <= rgba.getpixel((0, 0))[0] <= 129


def test_palette_transparency_is_kept() -> None:
    img = Image.new("P", (10, 10), 0)
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.paste(1, (0, 0, 5, 10))
    rgba = imaging.to_rgba(imaging.open_image(encode(img, transparency=1)))
    assert rgba.getpixel((1, 1))[3] == 0 and rgba.getpixel((8, 1)) == (255, 0, 0, 255)


# --------------------------------------------------------------------------- masks


def test_mask_without_alpha_reads_white_as_edit() -> None:
    drawing = Image.new("RGB", (20, 20), (0, 0, 0))
    drawing.paste((255, 255, 255), (0, 0, 10, 20))
    mask = imaging.mask_from_image(decode(encode(drawing, "JPEG", quality=95)))
    assert mask.mode == "RGBA"
    assert mask.getpixel((2, 10))[3] == 0 and mask.getpixel((17, 10))[3] == 255


def test_mask_with_alpha_uses_its_transparency() -> None:
    m = Image.new("RGBA", (20, 20), (255, 255, 255, 255))
    m.paste((255, 255, 255, 0), (10, 0, 20, 20))
    mask = imaging.mask_from_image(m)
    assert mask.getpixel((15, 5))[3] == 0 and mask.getpixel((5, 5))[3] == 255


def test_edit_png_rgba_with_scaled_mask() -> None:
    image = encode(Image.new("RGB", (400, 300), (0, 0, 255)), "JPEG")
    mask = Image.new("RGBA", (200, 150), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (50, 50, 150, 100))
    out = imaging.prepare_edit(image, encode(mask))
    img, m = decode(out.image), decode(out.mask or b"")
    assert (img.format, img.mode, img.size) == ("PNG", "RGBA", (400, 300))
    assert m.size == (400, 300) and m.getpixel((200, 150))[3] == 0
    assert m.getpixel((5, 5))[3] == 255
    assert any("scaled" in n for n in out.notes)


def test_edit_mask_of_another_shape_is_refused() -> None:
    image = encode(Image.new("RGB", (400, 400)))
    mask = encode(Image.new("RGBA", (400, 100)))
    with pytest.raises(UserError, match="does not have the image's shape"):
        imaging.prepare_edit(image, mask)


def test_transparent_area_becomes_the_mask() -> None:
    img = Image.new("RGBA", (60, 40), (9, 9, 9, 255))
    img.paste((0, 0, 0, 0), (0, 0, 30, 40))
    out = imaging.prepare_edit(encode(img))
    m = decode(out.mask or b"")
    assert m.getpixel((5, 5))[3] == 0 and m.getpixel((50, 5))[3] == 255


def test_opaque_image_gets_no_mask() -> None:
    out = imaging.prepare_edit(encode(Image.new("RGB", (60, 40))))
    assert out.mask is None and out.notes == ()


def test_gpt_edit_input_is_bounded() -> None:
    out = imaging.prepare_edit(encode(Image.new("RGB", (4000, 1000)), "JPEG"))
    assert out.size == (1536, 384) and decode(out.image).size == (1536, 384)


def test_dalle2_gets_a_centred_square_with_its_mask() -> None:
    img = Image.new("RGB", (300, 200), (0, 0, 0))
    img.paste((255, 0, 0), (0, 0, 50, 200))  # cropped away
    mask = Image.new("RGBA", (300, 200), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (140, 90, 160, 110))
    out = imaging.prepare_edit(encode(img), encode(mask), dalle2=True)
    square, m = decode(out.image), decode(out.mask or b"")
    assert square.size == m.size == (200, 200)
    assert square.getpixel((0, 0))[:3] == (0, 0, 0)
    assert m.getpixel((100, 100))[3] == 0 and any("square" in n for n in out.notes)


def test_dalle2_input_is_under_four_megabytes() -> None:
    noise = Image.frombytes("RGB", (1400, 1400), os.urandom(1400 * 1400 * 3))
    data = imaging.prepare_variation(encode(noise, compress_level=0))
    img = decode(data)
    assert len(data) < imaging.DALLE2_LIMIT and img.width == img.height <= 1024


# --------------------------------------------------------------------------- /draw options


@pytest.mark.parametrize(
    ("text", "prompt", "options"),
    [
        ("a red fox", "a red fox", {}),
        ("a red fox 1536x1024 high 2", "a red fox", {"size": "1536x1024", "quality": "high",
                                                     "count": "2"}),
        ("a red fox high", "a red fox", {"quality": "high"}),
        ("a red fox 3", "a red fox", {"count": "3"}),
        ("apollo 11", "apollo 11", {}),
        ("a fox auto auto", "a fox", {"size": "auto", "quality": "auto"}),
        ("a fox 1024×1024", "a fox", {"size": "1024x1024"}),
        ("a fox landscape", "a fox", {"size": "landscape"}),
        ("a fox size=512x512 n=2", "a fox", {"size": "512x512", "count": "2"}),
        ("two\nlines 2", "two\nlines", {"count": "2"}),
    ],
)
def test_split_options(text: str, prompt: str, options: dict[str, str]) -> None:
    assert split_options(text) == (prompt, options)


def test_families() -> None:
    assert family_of("gpt-image-2").flexible_sizes
    assert family_of("chatgpt-image-latest").name == "gpt-image"
    assert not family_of("gpt-image-1.5").flexible_sizes
    assert family_of("dall-e-2").variations and not family_of("dall-e-3").edits
    assert family_of("flux-schnell").name == "other"


def test_resolve_draw_defaults_and_limits() -> None:
    settings = ImagesSection()
    req = resolve_draw("gpt-image-2", {"prompt": "a fox"}, settings)
    assert (req.size, req.quality, req.count) == (None, None, 1)
    req = resolve_draw("gpt-image-2", {"prompt": "a fox 1920x1088"}, settings)
    assert req.size == "1920x1088"
    req = resolve_draw("dall-e-3", {"prompt": "a fox landscape"}, settings)
    assert req.size == "1792x1024"
    req = resolve_draw("gpt-image-2", {"prompt": "a fox", "count": 2, "quality": "low"},
                       settings)
    assert (req.count, req.quality) == (2, "low")
    with pytest.raises(UserError, match="1 to 2"):
        resolve_draw("dall-e-2", {"prompt": "a fox 3"}, ImagesSection(max_count=2))
    with pytest.raises(UserError, match="what to draw"):
        resolve_draw("gpt-image-2", {"prompt": "1024x1024"}, settings)
    # a config default the model cannot take is left out rather than refused
    req = resolve_draw("dall-e-3", {"prompt": "a fox"}, ImagesSection(quality="low"))
    assert req.quality is None
