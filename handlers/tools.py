"""/json (JSON mode and structured output), /seed, /temperature and /info."""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

from bot import memory, tools
from bot.commands import Param, command
from bot.context import Context
from bot.errors import ModelError, UserError
from bot.events import Attachment
from handlers.chat import build_messages, chat_model, store_user_turn, user_content

log = logging.getLogger(__name__)

JSON_INSTRUCTION = ("Answer with a single valid JSON value only (JSON, no prose, no code "
                    "fences).")
NOT_JSON = ("⚠️ The AI server did not return valid JSON (it may not support JSON mode); "
            "this is what it said:")
NO_JSON_REQUEST = ("Tell me what to answer as JSON, e.g. `/json list three primary colours "
                   "with their hex codes`. Attach a JSON Schema file to fix the shape.")
SCHEMA_LIMIT = 256 * 1024
SEED_RANGE = (-(2**63), 2**63 - 1)
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n?(.*?)\n?```\s*$", re.S)


# --------------------------------------------------------------------------- /json


def strict_compatible(schema: Any) -> bool:
    """Whether Structured Outputs' strict mode accepts a schema as it is: every object
    closes additionalProperties and requires all of its properties."""
    if isinstance(schema, list):
        return all(strict_compatible(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "object" in kinds or "properties" in schema:
        props = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or ()) != set(props):
            return False
    return all(strict_compatible(v) for k, v in schema.items()
               if k in ("properties", "items", "anyOf", "$defs", "definitions")
               for v in ([v] if k in ("items",) else
                         (v.values() if isinstance(v, dict) else v)))


async def _schema_format(att: Attachment) -> dict[str, Any]:
    """A JSON Schema file -> response_format json_schema (the file may also be the API's
    own {"name", "schema", "strict"} wrapper)."""
    if att.size is not None and att.size > SCHEMA_LIMIT:
        raise UserError("That schema file is too large (the limit is 256 KB).")
    data = await att.read()
    if len(data) > SCHEMA_LIMIT:
        raise UserError("That schema file is too large (the limit is 256 KB).")
    try:
        raw = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as e:
        raise UserError(f"The attached file is not valid JSON ({e}).") from None
    if not isinstance(raw, dict):
        raise UserError("The attached file must hold a JSON Schema object.")
    if isinstance(raw.get("schema"), dict) and "name" in raw:
        name, schema = str(raw["name"]), raw["schema"]
    else:
        name = str(raw.get("title") or "answer")
        schema = raw
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", name)[:64] or "answer"
    if schema.get("type") != "object":
        raise UserError("The schema's top level must be `\"type\": \"object\"` (the API's "
                        "rule for structured output).")
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": schema,
                            "strict": strict_compatible(schema)}}


def render_json(text: str) -> tuple[str, bool]:
    """The answer as a pretty-printed ```json block, or as it came with a note."""
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:  # some servers wrap JSON in a code fence anyway
        candidate = fenced.group(1)
    try:
        value = json.loads(candidate)
    except ValueError:
        body = text.strip().replace("```", "'''")
        return f"{NOT_JSON}\n```\n{body}\n```", False
    return f"```json\n{json.dumps(value, indent=2, ensure_ascii=False)}\n```", True


@command(
    "json",
    Param("request", "What to answer, as JSON", type="text", required=True),
    Param("schema", "Optional JSON Schema file the answer must follow", type="attachment"),
)
async def json_cmd(ctx: Context) -> None:
    """Answer as JSON (attach a JSON Schema file to fix its shape)"""
    request = str(ctx.args.get("request", "")).strip()
    if not request:
        raise UserError(NO_JSON_REQUEST)
    att = ctx.args.get("schema")
    if not isinstance(att, Attachment):
        att = next((a for a in ctx.inbound.attachments if a.kind == "document"), None)
    response_format = await _schema_format(att) if att else {"type": "json_object"}
    model = await chat_model(ctx)
    content = user_content(ctx.inbound, request)
    messages = await build_messages(ctx, content, history_images=False)
    # json_object requires the word "JSON" in the messages; the instruction says it
    messages[0] = {"role": "system",
                   "content": f"{messages[0]['content']}\n\n{JSON_INSTRUCTION}"}
    options = await tools.request_options(ctx)
    async with ctx.reply.working("typing"):
        stream, note = await _json_stream(ctx, model, messages, response_format, options)
        text = ""
        try:
            async for delta in stream:
                text += delta
        except ModelError as e:
            if not text:
                raise
            log.warning("/json answer interrupted in %s: %s", ctx.channel, e.kind)
    if not text.strip():
        raise UserError(stream.refusal.strip() or "The model returned an empty answer.")
    shown, ok = render_json(text)
    if not ok:
        log.info("/json in %s: the answer is not valid JSON", ctx.channel)
    sent = await ctx.reply.reply_long(shown + (f"\n_{note}_" if note else ""))
    await store_user_turn(ctx, content)
    await ctx.store.append_turn(
        ctx.channel, "assistant", text, ctx.ai.tokenizer.count(text),
        message_id=sent[0].id if sent else None,
        setting=tools.last_answer(model, stream.system_fingerprint, stream.prompt_tokens,
                                  stream.completion_tokens))


async def _json_stream(ctx: Context, model: str, messages: list[dict[str, Any]],
                       response_format: dict[str, Any],
                       options: dict[str, Any]) -> tuple[Any, str]:
    """The streamed answer in JSON mode; a server that rejects the mode is asked plainly."""
    max_tokens = ctx.config.chat.max_output_tokens
    try:
        return await ctx.ai.chat_stream(model, messages, max_tokens=max_tokens,
                                        extra={**options, "response_format": response_format},
                                        feature="chat"), ""
    except ModelError as e:
        if e.kind != "bad_request" or not re.search(r"response_format|json", e.message, re.I):
            raise
        if response_format["type"] == "json_schema":
            # the server (or the schema) was refused: say why rather than guess
            raise UserError(e.message) from None
        log.info("model %s rejected JSON mode (%s); asking without it", model, e.message)
        stream = await ctx.ai.chat_stream(model, messages, max_tokens=max_tokens, extra=options)
        return stream, "This AI server does not offer JSON mode; the answer was only asked for."


# --------------------------------------------------------------------------- /seed, /temperature


@command("seed", Param("value", "A whole number for repeatable answers, or off"),
         admin_in_groups=True)
async def seed_cmd(ctx: Context) -> None:
    """Show or set the seed for repeatable answers here (a number, or off)"""
    raw = str(ctx.args.get("value", "")).strip().lower()
    current = await ctx.store.setting(ctx.channel, "seed")
    if not raw:
        shown = f"`{current}`" if current is not None else "off"
        await ctx.reply.reply_long(
            f"Seed here: {shown}. With a seed, the same question with the same settings "
            "gets (mostly) the same answer; `/info` shows the server's fingerprint. Change "
            "it with `/seed <number>` or `/seed off`.")
        return
    if raw in ("off", "none", "reset"):
        await ctx.store.set_setting(ctx.channel, "seed", None)
        await ctx.reply.reply_long("Seed off: answers vary again.")
        return
    try:
        value = int(raw)
    except ValueError:
        raise UserError("The seed must be a whole number, or `off`.") from None
    if not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise UserError("The seed must fit in 64 bits.")
    await ctx.store.set_setting(ctx.channel, "seed", value)
    await ctx.reply.reply_long(f"Seed for this chat: `{value}`.")


@command("temperature", Param("value", "0 (focused) to 2 (creative), or off"),
         admin_in_groups=True)
async def temperature_cmd(ctx: Context) -> None:
    """Show or set how varied answers are here (0 to 2, or off)"""
    raw = str(ctx.args.get("value", "")).strip().lower()
    current = await ctx.store.setting(ctx.channel, "temperature")
    if not raw:
        shown = f"`{current:g}`" if current is not None else "the model's default"
        await ctx.reply.reply_long(f"Temperature here: {shown}. Change it with "
                                   "`/temperature <0-2>` or `/temperature off`.")
        return
    if raw in ("off", "none", "reset", "default"):
        await ctx.store.set_setting(ctx.channel, "temperature", None)
        await ctx.reply.reply_long("Temperature back to the model's default.")
        return
    try:
        value = float(raw.replace(",", "."))
    except ValueError:
        raise UserError("The temperature must be a number from 0 to 2, or `off`.") from None
    if not math.isfinite(value) or not 0 <= value <= 2:
        raise UserError("The temperature must be a number from 0 to 2, or `off`.")
    await ctx.store.set_setting(ctx.channel, "temperature", value)
    model = await chat_model(ctx)
    note = ""
    if "temperature" in ctx.ai.rejected_options(model):
        note = f" (`{model}` accepts only its default, so it is not sent to it)"
    await ctx.reply.reply_long(f"Temperature for this chat: `{value:g}`{note}.")


# --------------------------------------------------------------------------- /info


@command("info")
async def info_cmd(ctx: Context) -> None:
    """Show this chat's settings, history size and the last answer's details"""
    cfg = ctx.config
    settings = await ctx.store.settings(ctx.channel)
    model = await chat_model(ctx)
    persona = str(settings.get("persona") or cfg.bot.system_prompt)
    first_line = next((line.strip() for line in persona.splitlines() if line.strip()), "")
    if len(first_line) > 120:
        first_line = first_line[:119] + "…"
    rejected = ctx.ai.rejected_options(model)
    seed = settings.get("seed")
    temperature = settings.get("temperature")
    registry = tools.registry_for(cfg)
    if not registry:
        tool_text = "none enabled"
    elif tools.tools_unsupported(ctx, model):
        tool_text = f"off (`{model}` on this server takes no tools)"
    else:
        tool_text = ", ".join(f"`{n}`" for n in registry.names)
    turns = await ctx.store.recent_turns(ctx.channel, cfg.chat.history_tokens,
                                         cfg.chat.history_messages)
    voice_mode = settings.get("reply_voice", cfg.voice.reply_voice)
    voice = settings.get("voice", cfg.voice.voice)
    speed = float(settings.get("voice_speed", cfg.voice.speed))
    lines = [
        "**This chat**",
        f"Model: `{model}`",
        f"Persona: {first_line}" + ("" if settings.get("persona") else " _(default)_"),
        f"Seed: {f'`{seed}`' if seed is not None else 'off'}"
        + (" _(not accepted by this model)_" if seed is not None and "seed" in rejected
           else ""),
        "Temperature: " + (f"`{float(temperature):g}`" if temperature is not None
                           else "model default")
        + (" _(not accepted by this model)_" if temperature is not None
           and "temperature" in rejected else ""),
        f"Image detail: `{settings.get('detail', cfg.vision.detail)}`",
        f"Voice: replies {voice_mode}, voice `{voice}`, speed {speed:g}×"
        + (", custom tone" if settings.get("voice_tone") else ""),
        f"Tools: {tool_text}",
        f"History: {len(turns)} messages, {sum(t.tokens for t in turns):,} tokens "
        f"(budget {cfg.chat.history_tokens:,})",
        await _memory_line(ctx),
    ]
    files = await ctx.store.workspace_files(ctx.channel)
    if files:  # the assistant's workspace (/files)
        names = ", ".join(f"`{f.name}`" for f in files[:10])
        more = f" and {len(files) - 10} more" if len(files) > 10 else ""
        lines.append(f"Workspace files ({len(files)}): {names}{more}")
    last = settings.get("last_answer")
    if isinstance(last, dict):
        fp = last.get("system_fingerprint")
        usage = (f"{last['prompt_tokens']:,} prompt + {last['completion_tokens']:,} "
                 "completion tokens") if last.get("prompt_tokens") is not None and (
            last.get("completion_tokens") is not None) else "token usage not reported"
        lines.append(f"Last answer: `{last.get('model')}`, fingerprint "
                     f"{f'`{fp}`' if fp else 'not reported'}, {usage}")
    else:
        lines.append("Last answer: none yet")
    await ctx.reply.reply_long("\n".join(lines))


async def _memory_line(ctx: Context) -> str:
    mem = memory.of(ctx)
    if mem is None or not mem.active:
        reason = mem.off_reason if mem is not None else "not started"
        return f"Memory: off ({reason})"
    count = await ctx.store.memory_count(ctx.channel)
    return f"Memory: on, {count:,} messages searchable (`/search`, `/forget`)"
