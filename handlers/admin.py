"""Channel commands: /help, /start, /reset, /persona, /model, /whoami."""

from __future__ import annotations

from bot.commands import Param, command
from bot.context import Context
from bot.errors import UserError

PERSONA_LIMIT = 4000


@command("help")
async def help_cmd(ctx: Context) -> None:
    """Show what I can do and how to use each command"""
    lines = ["**What I can do**", "",
             "Talk to me: in private chats just write; in groups mention me or reply to me.", ""]
    for spec in ctx.commands.for_platform(ctx.reply.capabilities):
        lines.append(f"`{spec.usage()}` — {spec.description}")
    await ctx.reply.reply_long("\n".join(lines))


@command("start", requires="start_command")
async def start_cmd(ctx: Context) -> None:
    """Start talking with the bot"""
    await ctx.reply.reply_long(
        "Hi! I'm an AI assistant. Ask me anything.\n\nSend /help to see all commands."
    )


@command("reset")
async def reset_cmd(ctx: Context) -> None:
    """Forget this chat's conversation and start fresh"""
    await ctx.store.reset_context(ctx.channel)
    await ctx.reply.reply_long("Done. I've forgotten our conversation here; let's start fresh.")


@command(
    "persona",
    Param("text", "New system prompt for this chat, or 'reset' for the default", type="text"),
    admin_in_groups=True,
)
async def persona_cmd(ctx: Context) -> None:
    """Show or set this chat's persona (system prompt)"""
    text = ctx.text("text")
    if not text:
        current = await ctx.store.setting(ctx.channel, "persona")
        label = "Custom persona" if current else "Default persona"
        shown = current or ctx.config.bot.system_prompt
        await ctx.reply.reply_long(f"**{label}:**\n{shown}\n\nChange it with `/persona <text>`; "
                                   "`/persona reset` restores the default.")
        return
    if text.lower() == "reset":
        await ctx.store.set_setting(ctx.channel, "persona", None)
        await ctx.reply.reply_long("Persona reset to the default.")
        return
    if len(text) > PERSONA_LIMIT:
        raise UserError(f"That persona is too long ({len(text)} characters; the limit is "
                        f"{PERSONA_LIMIT}).")
    await ctx.store.set_setting(ctx.channel, "persona", text)
    await ctx.reply.reply_long("Persona updated for this chat.")


@command(
    "model",
    Param("name", "Model to use in this chat", choices_from="models.choices"),
    admin_in_groups=True,
)
async def model_cmd(ctx: Context) -> None:
    """Show or change the chat model for this chat"""
    choices = ctx.config.models.choices
    name = ctx.text("name")
    current = await ctx.setting("model", ctx.config.models.chat)
    if not name:
        listed = ", ".join(f"`{c}`" for c in choices)
        await ctx.reply.reply_long(f"Current model: `{current}`\nAvailable: {listed}")
        return
    if name not in choices:
        listed = ", ".join(f"`{c}`" for c in choices)
        raise UserError(f"Unknown model `{name}`. Choose one of: {listed}")
    served = await ctx.ai.served_models()
    if served and name not in served:
        # a one-model server (llama.cpp) would answer with its own model under any name
        listed = ", ".join(f"`{m}`" for m in served[:20])
        raise UserError(f"The AI server has no model `{name}`. It has: {listed}")
    await ctx.store.set_setting(ctx.channel, "model",
                                None if name == ctx.config.models.chat else name)
    await ctx.reply.reply_long(f"This chat now uses `{name}`.")


@command("whoami")
async def whoami_cmd(ctx: Context) -> None:
    """Show your id and this chat's id, as the [access] lists take them"""
    platform = ctx.inbound.channel.platform
    user = f"{platform}:{ctx.inbound.author.id}"
    chat = f"{platform}:{ctx.inbound.channel.chat_id}"
    kind = "this private chat" if ctx.inbound.is_private else "this chat"
    admin = "you are an admin" if ctx.is_admin() else "you are not an admin"
    await ctx.reply.reply_long("\n".join([
        f"You: `{user}` ({admin})", f"Chat: `{chat}` ({kind})", "",
        "To allow only you, this chat, or make you an admin, in config.toml:",
        "```toml", "[access]", f'allowed_users = ["{user}"]', f'allowed_chats = ["{chat}"]',
        f'admins = ["{user}"]', "```"]))
