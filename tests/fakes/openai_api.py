"""Loopback fake of the OpenAI HTTP API for tests, strict like the real service.

The real `openai.AsyncOpenAI` client talks to it through `base_url=fake.url`. It
validates requests the way api.openai.com does (auth, unknown routes, unknown or
unsupported parameters, per-model limits) and answers with the documented JSON
shapes and error bodies. Answers are deterministic and scriptable; every request is
recorded so tests can assert what the model was sent.

`profile` makes it behave like a common local server's OpenAI-compatible API instead,
as those projects document it (see PROFILES): "llama.cpp" (llama-server), "ollama",
"vllm". Those accept any API key, ignore fields they do not know, count tokens with a
SentencePiece-like tokenizer (digits and punctuation one by one) and have a small
context window (`n_ctx`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import string
import tempfile
import time
import wave
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import BodyPartReader, web
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

CHAT_MODELS = ("gpt-5.4-mini", "gpt-5.5", "gpt-5.4", "gpt-4o-mini")
IMAGE_MODELS = ("gpt-image-2", "gpt-image-1.5", "dall-e-3", "dall-e-2")
AUDIO_MODELS = (
    "gpt-transcribe",
    "gpt-4o-mini-transcribe",
    "whisper-1",
    "gpt-4o-mini-tts",
    "tts-1",
)
EMBEDDING_MODELS = ("text-embedding-3-small",)
DEFAULT_MODELS = CHAT_MODELS + IMAGE_MODELS + AUDIO_MODELS + EMBEDDING_MODELS

# Top-level parameters of POST /v1/chat/completions (openai 3.x CompletionCreateParams).
CHAT_PARAMS = frozenset(
    {
        "messages", "model", "audio", "frequency_penalty", "function_call", "functions",
        "logit_bias", "logprobs", "max_completion_tokens", "max_tokens", "metadata",
        "modalities", "moderation", "n", "parallel_tool_calls", "prediction",
        "presence_penalty", "prompt_cache_key", "prompt_cache_options",
        "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier",
        "seed", "service_tier", "stop", "store", "stream", "stream_options", "temperature",
        "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
        "web_search_options",
    }
)  # fmt: skip
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
IMAGE_MIMES = ("image/png", "image/jpeg", "image/gif", "image/webp")
IMAGE_PIL_FORMATS = {"PNG", "JPEG", "GIF", "WEBP", "MPO"}
NAME_PATTERN = r"^[^\s<|\\/>]+$"
TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]+$"
VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
    "verse", "marin", "cedar",
)  # fmt: skip
TTS1_VOICES = ("alloy", "ash", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SPEECH_MIME = {
    "mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
    "wav": "audio/wav", "pcm": "audio/pcm",
}  # fmt: skip
AUDIO_EXTENSIONS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
AUDIO_MAX_BYTES = 26_214_400
GPT_IMAGE_SIZES = ("1024x1024", "1536x1024", "1024x1536", "auto")
DALLE3_SIZES = ("1024x1024", "1792x1024", "1024x1792")
DALLE2_SIZES = ("256x256", "512x512", "1024x1024")
MB = 1024 * 1024
SAMPLE_RATE = 24_000

Json = dict[str, Any]
_BODY = web.RequestKey("fake_openai_body", object)

# Local servers have none of the files / code / assistants endpoints
_NO_ASSISTANT = ("/files", "/containers", "/vector_stores", "/conversations", "/assistants",
                 "/threads")
# Local server profiles: the model each serves by default and what each one's OpenAI
# layer lacks (answered 404 in that server's own style).
PROFILES: dict[str, Json] = {
    "openai": {},
    # llama-server: one model, whatever name is asked for; /props; no Responses, Images
    # or audio API; embeddings only when started with --embeddings (off here)
    "llama.cpp": {"models": ("gemma-3-270m-it-Q8_0.gguf",), "style": "llamacpp",
                  "missing": ("/responses", "/images", "/audio", *_NO_ASSISTANT)},
    # Ollama's OpenAI compatibility layer (/v1/chat/completions, /v1/models,
    # /v1/embeddings) plus its native /api/show and /api/version
    "ollama": {"models": ("llama3.2:latest", "nomic-embed-text:latest"), "style": "ollama",
               "missing": ("/responses", "/images", "/audio", *_NO_ASSISTANT)},
    # vLLM's OpenAI server for a generative model: /v1/models with max_model_len
    "vllm": {"models": ("Qwen/Qwen2.5-1.5B-Instruct",), "style": "fastapi",
             "missing": ("/responses", "/images", "/audio", "/embeddings", *_NO_ASSISTANT)},
}
_LOCAL_PIECES = re.compile(r"[A-Za-z]+|\d|\n|[^\sA-Za-z\d]|\s+")


def count_tokens_local(text: str) -> int:
    """How a SentencePiece vocabulary (Gemma, Llama) splits text: each digit, punctuation
    mark, newline and non-ASCII character is a token, a word one (two past 8 letters)."""
    total = 0
    for piece in _LOCAL_PIECES.findall(text):
        if piece[0].isalpha() and piece[0].isascii():
            total += 1 if len(piece) <= 8 else 2
        elif piece[0] in " \t":
            continue
        else:
            total += len(piece) if not piece.isascii() else 1
    return total
ReplyFn = Callable[[Json], "str | _ToolCalls"]


class ApiError(Exception):
    """An error the fake answers in OpenAI's `{"error": {...}}` shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: Json = {
            "error": {"message": message, "type": type, "param": param, "code": code}
        }
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class UploadedFile:
    """One file part of a multipart request."""

    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Request:
    """One request as the fake received it (Authorization redacted)."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)
    at: float = 0.0

    def field(self, name: str) -> str | None:
        """Last value of a multipart text field, or None."""
        values = self.fields.get(name)
        return values[-1] if values else None

    def file(self, name: str) -> UploadedFile | None:
        """First uploaded file of a multipart field, or None."""
        return next((f for f in self.files if f.field == name), None)


_RECORD = web.RequestKey("fake_openai_record", Request)


@dataclass
class _Failure:
    status: int
    message: str | None
    type: str | None
    code: str | None
    param: str | None
    headers: dict[str, str]
    remaining: int
    path: str


@dataclass
class _Hang:
    path: str
    remaining: int


@dataclass
class _ToolCalls:
    calls: list[tuple[str, str]]


def tool_calls(*calls: tuple[str, Json | str]) -> _ToolCalls:
    """An answer of several parallel function calls, for `reply_fn` functions."""
    return _ToolCalls([(n, a if isinstance(a, str) else json.dumps(a)) for n, a in calls])


# --------------------------------------------------------------------------- helpers


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "an unknown type"


def _quote_list(values: Iterable[str]) -> str:
    items = [f"'{v}'" for v in values]
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f", and {items[-1]}"


def _invalid_type(param: str, expected: str, value: Any) -> ApiError:
    return ApiError(
        400,
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def _invalid_value(param: str, value: Any, supported: Iterable[str]) -> ApiError:
    return ApiError(
        400,
        f"Invalid value: '{value}'. Supported values are: {_quote_list(supported)}.",
        param=param,
        code="invalid_value",
    )


def _missing(param: str) -> ApiError:
    return ApiError(
        400,
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def _unrecognized(name: str) -> ApiError:
    return ApiError(400, f"Unrecognized request argument supplied: {name}")


def _unsupported_parameter(name: str, hint: str = "") -> ApiError:
    return ApiError(
        400,
        f"Unsupported parameter: '{name}' is not supported with this model.{hint}",
        param=name,
        code="unsupported_parameter",
    )


def _check_number(
    body: Json, name: str, lo: float, hi: float, *, integer: bool = False, param: str = ""
) -> None:
    """Type- and range-check an optional numeric parameter like the API does."""
    value = body.get(name)
    param = param or name
    if value is None:
        return
    kind = "integer" if integer else "decimal"
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok:
        raise _invalid_type(param, f"an {kind}" if integer else f"a {kind}", value)
    shown = value if integer or not float(value).is_integer() else int(value)
    if value < lo:
        raise ApiError(
            400,
            f"Invalid '{param}': {kind} below minimum value. Expected a value >= "
            f"{_num(lo)}, but got {shown} instead.",
            param=param,
            code=f"{kind}_below_min_value",
        )
    if value > hi:
        raise ApiError(
            400,
            f"Invalid '{param}': {kind} above maximum value. Expected a value <= "
            f"{_num(hi)}, but got {shown} instead.",
            param=param,
            code=f"{kind}_above_max_value",
        )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_string_length(param: str, value: str, maximum: int) -> None:
    if len(value) > maximum:
        raise ApiError(
            400,
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{maximum}, but got a string with length {len(value)} instead.",
            param=param,
            code="string_above_max_length",
        )


def count_tokens(text: str) -> int:
    """The fake's deterministic token estimate: one token per four characters, plus one."""
    return len(text) // 4 + 1


def _image_input_tokens(w: int, h: int) -> int:
    """Input image tokens of an edited image: 85 + 170 per 512-px tile once scaled to fit
    2048 px with the short side at most 768 (the published image-input formula)."""
    scale = min(1.0, 2048 / max(w, h))
    w, h = w * scale, h * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)


def _rand_id(prefix: str, n: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def _mask_key(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def _colour(seed: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return digest[0], digest[1], digest[2]


def render_image(
    width: int, height: int, colour: tuple[int, int, int], fmt: str = "png", *, alpha: bool = False
) -> bytes:
    """Encode a solid-colour image of the given size (what the fake 'generates')."""
    mode = "RGBA" if alpha else "RGB"
    fill = (*colour, 0) if alpha else colour
    img = Image.new(mode, (width, height), fill)
    buf = io.BytesIO()
    pil_fmt = {"png": "PNG", "webp": "WEBP", "jpeg": "JPEG"}[fmt]
    img.save(buf, format=pil_fmt)
    return buf.getvalue()


def _parse_size(size: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"(\d{1,5})x(\d{1,5})", size)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def sine_pcm(seconds: float, freq: float = 440.0) -> bytes:
    """Mono 16-bit little-endian PCM at 24 kHz: the raw audio the fake 'speaks'."""
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    return samples.tobytes()


def _wav(pcm: bytes) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    return buf.getvalue()


_FFMPEG_ARGS = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", "64k", "-f", "mp3"],
    "opus": ["-c:a", "libopus", "-b:a", "32k", "-f", "ogg"],
    "aac": ["-c:a", "aac", "-b:a", "64k", "-f", "adts"],
    "flac": ["-c:a", "flac", "-f", "flac"],
}


async def encode_audio(pcm: bytes, fmt: str) -> bytes:
    """Encode 24 kHz mono PCM into a speech response format (ffmpeg for compressed ones)."""
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return _wav(pcm)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError(f"FakeOpenAI needs ffmpeg to encode '{fmt}' audio")
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(SAMPLE_RATE),
        "-ac", "1", "-i", "pipe:0", *_FFMPEG_ARGS[fmt], "pipe:1",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate(pcm)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed encoding {fmt}: {err.decode(errors='replace')[:200]}")
    return out


def _sniff_audio(ext: str, data: bytes) -> bool:
    """Whether the bytes start like a file of this extension."""
    if ext in ("ogg", "oga"):
        return data.startswith(b"OggS")
    if ext == "wav":
        return data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    if ext == "flac":
        return data.startswith(b"fLaC")
    if ext in ("mp3", "mpga", "mpeg"):
        return data.startswith(b"ID3") or (
            len(data) > 1 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0
        )
    if ext in ("mp4", "m4a"):
        return data[4:8] == b"ftyp"
    if ext == "webm":
        return data.startswith(b"\x1a\x45\xdf\xa3")
    return False


async def _probe_duration(data: bytes, ext: str) -> float | None:
    """Duration in seconds via ffprobe; None if ffprobe cannot read it; -1.0 if no ffprobe."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return -1.0
    fd, path = tempfile.mkstemp(suffix="." + ext)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        proc = await asyncio.create_subprocess_exec(
            ffprobe, "-v", "error", "-show_entries", "format=duration:stream=codec_type",
            "-of", "json", path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
    finally:
        os.unlink(path)
    if proc.returncode != 0:
        return None
    try:
        info = json.loads(out)
    except ValueError:
        return None
    if not any(s.get("codec_type") == "audio" for s in info.get("streams", [])):
        return None
    try:
        return float(info.get("format", {}).get("duration", "nan"))
    except ValueError:
        return None


def _is_reasoning(model: str) -> bool:
    return (model.startswith("gpt-5") and "-chat" not in model) or bool(re.match(r"^o\d", model))


def _family(model: str) -> str:
    """chat, image, transcribe, tts or embedding, from the model id."""
    if model.startswith(("gpt-image", "chatgpt-image", "dall-e")):
        return "image"
    if "transcribe" in model or model.startswith("whisper"):
        return "transcribe"
    if model.startswith("tts-") or "-tts" in model:
        return "tts"
    if model.startswith("text-embedding"):
        return "embedding"
    return "chat"


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _ts(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


_STRICT_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "anyOf", "description", "title", "$defs", "definitions", "$ref", "default", "pattern",
    "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minItems", "maxItems", "$schema",
})  # fmt: skip


def _check_strict_schema(schema: Any, what: str, param: str, code: str) -> None:
    """Structured Outputs' rules for strict schemas (function parameters, json_schema):
    the root is an object, every object lists all its properties as required and sets
    additionalProperties to false, no unsupported keywords, no root anyOf."""

    def fail(context: tuple[str, ...], detail: str) -> ApiError:
        ctx = "(" + ", ".join(f"'{c}'" for c in context) + ("," if len(context) == 1 else "")
        return ApiError(
            400, f"Invalid schema for {what}: In context={ctx}), {detail}",
            param=param, code=code,
        )  # fmt: skip

    if not isinstance(schema, dict):
        raise fail((), "schema must be a JSON Schema of 'type: \"object\"', got "
                   f"'type: \"{_json_type(schema)}\"'.")
    if schema.get("type") != "object" or "anyOf" in schema:
        raise fail((), "schema must be a JSON Schema of 'type: \"object\"', got "
                   f"'type: \"{schema.get('type')}\"'.")

    def walk(node: Any, context: tuple[str, ...]) -> None:
        if not isinstance(node, dict):
            return
        for key in node:
            if key not in _STRICT_KEYWORDS:
                raise fail(context, f"'{key}' is not permitted.")
        kinds = node.get("type")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if "object" in kinds or "properties" in node:
            if node.get("additionalProperties") is not False:
                raise fail(context, "'additionalProperties' is required to be supplied and "
                           "to be false.")
            props = node.get("properties") or {}
            required = node.get("required")
            missing = [k for k in props if not isinstance(required, list) or k not in required]
            if missing:
                raise fail(context, "'required' is required to be supplied and to be an array "
                           f"including every key in properties. Missing '{missing[0]}'.")
            for name, sub in props.items():
                walk(sub, (*context, "properties", name))
        if "items" in node:
            walk(node["items"], (*context, "items"))
        for i, sub in enumerate(node.get("anyOf") or ()):
            walk(sub, (*context, "anyOf", str(i)))
        for defs in ("$defs", "definitions"):
            for name, sub in (node.get(defs) or {}).items():
                walk(sub, (*context, defs, name))

    walk(schema, ())


def _schema_instance(schema: Any) -> Any:
    """A minimal value matching a schema (the fake's answer in json_schema mode)."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if schema.get("anyOf"):
        return _schema_instance(schema["anyOf"][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {k: _schema_instance(v) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_schema_instance(schema.get("items"))] if schema.get("items") else []
    return {"string": "text", "integer": 1, "number": 1.5, "boolean": True}.get(str(kind))


def _word_vector(text: str, size: int) -> np.ndarray:
    """Bag-of-words embedding: each word has a fixed random direction, a text is the
    normalised sum, so texts sharing words are near each other (like real embeddings,
    and deterministic). Truncating to `dimensions` then normalising matches the API."""
    words = re.findall(r"\w+", text.lower()) or [text]
    total = np.zeros(size, dtype=np.float64)
    for word in words:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        total += np.random.default_rng(seed).standard_normal(size)
    norm = np.linalg.norm(total)
    return (total / norm if norm else total).astype("<f4")


# --------------------------------------------------------------------------- failures

_CHAT_POLICY = (
    "Invalid prompt: your prompt was flagged as potentially violating our usage policy. "
    "Please try again with a different prompt: "
    "https://platform.openai.com/docs/guides/reasoning#advice-on-prompting"
)
_KNOWN_CODES: dict[str, tuple[str, str]] = {
    "insufficient_quota": (
        "You exceeded your current quota, please check your plan and billing details. For "
        "more information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors.",
        "insufficient_quota",
    ),
    "rate_limit_exceeded": ("", "requests"),
    "content_policy_violation": (
        "Your request was rejected as a result of our safety system. Your prompt may contain "
        "text that is not allowed by our safety system.",
        "invalid_request_error",
    ),
    "moderation_blocked": (
        "Your request was rejected by the safety system. If you believe this is an error, "
        "contact us at help.openai.com and include the request ID.",
        "image_generation_user_error",
    ),
    "content_filter": (
        "The response was filtered due to the prompt triggering Azure OpenAI's content "
        "management policy. Please modify your prompt and retry.",
        "invalid_request_error",
    ),
    "invalid_prompt": (_CHAT_POLICY, "invalid_request_error"),
    "invalid_api_key": ("Incorrect API key provided.", "invalid_request_error"),
    "model_not_found": (
        "The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
    ),
}


def _rate_limit_message(model: str) -> str:
    return (
        f"Rate limit reached for {model} in organization org-fake on requests per min (RPM): "
        "Limit 3, Used 3, Requested 1. Please try again in 1s. Visit "
        "https://platform.openai.com/account/rate-limits to learn more."
    )


def _failure_error(failure: _Failure, path: str, model: str) -> ApiError:
    """Build the error for a scripted failure, filling realistic defaults per status."""
    status = failure.status
    code = failure.code
    headers: dict[str, str] = {}
    if code is None:
        if status == 429:
            code = "rate_limit_exceeded"
        elif status == 400:
            code = "content_policy_violation" if path.startswith("/images") else "invalid_prompt"
        elif status == 401:
            code = "invalid_api_key"
        elif status == 404:
            code = "model_not_found"
    message, etype = _KNOWN_CODES.get(code or "", ("", ""))
    if code == "rate_limit_exceeded":
        message = _rate_limit_message(model)
        headers = {
            "retry-after": "1",
            "x-ratelimit-limit-requests": "3",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-limit-tokens": "40000",
            "x-ratelimit-remaining-tokens": "40000",
            "x-ratelimit-reset-tokens": "0s",
        }
    if not message:
        message, etype = {
            500: (
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
            ),
            502: ("Bad gateway.", "server_error"),
            503: ("The engine is currently overloaded, please try again later.", "server_error"),
            504: ("Gateway timeout.", "server_error"),
            403: ("You are not allowed to sample from this model.", "invalid_request_error"),
        }.get(status, (f"Request failed with status {status}.", "invalid_request_error"))
    headers.update(failure.headers)
    return ApiError(
        status,
        failure.message or message.replace("{model}", model),
        type=failure.type or etype or "invalid_request_error",
        param=failure.param,
        code=code,
        headers=headers,
    )


# --------------------------------------------------------------------------- the fake


class FakeOpenAI:
    """A loopback aiohttp server speaking the OpenAI REST API, strictly."""

    def __init__(
        self, api_key: str = "sk-test-key", models: Iterable[str] = DEFAULT_MODELS,
        *, profile: str = "openai", n_ctx: int = 4096, vision: bool = False,
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}")
        self.profile = profile
        self.n_ctx = n_ctx
        # llama.cpp with a vision projector (--mmproj) / an Ollama vision model
        self.vision = vision
        self.api_key = api_key
        if profile != "openai" and models is DEFAULT_MODELS:
            models = PROFILES[profile]["models"]
        self.models: list[str] = list(models)
        self.requests: list[Request] = []
        self.latency: float = 0.0
        self.chunk_delay: float = 0.0
        self.chunk_size: int = 4
        # like servers that report no usage: chat, images, transcriptions, speech (SSE),
        # embeddings answer without their `usage` objects
        self.omit_usage: bool = False
        # automatic prompt caching as api.openai.com does it: a prompt of 1,024 tokens or
        # more whose leading messages repeat an earlier request's (same model) reports the
        # shared prefix, in 128-token steps, as prompt_tokens_details.cached_tokens
        self.prompt_caching: bool = True
        self._prompt_prefixes: dict[str, deque[list[str]]] = {}
        self._cached_for: dict[int, int] = {}
        # every usage object the fake put in a response, with its path: what a bot that
        # records usage exactly must have recorded
        self.reported_usage: list[tuple[str, Json]] = []
        self.system_fingerprint: str = "fp_fake0000"
        self._replies: deque[str | _ToolCalls] = deque()
        self._reply_fn: ReplyFn | None = None
        self._embed_fn: Callable[[str, int], list[float]] | None = None
        self._transcripts: deque[str] = deque()
        self._failures: list[_Failure] = []
        self._hangs: list[_Hang] = []
        self._disabled: dict[str, str] = {}
        self._served: dict[str, bytes] = {}
        self._cond = asyncio.Condition()
        self._stopping = asyncio.Event()
        # hold(): streams pause at a point until release() (kill tests); `held` counts them
        self._hold_at: int | None = None
        self._gate = asyncio.Event()
        self.held = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._routes: dict[tuple[str, str], Callable[[web.Request], Awaitable[web.StreamResponse]]]
        self._routes = {
            ("GET", "/v1/models"): self._list_models,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("POST", "/v1/images/generations"): self._image_generations,
            ("POST", "/v1/images/edits"): self._image_edits,
            ("POST", "/v1/images/variations"): self._image_variations,
            ("POST", "/v1/audio/transcriptions"): self._transcriptions,
            ("POST", "/v1/audio/translations"): self._translations,
            ("POST", "/v1/audio/speech"): self._speech,
        }
        if profile == "llama.cpp":
            self._routes[("GET", "/props")] = self._llama_props
            self._routes[("GET", "/health")] = self._llama_health
            self._routes[("POST", "/v1/embeddings")] = self._llama_no_embeddings
        elif profile == "ollama":
            self._routes[("GET", "/api/version")] = self._ollama_version
            self._routes[("POST", "/api/show")] = self._ollama_show
        for prefix in PROFILES[profile].get("missing", ()):
            self.disable(prefix, style=PROFILES[profile]["style"])
        # files, containers, vector stores, conversations, responses, assistants
        from tests.fakes.openai_assistant import AssistantAPI

        self.assistant = AssistantAPI(self)

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind 127.0.0.1 on an ephemeral port and start serving."""
        app = web.Application(client_max_size=1024 * MB)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[union-attr]
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        """Release hanging requests and shut the server down."""
        self._stopping.set()
        await self.assistant.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        """The bound TCP port (after start())."""
        if self._port is None:
            raise RuntimeError("FakeOpenAI not started")
        return self._port

    @property
    def url(self) -> str:
        """The base_url to hand to AsyncOpenAI: http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- scripting

    def reply(self, text: str, *, times: int = 1) -> None:
        """Queue an exact chat answer (FIFO), used `times` times."""
        for _ in range(times):
            self._replies.append(text)

    def reply_tool_call(self, name: str, arguments: Json | str, *, times: int = 1) -> None:
        """Queue a chat answer that is one function tool call (finish_reason tool_calls)."""
        args = arguments if isinstance(arguments, str) else json.dumps(arguments)
        for _ in range(times):
            self._replies.append(_ToolCalls([(name, args)]))

    def reply_tool_calls(self, calls: list[tuple[str, Json | str]], *, times: int = 1) -> None:
        """Queue one answer of several parallel function calls, streamed like the API does
        (per call: a first fragment with index, id, type and name, then argument pieces)."""
        for _ in range(times):
            self._replies.append(tool_calls(*calls))

    def embed_fn(self, fn: Callable[[str, int], list[float]] | None) -> None:
        """Replace how texts become vectors (text, size) -> unit vector; None restores the
        default bag-of-words embedding (texts sharing words are similar)."""
        self._embed_fn = fn

    def reply_fn(self, fn: ReplyFn | None) -> None:
        """Set the default answer function (request body -> text); None restores echo."""
        self._reply_fn = fn

    def transcribe(self, text: str, *, times: int = 1) -> None:
        """Queue an exact transcript/translation text (FIFO)."""
        for _ in range(times):
            self._transcripts.append(text)

    def fail_next(
        self,
        status: int,
        *,
        message: str | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        path: str = "/chat/completions",
    ) -> None:
        """Make the next `times` requests to `path` (prefix, after /v1) fail like the API."""
        self._failures.append(
            _Failure(status, message, type, code, param, dict(headers or {}), times, path)
        )

    def hang_next(self, *, path: str = "/chat/completions", times: int = 1) -> None:
        """Make the next requests to `path` never answer (until stop()), to trip timeouts."""
        self._hangs.append(_Hang(path, times))

    def hold(self, pieces: int = 0) -> None:
        """Chat streams started from now on pause until release(): before the response
        (pieces=0) or after that many SSE events; `held` counts the paused ones."""
        self._hold_at = pieces
        self._gate = asyncio.Event()

    def release(self) -> None:
        """Let every paused stream go on; new ones are not held."""
        self._hold_at = None
        self._gate.set()

    async def _pause(self, at: int) -> None:
        if self._hold_at != at:
            return
        gate = self._gate
        self.held += 1
        await self._notify()
        stopping = asyncio.create_task(self._stopping.wait())
        opened = asyncio.create_task(gate.wait())
        try:
            await asyncio.wait({stopping, opened}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            opened.cancel()
            self.held -= 1
            await self._notify()

    def disable(self, path_prefix: str, *, style: str = "openai") -> None:
        """Answer 404 on a path prefix (after /v1) like a server lacking that endpoint.

        style: "openai" (Invalid URL JSON), "ollama" (plain `404 page not found`),
        "llamacpp" (`{"error": {"code": 404, "message": "File Not Found", ...}}`) or
        "fastapi" (vLLM: `{"detail": "Not Found"}`).
        """
        if style not in ("openai", "ollama", "llamacpp", "fastapi"):
            raise ValueError(f"unknown style {style!r}")
        self._disabled["/v1" + path_prefix] = style

    # ----------------------------------------------------------------- inspection

    @property
    def chat_requests(self) -> list[Json]:
        """JSON bodies of every POST /v1/chat/completions received, in order."""
        return [r.json for r in self.requests_to("/chat/completions")]

    def requests_to(self, path: str) -> list[Request]:
        """Recorded requests whose path (after /v1) equals `path`."""
        return [r for r in self.requests if r.path == "/v1" + path]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until predicate() is true, re-checked after every request and response."""
        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(predicate), timeout)
            except TimeoutError:
                paths = [f"{r.method} {r.path}" for r in self.requests[-10:]]
                raise AssertionError(
                    f"FakeOpenAI: condition not met within {timeout}s; "
                    f"{len(self.requests)} requests, last: {paths}"
                ) from None

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    # ----------------------------------------------------------------- dispatch

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        path = request.path
        try:
            if path.startswith("/_images/"):
                return self._serve_image(path)
            for prefix, style in self._disabled.items():
                if path.startswith(prefix):
                    await self._record(request, None, {}, [])
                    return self._disabled_response(request, style)
            handler = self._routes.get((request.method, path))
            if handler is None and request.method == "GET" and path.startswith("/v1/models/"):
                handler = self._get_model
            if handler is None:
                handler = self.assistant.route(request.method, path)
            await self._record_raw(request)
            if self.profile != "openai":  # local servers run without a key by default
                if handler is None:
                    return self._disabled_response(request, PROFILES[self.profile]["style"])
            else:
                self._check_auth(request)
            if handler is None:
                raise ApiError(404, f"Invalid URL ({request.method} {path})")
            response = await handler(request)
        except ApiError as err:
            response = self._error_response(err)
        except Exception:
            log.exception("FakeOpenAI handler failed for %s %s", request.method, path)
            response = self._error_response(
                ApiError(
                    500,
                    "The server had an error while processing your request. Sorry about that!",
                    type="server_error",
                )
            )
        finally:
            await self._notify()
        if not response.prepared and self.profile == "openai":
            response.headers.setdefault("x-request-id", _rand_id("req_", 32))
            response.headers.setdefault("openai-version", "2020-10-01")
            response.headers.setdefault(
                "openai-processing-ms", str(int((time.monotonic() - started) * 1000))
            )
            if self.latency > 0:
                await asyncio.sleep(self.latency)
        return response

    def _disabled_response(self, request: web.Request, style: str) -> web.Response:
        if style == "ollama":
            return web.Response(status=404, text="404 page not found")
        if style == "llamacpp":
            body = {"error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}
            return web.json_response(body, status=404)
        if style == "fastapi":
            return web.json_response({"detail": "Not Found"}, status=404)
        return self._error_response(
            ApiError(404, f"Invalid URL ({request.method} {request.path})")
        )

    def _error_response(self, err: ApiError) -> web.Response:
        resp = web.json_response(err.body, status=err.status)
        for key, value in err.headers.items():
            resp.headers[key] = value
        return resp

    def _check_auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        if not header.strip():
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username. You can obtain an API key "
                "from https://platform.openai.com/account/api-keys.",
            )
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or key.strip() != self.api_key:
            raise ApiError(
                401,
                f"Incorrect API key provided: {_mask_key(key.strip())}. You can find your API "
                "key at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )

    async def _record_raw(self, request: web.Request) -> None:
        """Record the request, parsing JSON or multipart bodies (never raises)."""
        body: Any = None
        fields: dict[str, list[str]] = {}
        files: list[UploadedFile] = []
        ctype = request.content_type
        try:
            if ctype == "multipart/form-data":
                reader = await request.multipart()
                while True:
                    part = await reader.next()
                    if part is None:
                        break
                    if not isinstance(part, BodyPartReader):  # nested multipart
                        continue
                    name = part.name or ""
                    data = await part.read(decode=False)
                    if part.filename is not None:
                        ptype = part.headers.get("Content-Type")
                        files.append(UploadedFile(name, part.filename, ptype, bytes(data)))
                    else:
                        fields.setdefault(name, []).append(bytes(data).decode("utf-8", "replace"))
            elif request.body_exists:
                raw = await request.read()
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = _BadJson(raw)
        except Exception:
            log.exception("FakeOpenAI could not read a request body")
        await self._record(request, body, fields, files)

    async def _record(
        self,
        request: web.Request,
        body: Any,
        fields: dict[str, list[str]],
        files: list[UploadedFile],
    ) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if "authorization" in headers:
            headers["authorization"] = "Bearer <redacted>"
        rec = Request(
            request.method, request.path, headers, None if isinstance(body, _BadJson) else body,
            fields, files, time.monotonic(),
        )  # fmt: skip
        self.requests.append(rec)
        request[_BODY] = body
        request[_RECORD] = rec
        await self._notify()

    def _serve_image(self, path: str) -> web.Response:
        data = self._served.get(path.rsplit("/", 1)[-1])
        if data is None:
            return web.Response(status=404, text="BlobNotFound")
        return web.Response(body=data, content_type="image/png")

    # ----------------------------------------------------------------- common checks

    def _json_body(self, request: web.Request, allowed: frozenset[str]) -> Json:
        body = request.get(_BODY)
        if isinstance(body, _BadJson) or request.content_type == "multipart/form-data":
            raise ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means you "
                "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
                "but what was sent was not valid JSON. If you have trouble figuring out how to "
                "fix this, please contact us through our help center at help.openai.com.)",
            )
        if not isinstance(body, dict):
            raise _invalid_type("body", "an object", body)
        for key in body:
            if key not in allowed:
                raise _unrecognized(key)
        return body

    def _form(self, request: web.Request, allowed: Iterable[str]) -> Request:
        if request.content_type != "multipart/form-data":
            raise ApiError(
                400,
                f"Invalid Content-Type header ({request.content_type}), expected "
                "multipart/form-data. (HINT: If you're using curl, you can pass -H "
                "'Content-Type: multipart/form-data')",
            )
        rec: Request = request[_RECORD]
        allowed_set = set(allowed)
        for name in [*rec.fields, *(f.field for f in rec.files)]:
            base = name.split("[", 1)[0]
            if name not in allowed_set and base not in allowed_set:
                raise _unrecognized(name)
        return rec

    def _model_exists(self, model: str) -> None:
        if self.profile == "llama.cpp":
            return  # serves its one model under whatever name is asked for
        if self.profile == "ollama" and model not in self.models:
            raise _local_error(404, f'model "{model}" not found, try pulling it first',
                               {"type": "api_error", "param": None, "code": None})
        if self.profile == "vllm" and model not in self.models:
            raise _local_error(404, f"The model `{model}` does not exist.",
                               {"type": "NotFoundError", "param": "model", "code": 404})
        if model not in self.models:
            raise ApiError(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )

    async def _maybe_fail(self, request: web.Request, model: str) -> None:
        """Apply scripted failures and hangs for this path (after auth, before validation)."""
        sub = request.path[len("/v1") :]
        for hang in self._hangs:
            if hang.remaining > 0 and sub.startswith(hang.path):
                hang.remaining -= 1
                self._hangs = [h for h in self._hangs if h.remaining > 0]
                await self._stopping.wait()
                raise ApiError(503, "Server shutting down.", type="server_error")
        for failure in self._failures:
            if failure.remaining > 0 and sub.startswith(failure.path):
                failure.remaining -= 1
                self._failures = [f for f in self._failures if f.remaining > 0]
                raise _failure_error(failure, sub, model)

    # ----------------------------------------------------------------- models

    def _model_obj(self, model: str) -> Json:
        if self.profile == "llama.cpp":
            return {"id": model, "object": "model", "created": 1_700_000_000,
                    "owned_by": "llamacpp",
                    "meta": {"vocab_type": 1, "n_vocab": 262_144, "n_ctx_train": 32_768,
                             "n_embd": 640, "n_params": 268_098_176, "size": 291_545_344}}
        if self.profile == "ollama":
            return {"id": model, "object": "model", "created": 1_700_000_000,
                    "owned_by": "library"}
        if self.profile == "vllm":
            return {"id": model, "object": "model", "created": 1_700_000_000,
                    "owned_by": "vllm", "root": model, "parent": None,
                    "max_model_len": self.n_ctx,
                    "permission": [{"id": _rand_id("modelperm-", 32),
                                    "object": "model_permission", "created": 1_700_000_000,
                                    "allow_create_engine": False, "allow_sampling": True,
                                    "allow_logprobs": True, "allow_search_indices": False,
                                    "allow_view": True, "allow_fine_tuning": False,
                                    "organization": "*", "group": None,
                                    "is_blocking": False}]}
        owner = "system" if not model.startswith(("gpt-5", "gpt-image-2")) else "openai"
        return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": owner}

    # ----------------------------------------------------------------- local servers

    async def _llama_props(self, request: web.Request) -> web.Response:
        """llama-server GET /props: server-wide settings of its one model."""
        return web.json_response({
            "default_generation_settings": {
                "id": 0, "id_task": -1, "n_ctx": self.n_ctx, "speculative": False,
                "is_processing": False,
                "params": {"n_predict": -1, "temperature": 0.8, "top_k": 40, "top_p": 0.95,
                           "stream": True},
            },
            "total_slots": 1,
            "model_alias": self.models[0],
            "model_path": f"/models/{self.models[0]}",
            "modalities": {"vision": self.vision, "audio": False},
            "chat_template": "{{ bos_token }}{% for message in messages %}...{% endfor %}",
            "bos_token": "<bos>", "eos_token": "<eos>",
            "build_info": "b6500-fake",
        })

    async def _llama_health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _llama_no_embeddings(self, request: web.Request) -> web.Response:
        raise _local_error(501, "This server does not support embeddings. Start it with "
                           "`--embeddings`", {"code": 501, "type": "not_supported_error"})

    async def _ollama_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.6"})

    async def _ollama_show(self, request: web.Request) -> web.Response:
        """Ollama POST /api/show: model details; context length in model_info."""
        body = request.get(_BODY)
        name = body.get("model") or body.get("name") if isinstance(body, dict) else None
        if not name:
            return web.json_response({"error": "model is required"}, status=400)
        if name not in self.models and f"{name}:latest" not in self.models:
            return web.json_response({"error": f"model '{name}' not found"}, status=404)
        embedding = "embed" in name
        caps = ["embedding"] if embedding else ["completion", "tools"]
        if self.vision and not embedding:
            caps.append("vision")
        return web.json_response({
            "license": "LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
            "modelfile": f"# Modelfile generated by \"ollama show\"\nFROM {name}\n",
            "parameters": 'stop                           "<|eot_id|>"',
            "template": "{{ .System }}{{ .Prompt }}",
            "details": {"parent_model": "", "format": "gguf", "family": "llama",
                        "families": ["llama"], "parameter_size": "3.2B",
                        "quantization_level": "Q4_K_M"},
            "model_info": {"general.architecture": "llama",
                           "general.parameter_count": 3_212_749_888,
                           "llama.context_length": self.n_ctx,
                           "llama.embedding_length": 3072},
            "capabilities": caps,
            "modified_at": "2025-10-01T12:00:00.000000000Z",
        })

    def _local_prompt_tokens(self, body: Json) -> int:
        return 3 + sum(3 + count_tokens_local(self.message_text(m)) for m in body["messages"])

    def _local_chat(self, body: Json, model: str) -> None:
        """What a local server does with a chat request before answering (raises its
        errors; may rewrite `body` as the server would see it)."""
        messages = body["messages"]
        if self.profile == "llama.cpp" and not self.vision:
            # without a vision projector the image parts are dropped, and with them the
            # message's text (what llama-cpp-python 0.3 did with Gemma 3 270M)
            for m in messages:
                if isinstance(m.get("content"), list) and any(
                        p.get("type") == "image_url" for p in m["content"]):
                    m["content"] = ""
        if self.profile == "llama.cpp":
            roles = [m.get("role") for m in messages if m.get("role") != "system"]
            expected = ["user", "assistant"] * len(roles)
            if roles != expected[: len(roles)]:
                # Gemma's chat template raises this; llama-server answers it as a 500
                raise _local_error(500, "Conversation roles must alternate user/assistant/"
                                   "user/assistant/...", {"code": 500, "type": "server_error"})
        prompt = self._local_prompt_tokens(body)
        if self.profile == "llama.cpp" and prompt >= self.n_ctx:
            raise _local_error(
                400, f"request ({prompt} tokens) exceeds the available context size "
                f"({self.n_ctx} tokens), try increasing it",
                {"code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": prompt,
                 "n_ctx": self.n_ctx})
        if self.profile == "vllm":
            asked = body.get("max_completion_tokens") or body.get("max_tokens") or 0
            if prompt + asked > self.n_ctx:
                raise _local_error(
                    400, f"This model's maximum context length is {self.n_ctx} tokens. "
                    f"However, you requested {prompt + asked} tokens ({prompt} in the "
                    f"messages, {asked} in the completion). Please reduce the length of the "
                    "messages or completion.",
                    {"type": "BadRequestError", "param": None, "code": 400})
        if self.profile == "ollama":
            # Ollama keeps the system prompt and the newest messages that fit num_ctx
            while len(messages) > 2 and self._local_prompt_tokens(body) >= self.n_ctx:
                del messages[1 if messages[0].get("role") == "system" else 0]

    async def _list_models(self, request: web.Request) -> web.Response:
        await self._maybe_fail(request, "")
        data = [self._model_obj(m) for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _get_model(self, request: web.Request) -> web.Response:
        model = request.path[len("/v1/models/") :]
        await self._maybe_fail(request, model)
        self._model_exists(model)
        return web.json_response(self._model_obj(model))

    # ----------------------------------------------------------------- chat

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        local = self.profile != "openai"
        body = self._json_body(request, frozenset(request.get(_BODY) or ()) if local and
                               isinstance(request.get(_BODY), dict) else CHAT_PARAMS)
        model = body.get("model")
        if model is None:
            raise ApiError(400, "you must provide a model parameter")
        if not isinstance(model, str):
            raise _invalid_type("model", "a string", model)
        await self._maybe_fail(request, model)
        if "messages" not in body:
            raise _missing("messages")
        self._model_exists(model)
        if _family(model) != "chat":
            raise ApiError(
                404,
                "This is not a chat model and thus not supported in the v1/chat/completions "
                "endpoint. Did you mean to use v1/completions?",
            )
        self._validate_chat(body, model)
        if local:
            body = json.loads(json.dumps(body))  # the recorded request stays as sent
            try:
                self._local_chat(body, model)
            except ApiError as err:
                if (err.status == 400 and self.profile == "llama.cpp" and body.get("stream")
                        and err.body["error"].get("type") == "exceed_context_size_error"):
                    return await self._empty_stream(request)
                raise
        else:
            self._cached_for[id(body)] = self._prompt_cache(body, model)
        text_or_calls = self._next_answer(body)
        if body.get("stream"):
            return await self._chat_stream(request, body, model, text_or_calls)
        return web.json_response(self._chat_completion(body, model, text_or_calls))

    def _validate_chat(self, body: Json, model: str) -> None:
        messages = body["messages"]
        if not isinstance(messages, list):
            raise _invalid_type("messages", "an array", messages)
        if not messages:
            raise ApiError(
                400,
                "Invalid 'messages': empty array. Expected an array with minimum length 1, but "
                "got an empty array instead.",
                param="messages",
                code="empty_array",
            )
        pending_calls: list[str] = []
        pending_at = 0
        for i, msg in enumerate(messages):
            p = f"messages[{i}]"
            if not isinstance(msg, dict):
                raise _invalid_type(p, "an object", msg)
            role = msg.get("role")
            if role is None:
                raise _missing(f"{p}.role")
            if role not in ROLES:
                raise _invalid_value(f"{p}.role", role, ROLES)
            if pending_calls and role != "tool":
                raise ApiError(
                    400,
                    "An assistant message with 'tool_calls' must be followed by tool messages "
                    "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                    f"response messages: {', '.join(pending_calls)}",
                    param=f"messages.[{pending_at}].role",
                )
            self._validate_message(msg, role, p)
            if role == "tool":
                call_id = msg["tool_call_id"]
                if call_id not in pending_calls:
                    raise ApiError(
                        400,
                        "Invalid parameter: messages with role 'tool' must be a response to a "
                        "preceeding message with 'tool_calls'.",
                        param=f"messages.[{i}].role",
                    )
                pending_calls.remove(call_id)
            if role == "assistant" and msg.get("tool_calls"):
                pending_calls = [c.get("id") for c in msg["tool_calls"]]
                pending_at = i
        if pending_calls:
            raise ApiError(
                400,
                "An assistant message with 'tool_calls' must be followed by tool messages "
                "responding to each 'tool_call_id'. The following tool_call_ids did not have "
                f"response messages: {', '.join(pending_calls)}",
                param=f"messages.[{pending_at}].role",
            )
        self._validate_chat_params(body, model)

    def _validate_message(self, msg: Json, role: str, p: str) -> None:
        allowed_keys = {
            "system": {"role", "content", "name"},
            "developer": {"role", "content", "name"},
            "user": {"role", "content", "name"},
            "assistant": {
                "role", "content", "name", "refusal", "tool_calls", "function_call", "audio",
                "annotations",
            },
            "tool": {"role", "content", "tool_call_id"},
            "function": {"role", "content", "name"},
        }[role]  # fmt: skip
        for key in msg:
            if key not in allowed_keys:
                raise ApiError(
                    400,
                    f"Additional properties are not allowed ('{key}' was unexpected) - "
                    f"'{p.replace('[', '.').rstrip(']')}'",
                    param=p,
                )
        name = msg.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise _invalid_type(f"{p}.name", "a string", name)
            if not re.match(NAME_PATTERN, name):
                raise ApiError(
                    400,
                    f"Invalid '{p}.name': string does not match pattern. Expected a string that "
                    f"matches the pattern '{NAME_PATTERN}'.",
                    param=f"{p}.name",
                    code="invalid_value",
                )
        if role == "tool":
            if "tool_call_id" not in msg:
                raise _missing(f"{p}.tool_call_id")
            if not isinstance(msg["tool_call_id"], str):
                raise _invalid_type(f"{p}.tool_call_id", "a string", msg["tool_call_id"])
        if role == "assistant" and msg.get("tool_calls") is not None:
            self._validate_tool_calls(msg["tool_calls"], f"{p}.tool_calls")
        if "content" not in msg:
            if role == "assistant" and (msg.get("tool_calls") or msg.get("function_call")):
                return
            raise _missing(f"{p}.content")
        content = msg["content"]
        if content is None and role == "assistant":
            return
        if isinstance(content, str):
            return
        if not isinstance(content, list):
            raise _invalid_type(f"{p}.content", "one of a string or array of objects", content)
        allowed_types = {
            "user": ("text", "image_url", "input_audio", "file"),
            "assistant": ("text", "refusal"),
        }.get(role, ("text",))
        for j, part in enumerate(content):
            self._validate_part(part, f"{p}.content[{j}]", role, allowed_types)

    def _validate_tool_calls(self, calls: Any, p: str) -> None:
        if not isinstance(calls, list):
            raise _invalid_type(p, "an array", calls)
        for k, call in enumerate(calls):
            cp = f"{p}[{k}]"
            if not isinstance(call, dict):
                raise _invalid_type(cp, "an object", call)
            for key in ("id", "type", "function"):
                if key not in call:
                    raise _missing(f"{cp}.{key}")
            if call["type"] != "function":
                raise _invalid_value(f"{cp}.type", call["type"], ("function",))
            fn = call["function"]
            if not isinstance(fn, dict) or "name" not in fn or "arguments" not in fn:
                raise _missing(f"{cp}.function.arguments")

    def _validate_part(self, part: Any, p: str, role: str, allowed: tuple[str, ...]) -> None:
        if not isinstance(part, dict):
            raise _invalid_type(p, "an object", part)
        ptype = part.get("type")
        if ptype is None:
            raise _missing(f"{p}.type")
        if ptype not in PART_TYPES:
            raise _invalid_value(f"{p}.type", ptype, PART_TYPES)
        if ptype not in allowed:
            if ptype == "image_url":
                raise ApiError(
                    400,
                    "Image URLs are only allowed for messages with role 'user', but this message "
                    f"with role '{role}' contains an image URL.",
                    param=p.split(".content")[0],
                    code="invalid_value",
                )
            raise _invalid_value(f"{p}.type", ptype, allowed)
        if ptype == "text":
            if "text" not in part:
                raise _missing(f"{p}.text")
            if not isinstance(part["text"], str):
                raise _invalid_type(f"{p}.text", "a string", part["text"])
        elif ptype == "refusal":
            if not isinstance(part.get("refusal"), str):
                raise _missing(f"{p}.refusal")
        elif ptype == "image_url":
            self._validate_image_url(part, p)
        elif ptype == "input_audio":
            audio = part.get("input_audio")
            if not isinstance(audio, dict):
                raise _missing(f"{p}.input_audio")
            if "data" not in audio:
                raise _missing(f"{p}.input_audio.data")
            if audio.get("format") not in ("wav", "mp3"):
                raise _invalid_value(
                    f"{p}.input_audio.format", audio.get("format"), ("wav", "mp3")
                )
            try:
                base64.b64decode(audio["data"], validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise ApiError(
                    400,
                    f"Invalid '{p}.input_audio.data': expected base64-encoded audio data.",
                    param=f"{p}.input_audio.data",
                    code="invalid_value",
                ) from None
        elif ptype == "file":
            fobj = part.get("file")
            if not isinstance(fobj, dict):
                raise _missing(f"{p}.file")
            if "file_id" not in fobj and "file_data" not in fobj:
                raise ApiError(
                    400,
                    f"Invalid '{p}.file': one of 'file_id' or 'file_data' must be provided.",
                    param=f"{p}.file",
                    code="invalid_value",
                )
            if "file_data" in fobj and "filename" not in fobj:
                raise _missing(f"{p}.file.filename")

    def _validate_image_url(self, part: Json, p: str) -> None:
        image = part.get("image_url")
        if image is None:
            raise _missing(f"{p}.image_url")
        if not isinstance(image, dict):
            raise _invalid_type(f"{p}.image_url", "an object", image)
        url = image.get("url")
        if url is None:
            raise _missing(f"{p}.image_url.url")
        if not isinstance(url, str):
            raise _invalid_type(f"{p}.image_url.url", "a string", url)
        detail = image.get("detail")
        if detail is not None and detail not in ("auto", "low", "high", "original"):
            raise _invalid_value(f"{p}.image_url.detail", detail, ("auto", "low", "high"))
        up = f"{p}.image_url.url"
        expected = (
            f"Invalid image URL: '{up}'. Expected a base64-encoded data URL with an image MIME "
            "type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU='), but got "
        )
        if url.startswith("https://"):
            return
        if url.startswith("http://"):
            raise ApiError(
                400, f"Error while downloading {url}.", param=up, code="invalid_image_url"
            )
        if not url.startswith("data:"):
            raise ApiError(
                400, expected + "a value without the 'data:' prefix.", param=up,
                code="invalid_value",
            )  # fmt: skip
        header, sep, payload = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise ApiError(
                400, expected + "a value that is not base64-encoded.", param=up,
                code="invalid_value",
            )  # fmt: skip
        if mime not in IMAGE_MIMES:
            raise ApiError(
                400, expected + f"unsupported MIME type '{mime}'.", param=up,
                code="invalid_value",
            )  # fmt: skip
        if not payload:
            raise ApiError(
                400, expected + "empty base64-encoded bytes.", param=up, code="invalid_value"
            )
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                400, expected + "invalid base64-encoded bytes.", param=up,
                code="invalid_image_url",
            ) from None  # fmt: skip
        try:
            with Image.open(io.BytesIO(raw)) as img:
                ok = img.format in IMAGE_PIL_FORMATS
                img.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            ok = False
        if not ok:
            raise ApiError(
                400,
                "You uploaded an unsupported image. Please make sure your image has of one the "
                "following formats: ['png', 'jpeg', 'gif', 'webp'].",
                code="invalid_image_format",
            )

    def _validate_chat_params(self, body: Json, model: str) -> None:
        if self.profile != "openai":
            return  # local servers ignore what they do not know
        reasoning = _is_reasoning(model)
        stream = body.get("stream")
        if stream is not None and not isinstance(stream, bool):
            raise _invalid_type("stream", "a boolean", stream)
        if body.get("stream_options") is not None:
            if not stream:
                raise ApiError(
                    400,
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    param="stream_options",
                )
            opts = body["stream_options"]
            if not isinstance(opts, dict):
                raise _invalid_type("stream_options", "an object", opts)
            for key in opts:
                if key not in ("include_usage", "include_obfuscation"):
                    raise _unrecognized(f"stream_options.{key}")
        if reasoning and body.get("max_tokens") is not None:
            raise _unsupported_parameter("max_tokens", " Use 'max_completion_tokens' instead.")
        _check_number(body, "max_tokens", 1, 10**7, integer=True)
        _check_number(body, "max_completion_tokens", 1, 10**7, integer=True)
        _check_number(body, "n", 1, 128, integer=True)
        _check_number(body, "temperature", 0, 2)
        _check_number(body, "top_p", 0, 1)
        _check_number(body, "presence_penalty", -2, 2)
        _check_number(body, "frequency_penalty", -2, 2)
        _check_number(body, "top_logprobs", 0, 20, integer=True)
        _check_number(body, "seed", -(2**63), 2**63 - 1, integer=True)
        if reasoning:
            for name in ("temperature", "top_p"):
                value = body.get(name)
                if value is not None and value != 1:
                    raise ApiError(
                        400,
                        f"Unsupported value: '{name}' does not support {value} with this model. "
                        "Only the default (1) value is supported.",
                        param=name,
                        code="unsupported_value",
                    )
        else:
            for name in ("reasoning_effort", "verbosity"):
                if body.get(name) is not None:
                    raise _unsupported_parameter(name)
        effort = body.get("reasoning_effort")
        efforts = ("none", "minimal", "low", "medium", "high", "xhigh")
        if effort is not None and effort not in efforts:
            raise _invalid_value("reasoning_effort", effort, efforts)
        verbosity = body.get("verbosity")
        if verbosity is not None and verbosity not in ("low", "medium", "high"):
            raise _invalid_value("verbosity", verbosity, ("low", "medium", "high"))
        modalities = body.get("modalities")
        if modalities is not None:
            if not isinstance(modalities, list):
                raise _invalid_type("modalities", "an array", modalities)
            for k, mod in enumerate(modalities):
                if mod not in ("text", "audio"):
                    raise _invalid_value(f"modalities[{k}]", mod, ("text", "audio"))
            if "audio" in modalities and "audio" not in model:
                raise ApiError(
                    400,
                    "This model does not support the audio modality.",
                    param="modalities",
                    code="invalid_value",
                )
        self._validate_response_format(body)
        self._validate_tools(body)

    def _validate_response_format(self, body: Json) -> None:
        rf = body.get("response_format")
        if rf is None:
            return
        if not isinstance(rf, dict):
            raise _invalid_type("response_format", "an object", rf)
        kinds = ("text", "json_object", "json_schema")
        if rf.get("type") not in kinds:
            raise _invalid_value("response_format.type", rf.get("type"), kinds)
        if rf["type"] == "json_schema":
            schema = rf.get("json_schema")
            if not isinstance(schema, dict):
                raise _missing("response_format.json_schema")
            if "name" not in schema:
                raise _missing("response_format.json_schema.name")
            if not isinstance(schema["name"], str) or not re.match(TOOL_NAME_PATTERN,
                                                                   schema["name"]):
                raise ApiError(
                    400,
                    "Invalid 'response_format.json_schema.name': string does not match "
                    f"pattern. Expected a string that matches the pattern '{TOOL_NAME_PATTERN}'.",
                    param="response_format.json_schema.name",
                    code="invalid_value",
                )
            if schema.get("strict"):
                _check_strict_schema(
                    schema.get("schema"), f"response_format '{schema['name']}'",
                    "response_format", "invalid_json_schema",
                )
        if rf["type"] == "json_object":
            blob = json.dumps(body["messages"]).lower()
            if "json" not in blob:
                raise ApiError(
                    400,
                    "'messages' must contain the word 'json' in some form, to use "
                    "'response_format' of type 'json_object'.",
                    param="messages",
                )

    def _validate_tools(self, body: Json) -> None:
        tools = body.get("tools")
        if tools is not None:
            if not isinstance(tools, list):
                raise _invalid_type("tools", "an array", tools)
            for k, tool in enumerate(tools):
                tp = f"tools[{k}]"
                if not isinstance(tool, dict):
                    raise _invalid_type(tp, "an object", tool)
                if tool.get("type") not in ("function", "custom"):
                    raise _invalid_value(f"{tp}.type", tool.get("type"), ("function", "custom"))
                key = tool["type"]
                spec = tool.get(key)
                if not isinstance(spec, dict):
                    raise _missing(f"{tp}.{key}")
                name = spec.get("name")
                if name is None:
                    raise _missing(f"{tp}.{key}.name")
                if not isinstance(name, str) or not re.match(TOOL_NAME_PATTERN, name):
                    raise ApiError(
                        400,
                        f"Invalid '{tp}.{key}.name': string does not match pattern. Expected a "
                        f"string that matches the pattern '{TOOL_NAME_PATTERN}'.",
                        param=f"{tp}.{key}.name",
                        code="invalid_value",
                    )
                _check_string_length(f"{tp}.{key}.name", name, 64)
                if key == "function" and spec.get("strict"):
                    _check_strict_schema(
                        spec.get("parameters"), f"function '{name}'",
                        f"{tp}.function.parameters", "invalid_function_parameters",
                    )
        if body.get("tool_choice") is not None and not tools:
            raise ApiError(
                400,
                "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                "specified.",
                param="tool_choice",
            )
        if body.get("parallel_tool_calls") is not None and not tools:
            raise ApiError(
                400,
                "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed "
                "when 'tools' are specified.",
                param="parallel_tool_calls",
            )

    # ----------------------------------------------------------------- chat answers

    @staticmethod
    def message_text(msg: Json) -> str:
        """The text parts of a chat message joined with newlines."""
        content = msg.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
        return ""

    def _default_answer(self, body: Json) -> str:
        users = [m for m in body["messages"] if m.get("role") == "user"]
        if not users:
            return "echo: "
        last = users[-1]
        text = self.message_text(last)
        extra = ""
        if isinstance(last.get("content"), list):
            images = sum(1 for p in last["content"] if p.get("type") == "image_url")
            audio = sum(1 for p in last["content"] if p.get("type") == "input_audio")
            if images:
                extra += f" [images: {images}]"
            if audio:
                extra += f" [audio: {audio}]"
        return f"echo: {text}{extra}"

    def _next_answer(self, body: Json) -> str | _ToolCalls:
        if self._replies:
            return self._replies.popleft()
        if self._reply_fn is not None:
            return self._reply_fn(body)
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_object":
            return json.dumps({"echo": self._default_answer(body)[len("echo: "):]})
        if rf.get("type") == "json_schema":
            return json.dumps(_schema_instance(rf["json_schema"].get("schema")))
        return self._default_answer(body)

    def _prompt_tokens(self, body: Json) -> tuple[int, int]:
        total = 3
        images = 0
        for msg in body["messages"]:
            total += 3 + count_tokens(self.message_text(msg))
            if isinstance(msg.get("content"), list):
                n = sum(1 for p in msg["content"] if p.get("type") == "image_url")
                images += n
                total += 85 * n
        return total, 85 * images

    def _prompt_cache(self, body: Json, model: str) -> int:
        """Cached prompt tokens of this request, and remember its prefix for later ones."""
        if not self.prompt_caching:
            return 0
        marks = [hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()
                 for m in body["messages"]]
        sizes = []
        for msg in body["messages"]:
            parts = msg.get("content") if isinstance(msg.get("content"), list) else []
            n = sum(1 for p in parts if isinstance(p, dict) and p.get("type") == "image_url")
            sizes.append(3 + count_tokens(self.message_text(msg)) + 85 * n)
        seen = self._prompt_prefixes.setdefault(model, deque(maxlen=64))
        shared = 0
        for earlier in seen:
            k = 0
            while k < min(len(earlier), len(marks)) and earlier[k] == marks[k]:
                k += 1
            shared = max(shared, k)
        seen.append(marks)
        tokens = 3 + sum(sizes[:shared]) if shared else 0
        prompt = 3 + sum(sizes)
        if tokens < 1024 or prompt < 1024:
            return 0
        return min(prompt, tokens) // 128 * 128

    def _usage(self, body: Json, model: str, completion: int) -> Json:
        prompt, image_tokens = self._prompt_tokens(body)
        cached = self._cached_for.pop(id(body), 0)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {
                "cached_tokens": cached,
                "audio_tokens": 0,
                "image_tokens": image_tokens,
            },
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        if not self.omit_usage:
            self.reported_usage.append(("/chat/completions", usage))
        return usage

    async def _empty_stream(self, request: web.Request) -> web.StreamResponse:
        """llama.cpp (llama-cpp-python) streaming an over-long prompt: headers, no events."""
        resp = web.StreamResponse(status=200, headers={
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write_eof()
        return resp

    def _truncate(self, body: Json, text: str) -> tuple[str, str, int]:
        if self.profile in ("llama.cpp", "ollama"):
            # they honour max_tokens only; without it llama.cpp writes until its window is
            # full (Ollama's num_predict default is unlimited too)
            limit = body.get("max_tokens")
            room = max(1, self.n_ctx - self._local_prompt_tokens(body))
            limit = min(limit, room) if limit else room
            tokens = count_tokens(text)
            if tokens > limit:
                return text[: max(0, (limit - 1) * 4)], "length", limit
            return text, "stop", tokens
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        tokens = count_tokens(text)
        if limit is not None and tokens > limit:
            return text[: max(0, (limit - 1) * 4)], "length", limit
        return text, "stop", tokens

    def _chat_completion(self, body: Json, model: str, answer: str | _ToolCalls) -> Json:
        n = body.get("n") or 1
        choices = []
        completion = 0
        for index in range(n):
            message: Json = {"role": "assistant", "refusal": None, "annotations": []}
            if isinstance(answer, _ToolCalls):
                message["content"] = None
                message["tool_calls"] = [
                    {"id": _rand_id("call_"), "type": "function",
                     "function": {"name": name, "arguments": args}}
                    for name, args in answer.calls
                ]  # fmt: skip
                finish = "tool_calls"
                completion += sum(count_tokens(a) for _, a in answer.calls)
            else:
                text, finish, tokens = self._truncate(body, answer)
                message["content"] = text
                completion += tokens
            choices.append(
                {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
            )
        result: Json = {
            "id": _rand_id("chatcmpl-", 29),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": self._usage(body, model, completion),
            "service_tier": "default",
            "system_fingerprint": self.system_fingerprint,
        }
        if self.omit_usage:
            del result["usage"]
        return result

    async def _chat_stream(
        self, request: web.Request, body: Json, model: str, answer: str | _ToolCalls
    ) -> web.StreamResponse:
        opts = body.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage")) and not self.omit_usage
        obfuscate = opts.get("include_obfuscation", True) and self.profile == "openai"
        base: Json = {
            "id": _rand_id("chatcmpl-", 29),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": self.system_fingerprint,
        }

        def chunk(delta: Json, finish: str | None = None, index: int = 0) -> Json:
            obj = dict(base)
            obj["choices"] = [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ]
            if include_usage:
                obj["usage"] = None
            if obfuscate:
                obj["obfuscation"] = secrets.token_urlsafe(6)
            return obj

        resp = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                **({"x-request-id": _rand_id("req_", 32), "openai-version": "2020-10-01"}
                   if self.profile == "openai" else {}),
            },
        )
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        await self._pause(0)
        try:
            await resp.prepare(request)
        except ConnectionResetError:
            log.info("FakeOpenAI: client went away before the answer")
            return resp
        completion = 0
        pieces: list[Json] = []
        for index in range(body.get("n") or 1):
            if isinstance(answer, _ToolCalls):
                for k, (name, args) in enumerate(answer.calls):
                    call = {"index": k, "id": _rand_id("call_"), "type": "function",
                            "function": {"name": name, "arguments": ""}}  # fmt: skip
                    if k == 0:  # the first call rides in the role chunk
                        first = {"role": "assistant", "content": None, "tool_calls": [call],
                                 "refusal": None}  # fmt: skip
                        pieces.append(chunk(first, None, index))
                    else:
                        pieces.append(chunk({"tool_calls": [call]}, None, index))
                    for start in range(0, len(args), max(1, self.chunk_size)):
                        part = args[start : start + max(1, self.chunk_size)]
                        delta = {"tool_calls": [{"index": k, "function": {"arguments": part}}]}
                        pieces.append(chunk(delta, None, index))
                    completion += count_tokens(args)
                pieces.append(chunk({}, "tool_calls", index))
            else:
                text, finish, tokens = self._truncate(body, answer)
                completion += tokens
                pieces.append(
                    chunk({"role": "assistant", "content": "", "refusal": None}, None, index)
                )
                size = max(1, self.chunk_size)
                for start in range(0, len(text), size):
                    pieces.append(chunk({"content": text[start : start + size]}, None, index))
                pieces.append(chunk({}, finish, index))
        if include_usage:
            final = dict(base)
            final["choices"] = []
            final["usage"] = self._usage(body, model, completion)
            if obfuscate:
                final["obfuscation"] = secrets.token_urlsafe(6)
            pieces.append(final)
        try:
            for k, piece in enumerate(pieces):
                if k and self.chunk_delay > 0:
                    await asyncio.sleep(self.chunk_delay)
                if k:
                    await self._pause(k)
                await resp.write(_sse(piece))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except ConnectionResetError:
            log.info("FakeOpenAI: client went away mid-stream")
        return resp

    # ----------------------------------------------------------------- embeddings

    async def _embeddings(self, request: web.Request) -> web.Response:
        allowed = frozenset({"input", "model", "dimensions", "encoding_format", "user"})
        body = self._json_body(request, allowed)
        model = body.get("model")
        if model is None:
            raise ApiError(400, "you must provide a model parameter")
        if not isinstance(model, str):
            raise _invalid_type("model", "a string", model)
        await self._maybe_fail(request, model)
        if "input" not in body:
            raise _missing("input")
        self._model_exists(model)
        if _family(model) != "embedding":
            raise ApiError(
                400, f"Model {model} does not support embeddings.", param="model",
                code="invalid_value",
            )  # fmt: skip
        raw = body["input"]
        invalid = ApiError(
            400,
            "'$.input' is invalid. Please check the API reference: "
            "https://platform.openai.com/docs/api-reference.",
        )
        if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
            inputs: list[Any] = [raw]
        elif isinstance(raw, list):
            inputs = raw
        else:
            raise invalid
        if not inputs or len(inputs) > 2048:
            raise invalid
        for item in inputs:
            if item in ("", []) or not isinstance(item, str | list):
                raise invalid
            if isinstance(item, list) and not all(isinstance(t, int) for t in item):
                raise invalid
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _invalid_value("encoding_format", fmt, ("float", "base64"))
        dims = body.get("dimensions")
        full = 3072 if "large" in model else 1536
        if dims is not None:
            if "text-embedding-3" not in model:
                raise ApiError(400, "This model does not support specifying dimensions.",
                               param="dimensions")  # fmt: skip
            _check_number(body, "dimensions", 1, full, integer=True)
        size = dims or full
        data = []
        tokens = 0
        for index, item in enumerate(inputs):
            key = item if isinstance(item, str) else json.dumps(item)
            tokens += count_tokens(key) if isinstance(item, str) else len(item)
            if self._embed_fn is not None:
                vec = np.asarray(self._embed_fn(key, size), dtype="<f4")
            else:
                vec = _word_vector(key, full)[:size]
                vec = (vec / np.linalg.norm(vec)).astype("<f4")
            emb: Any = (
                base64.b64encode(vec.tobytes()).decode() if fmt == "base64" else vec.tolist()
            )
            data.append({"object": "embedding", "index": index, "embedding": emb})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        result: Json = {"object": "list", "data": data, "model": model, "usage": usage}
        if self.omit_usage:
            del result["usage"]
        else:
            self.reported_usage.append(("/embeddings", usage))
        return web.json_response(result)

    # ----------------------------------------------------------------- images

    def _image_model(self, model: Any, default: str = "dall-e-2") -> str:
        model = model if model is not None else default
        if not isinstance(model, str):
            raise _invalid_type("model", "a string", model)
        if model not in self.models:
            self._model_exists(model)
        if _family(model) != "image":
            supported = [m for m in self.models if _family(m) == "image"]
            raise _invalid_value("model", model, supported)
        return model

    def _image_params(
        self, params: Json, model: str, *, endpoint: str, first_size: tuple[int, int] | None
    ) -> tuple[int, int, int, str, str, str]:
        """Validate size/quality/n/format; return (w, h, n, fmt, quality, response_format)."""
        gpt = model.startswith(("gpt-image", "chatgpt-image"))
        prompt = params.get("prompt")
        if endpoint != "variations":
            if prompt is None:
                raise _missing("prompt")
            if not isinstance(prompt, str):
                raise _invalid_type("prompt", "a string", prompt)
            limit = 32000 if gpt else 4000 if model == "dall-e-3" else 1000
            _check_string_length("prompt", prompt, limit)
        _check_number(params, "n", 1, 10, integer=True)
        n = params.get("n") or 1
        if model == "dall-e-3" and n != 1:
            raise ApiError(400, "You must provide n=1 for this model.", param="n")
        size = params.get("size") or ("auto" if gpt else "1024x1024")
        quality = params.get("quality")
        if gpt:
            if params.get("response_format") is not None:
                raise ApiError(
                    400, "Unknown parameter: 'response_format'.", param="response_format",
                    code="unknown_parameter",
                )  # fmt: skip
            for legacy in ("style",):
                if params.get(legacy) is not None:
                    raise ApiError(
                        400, f"Unknown parameter: '{legacy}'.", param=legacy,
                        code="unknown_parameter",
                    )  # fmt: skip
            wh = self._gpt_image_size(model, size, first_size)
            qualities = ("low", "medium", "high", "auto")
            if quality is not None and quality not in qualities:
                raise _invalid_value("quality", quality, qualities)
            fmt = params.get("output_format") or "png"
            if fmt not in ("png", "webp", "jpeg"):
                raise _invalid_value("output_format", fmt, ("png", "webp", "jpeg"))
            if params.get("output_compression") is not None:
                _check_number(params, "output_compression", 0, 100, integer=True)
                if fmt == "png":
                    raise ApiError(
                        400,
                        "Compression less than 100 is not supported for PNG output format.",
                        param="output_compression",
                    )
            background = params.get("background")
            if background is not None and background not in ("transparent", "opaque", "auto"):
                raise _invalid_value("background", background, ("transparent", "opaque", "auto"))
            if background == "transparent" and fmt == "jpeg":
                raise ApiError(
                    400, "Transparent background is not supported for JPEG output format.",
                    param="background",
                )  # fmt: skip
            shown = quality if quality not in (None, "auto") else "medium"
            return wh[0], wh[1], n, fmt, shown, "b64_json"
        for gpt_only in ("output_format", "output_compression", "background", "moderation",
                         "input_fidelity", "partial_images", "stream"):  # fmt: skip
            if params.get(gpt_only) is not None:
                raise ApiError(
                    400, f"Unknown parameter: '{gpt_only}'.", param=gpt_only,
                    code="unknown_parameter",
                )  # fmt: skip
        sizes = DALLE3_SIZES if model == "dall-e-3" else DALLE2_SIZES
        if size not in sizes:
            raise _invalid_value("size", size, sizes)
        if model == "dall-e-3":
            if quality is not None and quality not in ("standard", "hd"):
                raise _invalid_value("quality", quality, ("standard", "hd"))
            style = params.get("style")
            if style is not None and style not in ("vivid", "natural"):
                raise _invalid_value("style", style, ("vivid", "natural"))
        else:
            if quality is not None and quality != "standard":
                raise _invalid_value("quality", quality, ("standard",))
            if params.get("style") is not None:
                raise ApiError(400, "Unknown parameter: 'style'.", param="style",
                               code="unknown_parameter")  # fmt: skip
        rf = params.get("response_format") or "url"
        if rf not in ("url", "b64_json"):
            raise _invalid_value("response_format", rf, ("url", "b64_json"))
        w, h = _parse_size(size) or (1024, 1024)
        return w, h, n, "png", quality or "standard", rf

    def _gpt_image_size(
        self, model: str, size: Any, first_size: tuple[int, int] | None
    ) -> tuple[int, int]:
        if not isinstance(size, str):
            raise _invalid_type("size", "a string", size)
        if size == "auto":
            if first_size is not None:
                w, h = first_size
                return (
                    (1536, 1024) if w > h * 1.2 else (1024, 1536) if h > w * 1.2 else (1024, 1024)
                )
            return 1024, 1024
        if size in GPT_IMAGE_SIZES:
            return _parse_size(size)  # type: ignore[return-value]
        flexible = model.startswith("gpt-image-2")
        parsed = _parse_size(size)
        if not flexible or parsed is None:
            raise _invalid_value("size", size, GPT_IMAGE_SIZES)
        w, h = parsed
        if w % 16 or h % 16:
            raise ApiError(
                400, f"Invalid size '{size}'. Width and height must both be divisible by 16.",
                param="size", code="invalid_value",
            )  # fmt: skip
        if max(w, h) > 3 * min(w, h):
            raise ApiError(
                400, f"Invalid size '{size}'. The aspect ratio must be between 1:3 and 3:1.",
                param="size", code="invalid_value",
            )  # fmt: skip
        if max(w, h) > 3840 or w * h > 3840 * 2160:
            raise ApiError(
                400, f"Invalid size '{size}'. The maximum supported resolution is 3840x2160.",
                param="size", code="invalid_value",
            )  # fmt: skip
        return w, h

    def _images_response(
        self, model: str, prompt: str, w: int, h: int, n: int, fmt: str, quality: str, rf: str,
        *, transparent: bool = False, inputs: Iterable[tuple[int, int]] = (),
    ) -> Json:  # fmt: skip
        gpt = model.startswith(("gpt-image", "chatgpt-image"))
        data = []
        for k in range(n):
            raw = render_image(w, h, _colour(f"{prompt}#{k}"), fmt, alpha=transparent)
            item: Json = {}
            if rf == "url":
                name = _rand_id("img-", 24) + ".png"
                self._served[name] = raw
                item["url"] = f"http://127.0.0.1:{self.port}/_images/{name}"
            else:
                item["b64_json"] = base64.b64encode(raw).decode()
            if model == "dall-e-3":
                item["revised_prompt"] = f"A detailed image of: {prompt}"
            data.append(item)
        result: Json = {"created": int(time.time()), "data": data}
        if gpt and not self.omit_usage:
            text_tokens = count_tokens(prompt)
            image_tokens = sum(_image_input_tokens(iw, ih) for iw, ih in inputs)
            out = {"low": 272, "medium": 1056, "high": 4160}.get(quality, 1056) * n
            result.update(
                background="transparent" if transparent else "opaque",
                output_format=fmt,
                quality=quality,
                size=f"{w}x{h}",
                usage={
                    "input_tokens": text_tokens + image_tokens,
                    "input_tokens_details": {"text_tokens": text_tokens,
                                             "image_tokens": image_tokens},
                    "output_tokens": out,
                    "output_tokens_details": {"text_tokens": 0, "image_tokens": out},
                    "total_tokens": text_tokens + image_tokens + out,
                },
            )
            self.reported_usage.append(("/images", result["usage"]))
        elif gpt:
            result.update(background="transparent" if transparent else "opaque",
                          output_format=fmt, quality=quality, size=f"{w}x{h}")
        return result

    async def _image_generations(self, request: web.Request) -> web.Response:
        allowed = frozenset({
            "prompt", "background", "complexity", "frame_count", "frame_duration_ms", "model",
            "moderation", "n", "output_compression", "output_format", "partial_images", "quality",
            "response_format", "safety_identifier", "size", "stream", "style", "svg", "user",
        })  # fmt: skip
        body = self._json_body(request, allowed)
        await self._maybe_fail(request, str(body.get("model") or "dall-e-2"))
        if "prompt" not in body:
            raise _missing("prompt")
        model = self._image_model(body.get("model"))
        if body.get("stream"):
            raise ApiError(400, "Streaming is not supported by this fake.", param="stream")
        if model == "dall-e-2" and body.get("quality") == "hd":
            raise _invalid_value("quality", "hd", ("standard",))
        w, h, n, fmt, quality, rf = self._image_params(
            body, model, endpoint="generations", first_size=None
        )
        transparent = body.get("background") == "transparent"
        result = self._images_response(
            model, body["prompt"], w, h, n, fmt, quality, rf, transparent=transparent
        )
        return web.json_response(result)

    def _form_params(
        self, rec: Request, ints: Iterable[str] = ("n", "output_compression", "partial_images")
    ) -> Json:
        params: Json = {}
        for name, values in rec.fields.items():
            params[name] = values[-1]
        for name in ints:
            if name in params:
                try:
                    params[name] = int(params[name])
                except ValueError:
                    raise _invalid_type(name, "an integer", params[name]) from None
        if params.get("stream") in ("false", "False", "0"):
            params["stream"] = None
        return params

    @staticmethod
    def _open_image(data: bytes) -> Image.Image | None:
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
            return img
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            return None

    async def _image_edits(self, request: web.Request) -> web.Response:
        allowed = (
            "image", "image[]", "prompt", "background", "complexity", "frame_count",
            "frame_duration_ms", "input_fidelity", "markup", "mask", "model", "n",
            "output_compression", "output_format", "partial_images", "quality",
            "response_format", "safety_identifier", "size", "stream", "svg", "user",
        )  # fmt: skip
        rec = self._form(request, allowed)
        params = self._form_params(rec)
        await self._maybe_fail(request, str(params.get("model") or "dall-e-2"))
        images = [f for f in rec.files if f.field in ("image", "image[]")]
        if not images:
            raise _missing("image")
        if "prompt" not in params:
            raise _missing("prompt")
        model = self._image_model(params.get("model"))
        gpt = model.startswith(("gpt-image", "chatgpt-image"))
        if not gpt and model != "dall-e-2":
            raise _invalid_value("model", model, [m for m in self.models if m != "dall-e-3"
                                                   and _family(m) == "image"])  # fmt: skip
        opened: list[Image.Image] = []
        if gpt:
            if len(images) > 16:
                raise ApiError(
                    400, f"Invalid 'image': too many images. Expected at most 16 images, but "
                    f"got {len(images)}.", param="image", code="invalid_value",
                )  # fmt: skip
            for up in images:
                img = self._open_image(up.data)
                if img is None or img.format not in ("PNG", "WEBP", "JPEG", "MPO"):
                    raise ApiError(
                        400,
                        f"Invalid file '{up.field}': unsupported mimetype "
                        f"('{up.content_type}'). Supported file formats are 'image/jpeg', "
                        "'image/png', and 'image/webp'.",
                        param=up.field, code="unsupported_file_mimetype",
                    )  # fmt: skip
                if len(up.data) >= 50 * MB:
                    raise ApiError(400, "Image file is too large. Maximum size is 50MB.",
                                   param=up.field, code="image_too_large")  # fmt: skip
                opened.append(img)
        else:
            if len(images) > 1:
                raise ApiError(400, "dall-e-2 accepts exactly one image.", param="image",
                               code="invalid_value")  # fmt: skip
            img = self._open_image(images[0].data)
            if img is None or img.format != "PNG" or len(images[0].data) >= 4 * MB:
                raise ApiError(400, "Uploaded image must be a PNG and less than 4 MB.",
                               param="image")  # fmt: skip
            if img.width != img.height:
                raise ApiError(400, "Uploaded image must be square.", param="image")
            if rec.file("mask") is None and img.mode not in ("RGBA", "LA", "L", "PA"):
                raise ApiError(
                    400,
                    "Invalid input image - format must be in ['RGBA', 'LA', 'L'], got "
                    f"{img.mode}.",
                    param="image",
                )
            opened.append(img)
        mask = rec.file("mask")
        if mask is not None:
            mimg = self._open_image(mask.data)
            if mimg is None or mimg.format != "PNG" or len(mask.data) >= 4 * MB:
                raise ApiError(400, "Uploaded mask must be a PNG and less than 4 MB.",
                               param="mask", code="invalid_image_format")  # fmt: skip
            if mimg.size != opened[0].size:
                raise ApiError(
                    400, "Invalid mask image format - mask size does not match image size",
                    param="mask", code="invalid_image_format",
                )  # fmt: skip
            if "A" not in mimg.getbands() and "transparency" not in mimg.info:
                raise ApiError(
                    400,
                    "Invalid mask image format - mask must have an alpha channel "
                    f"(format must be in ['RGBA', 'LA'], got {mimg.mode}).",
                    param="mask", code="invalid_image_format",
                )  # fmt: skip
        w, h, n, fmt, quality, rf = self._image_params(
            params, model, endpoint="edits", first_size=opened[0].size
        )
        transparent = params.get("background") == "transparent"
        result = self._images_response(
            model, str(params["prompt"]), w, h, n, fmt, quality, rf, transparent=transparent,
            inputs=[im.size for im in opened],
        )
        return web.json_response(result)

    async def _image_variations(self, request: web.Request) -> web.Response:
        rec = self._form(request, ("image", "model", "n", "response_format", "size", "user"))
        params = self._form_params(rec, ("n",))
        await self._maybe_fail(request, str(params.get("model") or "dall-e-2"))
        up = rec.file("image")
        if up is None:
            raise _missing("image")
        model = params.get("model") or "dall-e-2"
        if model != "dall-e-2":
            if model not in self.models:
                self._model_exists(model)
            raise _invalid_value("model", model, ("dall-e-2",))
        self._model_exists(model)
        img = self._open_image(up.data)
        if img is None or img.format != "PNG" or len(up.data) >= 4 * MB:
            raise ApiError(400, "Uploaded image must be a PNG and less than 4 MB.", param="image")
        if img.width != img.height:
            raise ApiError(400, "Uploaded image must be square.", param="image")
        params["prompt"] = None
        w, h, n, fmt, quality, rf = self._image_params(
            params, model, endpoint="variations", first_size=img.size
        )
        seed = hashlib.sha256(up.data).hexdigest()
        return web.json_response(self._images_response(model, seed, w, h, n, fmt, quality, rf))

    # ----------------------------------------------------------------- audio

    async def _audio_upload(
        self, request: web.Request, allowed: tuple[str, ...], *, translation: bool
    ) -> tuple[Request, Json, str, UploadedFile, float]:
        length = request.content_length
        if length is not None and length > AUDIO_MAX_BYTES:
            raise ApiError(
                413,
                f"Maximum content size limit ({AUDIO_MAX_BYTES}) exceeded ({length} bytes read)",
                type="server_error",
            )
        rec = self._form(request, allowed)
        params = self._form_params(rec, ())
        await self._maybe_fail(request, params.get("model") or "")
        up = rec.file("file")
        if up is None:
            raise _missing("file")
        if "model" not in params:
            raise _missing("model")
        model = params["model"]
        self._model_exists(model)
        if translation and model != "whisper-1":
            raise _invalid_value("model", model, ("whisper-1",))
        if _family(model) != "transcribe":
            supported = [m for m in self.models if _family(m) == "transcribe"]
            raise _invalid_value("model", model, supported)
        if len(up.data) > AUDIO_MAX_BYTES:
            raise ApiError(
                413,
                f"Maximum content size limit ({AUDIO_MAX_BYTES}) exceeded "
                f"({len(up.data)} bytes read)",
                type="server_error",
            )
        filename = up.filename or ""
        ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if ext not in AUDIO_EXTENSIONS:
            raise ApiError(
                400,
                f"Invalid file format. Supported formats: {list(AUDIO_EXTENSIONS)}",
            )
        duration = await _probe_duration(up.data, ext) if _sniff_audio(ext, up.data) else None
        if duration is None or (duration >= 0 and not math.isfinite(duration)):
            raise ApiError(
                400, "Audio file might be corrupted or unsupported", param="file",
                code="invalid_value",
            )  # fmt: skip
        if duration < 0:
            duration = max(0.1, len(up.data) / 16000)
        if duration < 0.1:
            raise ApiError(
                400, "Audio file is too short. Minimum audio length is 0.1 seconds.",
                param="file", code="audio_too_short",
            )  # fmt: skip
        _check_number({"temperature": _float_or(params.get("temperature"))}, "temperature", 0, 1)
        return rec, params, model, up, duration

    def _next_transcript(self, up: UploadedFile) -> str:
        if self._transcripts:
            return self._transcripts.popleft()
        return f"transcript of {up.filename} ({len(up.data)} bytes)"

    def _audio_text_response(
        self, text: str, fmt: str, model: str, duration: float, *, task: str, params: Json,
        rec: Request,
    ) -> web.Response:  # fmt: skip
        if fmt == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if fmt == "srt":
            srt = f"1\n{_ts(0, ',')} --> {_ts(duration, ',')}\n{text}\n\n"
            return web.Response(text=srt, content_type="text/plain")
        if fmt == "vtt":
            vtt = f"WEBVTT\n\n{_ts(0, '.')} --> {_ts(duration, '.')}\n{text}\n\n"
            return web.Response(text=vtt, content_type="text/plain")
        seconds_usage = {"type": "duration", "seconds": math.ceil(duration)}
        if fmt == "verbose_json":
            language = "english" if task == "translate" else params.get("language") or "english"
            result: Json = {
                "task": task, "language": language, "duration": round(duration, 2),
                "text": text,
                "segments": [{
                    "id": 0, "seek": 0, "start": 0.0, "end": round(duration, 2), "text": text,
                    "tokens": [50364 + i for i in range(count_tokens(text))],
                    "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.0,
                    "no_speech_prob": 0.01,
                }],
            }  # fmt: skip
            grans = rec.fields.get("timestamp_granularities[]", [])
            if "word" in grans:
                words = text.split()
                step = duration / max(1, len(words))
                result["words"] = [
                    {"word": wd, "start": round(i * step, 2), "end": round((i + 1) * step, 2)}
                    for i, wd in enumerate(words)
                ]
            if "segment" not in grans and grans:
                del result["segments"]
            if task == "transcribe" and not self.omit_usage:
                result["usage"] = seconds_usage
                self.reported_usage.append(("/audio/transcriptions", seconds_usage))
            return web.json_response(result)
        result = {"text": text}
        if task == "transcribe" and not self.omit_usage:
            if model == "whisper-1":
                result["usage"] = seconds_usage
            else:
                audio_tokens = max(1, int(duration * 10))
                out = count_tokens(text)
                result["usage"] = {
                    "type": "tokens", "input_tokens": audio_tokens,
                    "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
                    "output_tokens": out, "total_tokens": audio_tokens + out,
                }  # fmt: skip
            self.reported_usage.append(("/audio/transcriptions", result["usage"]))
        return web.json_response(result)

    async def _transcriptions(self, request: web.Request) -> web.Response:
        allowed = (
            "file", "model", "chunking_strategy", "include", "keywords", "known_speaker_names",
            "known_speaker_references", "language", "languages", "prompt", "response_format",
            "temperature", "timestamp_granularities", "stream",
        )  # fmt: skip
        rec, params, model, up, duration = await self._audio_upload(
            request, allowed, translation=False
        )
        fmt = params.get("response_format") or "json"
        formats = ("json", "text", "srt", "verbose_json", "vtt")
        if fmt not in formats and fmt != "diarized_json":
            raise _invalid_value("response_format", fmt, formats)
        if model != "whisper-1" and fmt not in ("json", "text"):
            raise ApiError(
                400,
                f"response_format '{fmt}' is not compatible with model '{model}'. Use 'json' or "
                "'text' instead.",
                param="response_format",
                code="unsupported_value",
            )
        if params.get("stream") in ("true", "True", "1"):
            raise ApiError(400, "Streaming transcription is not supported by this fake.",
                           param="stream")  # fmt: skip
        text = self._next_transcript(up)
        return self._audio_text_response(
            text, fmt, model, duration, task="transcribe", params=params, rec=rec
        )

    async def _translations(self, request: web.Request) -> web.Response:
        allowed = ("file", "model", "prompt", "response_format", "temperature")
        rec, params, model, up, duration = await self._audio_upload(
            request, allowed, translation=True
        )
        fmt = params.get("response_format") or "json"
        formats = ("json", "text", "srt", "verbose_json", "vtt")
        if fmt not in formats:
            raise _invalid_value("response_format", fmt, formats)
        text = self._next_transcript(up)
        return self._audio_text_response(
            text, fmt, model, duration, task="translate", params=params, rec=rec
        )

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        allowed = frozenset(
            {
                "input",
                "model",
                "voice",
                "instructions",
                "response_format",
                "speed",
                "stream_format",
            }
        )
        body = self._json_body(request, allowed)
        model = body.get("model")
        await self._maybe_fail(request, str(model or ""))
        for required in ("model", "input", "voice"):
            if required not in body:
                raise _missing(required)
        if not isinstance(model, str):
            raise _invalid_type("model", "a string", model)
        self._model_exists(model)
        if _family(model) != "tts":
            raise _invalid_value("model", model, [m for m in self.models if _family(m) == "tts"])
        text = body["input"]
        if not isinstance(text, str):
            raise _invalid_type("input", "a string", text)
        _check_string_length("input", text, 4096)
        legacy = model.startswith("tts-1")
        voice = body["voice"]
        if isinstance(voice, dict):
            if not isinstance(voice.get("id"), str):
                raise _missing("voice.id")
        elif voice not in (TTS1_VOICES if legacy else VOICES):
            raise _invalid_value("voice", voice, TTS1_VOICES if legacy else VOICES)
        if legacy and body.get("instructions") is not None:
            raise _unsupported_parameter("instructions")
        fmt = body.get("response_format") or "mp3"
        if fmt not in SPEECH_FORMATS:
            raise _invalid_value("response_format", fmt, SPEECH_FORMATS)
        _check_number(body, "speed", 0.25, 4.0)
        stream_format = body.get("stream_format") or "audio"
        if stream_format not in ("sse", "audio"):
            raise _invalid_value("stream_format", stream_format, ("sse", "audio"))
        if stream_format == "sse" and legacy:
            raise ApiError(
                400, f"stream_format 'sse' is not supported for {model}.",
                param="stream_format", code="unsupported_value",
            )  # fmt: skip
        speed = float(body.get("speed") or 1.0)
        seconds = min(2.0, max(0.3, 0.2 + len(text) / 100)) / speed
        seconds = min(4.0, max(0.1, seconds))
        audio = await encode_audio(sine_pcm(seconds, 220 + (sum(text.encode()) % 440)), fmt)
        if stream_format == "sse":
            return await self._speech_sse(request, audio, text)
        return web.Response(body=audio, content_type=SPEECH_MIME[fmt])

    async def _speech_sse(
        self, request: web.Request, audio: bytes, text: str
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        await resp.prepare(request)
        step = 4096
        for start in range(0, len(audio), step):
            piece = base64.b64encode(audio[start : start + step]).decode()
            await resp.write(_sse({"type": "speech.audio.delta", "audio": piece}))
            if self.chunk_delay > 0:
                await asyncio.sleep(self.chunk_delay)
        tokens = count_tokens(text)
        usage = {"input_tokens": tokens, "output_tokens": len(audio) // 100,
                 "total_tokens": tokens + len(audio) // 100}  # fmt: skip
        done: Json = {"type": "speech.audio.done"}
        if not self.omit_usage:
            done["usage"] = usage
            self.reported_usage.append(("/audio/speech", usage))
        await resp.write(_sse(done))
        await resp.write_eof()
        return resp


def _local_error(status: int, message: str, fields: Json) -> ApiError:
    """An error in a local server's own body shape: `{"error": {"message": ..., ...}}`."""
    err = ApiError(status, message)
    err.body = {"error": {"message": message, **fields}}
    return err


class _BadJson:
    """Marker for a request body that was not valid JSON."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


def _float_or(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise _invalid_type("temperature", "a decimal", value) from None


__all__ = [
    "DEFAULT_MODELS",
    "ApiError",
    "FakeOpenAI",
    "Request",
    "UploadedFile",
    "count_tokens",
    "encode_audio",
    "render_image",
    "sine_pcm",
]
