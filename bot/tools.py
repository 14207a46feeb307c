"""One tool registry for every API shape the bot answers through.

A tool is a plain async function with type hints and a docstring. Its JSON schema comes
from the signature (strict where every parameter type allows it: all properties required,
optional ones nullable, no additional properties) and its description from the docstring.
A parameter annotated with `Context` is not part of the schema: the message being
answered is passed in.

Calls are shape-neutral (`ToolCall` -> `ToolResult`); small adapters convert from and to
chat completions (`tool_calls` / role "tool"), the Responses API (`function_call` /
`function_call_output`) and the Assistants API (`requires_action` ->
`submit_tool_outputs`). Calls of one turn run concurrently, each under `[tools] timeout`;
a bad call (invalid JSON, missing or unknown arguments, unknown tool, a tool raising or
timing out) becomes that call's output and one log line, never a failed answer.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin, get_type_hints

from bot.context import Context
from bot.errors import ModelError

if TYPE_CHECKING:
    from bot.ai import ChatStream
    from bot.config import Config
    from bot.streaming import ReplyStream

log = logging.getLogger(__name__)

OUTPUT_LIMIT = 16_000
ToolFn = Callable[..., Awaitable[Any]]


class ToolError(Exception):
    """A failure the tool explains itself; its text goes back to the model as the output."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model asked for, whatever API it came from."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What one call produced: `output` is what the model reads (an error text when not ok)."""

    call_id: str
    name: str
    output: str
    ok: bool = True


@dataclass(frozen=True, slots=True)
class Tool:
    """A registered function with its generated schema."""

    name: str
    description: str
    fn: ToolFn
    parameters: dict[str, Any]
    strict: bool
    status: str
    defaults: dict[str, Any] = field(default_factory=dict)
    kinds: dict[str, Any] = field(default_factory=dict)
    context_params: tuple[str, ...] = ()
    # a tool that needs longer than [tools] timeout by nature (drawing) says so
    timeout: float | None = None

    def definition(self) -> dict[str, Any]:
        """The function definition shared by chat completions and Assistants."""
        spec: dict[str, Any] = {"name": self.name, "description": self.description,
                                "parameters": self.parameters}
        if self.strict:
            spec["strict"] = True
        return spec

    def bind(self, arguments: str) -> dict[str, Any]:
        """Model arguments (a JSON text) -> keyword arguments, or ToolError saying what is
        wrong so the model can correct itself."""
        try:
            raw = json.loads(arguments or "{}")
        except ValueError as e:
            raise ToolError(f"invalid JSON arguments ({e.msg}); send a JSON object") from None
        if not isinstance(raw, dict):
            raise ToolError("arguments must be a JSON object")
        props = self.parameters["properties"]
        unknown = sorted(set(raw) - set(props))
        if unknown:
            raise ToolError(f"unknown argument(s): {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        missing = []
        for name in props:
            value = raw.get(name)
            if value is None:
                if name in self.defaults:
                    kwargs[name] = self.defaults[name]
                    continue
                if name not in raw or not _nullable(self.kinds[name]):
                    missing.append(name)
                    continue
                kwargs[name] = None
                continue
            kwargs[name] = _check_value(name, self.kinds[name], value)
        if missing:
            raise ToolError(f"missing argument(s): {', '.join(missing)}")
        return kwargs


# --------------------------------------------------------------------------- schemas


_ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _doc_parts(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """Docstring -> (description, per-argument descriptions from an `Args:` section)."""
    doc = inspect.getdoc(fn) or ""
    head, _, args_block = doc.partition("\nArgs:")
    described: dict[str, str] = {}
    current = None
    for line in args_block.splitlines():
        m = _ARG_LINE.match(line)
        if m and line.startswith((" ", "\t")) and len(line) - len(line.lstrip()) <= 4:
            current = m.group(1)
            described[current] = m.group(2).strip()
        elif current and line.strip():
            described[current] += " " + line.strip()
    return " ".join(head.split()), described


def _nullable(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def _schema_of(hint: Any) -> tuple[dict[str, Any], bool]:
    """A JSON schema for a type hint, and whether strict mode can express it."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) != 1:
            return {}, False
        schema, strict = _schema_of(inner[0])
        if type(None) in get_args(hint):
            kind = schema.get("type")
            schema = dict(schema)
            schema["type"] = [kind, "null"] if isinstance(kind, str) else kind
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
        return schema, strict
    if origin is Literal:
        values = list(get_args(hint))
        kind = {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
            type(values[0]), "string")
        return {"type": kind, "enum": values}, True
    if origin in (list, tuple, Sequence):
        args = [a for a in get_args(hint) if a is not Ellipsis]
        items, strict = _schema_of(args[0]) if args else ({}, False)
        return {"type": "array", "items": items}, strict
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if hint in simple:
        return {"type": simple[hint]}, True
    return {"type": "object"}, False


def _check_value(name: str, hint: Any, value: Any) -> Any:
    """Light type checking of one argument (strict models never need it; others may)."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
        origin = get_origin(hint)
    if origin is Literal:
        if value not in get_args(hint):
            allowed = ", ".join(json.dumps(v) for v in get_args(hint))
            raise ToolError(f"`{name}` must be one of {allowed}")
        return value
    expected: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), float: (int, float),
                                             bool: (bool,)}
    if hint in expected:
        if isinstance(value, bool) and hint is not bool:
            raise ToolError(f"`{name}` must be a {hint.__name__}")
        if hint is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if not isinstance(value, expected[hint]):
            raise ToolError(f"`{name}` must be a {hint.__name__}")
        return float(value) if hint is float else value
    if origin in (list, tuple) and not isinstance(value, list):
        raise ToolError(f"`{name}` must be an array")
    return value


def make_tool(fn: ToolFn, *, name: str | None = None, status: str | None = None) -> Tool:
    """Build a Tool from an async function's signature and docstring."""
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"tool {fn.__name__} must be an async function")
    hints = get_type_hints(fn)
    description, arg_docs = _doc_parts(fn)
    properties: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    kinds: dict[str, Any] = {}
    context_params: list[str] = []
    strict = True
    for pname, param in inspect.signature(fn).parameters.items():
        hint = hints.get(pname, str)
        if hint is Context:
            context_params.append(pname)
            continue
        schema, ok = _schema_of(hint)
        strict = strict and ok
        if param.default is not inspect.Parameter.empty:
            defaults[pname] = param.default
            if not _nullable(hint):
                # strict mode wants every property required: optional means nullable
                hint = hint | None
                schema, _ = _schema_of(hint)
        if pname in arg_docs:
            schema["description"] = arg_docs[pname]
        properties[pname] = schema
        kinds[pname] = hint
    parameters = {"type": "object", "properties": properties,
                  "required": list(properties), "additionalProperties": False}
    tool_name = name or fn.__name__
    return Tool(tool_name, description, fn, parameters, strict,
                status or getattr(fn, "tool_status", "") or f"running {tool_name}…",
                defaults, kinds, tuple(context_params), getattr(fn, "tool_timeout", None))


def status(text: str) -> Callable[[ToolFn], ToolFn]:
    """Decorator: the short line shown in the chat while the tool runs."""
    def wrap(fn: ToolFn) -> ToolFn:
        fn.tool_status = text  # type: ignore[attr-defined]
        return fn
    return wrap


# --------------------------------------------------------------------------- registry


class ToolRegistry:
    """Tools by name, their definitions per API shape, and the runner."""

    def __init__(self, tools: Iterable[Tool] = (), *, timeout: float = 20.0) -> None:
        self.tools: dict[str, Tool] = {}
        self.timeout = timeout
        self._chat_tools: list[dict[str, Any]] | None = None
        for t in tools:
            self.add(t)

    def add(self, tool: Tool | ToolFn) -> Tool:
        """Register a Tool or an async function."""
        if not isinstance(tool, Tool):
            tool = make_tool(tool)
        self.tools[tool.name] = tool
        self._chat_tools = None
        return tool

    def __bool__(self) -> bool:
        return bool(self.tools)

    @property
    def names(self) -> list[str]:
        """Registered tool names, in registration order."""
        return list(self.tools)

    # --- definitions per API shape -------------------------------------------------------

    def chat_tools(self) -> list[dict[str, Any]]:
        """`tools=` for chat completions (built once per set of tools: they go with every
        chat request; treat the list as read-only)."""
        if self._chat_tools is None:
            self._chat_tools = [{"type": "function", "function": t.definition()}
                                for t in self.tools.values()]
        return self._chat_tools

    def assistants_tools(self) -> list[dict[str, Any]]:
        """`tools=` for an Assistant or a Run (same function shape as chat completions)."""
        return self.chat_tools()

    def responses_tools(self) -> list[dict[str, Any]]:
        """`tools=` for the Responses API (function tools are flat there)."""
        return [{"type": "function", **t.definition(),
                 "strict": t.strict} for t in self.tools.values()]

    # --- running ------------------------------------------------------------------------

    def status_line(self, calls: Sequence[ToolCall]) -> str:
        """`calculating…, checking the time…` for the calls of one round."""
        seen: list[str] = []
        for c in calls:
            tool = self.tools.get(c.name)
            text = tool.status if tool else f"running {c.name}…"
            if text not in seen:
                seen.append(text)
        return "🔧 " + ", ".join(seen)

    async def run_calls(self, calls: Sequence[ToolCall],
                        ctx: Context | None = None) -> list[ToolResult]:
        """Run one turn's calls concurrently; results in the calls' order, never raises."""
        return list(await asyncio.gather(*(self._run_one(c, ctx) for c in calls)))

    async def _run_one(self, call: ToolCall, ctx: Context | None) -> ToolResult:
        where = ctx.channel if ctx is not None else "-"
        tool = self.tools.get(call.name)
        if tool is None:
            log.info("tool call in %s: unknown tool %r", where, call.name)
            known = ", ".join(self.tools) or "none"
            return ToolResult(call.id, call.name,
                              f"error: unknown tool `{call.name}`; available: {known}", False)
        try:
            kwargs = tool.bind(call.arguments)
        except ToolError as e:
            log.info("tool call %s in %s: bad arguments: %s", call.name, where, e)
            return ToolResult(call.id, call.name, f"error: {e}", False)
        if tool.context_params:
            if ctx is None:
                return ToolResult(call.id, call.name,
                                  "error: this tool is not available here", False)
            kwargs.update({p: ctx for p in tool.context_params})
        limit = tool.timeout or self.timeout
        try:
            value = await asyncio.wait_for(tool.fn(**kwargs), limit)
        except TimeoutError:
            log.warning("tool %s in %s timed out after %g s", call.name, where, limit)
            return ToolResult(call.id, call.name,
                              f"error: `{call.name}` timed out after {limit:g} s", False)
        except ToolError as e:
            log.info("tool %s in %s: %s", call.name, where, e)
            return ToolResult(call.id, call.name, f"error: {e}", False)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("tool %s in %s raised %s: %s", call.name, where, type(e).__name__, e)
            return ToolResult(call.id, call.name,
                              f"error: `{call.name}` failed ({type(e).__name__}: {e})", False)
        return ToolResult(call.id, call.name, _as_output(value))


def _as_output(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                          default=str)
    if len(text) > OUTPUT_LIMIT:
        text = text[:OUTPUT_LIMIT] + "…[truncated]"
    return text


# --------------------------------------------------------------------------- API shapes


def calls_from_chat(tool_calls: Iterable[dict[str, Any]]) -> list[ToolCall]:
    """Chat completions `message.tool_calls` (dicts) -> calls."""
    out = []
    for c in tool_calls:
        fn = c.get("function") or {}
        out.append(ToolCall(str(c.get("id") or ""), str(fn.get("name") or ""),
                            str(fn.get("arguments") or "")))
    return out


def calls_from_responses(items: Iterable[Any]) -> list[ToolCall]:
    """Responses API output items -> the `function_call` ones as calls."""
    out = []
    for item in items:
        get = item.get if isinstance(item, dict) else lambda k, o=item: getattr(o, k, None)
        if get("type") == "function_call":
            out.append(ToolCall(str(get("call_id")), str(get("name")),
                                str(get("arguments") or "")))
    return out


def calls_from_assistants(required_action: Any) -> list[ToolCall]:
    """A run's `required_action` (object or dict) -> its submit_tool_outputs calls."""
    def get(obj: Any, key: str) -> Any:
        return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

    submit = get(required_action, "submit_tool_outputs")
    out = []
    for c in get(submit, "tool_calls") or ():
        fn = get(c, "function")
        out.append(ToolCall(str(get(c, "id")), str(get(fn, "name")),
                            str(get(fn, "arguments") or "")))
    return out


def chat_messages(calls: Sequence[ToolCall], results: Sequence[ToolResult],
                  content: str | None = None) -> list[dict[str, Any]]:
    """The assistant message carrying the calls, then one "tool" message per call."""
    assistant: dict[str, Any] = {
        "role": "assistant", "content": content or None,
        "tool_calls": [{"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}}
                       for c in calls]}
    return [assistant, *({"role": "tool", "tool_call_id": r.call_id, "content": r.output}
                         for r in results)]


def responses_outputs(results: Sequence[ToolResult]) -> list[dict[str, Any]]:
    """Responses API input items answering function calls."""
    return [{"type": "function_call_output", "call_id": r.call_id, "output": r.output}
            for r in results]


def assistants_outputs(results: Sequence[ToolResult]) -> list[dict[str, Any]]:
    """`tool_outputs` for runs.submit_tool_outputs."""
    return [{"tool_call_id": r.call_id, "output": r.output} for r in results]


# --------------------------------------------------------------------------- per config


_registries: dict[int, tuple[Config, ToolRegistry]] = {}


def registry_for(config: Config) -> ToolRegistry:
    """The built-in tools enabled in `[tools] enabled`, with `[tools] timeout`; one
    registry per running bot (its Config object), so tools added to it stay its own."""
    entry = _registries.get(id(config))
    if entry is not None and entry[0] is config:
        return entry[1]
    from bot import builtin_tools

    registry = ToolRegistry(timeout=config.tools.timeout)
    for name in config.tools.enabled:
        if name in ("remember", "recall") and not config.memory.enabled:
            continue
        registry.add(builtin_tools.BUILTINS[name])
    if len(_registries) >= 16:
        _registries.pop(next(iter(_registries)))
    _registries[id(config)] = (config, registry)
    return registry


async def run_calls(calls: Sequence[ToolCall], ctx: Context) -> list[ToolResult]:
    """Run calls with the tools enabled for this bot (used by every API path)."""
    return await registry_for(ctx.config).run_calls(calls, ctx)


# --------------------------------------------------------------------------- chat loop


def tools_unsupported(ctx: Context, model: str) -> bool:
    """Models the server said take no tools (remembered by bot/ai.py)."""
    return model in ctx.ai.no_tools_models


async def request_options(ctx: Context) -> dict[str, Any]:
    """Per-channel sampling options sent with chat requests (/seed, /temperature)."""
    options: dict[str, Any] = {}
    settings = await ctx.store.settings(ctx.channel)
    if settings.get("seed") is not None:
        options["seed"] = int(settings["seed"])
    if settings.get("temperature") is not None:
        options["temperature"] = float(settings["temperature"])
    return options


@dataclass
class ToolChat:
    """A streamed answer over several rounds: text deltas of every round, tool rounds in
    between (status line shown, calls run, results sent back). Looks like a ChatStream to
    handlers/chat.py: text, token usage summed over rounds, finish reason of the last."""

    ctx: Context
    model: str
    messages: list[dict[str, Any]]
    out: ReplyStream | None
    max_tokens: int
    registry: ToolRegistry
    options: dict[str, Any]
    feature: str = "chat"
    text: str = ""
    refusal: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    system_fingerprint: str | None = None
    exchange: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0
    chunks: int = 0
    _first: ChatStream | None = None

    async def start(self) -> None:
        """The first request: its errors (before any byte) raise ModelError to the caller."""
        self._first = await self._request()

    def _use_tools(self) -> bool:
        return bool(self.registry) and not tools_unsupported(self.ctx, self.model)

    async def _request(self) -> ChatStream:
        extra = dict(self.options)
        if self._use_tools():
            extra["tools"] = self.registry.chat_tools()
            if self.rounds >= self.ctx.config.tools.max_rounds:
                extra["tool_choice"] = "none"
        return await self.ctx.ai.chat_stream(self.model, self.messages + self.exchange,
                                             max_tokens=self.max_tokens, extra=extra,
                                             feature=self.feature)

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas()

    async def _deltas(self) -> AsyncIterator[str]:
        stream = self._first
        assert stream is not None, "start() first"
        while True:
            async for delta in stream:
                self.text += delta
                yield delta
            self._account(stream)
            calls = calls_from_chat(stream.tool_calls) if stream.tool_calls else []
            if not calls or not self._use_tools():
                break
            if self.rounds >= self.ctx.config.tools.max_rounds:
                log.info("tool round limit reached in %s; ignoring %d call(s)",
                         self.ctx.channel, len(calls))
                break
            self.rounds += 1
            calls = [c if c.id else ToolCall(f"call_{self.rounds}_{i}", c.name, c.arguments)
                     for i, c in enumerate(calls)]
            if self.out is not None:
                self.out.status(self.registry.status_line(calls))
            results = await self.registry.run_calls(calls, self.ctx)
            self.exchange.extend(chat_messages(calls, results, stream.text))
            if stream.text and not self.text.endswith("\n"):
                self.text += "\n\n"
                yield "\n\n"
            stream = await self._request()

    def _account(self, stream: ChatStream) -> None:
        self.chunks += getattr(stream, "chunks", 0)
        self.finish_reason = stream.finish_reason
        self.refusal += stream.refusal
        self.system_fingerprint = stream.system_fingerprint or self.system_fingerprint
        if stream.prompt_tokens is not None:
            self.prompt_tokens = (self.prompt_tokens or 0) + stream.prompt_tokens
        if stream.completion_tokens is not None:
            self.completion_tokens = (self.completion_tokens or 0) + stream.completion_tokens

    def last_answer(self) -> tuple[str, dict[str, Any]]:
        """This answer's details for /info, as the channel setting stored with its turn."""
        return last_answer(self.model, self.system_fingerprint, self.prompt_tokens,
                           self.completion_tokens)

    async def save_last(self) -> None:
        """Keep the details of an answer that stores no turn (a refusal, an empty answer)."""
        await save_last_answer(self.ctx, self.model, self.system_fingerprint,
                               self.prompt_tokens, self.completion_tokens)

    def exchange_json(self) -> str | None:
        """The tool rounds of this answer, kept with the stored assistant turn."""
        return json.dumps(self.exchange, ensure_ascii=False) if self.exchange else None


def last_answer(model: str, fingerprint: str | None, prompt: int | None,
                completion: int | None) -> tuple[str, dict[str, Any]]:
    """What /info shows about the channel's last answer: the setting's key and value
    (written with the answer's turn: Store.append_turn's `setting`)."""
    return "last_answer", {"model": model, "system_fingerprint": fingerprint,
                           "prompt_tokens": prompt, "completion_tokens": completion}


async def save_last_answer(ctx: Context, model: str, fingerprint: str | None,
                           prompt: int | None, completion: int | None) -> None:
    """The last answer's details on their own, for an answer that stores no turn."""
    try:
        await ctx.store.set_setting(ctx.channel, *last_answer(model, fingerprint, prompt,
                                                              completion))
    except Exception:
        log.exception("could not keep the last answer's details in %s", ctx.channel)


async def start_answer(ctx: Context, model: str, messages: list[dict[str, Any]],
                       out: ReplyStream | None, *, max_tokens: int,
                       feature: str = "chat") -> ToolChat:
    """Hook for handlers/chat.py: the answer's stream, with tools and sampling options."""
    chat = ToolChat(ctx, model, messages, out, max_tokens, registry_for(ctx.config),
                    await request_options(ctx), feature)
    await chat.start()
    return chat


def history_messages(tools_json: str | None) -> list[dict[str, Any]]:
    """A stored turn's tool rounds as chat messages (assistant tool_calls + tool results),
    sent before that turn's final text; anything malformed is dropped whole."""
    if not tools_json:
        return []
    try:
        messages = json.loads(tools_json)
    except ValueError:
        return []
    if not isinstance(messages, list) or not _valid_exchange(messages):
        return []
    return messages


def _valid_exchange(messages: list[Any]) -> bool:
    pending: set[str] = set()
    for m in messages:
        if not isinstance(m, dict):
            return False
        if m.get("role") == "assistant" and m.get("tool_calls"):
            if pending:
                return False
            pending = {c.get("id") for c in m["tool_calls"]}
        elif m.get("role") == "tool" and m.get("tool_call_id") in pending:
            pending.discard(m["tool_call_id"])
        else:
            return False
    return not pending


def is_tools_rejection(e: ModelError) -> bool:
    """A 400 whose text is about tools (servers without function calling)."""
    return e.kind == "bad_request" and "tool" in e.message.lower()
