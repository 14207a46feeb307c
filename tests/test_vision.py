"""Image questions end to end on Telegram, Discord and the console: what the model received
(images as data URLs, their sizes and detail, one request per album) and what the user saw.

The vision model is configured apart from the chat model (gpt-4o-mini vs gpt-5.4-mini) so
that every test also shows which model an image question went to.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from PIL import Image

from bot.media import image_tokens
from tests.conftest import STORAGES
from tests.harness import BOB, Driver, File
from tests.unit.test_media import (
    animated_gif,
    animated_webp,
    cmyk_jpeg,
    from_data_url,
    gray16_png,
    jpeg,
    near,
    noisy_jpeg,
    transparent_png,
)

VISION = "gpt-4o-mini"
BASE_CONFIG = f'[models]\nvision = "{VISION}"\n'
NO_IMAGE_INPUT = "Invalid content type. image_url is only supported by certain models."

pytestmark = pytest.mark.usefixtures("chat")


@pytest.fixture
def config_text() -> str:
    return BASE_CONFIG


def replies_only(chat: Driver) -> None:
    if chat.platform == "console":
        pytest.skip("the terminal has no replies to earlier messages")


def groups_only(chat: Driver) -> None:
    if not chat.supports_groups:
        pytest.skip("the console has no group chats")


def image_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [p for p in content if p.get("type") == "image_url"]


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(p["text"] for p in content if p.get("type") == "text")


def sent_images(body: dict[str, Any], *, last_only: bool = True) -> list[Image.Image]:
    """Decoded images of the request's last user message (or of all messages)."""
    messages = [body["messages"][-1]] if last_only else body["messages"]
    out = []
    for m in messages:
        for part in image_parts(m):
            mime, img = from_data_url(part["image_url"]["url"])
            assert mime in ("image/jpeg", "image/png")
            assert img.format == {"image/jpeg": "JPEG", "image/png": "PNG"}[mime]
            out.append(img)
    return out


def all_image_parts(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for m in body["messages"] for p in image_parts(m)]


def photo(data: bytes, kind: str = "photo") -> File:
    return File(data, "photo.jpg", "image/jpeg", kind=kind)


async def send(chat: Driver, text: str, files: list[File], **kw: Any) -> str:
    """Send a message with files, wait, return the text of the bot's new replies."""
    before = len(chat.replies(group=kw.get("group", False)))
    await chat.send_text(text, files=files, **kw)
    await chat.settle()
    new = chat.replies(group=kw.get("group", False))[before:]
    assert new, f"no reply to {text!r}"
    return "\n".join(r.text for r in new)


# --------------------------------------------------------------------------- asking


async def test_single_image_question(chat: Driver) -> None:
    answer = await send(chat, "what colour is this?", [photo(jpeg(640, 480, (200, 30, 30)))])
    assert answer == "echo: [image] what colour is this? [images: 1]"
    (body,) = chat.openai.chat_requests
    assert body["model"] == VISION
    last = body["messages"][-1]
    assert last["role"] == "user"
    assert "what colour is this?" in text_of(last)
    (part,) = image_parts(last)
    assert part["image_url"]["detail"] == "auto"
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    (img,) = sent_images(body)
    assert img.size == (640, 480)
    assert near(img.getpixel((500, 400)), (200, 30, 30))
    assert chat.app is not None
    (row,) = await chat.app.store.usage_rows()
    assert row.feature == "vision" and row.model == VISION and row.prompt_tokens > 0


async def test_image_without_caption_asks_for_a_description(chat: Driver) -> None:
    await send(chat, "", [photo(jpeg())])
    text = text_of(chat.openai.chat_requests[-1]["messages"][-1])
    assert "Describe this image" in text and "English" in text
    assert chat.app is not None
    # the stored turn is what the user did, not the instruction
    turns = await chat.app.store.recent_turns(str(_channel(chat)), 10_000)
    assert turns[0].content == "[image]"


async def test_album_is_one_request(chat: Driver) -> None:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]
    files = [photo(jpeg(300, 200, c)) for c in colours]
    answer = await send(chat, "compare these", files)
    assert answer == "echo: [3 images] compare these [images: 3]"
    (body,) = chat.openai.chat_requests
    images = sent_images(body)
    assert [near(i.getpixel((250, 150)), c) for i, c in zip(images, colours, strict=True)] == [
        True, True, True]
    assert len(chat.replies()) == 1


async def test_reply_to_an_earlier_image(chat: Driver) -> None:
    replies_only(chat)
    await send(chat, "first", [photo(jpeg(300, 200, (200, 30, 30)))])
    red_id = chat.last_sent_id
    await send(chat, "second", [photo(jpeg(300, 200, (30, 30, 200)))])
    answer = await chat.ask("what colour is the car?", reply_to=red_id)
    assert answer.endswith("what colour is the car? [images: 1]")
    body = chat.openai.chat_requests[-1]
    assert body["model"] == VISION
    (img,) = sent_images(body)
    assert near(img.getpixel((250, 150)), (200, 30, 30))
    # the red image is sent once, with the question, not again from history
    reds = [i for i in sent_images(body, last_only=False)
            if near(i.getpixel((250, 150)), (200, 30, 30))]
    assert len(reds) == 1


async def test_reply_to_an_image_the_bot_did_not_keep(chat: Driver) -> None:
    """Bob posts a photo in a group without addressing the bot; Alice replies to it with a
    question: the image is fetched from the platform."""
    groups_only(chat)
    await chat.send_text("", files=[photo(jpeg(300, 200, (30, 200, 30)))], group=True,
                         user=BOB)
    await chat.settle()
    photo_id = chat.last_sent_id
    assert chat.openai.chat_requests == []
    answer = await chat.ask("what is in Bob's picture?", group=True, mention=True,
                            reply_to=photo_id)
    assert "[images: 1]" in answer
    (img,) = sent_images(chat.openai.chat_requests[-1])
    assert near(img.getpixel((250, 150)), (30, 200, 30))


@pytest.mark.parametrize("storage", STORAGES)
async def test_follow_up_keeps_the_image_also_after_restart(chat: Driver) -> None:
    await send(chat, "what is this?", [photo(jpeg(300, 200, (200, 30, 30)))])
    answer = await chat.ask("and what is its shape?")
    assert answer == "echo: and what is its shape?"
    body = chat.openai.chat_requests[-1]
    assert body["model"] == "gpt-5.4-mini"  # text follow-ups use the chat model
    history = [m for m in body["messages"] if image_parts(m)]
    assert len(history) == 1 and "what is this?" in text_of(history[0])
    (img,) = sent_images(body, last_only=False)
    assert near(img.getpixel((250, 150)), (200, 30, 30))
    await chat.restart()
    await chat.ask("remind me what it looked like")
    assert len(sent_images(chat.openai.chat_requests[-1], last_only=False)) == 1


@pytest.mark.parametrize("config_text", [BASE_CONFIG + "[vision]\ncontext_images = 2\n"])
async def test_follow_ups_carry_at_most_context_images(chat: Driver) -> None:
    for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200)):
        await send(chat, "look", [photo(jpeg(200, 200, c))])
    await chat.ask("which was first?")
    images = sent_images(chat.openai.chat_requests[-1], last_only=False)
    assert len(images) == 2
    assert near(images[0].getpixel((150, 150)), (0, 200, 0))
    assert near(images[1].getpixel((150, 150)), (0, 0, 200))


@pytest.mark.parametrize("config_text", [BASE_CONFIG + "[chat]\nhistory_tokens = 900\n"])
async def test_image_tokens_count_against_the_history_budget(chat: Driver) -> None:
    # 600x600 at auto (counted as high): 85 + 170 * 4 = 765 tokens each
    for c in ((200, 0, 0), (0, 200, 0)):
        await send(chat, "look", [photo(jpeg(600, 600, c))])
    await chat.ask("which was first?")
    body = chat.openai.chat_requests[-1]
    images = all_image_parts(body)
    assert len(images) == 1  # two would be 1530 tokens, over the budget of 900
    text = sum(len(text_of(m).encode()) // 3 + 1 for m in body["messages"])
    assert text + 765 <= 900
    assert image_tokens(600, 600, "auto") == 765
    # the turn whose image no longer fits is still there as text
    assert [text_of(m) for m in body["messages"][1:]].count("[image] look") == 2


# --------------------------------------------------------------------------- sizes, detail


async def test_downscaling_per_detail(chat: Driver) -> None:
    big = noisy_jpeg(2000, 3000)
    await send(chat, "/detail low", [])
    await send(chat, "tiny?", [photo(big)])
    part = image_parts(chat.openai.chat_requests[-1]["messages"][-1])[0]
    assert part["image_url"]["detail"] == "low"
    (low,) = sent_images(chat.openai.chat_requests[-1])
    assert low.width <= 512 and low.height <= 512 and low.size == (341, 512)
    await send(chat, "/detail high", [])
    await send(chat, "sharp?", [photo(big)])
    part = image_parts(chat.openai.chat_requests[-1]["messages"][-1])[0]
    assert part["image_url"]["detail"] == "high"
    (high,) = sent_images(chat.openai.chat_requests[-1])
    assert min(high.size) <= 768 and max(high.size) <= 2000 and high.size == (768, 1152)


async def test_detail_command(chat: Driver) -> None:
    async def ask(text: str) -> str:
        return (await chat.ask(text)).replace("`", "")  # markup differs per platform

    assert "Image detail here: auto" in await ask("/detail")
    assert "Image detail for this chat is now low." in await ask("/detail low")
    assert "Image detail here: low" in await ask("/detail")
    assert chat.openai.chat_requests == []
    await chat.restart()
    assert "Image detail here: low" in await ask("/detail")


async def test_detail_rejects_unknown_levels(chat: Driver) -> None:
    # typed: Discord's slash-command UI offers only the valid choices
    reply = await chat.ask("/detail ultra", typed=True)
    assert "low, high, auto" in reply


def _rotated() -> bytes:
    return jpeg(400, 200, (30, 200, 30), orientation=6)


CONVERSIONS = {
    # name: (file, expected size, {(x, y): colour})
    "exif-rotated": (File(_rotated(), "rotated.jpg", "image/jpeg", kind="document"),
                     (200, 400), {(190, 10): (0, 0, 0), (10, 10): (30, 200, 30)}),
    "cmyk": (File(cmyk_jpeg(), "cmyk.jpg", "image/jpeg", kind="document"), (200, 100),
             {(100, 50): (255, 0, 0)}),
    "16-bit": (File(gray16_png(), "depth.png", "image/png", kind="document"), (120, 80),
               {(60, 40): (128,)}),
    "transparent": (File(transparent_png(), "logo.png", "image/png", kind="document"),
                    (100, 100), {(10, 50): (0, 0, 255), (90, 50): (255, 255, 255)}),
    "animated-gif": (File(animated_gif(), "anim.gif", "image/gif", kind="document"),
                     (60, 40), {(30, 20): (0, 200, 0)}),
    "animated-webp": (File(animated_webp(), "anim.webp", "image/webp", kind="document"),
                      (60, 40), {(30, 20): (230, 230, 0)}),
}


@pytest.mark.parametrize("name", list(CONVERSIONS))
async def test_awkward_inputs_converted(chat: Driver, name: str) -> None:
    file, size, pixels = CONVERSIONS[name]
    answer = await send(chat, "what is it?", [file])
    assert answer.endswith("[images: 1]"), answer
    (img,) = sent_images(chat.openai.chat_requests[-1])
    assert img.size == size
    assert img.mode in ("RGB", "L")
    for xy, colour in pixels.items():
        assert near(img.getpixel(xy), colour, tol=40), (xy, img.getpixel(xy))


# --------------------------------------------------------------------------- failures


async def test_no_token_in_any_model_request_or_log(chat: Driver,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await send(chat, "what is this?", [photo(jpeg())])
    await send(chat, "and these?", [photo(jpeg(100, 100)), photo(jpeg(120, 90))])
    if chat.platform != "console":
        await chat.ask("this one again?", reply_to=chat.last_sent_id)
    await chat.ask("follow-up")
    token = chat.env.get("TELEGRAM_BOT_TOKEN") or chat.env.get("DISCORD_BOT_TOKEN") or ""
    secrets = [s for s in (token, token.split(":")[-1]) if len(s) > 8]
    wire = json.dumps([r.json for r in chat.openai.requests])
    assert len(chat.openai.chat_requests) >= 3
    assert "/file/bot" not in wire and "http" not in wire.replace(chat.openai.url, "")
    for secret in secrets:
        assert secret not in wire
        for record in caplog.records:
            assert secret not in record.getMessage(), record.getMessage()
            assert secret not in caplog.text


async def test_model_that_cannot_see_images(chat: Driver) -> None:
    chat.openai.fail_next(400, message=NO_IMAGE_INPUT, code="",
                          param="messages.[1].content.[1].type")
    answer = await send(chat, "what is this?", [photo(jpeg())])
    assert answer.replace("`", "") == (
        "The model gpt-4o-mini cannot look at images on this AI server. An admin can set a "
        "model that can in [models] vision.")
    # plain chat still works
    assert await chat.ask("hello") == "echo: hello"


async def test_chat_model_without_vision_answers_follow_ups_as_text(chat: Driver) -> None:
    await send(chat, "what is this?", [photo(jpeg())])
    chat.openai.fail_next(400, message=NO_IMAGE_INPUT, code="",
                          param="messages.[1].content.[1].type")
    assert await chat.ask("tell me more") == "echo: tell me more"
    failed, retried = chat.openai.chat_requests[-2:]
    assert all_image_parts(failed) and not all_image_parts(retried)
    assert "[image] what is this?" in [text_of(m) for m in retried["messages"]]
    # remembered: the next follow-up goes without images straight away
    count = len(chat.openai.chat_requests)
    await chat.ask("and more")
    assert len(chat.openai.chat_requests) == count + 1
    assert not all_image_parts(chat.openai.chat_requests[-1])


@pytest.mark.parametrize("config_text", ['[models]\nvision = ""\n'])
async def test_vision_turned_off(chat: Driver) -> None:
    answer = await send(chat, "what is this?", [photo(jpeg())])
    assert answer == "Looking at images is turned off on this bot."
    assert chat.openai.chat_requests == []


@pytest.mark.parametrize(("file", "message"), [
    (File(jpeg(800, 600)[:900], "broken.jpg", "image/jpeg", kind="document"),
     "damaged or incomplete"),
    (File(b"just some text, not a picture", "notes.png", "image/png", kind="document"),
     "can't read that file as an image"),
], ids=["corrupt", "not-an-image"])
async def test_bad_images_get_a_clear_reply(chat: Driver, file: File, message: str,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    answer = await send(chat, "what is this?", [file])
    assert message in answer
    assert chat.openai.chat_requests == []
    assert any(message in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("config_text", [BASE_CONFIG + "[vision]\nmax_image_mb = 1\n"])
async def test_oversize_image_refused(chat: Driver) -> None:
    big = noisy_jpeg(2400, 1800)
    assert len(big) > 1024 * 1024
    answer = await send(chat, "what is this?", [photo(big, kind="document")])
    # Attachment.read is the one size check; [vision] max_image_mb lowers its limit
    assert answer.startswith("That file is too large (")
    assert answer.endswith(" MB; the limit is 1 MB).")
    # the file's size is shown to a tenth, rounded up: never the limit itself
    stated = float(answer.removeprefix("That file is too large (").split(" MB;")[0])
    assert stated > 1
    assert chat.openai.chat_requests == []


async def test_one_bad_image_in_an_album_is_named(chat: Driver) -> None:
    files = [photo(jpeg()), File(b"garbage", "x.png", "image/png", kind="document")]
    answer = await send(chat, "both?", files)
    assert answer.startswith("Image 2 of 2:") and "can't read" in answer
    assert chat.openai.chat_requests == []


def _channel(chat: Driver) -> object:
    from bot.events import ChannelKey

    if chat.platform == "console":
        return ChannelKey("console", "local")
    if chat.platform == "telegram":
        return ChannelKey("telegram", "1001")
    return ChannelKey("discord", str(chat.fake.dm_channel(1001)))  # type: ignore[attr-defined]
