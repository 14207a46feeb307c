"""The only place that talks to the OpenAI SDK: models per task, retries, error mapping.

The SDK already retries connection errors, 408/409/429/5xx with exponential backoff and
honours Retry-After; we set its retry count and timeout from config. What is left here is
turning every failure into one short sentence a chat member can act on.
"""

from __future__ import annotations

import base64
import itertools
import logging
import re
import threading
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI, AsyncStream

from bot.config import Config
from bot.errors import ModelError, Unsupported
from bot.media import sniff_mime

log = logging.getLogger(__name__)

CLIENT_SHARDS = 8

# Models that reject max_tokens and want max_completion_tokens (reasoning families).
_COMPLETION_TOKENS_PREFIXES = ("gpt-5", "gpt-6", "o1", "o3", "o4")

MESSAGES = {
    "rate_limited": "The AI service is busy right now (rate limited). Please try again in a "
    "moment.",
    "quota": "The bot's AI quota is used up. An admin needs to check the OpenAI plan and "
    "billing.",
    "model_not_found": "The model `{model}` is not available on this AI server. An admin can "
    "pick another with /model.",
    "content_policy": "The AI service refused this request (content policy).",
    "server_error": "The AI service had an internal error. Please try again.",
    "timeout": "The AI service took too long to answer. Please try again.",
    "connection": "The AI service cannot be reached right now. Please try again later.",
    "auth": "The bot's AI API key was rejected. An admin needs to fix OPENAI_API_KEY.",
    "bad_request": "The AI service rejected the request: {detail}",
    "unsupported": "This AI server does not offer {what}.",
    "no_vision": "The model `{model}` cannot look at images on this AI server. An admin can "
    "set a model that can in `[models] vision`.",
}


def map_error(exc: Exception, *, model: str, what: str = "this feature") -> ModelError:
    """Translate an SDK exception into a short, distinct user-facing error."""
    if isinstance(exc, openai.APITimeoutError):
        return ModelError(MESSAGES["timeout"], "timeout")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError(MESSAGES["connection"], "connection")
    if isinstance(exc, openai.APIStatusError):
        code = (exc.code or "").lower()
        etype = str(getattr(exc, "type", "") or "").lower()
        if isinstance(exc, openai.RateLimitError):
            if "quota" in code or "quota" in etype:
                return ModelError(MESSAGES["quota"], "quota")
            return ModelError(MESSAGES["rate_limited"], "rate_limited")
        if isinstance(exc, openai.AuthenticationError):
            return ModelError(MESSAGES["auth"], "auth")
        if isinstance(exc, openai.NotFoundError):
            if code == "model_not_found" or "model" in str(exc.message).lower():
                return ModelError(MESSAGES["model_not_found"].format(model=model),
                                  "model_not_found")
            return Unsupported(MESSAGES["unsupported"].format(what=what))
        if exc.status_code in (405, 501):
            return Unsupported(MESSAGES["unsupported"].format(what=what))
        if exc.status_code in (400, 422, 500) and images_unsupported(str(exc.message)):
            return ModelError(MESSAGES["no_vision"].format(model=model), "no_vision")
        if code in ("content_policy_violation", "content_filter", "moderation_blocked",
                    "invalid_prompt") or "safety" in code:
            return ModelError(MESSAGES["content_policy"], "content_policy")
        if exc.status_code >= 500:
            return ModelError(MESSAGES["server_error"], "server_error")
        if exc.status_code == 402 or "quota" in code:
            return ModelError(MESSAGES["quota"], "quota")
        detail = _short(exc.message)
        return ModelError(MESSAGES["bad_request"].format(detail=detail), "bad_request")
    return ModelError(MESSAGES["server_error"], "server_error")


_NO_IMAGES = re.compile(
    r"image_url`? is (only|not) supported|not a multi-?modal model|at most 0 image"
    r"|(does not|doesn't|do not|cannot) (support|accept|process) (image|vision|multi-?modal)"
    r"|(image|vision|multi-?modal)( input| content)?s? (is |are )?not supported",
    re.IGNORECASE)


def images_unsupported(message: str) -> bool:
    """Whether an API error says the model cannot take image input (OpenAI, vLLM, llama.cpp,
    LM Studio and Ollama word it differently)."""
    return bool(_NO_IMAGES.search(message))


def _short(message: str, limit: int = 200) -> str:
    text = " ".join(str(message).split())
    # the SDK prefixes "Error code: 400 - {...}"; keep the API's own sentence when present
    if "'message': '" in text:
        text = text.split("'message': '", 1)[1].split("'", 1)[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Tokenizer:
    """tiktoken for OpenAI models when its encoding is available offline, else an estimate.

    The estimate over-counts on purpose (UTF-8 bytes / 3): too little context is better than
    a request the server rejects as too long.
    """

    def __init__(self, mode: str = "auto") -> None:
        self.mode = mode
        self._enc: Any = None
        if mode == "tiktoken":
            self._load()
        elif mode == "auto":
            # the encoding may need a download: never make start-up wait for it
            threading.Thread(target=self._load, name="tiktoken-load", daemon=True).start()

    def _load(self) -> None:
        try:
            import tiktoken

            self._enc = tiktoken.get_encoding("o200k_base")
        except Exception as e:  # offline, or the package cannot load its data
            log.warning("tiktoken unavailable (%s); using a size estimate", type(e).__name__)
            self.mode = "estimate"

    def count(self, text: str) -> int:
        """Tokens in a text (never zero for a non-empty string)."""
        if self._enc is not None:
            return len(self._enc.encode(text, disallowed_special=()))
        return len(text.encode("utf-8")) // 3 + 1


@dataclass
class ChatStream:
    """Deltas of one streamed answer; usage and finish reason are known once it ends."""

    model: str
    _iter: AsyncIterator[str] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    refusal: str = ""
    text: str = ""
    _source: Any = field(default=None, repr=False)

    def __aiter__(self) -> AsyncIterator[str]:
        assert self._iter is not None
        return self._iter


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One image from the Images API, as bytes (URLs are fetched once, here)."""

    data: bytes
    mime: str
    revised_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class ImageResult:
    """Images plus the token usage the API reported (GPT-image models report it)."""

    images: list[GeneratedImage]
    input_tokens: int = 0
    output_tokens: int = 0


FileTuple = tuple[str, bytes, str]  # (filename, data, mime)


class MediaAI:
    """Images and audio endpoints; mixed into AI so handlers see one object."""

    client: AsyncOpenAI

    async def generate_images(
        self, model: str, prompt: str, *, size: str | None = None, quality: str | None = None,
        n: int = 1,
    ) -> ImageResult:
        """Images API generations."""
        kwargs = _image_options(model, prompt=prompt, n=n, size=size, quality=quality)
        try:
            resp = await self.client.images.generate(**kwargs)
        except openai.OpenAIError as e:
            raise map_error(e, model=model, what="image generation") from e
        return await _image_result(resp)

    async def edit_images(
        self, model: str, prompt: str, images: list[FileTuple], *,
        mask: FileTuple | None = None, size: str | None = None, quality: str | None = None,
        n: int = 1,
    ) -> ImageResult:
        """Images API edits (several input images for GPT-image models, one for dall-e-2)."""
        kwargs = _image_options(model, prompt=prompt, n=n, size=size, quality=quality,
                                image=images if len(images) > 1 else images[0])
        if mask is not None:
            kwargs["mask"] = mask
        try:
            resp = await self.client.images.edit(**kwargs)
        except openai.OpenAIError as e:
            raise map_error(e, model=model, what="image editing") from e
        return await _image_result(resp)

    async def image_variations(
        self, model: str, image: FileTuple, *, n: int = 1, size: str | None = None
    ) -> ImageResult:
        """Images API variations (dall-e-2 only)."""
        kwargs: dict[str, Any] = {"model": model, "image": image, "n": n,
                                  "response_format": "b64_json"}
        if size:
            kwargs["size"] = size
        try:
            with warnings.catch_warnings():
                # the SDK marks the endpoint deprecated; compatible servers still serve it
                warnings.simplefilter("ignore", DeprecationWarning)
                pending = self.client.images.create_variation(**kwargs)
            resp = await pending
        except openai.OpenAIError as e:
            raise map_error(e, model=model, what="image variations") from e
        return await _image_result(resp)

    async def transcribe(
        self, model: str, file: FileTuple, *, language: str | None = None,
        prompt: str | None = None,
    ) -> str:
        """Speech to text (`audio.transcriptions`)."""
        kwargs: dict[str, Any] = {"model": model, "file": file, "response_format": "json"}
        if language:
            kwargs["language"] = language
        if prompt:
            kwargs["prompt"] = prompt
        try:
            resp = await self.client.audio.transcriptions.create(**kwargs)
        except openai.OpenAIError as e:
            raise map_error(e, model=model, what="speech-to-text") from e
        return str(getattr(resp, "text", "") or "")

    async def translate_audio(self, model: str, file: FileTuple) -> str:
        """Speech in any language to English text (`audio.translations`)."""
        try:
            with warnings.catch_warnings():
                # deprecated in the SDK (whisper-1 only); /translate falls back to
                # transcribe + chat-model translation where it is gone
                warnings.simplefilter("ignore", DeprecationWarning)
                pending = self.client.audio.translations.create(
                    model=model, file=file, response_format="json")
            resp = await pending
        except openai.OpenAIError as e:
            raise map_error(e, model=model, what="audio translation") from e
        return str(getattr(resp, "text", "") or "")

    async def speech(
        self, model: str, text: str, *, voice: str, speed: float = 1.0,
        instructions: str | None = None, fmt: str = "opus",
    ) -> bytes:
        """Text to speech (`audio.speech`), returned as the encoded audio bytes."""
        kwargs: dict[str, Any] = {"model": model, "input": text, "voice": voice,
                                  "response_format": fmt}
        if speed != 1.0:
            kwargs["speed"] = speed
        if instructions and not model.startswith("tts-1"):
            kwargs["instructions"] = instructions
        try:
            resp = await self.client.audio.speech.create(**kwargs)
        except openai.OpenAIError as e:
            raise map_error(e, model=model, what="text-to-speech") from e
        return bytes(resp.content)


def _image_options(model: str, *, size: str | None, quality: str | None,
                   **fields: Any) -> dict[str, Any]:
    """Request fields common to generations and edits; dall-e models are asked for base64
    (they default to URLs), GPT-image models always return base64 and reject the field."""
    kwargs: dict[str, Any] = {"model": model, **fields}
    if size:
        kwargs["size"] = size
    if quality:
        kwargs["quality"] = quality
    if model.startswith("dall-e"):
        kwargs["response_format"] = "b64_json"
    return kwargs


async def _image_result(resp: Any) -> ImageResult:
    images: list[GeneratedImage] = []
    for item in resp.data or []:
        if item.b64_json:
            data = base64.b64decode(item.b64_json)
        elif item.url:
            data = await _download(item.url)
        else:
            continue
        images.append(GeneratedImage(data=data, mime=sniff_mime(data) or "image/png",
                                     revised_prompt=getattr(item, "revised_prompt", None)))
    if not images:
        raise ModelError("The image service returned no image.", "server_error")
    usage = getattr(resp, "usage", None)
    return ImageResult(images, getattr(usage, "input_tokens", 0) or 0,
                       getattr(usage, "output_tokens", 0) or 0)


async def _download(url: str, limit: int = 50 * 1024 * 1024) -> bytes:
    """Fetch an image URL a server returned (servers that ignore response_format)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            r.raise_for_status()
            data = await r.content.read(limit + 1)
    except aiohttp.ClientError as e:
        raise ModelError("The generated image could not be downloaded.", "server_error") from e
    if len(data) > limit:
        raise ModelError("The generated image is too large.", "server_error")
    return data




class AI(MediaAI):
    """Async OpenAI client with per-task models from config."""

    def __init__(self, config: Config, tokenizer: Tokenizer | None = None) -> None:
        self.config = config
        self.models = config.models
        self.tokenizer = tokenizer or Tokenizer()
        # Several clients, used in turn: httpcore matches each request to a connection by
        # scanning the whole pool, so one pool of 500 busy connections costs O(n^2) CPU in
        # a burst; eight pools of ~60 cost an eighth of that.
        self._clients = [self._new_client(config) for _ in range(CLIENT_SHARDS)]
        self._next_client = itertools.cycle(self._clients)
        self.client = self._clients[0]
        self._legacy_max_tokens: set[str] = set()
        # models the server said cannot take images: follow-ups to them go as text only
        self.text_only_models: set[str] = set()

    @staticmethod
    def _new_client(config: Config) -> AsyncOpenAI:
        return AsyncOpenAI(
            api_key=config.secrets.openai_api_key or "not-needed",
            base_url=config.secrets.openai_base_url or None,
            organization=config.openai.organization or None,
            timeout=config.openai.timeout,
            max_retries=config.openai.max_retries,
        )

    async def close(self) -> None:
        """Close the HTTP connection pools."""
        for client in self._clients:
            await client.close()

    def _length_param(self, model: str, max_tokens: int) -> dict[str, int]:
        if model in self._legacy_max_tokens:
            return {"max_tokens": max_tokens}
        return {"max_completion_tokens": max_tokens}

    async def chat_stream(
        self, model: str, messages: list[dict[str, Any]], *, max_tokens: int
    ) -> ChatStream:
        """Start a streamed chat completion; errors before the first byte raise ModelError."""
        result = ChatStream(model=model)
        try:
            stream = await self._create_stream(model, messages, max_tokens)
        except openai.OpenAIError as e:
            raise map_error(e, model=model, what="chat") from e

        async def deltas() -> AsyncIterator[str]:
            try:
                async for chunk in stream:
                    if not isinstance(chunk, dict):
                        continue
                    usage = chunk.get("usage")
                    if isinstance(usage, dict):
                        result.prompt_tokens = usage.get("prompt_tokens")
                        result.completion_tokens = usage.get("completion_tokens")
                    for choice in chunk.get("choices") or ():
                        if choice.get("finish_reason"):
                            result.finish_reason = choice["finish_reason"]
                        delta = choice.get("delta") or {}
                        if delta.get("refusal"):
                            result.refusal += delta["refusal"]
                        content = delta.get("content")
                        if content:
                            result.text += content
                            yield content
            except openai.OpenAIError as e:
                raise map_error(e, model=model, what="chat") from e
            finally:
                await stream.close()

        result._iter = deltas()
        return result

    async def _create_stream(
        self, model: str, messages: list[dict[str, Any]], max_tokens: int
    ) -> Any:
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self._length_param(model, max_tokens),
        }
        try:
            return await self._post_stream("/chat/completions", kwargs)
        except openai.BadRequestError as e:
            retry = self._downgrade(model, e, kwargs)
            if retry is None:
                raise
            return await self._post_stream("/chat/completions", retry)

    async def _post_stream(self, path: str, body: dict[str, Any]) -> AsyncStream[object]:
        """A streamed request through the SDK's generic post (retries, errors, auth), with
        chunks left as dicts: the typed path re-validates every request parameter and
        builds a pydantic model per chunk, which cost more than the rest of the bot."""
        client = next(self._next_client)
        return await client.post(path, body=body, cast_to=object, stream=True,
                                 stream_cls=AsyncStream[object])

    def _downgrade(
        self, model: str, e: openai.BadRequestError, kwargs: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Older compatible servers reject newer parameters; retry once without them."""
        text = f"{e.param or ''} {e.message}".lower()
        retry = dict(kwargs)
        if "max_completion_tokens" in text and "max_completion_tokens" in retry:
            self._legacy_max_tokens.add(model)
            retry["max_tokens"] = retry.pop("max_completion_tokens")
            return retry
        if "stream_options" in text and "stream_options" in retry:
            retry.pop("stream_options")
            return retry
        return None

    async def complete(
        self, model: str, messages: list[dict[str, Any]], *, max_tokens: int
    ) -> tuple[str, int, int, bool]:
        """A non-streamed answer: (text, prompt tokens, completion tokens, estimated)."""
        try:
            resp = await self.client.chat.completions.create(
                model=model, messages=messages, **self._length_param(model, max_tokens)
            )
        except openai.OpenAIError as e:
            raise map_error(e, model=model, what="chat") from e
        text = (resp.choices[0].message.content or "") if resp.choices else ""
        if resp.usage is not None:
            return text, resp.usage.prompt_tokens, resp.usage.completion_tokens, False
        return text, self.estimate_messages(messages), self.tokenizer.count(text), True

    def estimate_messages(self, messages: list[dict[str, Any]]) -> int:
        """Token estimate of a request (used when the server sends no usage)."""
        total = 3
        for m in messages:
            content = m.get("content")
            if isinstance(content, str):
                total += 4 + self.tokenizer.count(content)
            elif isinstance(content, list):
                for part in content:
                    if part.get("type") == "text":
                        total += self.tokenizer.count(part.get("text", ""))
                    else:
                        total += 85
                total += 4
        return total
