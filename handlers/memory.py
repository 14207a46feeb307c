"""/search and /forget: this chat's semantic memory (bot/memory.py)."""

from __future__ import annotations

from bot import memory
from bot.commands import Param, command
from bot.context import Context
from bot.errors import UserError

SNIPPET = 200


def _active(ctx: Context) -> memory.Memory:
    mem = memory.of(ctx)
    if mem is None or not mem.active:
        reason = mem.off_reason if mem is not None and mem.off_reason else "not started"
        raise UserError(f"Memory is off on this bot ({reason}).")
    return mem


@command("search", Param("query", "What to look for in this chat's past", type="text",
                         required=True))
async def search_cmd(ctx: Context) -> None:
    """Search this chat's past messages by meaning"""
    query = str(ctx.args.get("query", "")).strip()
    if not query:
        raise UserError("Tell me what to look for, e.g. `/search the door code`.")
    mem = _active(ctx)
    async with ctx.reply.working("typing"):
        hits = await mem.search(ctx.channel, query, k=ctx.config.memory.search_results,
                                timeout=ctx.config.openai.timeout)
    if hits is None:
        raise UserError("The memory search service is not answering right now. Please try "
                        "again later.")
    if not hits:
        raise UserError("Nothing in this chat's memory matches that yet (new messages "
                        "become searchable within a few seconds).")
    lines = [f"**Best matches for “{memory.snippet(query, 60)}”**"]
    for i, hit in enumerate(hits, 1):
        lines.append(f"{i}. {memory.label(hit)}: {memory.snippet(hit.content, SNIPPET)}")
    await ctx.reply.reply_long("\n".join(lines))


@command("forget", admin_in_groups=True)
async def forget_cmd(ctx: Context) -> None:
    """Erase this chat's long-term memory (the conversation stays; /reset clears that)"""
    # messages not embedded yet must not come back either: the embedder skips this
    # channel's turns up to here
    await ctx.store.set_setting(ctx.channel, "memory_forget_at",
                                await ctx.store.last_turn_id(ctx.channel))
    removed = await ctx.store.forget_memory(ctx.channel)
    await ctx.reply.reply_long(
        f"Done: I erased this chat's memory ({removed:,} messages). /search and recall start "
        "from here; the current conversation is unchanged (/reset clears that).")
