"""What the AI server offers, asked once: models, context window, images, endpoints.

OpenAI-compatible servers differ in what they implement and never say so in the chat
API itself: llama.cpp ignores `max_completion_tokens` and answers an over-long prompt
with an empty stream, Ollama truncates silently, vLLM counts the answer's `max_tokens`
against the window. Each of them publishes its context window somewhere else
(llama.cpp `/props`, vLLM `/v1/models` `max_model_len`, Ollama `/api/show`), so the bot
asks once, in the background at start-up, and sizes every request to fit.

Every request goes through the AI object's own client (auth, base URL, timeouts), with
no retries: a server that is down is reported, not waited for.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import openai

if TYPE_CHECKING:
    from bot.ai import AI

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0

# OpenAI's published context windows (input + output), by model-name prefix; the first
# match wins, so longer prefixes come first.
OPENAI_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-5", 400_000), ("gpt-4.1", 1_047_576), ("gpt-4o", 128_000), ("gpt-4-turbo", 128_000),
    ("o1-mini", 128_000), ("o1", 200_000), ("o3", 200_000), ("o4", 200_000),
    ("gpt-4", 8_192), ("gpt-3.5", 16_385),
)  # fmt: skip
# OpenAI chat models that take image input (gpt-3.5 and o1-mini / o3-mini do not)
_OPENAI_VISION = re.compile(r"^(gpt-5|gpt-4\.1|gpt-4o|gpt-4-turbo|o1(?!-mini)|o3(?!-mini)|o4)")


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """One probe's findings; None means "could not tell" (learned on first use instead)."""

    reachable: bool
    kind: str = "unknown"
    models: tuple[str, ...] | None = None
    context_window: int | None = None
    vision: bool | None = None
    tools: bool | None = None
    embeddings: bool | None = None
    responses: bool | None = None
    audio: bool | None = None
    images: bool | None = None
    error: str | None = None
    model: str = ""

    @property
    def is_openai(self) -> bool:
        """OpenAI's own API (or a proxy that passes its headers through)."""
        return self.kind == "openai"

    def lines(self) -> list[str]:
        """Human-readable lines for /info, the log and the doctor."""
        if not self.reachable:
            return [f"AI server: not reachable ({self.error or 'no answer'})"]
        out = [f"AI server: {self.kind}"]
        if self.models is not None:
            shown = ", ".join(self.models[:12]) + (" …" if len(self.models) > 12 else "")
            out.append(f"models: {shown or '(none listed)'}")
            if self.model and self.models and self.model not in self.models:
                out.append(f"warning: the chat model {self.model} is not among them")
        window = f"{self.context_window:,} tokens" if self.context_window else "unknown"
        out.append(f"context window ({self.model or 'chat model'}): {window}")
        features = (("images in chat", self.vision), ("tools", self.tools),
                    ("embeddings", self.embeddings), ("Responses API", self.responses),
                    ("audio API", self.audio), ("images API", self.images))
        out.append("; ".join(f"{name}: {_yes_no(value)}" for name, value in features))
        return out


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def openai_window(model: str) -> int | None:
    """The published context window of an OpenAI model, by name."""
    for prefix, window in OPENAI_WINDOWS:
        if model.startswith(prefix):
            return window
    return None


def openai_vision(model: str) -> bool:
    """Whether an OpenAI chat model takes image input, by name."""
    return bool(_OPENAI_VISION.match(model))


def is_openai_url(base_url: str) -> bool:
    """No base URL, or api.openai.com: OpenAI's own API."""
    if not base_url:
        return True
    return (urlsplit(base_url).hostname or "").endswith("api.openai.com")


async def probe_server(ai: AI) -> ServerInfo:
    """Ask the server what it offers; never raises (an unreachable server is a result)."""
    try:
        return await asyncio.wait_for(_probe(ai), PROBE_TIMEOUT * 3)
    except TimeoutError:
        return ServerInfo(reachable=False, error="the server did not answer in time")
    except openai.APIConnectionError as e:
        return ServerInfo(reachable=False, error=f"{type(e).__name__}: {e.message}")
    except Exception as e:  # a server answering something unexpected must not stop the bot
        log.warning("server probe failed", exc_info=True)
        return ServerInfo(reachable=False, error=f"{type(e).__name__}: {e}")


async def _probe(ai: AI) -> ServerInfo:
    client = ai.client.with_options(max_retries=0, timeout=PROBE_TIMEOUT)
    model = ai.config.models.chat
    base_url = str(client.base_url).rstrip("/")
    root = re.sub(r"/v1$", "", base_url)
    models, entries, headers = await _models(client)
    official = is_openai_url(ai.config.secrets.openai_base_url)
    if official or "openai-version" in headers:
        return ServerInfo(
            reachable=True, kind="openai", models=models, model=model,
            context_window=openai_window(model), vision=openai_vision(model),
            tools=True, embeddings=True, responses=True, audio=True, images=True)
    entry = next((e for e in entries if e.get("id") == model), entries[0] if entries else {})
    owner = str(entry.get("owned_by", "")).lower()
    if owner == "vllm" or "max_model_len" in entry:
        window = entry.get("max_model_len")
        info = ServerInfo(reachable=True, kind="vLLM", models=models, model=model,
                          context_window=window if isinstance(window, int) else None)
        return await _endpoints(client, info)
    props = await _get(client, f"{root}/props")
    if isinstance(props, dict) and ("default_generation_settings" in props or "n_ctx" in props):
        return await _endpoints(client, _llama_cpp(props, models, model))
    version = await _get(client, f"{root}/api/version")
    if isinstance(version, dict) and "version" in version:
        return await _endpoints(client, await _ollama(client, root, models, model))
    return ServerInfo(reachable=True, kind="OpenAI-compatible", models=models, model=model)


async def _models(client: Any) -> tuple[tuple[str, ...] | None, list[dict[str, Any]],
                                       dict[str, str]]:
    """GET /models: ids, raw entries (servers add fields) and response headers."""
    try:
        raw = await client.models.with_raw_response.list()
    except openai.APIStatusError as e:
        log.info("the AI server lists no models (%s)", e.status_code)
        return None, [], {k.lower(): v for k, v in e.response.headers.items()}
    headers = {k.lower(): v for k, v in raw.headers.items()}
    try:
        body = raw.http_response.json()
    except ValueError:
        return None, [], headers
    data = body.get("data") if isinstance(body, dict) else None
    entries = [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []
    return tuple(str(e.get("id")) for e in entries if e.get("id")), entries, headers


async def _get(client: Any, url: str) -> Any:
    """A GET outside the OpenAI API; None when the server has no such path."""
    try:
        return await client.get(url, cast_to=object)
    except openai.APIStatusError:
        return None


def _llama_cpp(props: dict[str, Any], models: tuple[str, ...] | None, model: str) -> ServerInfo:
    """llama.cpp `/props`: n_ctx per slot, and (since 2025) the loaded model's modalities."""
    settings = props.get("default_generation_settings") or {}
    n_ctx = settings.get("n_ctx", props.get("n_ctx"))
    modalities = props.get("modalities")
    vision = modalities.get("vision") if isinstance(modalities, dict) else None
    caps = props.get("chat_template_caps")
    tools = caps.get("supports_tools") if isinstance(caps, dict) else None
    return ServerInfo(reachable=True, kind="llama.cpp", models=models, model=model,
                      context_window=n_ctx if isinstance(n_ctx, int) and n_ctx > 0 else None,
                      vision=vision if isinstance(vision, bool) else None,
                      tools=tools if isinstance(tools, bool) else None)


async def _ollama(client: Any, root: str, models: tuple[str, ...] | None,
                  model: str) -> ServerInfo:
    """Ollama `/api/show`: capabilities, and num_ctx (what it really uses) or the trained
    context length."""
    try:
        show = await client.post(f"{root}/api/show", body={"model": model}, cast_to=object)
    except openai.APIStatusError as e:
        log.info("Ollama has no model %s (%s)", model, e.status_code)
        return ServerInfo(reachable=True, kind="Ollama", models=models, model=model)
    show = show if isinstance(show, dict) else {}
    window: int | None = None
    match = re.search(r"(?m)^num_ctx\s+(\d+)", str(show.get("parameters") or ""))
    if match:
        window = int(match.group(1))
    else:
        info = show.get("model_info") or {}
        lengths = [v for k, v in info.items() if k.endswith(".context_length")
                   and isinstance(v, int)]
        window = lengths[0] if lengths else None
    caps = show.get("capabilities")
    caps = [str(c) for c in caps] if isinstance(caps, list) else None
    return ServerInfo(reachable=True, kind="Ollama", models=models, model=model,
                      context_window=window,
                      vision=None if caps is None else "vision" in caps,
                      tools=None if caps is None else "tools" in caps)


_ENDPOINTS = (("embeddings", "/embeddings"), ("responses", "/responses"),
              ("audio", "/audio/speech"), ("images", "/images/generations"))


async def _endpoints(client: Any, info: ServerInfo) -> ServerInfo:
    """Which optional endpoints a known local server has: an empty request is rejected as
    invalid (400/422) where the endpoint exists and as unknown (404) where it does not;
    neither does any work."""
    found: dict[str, bool | None] = {}
    for name, path in _ENDPOINTS:
        try:
            await client.post(path, body={}, cast_to=object)
            found[name] = True
        except openai.APIStatusError as e:
            if e.status_code in (404, 405, 501):
                found[name] = False
            elif e.status_code in (400, 422):
                found[name] = not re.search(r"does not support|not supported|not enabled",
                                            str(e.message), re.IGNORECASE)
            else:
                found[name] = None
    from dataclasses import replace

    return replace(info, **found)
