"""Checks that FakeOpenAI behaves like the real API when driven by the real openai client."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest
from PIL import Image

from tests.fakes.openai_api import FakeOpenAI, render_image

KEY = "sk-test-key"

# dall-e, variations and translations are deprecated in the SDK but still served.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    """A started fake, stopped after the test."""
    server = FakeOpenAI(api_key=KEY)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(fake: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    """The real SDK client pointed at the fake, without retries."""
    sdk = openai.AsyncOpenAI(api_key=KEY, base_url=fake.url, max_retries=0)
    yield sdk
    await sdk.close()


def png(width: int, height: int, *, alpha: bool = False) -> bytes:
    """A small PNG of the given size."""
    return render_image(width, height, (10, 200, 30), "png", alpha=alpha)


def data_url(raw: bytes, mime: str = "image/png") -> str:
    """A base64 data URL."""
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def ogg_opus(seconds: float = 1.0) -> bytes:
    """A real OGG/Opus file made by ffmpeg."""
    return subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         f"sine=frequency=440:duration={seconds}", "-c:a", "libopus", "-f", "ogg", "pipe:1"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip


# ------------------------------------------------------------------ auth, models, routes


async def test_wrong_key_is_401(fake: FakeOpenAI) -> None:
    bad = openai.AsyncOpenAI(api_key="sk-wrong-key-123", base_url=fake.url, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await bad.models.list()
    await bad.close()
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "invalid_api_key"
    assert "sk-wrong-key-123" not in body["message"]
    assert fake.requests[-1].headers["authorization"] == "Bearer <redacted>"


async def test_models_list_and_retrieve(client: openai.AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert "gpt-5.4-mini" in ids and "whisper-1" in ids
    model = await client.models.retrieve("gpt-4o-mini")
    assert model.object == "model"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-0")


async def test_unknown_route_is_404_in_openai_shape(fake: FakeOpenAI) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {KEY}"}
        async with http.post(fake.url + "/nope", json={}, headers=headers) as resp:
            assert resp.status == 404
            body = await resp.json()
    assert body["error"]["message"] == "Invalid URL (POST /v1/nope)"
    assert set(body["error"]) == {"message", "type", "param", "code"}


async def test_disabled_endpoint_is_404(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.disable("/images")
    with pytest.raises(openai.NotFoundError):
        await client.images.generate(model="gpt-image-2", prompt="a cat")
    fake.disable("/audio", style="ollama")
    with pytest.raises(openai.NotFoundError):
        await client.audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert (await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "still here"}]
    )).choices[0].message.content == "echo: still here"  # fmt: skip


# ------------------------------------------------------------------ chat


async def test_chat_non_stream(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="gpt-5.4-mini",
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
        max_completion_tokens=100,
    )
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.content == "echo: hello there"
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    usage = completion.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert fake.chat_requests[-1]["messages"][1]["content"] == "hello there"


async def test_chat_stream_with_usage(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.reply("one two three four five six")
    fake.chunk_size = 5
    stream = await client.chat.completions.create(
        model="gpt-5.5",
        messages=[{"role": "user", "content": "count"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four five six"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    # the queue is FIFO and then falls back to the echo default
    again = await client.chat.completions.create(
        model="gpt-5.5", messages=[{"role": "user", "content": "x"}]
    )
    assert again.choices[0].message.content == "echo: x"


async def test_stream_options_need_stream(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream_options={"include_usage": True},
        )
    assert info.value.param == "stream_options"


async def test_unknown_model_is_not_found(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(
            model="gpt-9", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "model_not_found"
    assert "`gpt-9`" in info.value.message


async def test_unknown_parameter_rejected(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"top_k": 3},
        )
    assert "Unrecognized request argument supplied: top_k" in info.value.message


async def test_max_tokens_rejected_for_reasoning_models(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="gpt-5.4-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=10
        )
    assert info.value.code == "unsupported_parameter" and info.value.param == "max_tokens"
    assert "Use 'max_completion_tokens' instead." in info.value.message
    ok = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=10
    )
    assert ok.choices[0].finish_reason == "stop"


async def test_bad_role_and_name_rejected(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "robot", "content": "hi"}]  # type: ignore[misc,list-item]
        )
    assert info.value.param == "messages[0].role" and info.value.code == "invalid_value"
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi", "name": "Al Ice"}]
        )
    assert info.value.param == "messages[0].name"


async def test_image_parts(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    good = data_url(png(8, 8))
    completion = await client.chat.completions.create(
        model="gpt-5.4-mini",
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": good, "detail": "low"}},
        ]}],
    )  # fmt: skip
    assert completion.choices[0].message.content == "echo: what is this? [images: 1]"
    sent = fake.chat_requests[-1]["messages"][0]["content"][1]["image_url"]["url"]
    assert sent == good

    cases = [
        ("data:text/plain;base64,aGVsbG8=", "invalid_value"),
        ("data:image/png;base64,!!!not-base64!!!", "invalid_image_url"),
        (data_url(b"definitely not a png"), "invalid_image_format"),
        ("/tmp/cat.png", "invalid_value"),
    ]
    for url, code in cases:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(
                model="gpt-5.4-mini",
                messages=[{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                ]}],
            )  # fmt: skip
        assert info.value.code == code, (url, info.value.message)


async def test_tool_call_round_trip(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.reply_tool_call("get_time", {"tz": "UTC"})
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {}}}]
    first = await client.chat.completions.create(
        model="gpt-5.4", messages=[{"role": "user", "content": "time?"}], tools=tools  # type: ignore[arg-type]
    )
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert json.loads(call.function.arguments) == {"tz": "UTC"}  # type: ignore[union-attr]
    messages = [
        {"role": "user", "content": "time?"},
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "12:00"},
    ]
    second = await client.chat.completions.create(
        model="gpt-5.4", messages=messages, tools=tools  # type: ignore[arg-type]
    )
    assert second.choices[0].message.content == "echo: time?"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model="gpt-5.4", messages=messages[:2], tools=tools)  # type: ignore[arg-type]


# ------------------------------------------------------------------ scripted failures


async def test_rate_limit_retry_after_is_honoured(fake: FakeOpenAI) -> None:
    fake.fail_next(429, headers={"retry-after": "0.3"})
    sdk = openai.AsyncOpenAI(api_key=KEY, base_url=fake.url, max_retries=1)
    completion = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "busy?"}]
    )
    await sdk.close()
    assert completion.choices[0].message.content == "echo: busy?"
    first, second = fake.requests_to("/chat/completions")
    assert second.at - first.at >= 0.3


async def test_rate_limit_body_and_quota(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.fail_next(429)
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == "1"
    assert "x-ratelimit-remaining-requests" in info.value.response.headers
    assert "gpt-4o-mini" in info.value.message
    fake.fail_next(429, code="insufficient_quota")
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "insufficient_quota" and info.value.type == "insufficient_quota"


async def test_content_policy_400(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    fake.fail_next(400, code="content_filter")
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.code == "content_filter"
    fake.fail_next(400, path="/images")
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.generate(model="dall-e-3", prompt="something")
    assert info.value.code == "content_policy_violation"


async def test_server_errors(client: openai.AsyncOpenAI, fake: FakeOpenAI) -> None:
    for status, exc in ((500, openai.InternalServerError), (503, openai.InternalServerError)):
        fake.fail_next(status)
        with pytest.raises(exc) as info:
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert info.value.status_code == status
        assert info.value.type == "server_error"


async def test_hang_trips_client_timeout(fake: FakeOpenAI) -> None:
    fake.hang_next()
    sdk = openai.AsyncOpenAI(api_key=KEY, base_url=fake.url, max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        await sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    await sdk.close()


async def test_latency_and_wait_until(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake.latency = 0.2
    started = time.monotonic()
    task = asyncio.create_task(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "slow"}]
        )
    )
    await fake.wait_until(lambda: len(fake.chat_requests) == 1, timeout=2)
    await task
    assert time.monotonic() - started >= 0.2
    with pytest.raises(AssertionError, match="condition not met"):
        await fake.wait_until(lambda: False, timeout=0.05)


# ------------------------------------------------------------------ images


async def test_image_generation_per_family(client: openai.AsyncOpenAI) -> None:
    result = await client.images.generate(
        model="gpt-image-2", prompt="a red fox", size="1536x1024", quality="low", n=2
    )
    assert result.data is not None and len(result.data) == 2 and result.usage is not None
    img = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert img.format == "PNG" and img.size == (1536, 1024)

    result = await client.images.generate(
        model="dall-e-3", prompt="a red fox", size="1792x1024", response_format="b64_json"
    )
    assert result.data and result.data[0].revised_prompt
    img = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert img.size == (1792, 1024)

    result = await client.images.generate(model="dall-e-2", prompt="a red fox", size="256x256")
    assert result.data and result.data[0].url
    async with aiohttp.ClientSession() as http, http.get(result.data[0].url) as resp:
        assert Image.open(io.BytesIO(await resp.read())).size == (256, 256)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"model": "gpt-image-1.5", "size": "1792x1024"}, "size"),
        ({"model": "gpt-image-2", "size": "1000x1000"}, "size"),
        ({"model": "dall-e-3", "size": "512x512"}, "size"),
        ({"model": "dall-e-2", "size": "1536x1024"}, "size"),
        ({"model": "gpt-image-2", "response_format": "url"}, "response_format"),
        ({"model": "gpt-image-2", "quality": "hd"}, "quality"),
        ({"model": "dall-e-3", "n": 2}, "n"),
        ({"model": "gpt-image-2", "n": 11}, "n"),
        ({"model": "gpt-4o-mini"}, "model"),
    ],
)
async def test_image_generation_rejects(
    client: openai.AsyncOpenAI, kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.generate(prompt="a fox", **kwargs)  # type: ignore[arg-type]
    assert info.value.param == param


async def test_image_edit(client: openai.AsyncOpenAI) -> None:
    photo = ("photo.png", png(64, 48), "image/png")
    result = await client.images.edit(model="gpt-image-1.5", image=[photo, photo], prompt="hat")
    assert result.data and result.size == "1536x1024"
    mask = ("mask.png", png(32, 32, alpha=True), "image/png")
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.edit(model="gpt-image-1.5", image=photo, mask=mask, prompt="hat")
    assert info.value.param == "mask" and "does not match" in info.value.message
    square = ("sq.png", png(64, 64, alpha=True), "image/png")
    ok = await client.images.edit(model="dall-e-2", image=square, prompt="hat", size="256x256")
    assert ok.data and ok.data[0].url


async def test_image_variations(client: openai.AsyncOpenAI) -> None:
    square = ("sq.png", png(64, 64), "image/png")
    result = await client.images.create_variation(
        model="dall-e-2", image=square, n=2, size="256x256", response_format="b64_json"
    )
    assert result.data and len(result.data) == 2
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.create_variation(model="gpt-image-2", image=square)
    assert info.value.param == "model"
    with pytest.raises(openai.BadRequestError):
        await client.images.create_variation(model="dall-e-2", image=("w.png", png(64, 32)))


# ------------------------------------------------------------------ audio


@needs_ffmpeg
async def test_transcription_of_real_ogg(fake: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    audio = ogg_opus()
    result = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe", file=("voice.ogg", audio, "audio/ogg")
    )
    assert result.text == f"transcript of voice.ogg ({len(audio)} bytes)"
    fake.transcribe("hello world")
    text = await client.audio.transcriptions.create(
        model="whisper-1", file=("voice.ogg", audio, "audio/ogg"), response_format="text"
    )
    assert text.strip() == "hello world"
    verbose = await client.audio.transcriptions.create(
        model="whisper-1", file=("voice.ogg", audio, "audio/ogg"), response_format="verbose_json"
    )
    assert 0.9 <= verbose.duration <= 1.2
    upload = fake.requests_to("/audio/transcriptions")[0].file("file")
    assert upload is not None and upload.data == audio and upload.filename == "voice.ogg"


@needs_ffmpeg
async def test_audio_rejections(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.audio.transcriptions.create(
            model="whisper-1", file=("voice.ogg", b"OggS" + b"\x00" * 200, "audio/ogg")
        )
    assert "corrupted or unsupported" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        await client.audio.transcriptions.create(
            model="whisper-1", file=("voice.wav", ogg_opus(0.5), "audio/wav")
        )
    assert "corrupted or unsupported" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        await client.audio.transcriptions.create(
            model="whisper-1", file=("voice.txt", b"hello", "text/plain")
        )
    assert "Invalid file format" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        await client.audio.translations.create(
            model="gpt-4o-mini-transcribe", file=("voice.ogg", ogg_opus(0.5), "audio/ogg")
        )
    assert info.value.param == "model"


@needs_ffmpeg
async def test_speech_formats(client: openai.AsyncOpenAI) -> None:
    opus = await client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="coral", input="Hello there", response_format="opus",
        instructions="cheerful",
    )  # fmt: skip
    assert opus.content.startswith(b"OggS")
    wav = await client.audio.speech.create(
        model="tts-1", voice="alloy", input="Hi", response_format="wav"
    )
    assert wav.content[:4] == b"RIFF" and wav.content[8:12] == b"WAVE"
    mp3 = await client.audio.speech.create(model="tts-1", voice="alloy", input="Hi")
    assert mp3.content[:3] == b"ID3" or mp3.content[0] == 0xFF


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"model": "tts-1", "voice": "alloy", "input": "x" * 4097}, "input"),
        ({"model": "tts-1", "voice": "marin", "input": "hi"}, "voice"),
        ({"model": "tts-1", "voice": "alloy", "input": "hi", "instructions": "calm"},
         "instructions"),
        ({"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "hi", "speed": 5}, "speed"),
        ({"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "hi",
          "response_format": "ogg"}, "response_format"),
    ],
)  # fmt: skip
async def test_speech_rejects(
    client: openai.AsyncOpenAI, kwargs: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.audio.speech.create(**kwargs)  # type: ignore[arg-type]
    assert info.value.param == param


# ------------------------------------------------------------------ embeddings


async def test_embeddings_are_deterministic(client: openai.AsyncOpenAI) -> None:
    first = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    again = await client.embeddings.create(
        model="text-embedding-3-small", input="a", encoding_format="float"
    )
    assert len(first.data) == 2 and len(first.data[0].embedding) == 1536
    assert first.data[0].embedding == pytest.approx(again.data[0].embedding)
    assert first.data[0].embedding != first.data[1].embedding
    small = await client.embeddings.create(
        model="text-embedding-3-small", input="a", dimensions=8
    )
    assert len(small.data[0].embedding) == 8


async def test_prompt_caching_reports_cached_tokens(fake: FakeOpenAI,
                                                    client: openai.AsyncOpenAI) -> None:
    system = {"role": "system", "content": "Keep this in mind. " * 300}  # ~1,400 tokens
    first = await client.chat.completions.create(
        model="gpt-5.4-mini", messages=[system, {"role": "user", "content": "one"}])
    second = await client.chat.completions.create(
        model="gpt-5.4-mini", messages=[system, {"role": "user", "content": "two"}])
    short = await client.chat.completions.create(
        model="gpt-5.4-mini", messages=[{"role": "user", "content": "hi"}] * 2)
    assert first.usage and second.usage and short.usage
    assert first.usage.prompt_tokens_details
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    details = second.usage.prompt_tokens_details
    assert details and details.cached_tokens
    # at least 1,024 tokens, in 128-token steps, never more than the prompt
    assert details.cached_tokens >= 1024 and details.cached_tokens % 128 == 0
    assert details.cached_tokens <= second.usage.prompt_tokens
    assert short.usage.prompt_tokens_details
    assert short.usage.prompt_tokens_details.cached_tokens == 0


async def test_usage_shapes_match_the_sdk_types(fake: FakeOpenAI,
                                                client: openai.AsyncOpenAI) -> None:
    edit = await client.images.edit(model="gpt-image-2", image=("a.png", png(512, 512),
                                                               "image/png"), prompt="blue")
    assert edit.usage is not None and edit.usage.input_tokens_details.image_tokens > 0
    assert edit.usage.input_tokens == (edit.usage.input_tokens_details.image_tokens
                                       + edit.usage.input_tokens_details.text_tokens)
    emb = await client.embeddings.create(model="text-embedding-3-small", input="x")
    assert [path for path, _ in fake.reported_usage] == ["/images", "/embeddings"]
    assert fake.reported_usage[1][1]["prompt_tokens"] == emb.usage.prompt_tokens
    fake.omit_usage = True
    bare = await client.images.generate(model="gpt-image-2", prompt="red")
    assert bare.usage is None and bare.data
    assert len(fake.reported_usage) == 2
