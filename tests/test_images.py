"""/draw, /edit and /variation end to end on Telegram, Discord and the console.

Each test checks what the Images API received (the fake records the multipart/JSON
request) and what the user got: real PNGs of the right size, as photos, in one album or
one message, with the placeholder ending as a summary or the error.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.fakes.openai_api import Request
from tests.harness import BotReply, Driver, File

pytestmark = pytest.mark.usefixtures("chat")

GPT = '[models]\nimage = "gpt-image-2"\n'
DALLE3 = '[models]\nimage = "dall-e-3"\n'
DALLE2 = '[models]\nimage = "dall-e-2"\n[images]\nmax_count = 10\n'
GENERATIONS = "/images/generations"
EDITS = "/images/edits"
VARIATIONS = "/images/variations"


def png(width: int, height: int, colour: tuple[int, int, int, int] = (200, 30, 30, 255),
        *, hole: bool = False) -> bytes:
    """A PNG; with `hole`, its left half is fully transparent."""
    img = Image.new("RGBA", (width, height), colour)
    if hole:
        img.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg(width: int, height: int, colour: tuple[int, int, int] = (20, 90, 200)) -> bytes:
    """A JPEG photo."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "JPEG")
    return buf.getvalue()


def mask_png(width: int, height: int) -> bytes:
    """A mask: opaque, with a transparent square in the middle (the area to repaint)."""
    img = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


async def run(chat: Driver, text: str, files: list[File] | None = None,
              **kw: object) -> list[BotReply]:
    """Send a command and return the bot's new messages (as they look now)."""
    before = len(chat.replies())
    await chat.send_text(text, files=files, **kw)  # type: ignore[arg-type]
    await chat.settle()
    return chat.replies()[before:]


def photos(replies: list[BotReply]) -> list[Image.Image]:
    """Every image the bot sent in these messages, decoded."""
    return [decode(f.data) for r in replies for f in r.files]


def texts(replies: list[BotReply]) -> str:
    return "\n".join(r.text for r in replies)


def status(replies: list[BotReply]) -> str:
    """What the placeholder says now (the console, which cannot edit, prints it again)."""
    return [r.text for r in replies if not r.files][-1]


def last(chat: Driver, path: str) -> Request:
    reqs = chat.openai.requests_to(path)
    assert reqs, f"no request to {path}"
    return reqs[-1]


def upload(req: Request, name: str) -> Image.Image:
    found = req.file(name)
    assert found is not None, f"no {name!r} file in the request"
    return decode(found.data)


def as_file(data: bytes, name: str = "pic.png") -> File:
    """An image sent as a file (not a compressed photo), so PNG transparency survives."""
    mime = "image/png" if name.endswith(".png") else "image/jpeg"
    return File(data, filename=name, mime=mime, kind="document")


# --------------------------------------------------------------------------- /draw


@pytest.mark.parametrize("config_text", [GPT])
async def test_draw_gpt_image_size_quality(chat: Driver) -> None:
    replies = await run(chat, "/draw a red fox in the snow 1536x1024 high")
    body = last(chat, GENERATIONS).json
    assert body["model"] == "gpt-image-2" and body["prompt"] == "a red fox in the snow"
    assert body["size"] == "1536x1024" and body["quality"] == "high" and body["n"] == 1
    assert "response_format" not in body
    (img,) = photos(replies)
    assert img.format == "PNG" and img.size == (1536, 1024)
    assert status(replies).startswith("🎨 1 image for “a red fox in the snow”")
    assert "1536x1024" in status(replies)
    assert chat.app is not None
    (row,) = await chat.app.store.usage_rows()
    assert row.feature == "images" and row.model == "gpt-image-2" and not row.estimated
    assert row.prompt_tokens > 0 and row.completion_tokens == 4160
    # gpt-image-2 bills tokens: $5 per 1M text input tokens, $30 per 1M output tokens
    assert row.cost == pytest.approx(row.prompt_tokens * 5e-6 + 4160 * 30e-6)


@pytest.mark.parametrize("config_text", [DALLE3])
async def test_draw_dalle3_caption_is_revised_prompt(chat: Driver) -> None:
    replies = await run(chat, "/draw a lighthouse at dusk 1792x1024 hd")
    body = last(chat, GENERATIONS).json
    assert (body["model"], body["size"], body["quality"], body["n"]) == (
        "dall-e-3", "1792x1024", "hd", 1)
    assert body["response_format"] == "b64_json"
    (img,) = photos(replies)
    assert img.size == (1792, 1024)
    assert "A detailed image of: a lighthouse at dusk" in texts(replies)


@pytest.mark.parametrize("config_text", [DALLE2])
async def test_draw_dalle2_small_squares(chat: Driver) -> None:
    replies = await run(chat, "/draw a tiny cactus 256x256 2")
    body = last(chat, GENERATIONS).json
    assert (body["model"], body["size"], body["n"]) == ("dall-e-2", "256x256", 2)
    assert "quality" not in body
    assert [i.size for i in photos(replies)] == [(256, 256), (256, 256)]
    assert chat.app is not None
    (row,) = await chat.app.store.usage_rows()
    # dall-e-2 bills per image: the count is exact, the price comes from the table
    assert not row.estimated and (row.unit, row.units) == ("images", 2)
    assert row.cost == pytest.approx(2 * 0.016)


@pytest.mark.parametrize(
    ("config_text", "command", "named"),
    [
        (GPT, "/draw a fox 1000x1000", "1024x1024, 1536x1024, 1024x1536, auto (or any WxH"),
        ('[models]\nimage = "gpt-image-1.5"\n', "/draw a fox 1792x1024",
         "Valid sizes: 1024x1024, 1536x1024, 1024x1536, auto."),
        (GPT, "/draw a fox hd", "low, medium, high, auto"),
        (GPT, "/draw a fox 5", "1 to 4"),
        (DALLE3, "/draw a fox 2", "one image at a time"),
        (DALLE3, "/draw a fox 1536x1024", "1024x1024, 1792x1024, 1024x1792"),
        (DALLE2, "/draw a fox 1024x1024 high", "standard"),
        (DALLE2, "/draw a fox landscape", "256x256, 512x512, 1024x1024"),
    ],
)
async def test_draw_invalid_option_names_valid_ones(chat: Driver, command: str,
                                                    named: str) -> None:
    replies = await run(chat, command)
    assert named in texts(replies)
    assert chat.openai.requests_to(GENERATIONS) == []
    assert photos(replies) == []


@pytest.mark.parametrize("config_text", [GPT])
async def test_draw_three_arrive_together(chat: Driver) -> None:
    replies = await run(chat, "/draw three kinds of apples 1024x1024 low 3")
    assert last(chat, GENERATIONS).json["n"] == 3
    images = photos(replies)
    assert len(images) == 3 and all(i.size == (1024, 1024) for i in images)
    with_files = [r for r in replies if r.files]
    if chat.platform == "telegram":
        groups = {r.extra["media_group_id"] for r in with_files}
        assert len(with_files) == 3 and len(groups) == 1 and None not in groups
    elif chat.platform == "discord":
        assert len(with_files) == 1 and len(with_files[0].files) == 3
    assert "3 images" in texts(replies)


@pytest.mark.parametrize("config_text", [GPT + "[images]\nsize = \"1024x1536\"\n"])
async def test_draw_uses_config_defaults_and_explicit_options(chat: Driver) -> None:
    await run(chat, "/draw a tall tower")
    body = last(chat, GENERATIONS).json
    assert body["size"] == "1024x1536" and "quality" not in body
    await run(chat, "/draw a tall tower size=square quality=low")
    body = last(chat, GENERATIONS).json
    assert body["size"] == "1024x1024" and body["quality"] == "low"


async def test_draw_progress_placeholder_and_upload_action(chat: Driver) -> None:
    chat.openai.latency = 0.5  # long enough for the upload_photo action to show
    replies = await run(chat, "/draw a slow snail")
    if chat.platform == "console":  # cannot edit: the summary is printed after the files
        assert [r.text for r in replies if not r.files] == ["🎨 Drawing…", status(replies)]
    else:
        placeholder, picture = replies
        assert placeholder.edits[0][1] == "🎨 Drawing…"
        assert placeholder.text.startswith("🎨 1 image for “a slow snail”")
        assert not placeholder.files and len(picture.files) == 1
    if chat.platform == "telegram":
        assert "upload_photo" in chat.fake.chat_actions(1001)  # type: ignore[attr-defined]
    if chat.platform == "discord":
        dm = chat.fake.dm_channel(1001)  # type: ignore[attr-defined]
        assert chat.fake.typing(dm) >= 1  # type: ignore[attr-defined]


async def test_draw_history_tells_the_chat_model(chat: Driver) -> None:
    await run(chat, "/draw a green dragon")
    await chat.ask("what did you just make?")
    body = chat.openai.chat_requests[-1]
    contents = [m["content"] if isinstance(m["content"], str) else
                " ".join(p.get("text", "") for p in m["content"] if p.get("type") == "text")
                for m in body["messages"] if m["role"] in ("user", "assistant")]
    assert any("[image generated for: a green dragon]" in c for c in contents)
    assert chat.app is not None
    (kept,) = await chat.app.store.last_images(str(_channel(chat)), 1)
    assert kept.source == "generated" and kept.message_id is not None


def _channel(chat: Driver) -> str:
    if chat.platform == "telegram":
        return "telegram:1001"
    if chat.platform == "discord":
        return f"discord:{chat.fake.dm_channel(1001)}"  # type: ignore[attr-defined]
    return "console:local"


# --------------------------------------------------------------------------- errors


async def test_content_policy_refusal_replaces_placeholder(chat: Driver) -> None:
    chat.openai.fail_next(400, path="/images")
    replies = await run(chat, "/draw something forbidden")
    assert photos(replies) == []
    assert "refused this request (content policy)" in replies[-1].text
    if chat.platform != "console":  # the placeholder itself became the error
        (placeholder,) = replies
        assert placeholder.edits[0][1] == "🎨 Drawing…"
    else:
        assert replies[0].text == "🎨 Drawing…" and len(replies) == 2


async def test_internal_error_replaces_placeholder_with_error_id(
        chat: Driver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A bug while drawing goes through the router's policy: logged with an id, and the
    placeholder (not a second message) says so."""
    assert chat.app is not None

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(chat.app.ai, "generate_images", broken)
    replies = await run(chat, "/draw a cat")
    error = replies[-1].text
    assert error.startswith("Sorry, something went wrong on my side (error id ")
    error_id = error.rsplit(" ", 1)[1].rstrip(").")
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)
    if chat.platform != "console":
        (placeholder,) = replies
        assert placeholder.edits[0][1] == "🎨 Drawing…"
    else:
        assert [r.text for r in replies] == ["🎨 Drawing…", error]


@pytest.mark.parametrize("config_text", ["[openai]\nmax_retries = 0\n"])
async def test_rate_limit_reply(chat: Driver) -> None:
    chat.openai.fail_next(429, path="/images")
    replies = await run(chat, "/draw a busy day")
    assert "rate limited" in replies[-1].text and photos(replies) == []


async def test_server_without_images_endpoint(chat: Driver) -> None:
    chat.openai.disable("/images")
    replies = await run(chat, "/draw a cat")
    assert "This AI server does not offer image generation." in replies[-1].text
    replies = await run(chat, "/edit add a hat", files=[as_file(png(64, 64))])
    assert "does not offer image editing" in replies[-1].text


# --------------------------------------------------------------------------- /edit


async def test_edit_attached_photo(chat: Driver) -> None:
    replies = await run(chat, "/edit add a party hat", files=[File(jpeg(300, 200))])
    req = last(chat, EDITS)
    assert req.field("prompt") == "add a party hat" and req.field("model") == "gpt-image-2"
    sent = upload(req, "image")
    assert sent.format == "PNG" and sent.mode == "RGBA" and sent.size == (300, 200)
    assert req.file("mask") is None
    (img,) = photos(replies)
    assert img.size == (1536, 1024)  # "auto" follows the input's landscape shape
    assert "Edited" in texts(replies)


async def test_edit_with_mask_image(chat: Driver) -> None:
    files = [as_file(png(256, 256)), as_file(mask_png(256, 256), "mask.png")]
    await run(chat, "/edit put a moon in the middle", files=files)
    req = last(chat, EDITS)
    mask = upload(req, "mask")
    assert mask.mode == "RGBA" and mask.size == upload(req, "image").size == (256, 256)
    assert mask.getpixel((128, 128))[3] == 0 and mask.getpixel((5, 5))[3] == 255


async def test_edit_mask_of_other_size_is_scaled(chat: Driver) -> None:
    files = [as_file(png(512, 512)), as_file(mask_png(128, 128), "mask.png")]
    replies = await run(chat, "/edit a window", files=files)
    req = last(chat, EDITS)
    assert upload(req, "mask").size == upload(req, "image").size == (512, 512)
    assert "mask was scaled" in texts(replies)


async def test_edit_mask_of_other_shape_is_refused(chat: Driver) -> None:
    files = [as_file(png(512, 512)), as_file(mask_png(400, 100), "mask.png")]
    replies = await run(chat, "/edit a window", files=files)
    assert "does not have the image's shape" in texts(replies)
    assert chat.openai.requests_to(EDITS) == []


async def test_edit_transparent_png_area_is_the_mask(chat: Driver) -> None:
    await run(chat, "/edit fill the gap with flowers", files=[as_file(png(200, 100, hole=True))])
    req = last(chat, EDITS)
    mask = upload(req, "mask")
    assert mask.size == (200, 100)
    assert mask.getpixel((10, 50))[3] == 0 and mask.getpixel((190, 50))[3] == 255


@pytest.mark.parametrize("config_text", [DALLE2])
async def test_edit_dalle2_gets_a_square_png(chat: Driver) -> None:
    replies = await run(chat, "/edit add a sun", files=[File(jpeg(400, 300))])
    req = last(chat, EDITS)
    sent = upload(req, "image")
    assert sent.format == "PNG" and sent.size == (300, 300) and sent.mode == "RGBA"
    assert len(req.file("image").data) < 4 * 1024 * 1024  # type: ignore[union-attr]
    assert photos(replies)[0].size == (1024, 1024)


@pytest.mark.parametrize("config_text", [DALLE3])
async def test_edit_refused_on_dalle3_before_any_request(chat: Driver) -> None:
    replies = await run(chat, "/edit add a hat", files=[File(jpeg(64, 64))])
    assert "dall-e-3 cannot edit images" in texts(replies)
    assert chat.openai.requests_to(EDITS) == []


async def test_edit_without_image_uses_last_drawing(chat: Driver) -> None:
    await run(chat, "/draw a white cat 1024x1024")
    replies = await run(chat, "/edit make it bluer")
    req = last(chat, EDITS)
    assert req.field("prompt") == "make it bluer"
    assert upload(req, "image").size == (768, 768)  # the kept copy of the drawing
    assert len(photos(replies)) == 1


async def test_edit_without_any_image_explains(chat: Driver) -> None:
    replies = await run(chat, "/edit make it bluer")
    assert "Attach an image" in texts(replies)
    assert chat.openai.requests_to(EDITS) == []


async def test_edit_reply_to_a_drawing(chat: Driver) -> None:
    if chat.platform == "console":
        pytest.skip("the terminal has no replies to earlier messages")
    first = await run(chat, "/draw a red barn 1536x1024")
    photo_id = next(r.id for r in first if r.files)
    await run(chat, "/draw an unrelated teapot 1024x1024")
    # typed as a reply (a Discord slash command cannot reply to a message)
    await run(chat, "/edit paint it blue", reply_to=photo_id, typed=True)
    assert upload(last(chat, EDITS), "image").size == (1152, 768)  # the barn, not the teapot


@pytest.mark.parametrize("config_text", ["[vision]\nmax_image_mb = 1\n"])
async def test_edit_oversize_input(chat: Driver) -> None:
    noisy = Image.frombytes("RGB", (1200, 1200), bytes(range(256)) * (1200 * 1200 * 3 // 256))
    buf = io.BytesIO()
    noisy.save(buf, "PNG", compress_level=0)
    assert len(buf.getvalue()) > 1024 * 1024
    replies = await run(chat, "/edit add a hat", files=[as_file(buf.getvalue())])
    assert "too large" in texts(replies) and "limit is 1 MB" in texts(replies)
    assert chat.openai.requests_to(EDITS) == []


async def test_edit_not_an_image(chat: Driver) -> None:
    junk = File(b"%PDF-1.4 not an image", filename="doc.pdf", mime="application/pdf",
                kind="document")
    replies = await run(chat, "/edit add a hat", files=[junk])
    assert "can't read that file as an image" in texts(replies)
    assert chat.openai.requests_to(EDITS) == []


# --------------------------------------------------------------------------- /variation


@pytest.mark.parametrize("config_text", [DALLE2])
async def test_variation_dalle2_uses_variations_endpoint(chat: Driver) -> None:
    replies = await run(chat, "/variation 2", files=[File(jpeg(320, 240))])
    req = last(chat, VARIATIONS)
    assert req.field("n") == "2" and req.field("model") == "dall-e-2"
    sent = upload(req, "image")
    assert sent.format == "PNG" and sent.size == (240, 240)
    assert chat.openai.requests_to(EDITS) == []
    assert [i.size for i in photos(replies)] == [(1024, 1024), (1024, 1024)]


async def test_variation_gpt_image_is_an_edit(chat: Driver) -> None:
    replies = await run(chat, "/variation", files=[File(jpeg(200, 200))])
    req = last(chat, EDITS)
    assert "variation" in (req.field("prompt") or "") and req.field("n") == "1"
    assert chat.openai.requests_to(VARIATIONS) == []
    assert len(photos(replies)) == 1 and "1 variation" in texts(replies)
