"""Discord: a discord.py Client + app-command tree <-> Inbound / Replier.

Messages (gateway MESSAGE_CREATE) and slash commands (INTERACTION_CREATE) become
Inbounds; replies go back as channel messages (replying to the user's message in
guilds) or, for slash commands, as the interaction's response, its edits and followups.
Only translation lives here: no business rules, no OpenAI.

Voice messages are not supported by discord.py, so they are sent through its HTTP
layer: POST /channels/{id}/attachments, PUT the bytes to the returned upload URL, then
POST the message with flags IS_VOICE_MESSAGE and the attachment's duration and
waveform. If Discord refuses, the file goes out as an ordinary audio attachment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import io
import json
import logging
import mimetypes
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord import app_commands
from discord.http import Route

from bot import audio
from bot.commands import CommandSpec, Param
from bot.errors import ChatForbidden, RateLimited, StartupError, UserError
from bot.events import (
    Attachment,
    AttachmentKind,
    Author,
    ChannelKey,
    CommandCall,
    Inbound,
    Quoted,
)
from bot.render import discord_len, to_discord
from bot.replies import Capabilities, ChatAction, OutFile, Replier, Sent

if TYPE_CHECKING:
    from adapters.base import Sink
    from bot.config import Config

log = logging.getLogger(__name__)

CAPABILITIES = Capabilities(
    max_text=2000,
    max_caption=2000,
    max_upload=10 * 1024 * 1024,
    min_edit_interval=1.0,
    voice_messages=True,
    measure=discord_len,
    max_description=100,
    max_choices=25,
)

IS_VOICE_MESSAGE = 1 << 13
# Discord's answers meaning "not a voice message here" (no permission, bad metadata...)
VOICE_REJECTIONS = {50013, 50146, 50159, 50160, 50161, 50173}
# discord.py raises instead of sleeping when a single 429 asks for longer than this
MAX_RATELIMIT_WAIT = 30.0
# Slash commands must be acknowledged within 3 s; defer on our own shortly before
AUTO_DEFER_AFTER = 2.0
READY_TIMEOUT = 60.0  # seconds from start() to a live gateway session
WAVEFORM_POINTS = 256  # Discord draws at most 256 bars
WAVEFORM_RATE = 8000  # samples/s decoded for the waveform: plenty for 256 bars
# after a restart, at most this many missed messages are read per channel (one request)
CATCH_UP_LIMIT = 100
NO_MENTIONS = discord.AllowedMentions.none()


def _render(markdown: str, limit: int = CAPABILITIES.max_text) -> str:
    """Markdown -> Discord markdown, never longer than the platform limit."""
    text = to_discord(markdown)
    if len(text) > limit:
        log.warning("discord text of %d chars truncated to %d", len(text), limit)
        text = text[: limit - 1] + "…"
    return text


def voice_waveform(pcm_samples: Sequence[float] | Sequence[int]) -> str:
    """Base64 of up to 256 amplitude bytes (0-255), the preview Discord draws for voice."""
    n = len(pcm_samples)
    if n == 0:
        return base64.b64encode(bytes(1)).decode()
    points = min(WAVEFORM_POINTS, n)
    peaks: list[float] = []
    for i in range(points):
        chunk = pcm_samples[i * n // points : (i + 1) * n // points]
        peaks.append(max((abs(x) for x in chunk), default=0))
    top = max(peaks) or 1
    return base64.b64encode(bytes(min(255, round(p / top * 255)) for p in peaks)).decode()


async def voice_metadata(file: OutFile) -> tuple[float, str]:
    """(duration in seconds, waveform) of a voice message from the OGG being sent.

    Without ffmpeg, or for audio it cannot decode, the duration comes from the Ogg
    granule (or the file's own) and the waveform is flat.
    """
    samples = await audio.decode_pcm(file.data, WAVEFORM_RATE)
    if samples:
        return len(samples) / WAVEFORM_RATE, voice_waveform(samples)
    seconds = file.duration or audio.ogg_duration(file.data) or 1.0
    return seconds, base64.b64encode(bytes([128] * 32)).decode()


def _fit(text: str) -> str:
    """A description within Discord's command-UI limit (Capabilities.max_description)."""
    limit = CAPABILITIES.max_description or len(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _choices_fit(choices: tuple[str, ...]) -> bool:
    """Whether the choices can be offered natively; if not, the core validates typed values."""
    most, label = CAPABILITIES.max_choices, CAPABILITIES.max_description
    return (most is None or len(choices) <= most) and (
        label is None or all(len(c) <= label for c in choices))


def attachment_kind(content_type: str | None, filename: str, voice: bool) -> AttachmentKind:
    """Discord content type (+ the voice flag) -> our attachment kind."""
    mime = (content_type or mimetypes.guess_type(filename)[0] or "").split(";")[0].lower()
    if mime.startswith("image/"):
        return "image"
    if mime.startswith("audio/"):
        return "voice" if voice and mime in ("audio/ogg", "audio/opus") else "audio"
    if mime.startswith("video/"):
        return "video"
    return "document"


def to_attachment(att: discord.Attachment, *, voice_flag: bool = False) -> Attachment:
    """A discord.py Attachment -> ours; the CDN URL stays inside the reader."""
    voice = voice_flag or att.is_voice_message()
    kind = attachment_kind(att.content_type, att.filename, voice)
    mime = (att.content_type or mimetypes.guess_type(att.filename)[0] or "").split(";")[0]
    return Attachment(
        kind=kind,
        filename=att.filename,
        mime=mime or "application/octet-stream",
        size=att.size,
        reader=att.read,
        duration=att.duration,
        ref=att.url,
    )


def _file(out: OutFile) -> discord.File:
    return discord.File(io.BytesIO(out.data), filename=out.filename)


def _voice_filename(out: OutFile) -> str:
    name = out.filename
    return name if name.lower().endswith((".ogg", ".opus")) else "voice-message.ogg"


def _is_ogg(out: OutFile) -> bool:
    return out.mime.split(";")[0].lower() in ("audio/ogg", "audio/opus") or out.data[:4] == b"OggS"


class _DiscordReplier(Replier):
    """Shared pieces of the channel and interaction repliers."""

    capabilities = CAPABILITIES

    def __init__(self, adapter: DiscordAdapter, channel_id: int) -> None:
        self._adapter = adapter
        self._channel_id = channel_id

    async def start_action(self, action: ChatAction) -> None:
        """Discord has one chat action: typing (lasts 10 s or until the next message)."""
        await self._adapter.client.http.send_typing(self._channel_id)

    async def _voice_json(
        self, route: Route, file: OutFile, extra: dict[str, Any]
    ) -> dict[str, Any]:
        """Upload via /attachments + PUT, then post the message with IS_VOICE_MESSAGE."""
        http = self._adapter.client.http
        name = _voice_filename(file)
        duration, waveform = await voice_metadata(file)
        up = await http.request(
            Route("POST", "/channels/{channel_id}/attachments", channel_id=self._channel_id),
            json={"files": [{"id": "0", "filename": name, "file_size": len(file.data)}]},
        )
        slot = up["attachments"][0]
        session = await self._adapter.upload_session()
        async with session.put(
            slot["upload_url"], data=file.data, headers={"Content-Type": "audio/ogg"}
        ) as resp:
            resp.raise_for_status()
        payload = {
            "flags": IS_VOICE_MESSAGE,
            "attachments": [
                {
                    "id": "0",
                    "filename": name,
                    "uploaded_filename": slot["upload_filename"],
                    "duration_secs": round(duration, 2),
                    "waveform": waveform,
                }
            ],
            "allowed_mentions": {"parse": [], "replied_user": False},
            **extra,
        }
        return await http.request(route, json=payload)  # type: ignore[no-any-return]


class DiscordReplier(_DiscordReplier):
    """Replies in a channel, DM or thread; in guilds the first message replies to the user's."""

    def __init__(
        self,
        adapter: DiscordAdapter,
        channel: discord.abc.Messageable,
        channel_id: int,
        reference: discord.Message | None = None,
    ) -> None:
        super().__init__(adapter, channel_id)
        self._channel = channel
        self._reference = reference
        # idempotency key of the next send (set by the journal): Discord returns the message
        # an earlier send with the same nonce created, so a send repeated after a crash
        # finds the message the lost one made instead of making a second
        self.nonce: str | None = None

    def _take_reference(self) -> discord.MessageReference | None:
        ref, self._reference = self._reference, None
        return ref.to_reference(fail_if_not_exists=False) if ref is not None else None

    async def send(self, markdown: str) -> Sent:
        """Post a message (a reply to the user's in guilds), pinging nobody."""
        content = _render(markdown)
        nonce, self.nonce = self.nonce, None
        with _rate_limits(), _forbidden(self._channel_id):
            msg = await self._channel.send(
                content,
                reference=self._take_reference(),  # type: ignore[arg-type]
                mention_author=False,
                allowed_mentions=NO_MENTIONS,
                **({"nonce": nonce} if nonce else {}),
            )
            if nonce and msg.content != content:  # the message an earlier, lost send made
                await msg.edit(content=content, allowed_mentions=NO_MENTIONS)
        return Sent(str(msg.id), markdown)

    async def edit(self, sent: Sent, markdown: str) -> Sent:
        """Replace a message's text (Discord does not object to unchanged text)."""
        partial = discord.PartialMessage(channel=self._channel, id=int(sent.id))  # type: ignore[arg-type]
        with _rate_limits(), _forbidden(self._channel_id):
            await partial.edit(content=_render(markdown), allowed_mentions=NO_MENTIONS)
        return Sent(sent.id, markdown)

    async def delete(self, sent: Sent) -> None:
        """Delete one of our messages (a cut reply left by a crash)."""
        partial = discord.PartialMessage(channel=self._channel, id=int(sent.id))  # type: ignore[arg-type]
        with _rate_limits(), _forbidden(self._channel_id):
            await partial.delete()

    async def send_file(self, file: OutFile) -> Sent:
        """Upload one file; kind="voice" becomes a native voice message when Discord allows."""
        if file.kind == "voice" and _is_ogg(file):
            ref = self._reference
            extra: dict[str, Any] = {}
            if ref is not None:
                extra["message_reference"] = {
                    "message_id": str(ref.id),
                    "channel_id": str(self._channel_id),
                    "fail_if_not_exists": False,
                }
            route = Route("POST", "/channels/{channel_id}/messages", channel_id=self._channel_id)
            try:
                with _rate_limits():
                    data = await self._voice_json(route, file, extra)
            except discord.HTTPException as e:
                if e.code not in VOICE_REJECTIONS and e.status != 403:
                    raise
                log.info("voice message refused (%s %s); sending an audio file", e.status, e.code)
            else:
                self._reference = None
                sent = Sent(str(data["id"]))
                if file.caption:
                    await self.send(file.caption)
                return sent
        return (await self._send_files([file]))[0]

    async def send_files(self, files: list[OutFile]) -> list[Sent]:
        """Images (and other files) go out up to ten per message."""
        if len(files) == 1:
            return [await self.send_file(files[0])]
        return await self._send_files(files)

    async def _send_files(self, files: list[OutFile]) -> list[Sent]:
        out: list[Sent] = []
        for i in range(0, len(files), 10):
            batch = files[i : i + 10]
            caption = next((f.caption for f in batch if f.caption), None)
            with _rate_limits(), _forbidden(self._channel_id):
                msg = await self._channel.send(
                    _render(caption, CAPABILITIES.max_caption) if caption else None,
                    files=[_file(f) for f in batch],
                    reference=self._take_reference(),  # type: ignore[arg-type]
                    mention_author=False,
                    allowed_mentions=NO_MENTIONS,
                )
            out.extend(Sent(str(msg.id), f.caption or "") for f in batch)
        return out


class InteractionReplier(_DiscordReplier):
    """Answers a slash command: response, then edits of it and followups (15-minute token)."""

    def __init__(self, adapter: DiscordAdapter, interaction: discord.Interaction,
                 channel_id: int | None = None) -> None:
        # channel_id: given for an interaction rebuilt from its token, which has no channel
        super().__init__(adapter, channel_id or interaction.channel_id or 0)
        self.interaction = interaction
        self._lock = asyncio.Lock()
        self._deferred = False
        self._original_id: int | None = None
        self._fallback: DiscordReplier | None = None
        self._fallback_ids: set[str] = set()

    async def defer(self) -> None:
        """Acknowledge with "thinking…" unless already answered (Discord allows 3 s)."""
        async with self._lock:
            await self._defer_locked()

    async def _defer_locked(self) -> None:
        if self._fallback is not None or self._deferred or self.interaction.response.is_done():
            return
        try:
            await self.interaction.response.defer()
            self._deferred = True
        except discord.HTTPException as e:
            if e.code == 40060:  # acknowledged elsewhere
                self._deferred = True
                return
            self._use_fallback(e)

    def _use_fallback(self, error: Exception) -> None:
        log.warning("interaction %s unusable (%s); answering in the channel",
                    self.interaction.id, error)
        channel = self._adapter.client.get_partial_messageable(
            self._channel_id, guild_id=self.interaction.guild_id
        )
        self._fallback = DiscordReplier(self._adapter, channel, self._channel_id)

    async def start_action(self, action: ChatAction) -> None:
        """While "thinking…" shows, Discord needs no typing; afterwards type in the channel."""
        if self._original_id is not None or self._fallback is not None:
            await super().start_action(action)

    async def send(self, markdown: str) -> Sent:
        """First the response (or the deferred message's content), then followups."""
        content = _render(markdown)
        async with self._lock:
            if self._fallback is None:
                try:
                    return Sent(str(await self._post(content=content)), markdown)
                except discord.HTTPException as e:
                    if e.status not in (401, 403, 404):  # expired token, unknown interaction
                        raise
                    self._use_fallback(e)
            assert self._fallback is not None
            sent = await self._fallback.send(markdown)
            self._fallback_ids.add(sent.id)
            return sent

    async def _post(self, **kwargs: Any) -> int:
        """Send through the interaction; returns the message id."""
        inter = self.interaction
        with _rate_limits():
            if not inter.response.is_done() and not self._deferred:
                try:
                    resp = await inter.response.send_message(allowed_mentions=NO_MENTIONS,
                                                             **kwargs)
                except discord.HTTPException as e:
                    if e.code != 40060:
                        raise
                    # acknowledged elsewhere: the receiving process deferred it while this
                    # one (a worker, or the bot after a restart) had the message queued
                    self._deferred = True
                else:
                    mid = resp.message_id
                    if mid is None:
                        mid = (await inter.original_response()).id
                    self._original_id = mid
                    return mid
            if self._deferred and self._original_id is None:
                if "files" in kwargs:
                    kwargs["attachments"] = kwargs.pop("files")
                msg = await inter.edit_original_response(allowed_mentions=NO_MENTIONS, **kwargs)
                self._original_id = msg.id
                return msg.id
            msg = await inter.followup.send(wait=True, allowed_mentions=NO_MENTIONS, **kwargs)
            return msg.id

    async def edit(self, sent: Sent, markdown: str) -> Sent:
        """Edit the original response or a followup."""
        if sent.id in self._fallback_ids and self._fallback is not None:
            return await self._fallback.edit(sent, markdown)
        content = _render(markdown)
        with _rate_limits():
            if self._original_id is not None and sent.id == str(self._original_id):
                await self.interaction.edit_original_response(
                    content=content, allowed_mentions=NO_MENTIONS
                )
            else:
                await self.interaction.followup.edit_message(
                    int(sent.id), content=content, allowed_mentions=NO_MENTIONS
                )
        return Sent(sent.id, markdown)

    async def send_file(self, file: OutFile) -> Sent:
        """Files ride on the response/followups; voice goes as a followup voice message."""
        if file.kind == "voice" and _is_ogg(file) and self._fallback is None:
            await self.defer()
            async with self._lock:
                try:
                    mid = await self._voice_followup(file)
                except discord.HTTPException as e:
                    if e.code not in VOICE_REJECTIONS and e.status != 403:
                        raise
                    log.info("voice followup refused (%s); sending an audio file", e.code)
                else:
                    if self._original_id is None:
                        self._original_id = mid
                    return Sent(str(mid))
        return (await self._send_files([file]))[0]

    async def _voice_followup(self, file: OutFile) -> int:
        inter = self.interaction
        name = _voice_filename(file)
        duration, waveform = await voice_metadata(file)
        payload = {
            "flags": IS_VOICE_MESSAGE,
            "attachments": [
                {"id": 0, "filename": name, "duration_secs": round(duration, 2),
                 "waveform": waveform}
            ],
            "allowed_mentions": {"parse": []},
        }
        form = [
            {"name": "payload_json", "value": json.dumps(payload)},
            {"name": "files[0]", "value": file.data, "filename": name,
             "content_type": "audio/ogg"},
        ]
        route = Route(
            "POST", "/webhooks/{webhook_id}/{webhook_token}",
            webhook_id=inter.application_id, webhook_token=inter.token,
        )
        with _rate_limits():
            data = await self._adapter.client.http.request(route, form=form,
                                                           params={"wait": "true"})
        return int(data["id"])

    async def send_files(self, files: list[OutFile]) -> list[Sent]:
        """Several files as one message (ten per message)."""
        if len(files) == 1:
            return [await self.send_file(files[0])]
        return await self._send_files(files)

    async def _send_files(self, files: list[OutFile]) -> list[Sent]:
        out: list[Sent] = []
        for i in range(0, len(files), 10):
            batch = files[i : i + 10]
            caption = next((f.caption for f in batch if f.caption), None)
            kwargs: dict[str, Any] = {"files": [_file(f) for f in batch]}
            if caption:
                kwargs["content"] = _render(caption, CAPABILITIES.max_caption)
            async with self._lock:
                if self._fallback is not None:
                    sent = await self._fallback.send_files(batch)
                    self._fallback_ids.update(s.id for s in sent)
                    out.extend(sent)
                    continue
                mid = await self._post(**kwargs)
            out.extend(Sent(str(mid), f.caption or "") for f in batch)
        return out

    def arm_auto_defer(self) -> asyncio.Task[None]:
        """Defer on our own shortly before the 3 s deadline if the handler has not answered."""
        age = time.time() - self.interaction.created_at.timestamp()

        async def later() -> None:
            await asyncio.sleep(max(0.0, AUTO_DEFER_AFTER - age))
            with contextlib.suppress(Exception):
                await self.defer()

        return asyncio.create_task(later())


def _interaction_via(interaction: discord.Interaction) -> str:
    """What another process needs to answer a slash command through its webhook token
    (valid 15 minutes): callback, edits of the original response, followups. Plain HTTP."""
    return json.dumps({"interaction": {
        "application_id": str(interaction.application_id), "token": interaction.token,
        "guild_id": str(interaction.guild_id) if interaction.guild_id else None}})


def _startup_error(error: BaseException | None) -> StartupError:
    """Why the client did not come up, as one line for the operator (re-raises the rest)."""
    if isinstance(error, discord.LoginFailure):
        return StartupError(
            "Discord rejected DISCORD_BOT_TOKEN: copy the token again from the Developer "
            "Portal (your application > Bot > Reset Token) into .env", exit_code=2)
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return StartupError(
            "Discord refused the Message Content intent: enable it in the Developer Portal "
            "(your application > Bot > Privileged Gateway Intents)", exit_code=2)
    if error is None:
        return StartupError(f"Discord did not become ready within {READY_TIMEOUT:g} s: check "
                            "the network and https://discordstatus.com, then start again")
    if isinstance(error, OSError | aiohttp.ClientError | discord.GatewayNotFound
                  | discord.ConnectionClosed | TimeoutError):
        return StartupError(f"Could not reach Discord ({type(error).__name__}: {error}): "
                            "check the network, proxy or firewall, then start again")
    raise error


@contextlib.contextmanager
def _rate_limits() -> Any:
    """discord.py sleeps through 429s itself; only a very long one surfaces, as ours."""
    try:
        yield
    except discord.RateLimited as e:
        raise RateLimited(e.retry_after) from None


@contextlib.contextmanager
def _forbidden(channel_id: int) -> Any:
    """403 on a channel message (bot removed, DMs closed, no permission) is permanent."""
    try:
        yield
    except discord.Forbidden as e:
        raise ChatForbidden(f"discord channel {channel_id}: {e.status} {e.text}") from None


class _Events:
    """The adapter's callbacks, shared by the plain and the sharded client."""

    adapter: DiscordAdapter

    async def on_ready(self) -> None:
        """The gateway session is live and the guild cache is filled."""
        self.adapter.ready.set()

    async def on_message(self, message: discord.Message) -> None:
        """Every MESSAGE_CREATE the bot can see."""
        await self.adapter.on_message(message)

    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        """MESSAGE_UPDATE: a user's edit (not an embed appearing: that sets no edit time)."""
        if payload.message.edited_at is not None:
            await self.adapter.on_message(payload.message, edited=True)

    async def _on_tree_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        log.error("slash command %s failed", interaction.data, exc_info=error)


class _Client(_Events, discord.Client):
    """discord.Client (one gateway connection) wired to the adapter's callbacks."""

    def __init__(self, adapter: DiscordAdapter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]


IDENTIFY_WINDOW = 5.0  # Discord: each identify bucket starts one session per 5 s


class _ShardedClient(_Events, discord.AutoShardedClient):
    """discord.py's AutoShardedClient: one gateway connection per shard of this process.

    discord.py waits 5 s before every IDENTIFY after the first (safe for any bot). Discord
    allows `max_concurrency` at once (GET /gateway/bot, session_start_limit): shards with
    different `shard_id % max_concurrency` (identify buckets) may identify together, one
    per bucket per 5 s, so a process with several shards comes up in one step on a bot
    with max_concurrency > 1 and exactly as discord.py paces it otherwise.
    """

    def __init__(self, adapter: DiscordAdapter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapter = adapter
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        self._concurrency: int | None = None
        self._identified: dict[int, float] = {}  # bucket -> monotonic time of last IDENTIFY
        self._identify_lock = asyncio.Lock()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False
                                   ) -> None:
        """Wait for this shard's identify bucket (see the class docstring)."""
        async with self._identify_lock:
            if self._concurrency is None:
                try:
                    limits = await self.fetch_session_start_limits()
                    self._concurrency = max(1, limits.max_concurrency)
                    if limits.remaining <= 0:
                        log.error("discord: no session starts left today (resets in %.0f "
                                  "min); the gateway will refuse to identify",
                                  limits.reset_after / 60000)
                except (discord.HTTPException, discord.GatewayNotFound) as e:
                    log.warning("discord: GET /gateway/bot failed (%s); identifying one "
                                "shard per 5 s", e)
                    self._concurrency = 1
            bucket = (shard_id or 0) % self._concurrency
            last = self._identified.get(bucket)
            now = time.monotonic()
            if last is not None and now - last < IDENTIFY_WINDOW:
                await asyncio.sleep(IDENTIFY_WINDOW - (now - last))
            self._identified[bucket] = time.monotonic()


class DiscordAdapter:
    """One bot connection to Discord (gateway + REST) via discord.py."""

    name = "discord"
    capabilities = CAPABILITIES

    def __init__(self, config: Config, *, guild_ready_timeout: float = 2.0) -> None:
        self.config = config
        self.token = config.secrets.discord_token
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.dm_messages = True
        intents.message_content = True
        options: dict[str, Any] = {
            "intents": intents, "guild_ready_timeout": guild_ready_timeout,
            "max_ratelimit_timeout": MAX_RATELIMIT_WAIT, "allowed_mentions": NO_MENTIONS}
        shards = config.discord.shard_count
        self.client: _Client | _ShardedClient
        if shards == 0:
            self.client = _Client(self, **options)
        else:  # "auto": discord.py asks GET /gateway/bot for Discord's recommendation
            self.client = _ShardedClient(
                self, shard_count=None if shards == "auto" else int(shards),
                shard_ids=list(config.discord.shard_ids) or None, **options)
        self.ready = asyncio.Event()
        self.sink: Sink | None = None
        # False: a send-only worker (start(receive=False)), no gateway connection
        self.receiving = True
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def start(self, sink: Sink, *, receive: bool = True) -> None:
        """Log in, connect the gateway, register slash commands; returns once live.

        receive=False (a worker answering messages another process received): log in over
        HTTP only (`Client.login`: the token is checked, the application id learnt), no
        gateway connection and no command sync; `replier_for` and `attachment_reader` work,
        slash commands included while their interaction token lives (15 minutes).
        """
        if not self.token:
            raise StartupError("DISCORD_BOT_TOKEN is not set: put the bot token from the "
                               "Discord Developer Portal in .env or the environment",
                               exit_code=2)
        self.sink = sink
        self.receiving = receive
        if not receive:
            try:
                await self.client.login(self.token)
            except Exception as e:
                await self.stop()
                raise _startup_error(e) from e
            log.info("discord: %s sends only (events are received by another process)",
                     self.client.user)
            return
        self._build_tree(sink.commands.for_platform(CAPABILITIES))
        self._task = asyncio.create_task(self.client.start(self.token), name="discord client")
        ready = asyncio.create_task(self.ready.wait())
        done, _ = await asyncio.wait(
            {ready, self._task}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            error = self._task.exception() if self._task in done else None
            await self.stop()  # closes discord.py's HTTP session: no "Unclosed client session"
            raise _startup_error(error) from error
        ids = self.config.discord.shard_ids
        if self.config.discord.sync_commands and (not ids or 0 in ids):
            # commands are global: of several ingress processes, the one with shard 0 syncs
            synced = await self.client.tree.sync()
            log.info("discord: synced %d slash commands", len(synced))
        if isinstance(self.client, _ShardedClient):
            log.info("discord: connected as %s, shards %s of %s", self.client.user,
                     sorted(self.client.shards), self.client.shard_count)
        else:
            log.info("discord: connected as %s", self.client.user)
        await self._catch_up()

    # ------------------------------------------------------------------ crash recovery

    async def _catch_up(self) -> None:
        """The gateway does not replay what was posted while the bot was down: in channels
        where it was addressed within [bot] resume_minutes, read the messages after the
        last one it saw (one page of CATCH_UP_LIMIT) and take them as new."""
        journal = getattr(self.sink, "journal", None)
        if journal is None or journal.window <= 0:
            return
        cutoff = time.time() - journal.window
        for key, last in await journal.recent_channels(self.name):
            target = int(key.thread_id or key.chat_id)
            try:
                channel = self.client.get_channel(target) or await self.client.fetch_channel(
                    target)
                found = [m async for m in channel.history(  # type: ignore[union-attr]
                    limit=CATCH_UP_LIMIT, after=discord.Object(int(last)), oldest_first=True)]
            except discord.HTTPException as e:
                log.warning("discord: cannot read what was missed in %s: %s %s", key,
                            e.status, e.text)
                continue
            missed = 0
            for message in found:
                if message.created_at.timestamp() < cutoff:
                    log.info("discord: message %s in %s was sent more than "
                             "bot.resume_minutes ago while the bot was down; not answered",
                             message.id, key)
                    continue
                missed += 1
                await self.on_message(message)
            if missed:
                log.info("discord: %d message(s) posted in %s while the bot was down",
                         missed, key)

    def replier_for(self, channel: ChannelKey, reply_to: str | None, *,
                    private: bool, via: str | None = None) -> _DiscordReplier:
        """A replier for a stored message (or one another process received); in guilds
        the answer replies to it. A slash command (`via`: its interaction's token, from
        Inbound.reply_via) is answered through the interaction, which goes to the channel
        once the token is unusable."""
        target = int(channel.thread_id or channel.chat_id)
        if via is not None and reply_to is not None:
            interaction = self._restored_interaction(via, reply_to, target, private)
            if interaction is not None:
                return InteractionReplier(self, interaction, target)
        partial = self.client.get_partial_messageable(target)
        reference = None
        if reply_to is not None and not private:
            reference = partial.get_partial_message(int(reply_to))
        return DiscordReplier(self, partial, target, reference)  # type: ignore[arg-type]

    def _restored_interaction(self, via: str, interaction_id: str, channel_id: int,
                              private: bool) -> discord.Interaction | None:
        """discord.py's Interaction rebuilt from what `_interaction_via` stored: enough for
        its response, original-response and followup webhooks (all plain HTTP)."""
        try:
            data = json.loads(via)["interaction"]
            payload: dict[str, Any] = {
                "id": str(int(interaction_id)), "type": 2, "version": 1,
                "token": str(data["token"]), "application_id": str(int(data["application_id"])),
                "channel_id": str(channel_id), "attachment_size_limit": CAPABILITIES.max_upload,
                "data": {}}
            if data.get("guild_id") and not private:
                payload["guild_id"] = str(int(data["guild_id"]))
            # discord.py builds Interactions from the payload and its connection state;
            # the REST-only state (after login) is all the webhooks need
            return discord.Interaction(data=payload,  # type: ignore[arg-type]
                                       state=self.client._connection)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("discord: cannot answer interaction %s through its token (%s); "
                        "answering in the channel", interaction_id, e)
            return None

    def attachment_reader(self, ref: str) -> Any:
        """A stored file is read again from its CDN URL."""
        async def read() -> bytes:
            return await self.client.http.get_from_cdn(ref)

        return read

    async def stop(self) -> None:
        """Close the gateway and HTTP sessions."""
        for task in list(self._background):
            task.cancel()
        await self.client.close()
        if self._task is not None:
            if not self._task.done():
                # AutoShardedClient retries a shard that failed to connect forever, even
                # after close(): a start that never came up must not hang stop()
                await asyncio.wait({self._task}, timeout=1.0)
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def connected(self) -> bool:
        """Gateway session up, or in send-only mode logged in (read by the health file
        behind `doctor --live`)."""
        if not self.receiving:
            return self.client.user is not None and not self.client.is_closed()
        return self.client.is_ready() and not self.client.is_closed()

    async def upload_session(self) -> aiohttp.ClientSession:
        """A plain session for PUTs to Discord's upload URLs (no bot token there)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ slash commands

    def _build_tree(self, specs: list[CommandSpec]) -> None:
        tree = self.client.tree
        tree.clear_commands(guild=None)
        for spec in specs:
            tree.add_command(self._app_command(spec))

    def _app_command(
        self, spec: CommandSpec
    ) -> app_commands.Command[Any, ..., Any] | app_commands.Group:
        """A CommandSpec as a discord.py app command, or a Group of its subcommands."""
        if not spec.subcommands:
            return self._leaf(spec, None, spec.name, spec.description, spec.params)
        group = app_commands.Group(name=spec.name, description=_fit(spec.description))
        for sub in spec.subcommands:
            group.add_command(self._leaf(spec, sub.name, sub.name, sub.description, sub.params))
        return group

    def _leaf(
        self, spec: CommandSpec, sub: str | None, name: str, description: str,
        params: tuple[Param, ...],
    ) -> app_commands.Command[Any, ..., Any]:
        """One invocable command with typed options, declared through discord.py's public
        decorators (describe / rename / choices) on a generated signature."""
        signature = [
            inspect.Parameter(
                "interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=discord.Interaction,
            )
        ]
        renames: dict[str, str] = {}
        descriptions: dict[str, str] = {}
        choices: dict[str, list[app_commands.Choice[Any]]] = {}
        ordered = sorted(params, key=lambda p: not p.required)  # Discord: required first
        for i, p in enumerate(ordered):
            pyname = f"p{i}"  # option names need not be Python identifiers
            renames[pyname] = p.name
            descriptions[pyname] = _fit(p.description or p.name)
            signature.append(
                inspect.Parameter(
                    pyname, inspect.Parameter.KEYWORD_ONLY,
                    annotation=self._annotation(p),
                    default=inspect.Parameter.empty if p.required else None,
                )
            )
            if p.choices and _choices_fit(p.choices) and p.type in ("str", "text"):
                choices[pyname] = [app_commands.Choice(name=c, value=c) for c in p.choices]
        adapter = self

        async def callback(interaction: discord.Interaction, **kwargs: Any) -> None:
            await adapter.on_slash(spec, sub, interaction,
                                   {renames[k]: v for k, v in kwargs.items()})

        callback.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
        decorated: Any = callback
        if ordered:
            decorated = app_commands.rename(**renames)(decorated)
            decorated = app_commands.describe(**descriptions)(decorated)
        if choices:
            decorated = app_commands.choices(**choices)(decorated)
        return app_commands.Command(name=name, description=_fit(description or name),
                                    callback=decorated)

    @staticmethod
    def _annotation(p: Param) -> Any:
        if p.type == "attachment":
            return discord.Attachment
        if p.type in ("int", "float"):
            kind = int if p.type == "int" else float
            if p.min_value is not None or p.max_value is not None:
                low = None if p.min_value is None else kind(p.min_value)
                high = None if p.max_value is None else kind(p.max_value)
                return app_commands.Range[kind, low, high]  # type: ignore[valid-type]
            return kind
        return str

    async def on_slash(
        self, spec: CommandSpec, sub: str | None, interaction: discord.Interaction,
        args: dict[str, Any],
    ) -> None:
        """A slash command -> Inbound with a typed CommandCall; answered via the interaction."""
        assert self.sink is not None
        replier = InteractionReplier(self, interaction)
        self._keep(replier.arm_auto_defer())
        attachments: list[Attachment] = []
        converted: dict[str, Any] = {}
        for name, value in args.items():
            if isinstance(value, discord.Attachment):
                value = to_attachment(value)
                attachments.append(value)
            converted[name] = value
        found = spec.subcommand(sub) if sub else None
        params = found.params if found is not None else spec.params
        raw = " ".join([*([sub] if sub else []), *(
            str(converted[p.name]) for p in params
            if p.type != "attachment" and converted.get(p.name) not in (None, ""))])
        try:
            call = CommandCall(name=spec.name, args=spec.check(converted, sub), raw=raw, sub=sub)
        except UserError as e:
            call = CommandCall(name=spec.name, args={}, raw=raw, error=e.message)
        user = interaction.user
        inbound = Inbound(
            id=str(interaction.id),
            channel=self._channel_key(interaction.channel, interaction.channel_id or 0),
            author=Author(str(user.id), user.display_name, user.bot),
            text=f"/{spec.name} {raw}".strip(),
            attachments=attachments,
            is_private=interaction.guild_id is None,
            addressed=True,
            command=call,
            reply_via=_interaction_via(interaction),
        )
        await self.sink.submit(inbound, replier)

    # ------------------------------------------------------------------ messages

    @staticmethod
    def _channel_key(channel: Any, channel_id: int) -> ChannelKey:
        if isinstance(channel, discord.Thread):
            return ChannelKey("discord", str(channel.parent_id), str(channel.id))
        return ChannelKey("discord", str(channel_id))

    def _clean(self, message: discord.Message) -> str:
        """Drop the leading bot mention; other user mentions become @names."""
        me = self.client.user
        text = message.content
        if me is not None:
            text = re.sub(rf"^\s*<@!?{me.id}>[\s,:]*", "", text)
        names = {u.id: u.display_name for u in message.mentions}

        def name(m: re.Match[str]) -> str:
            uid = int(m.group(1))
            return f"@{names[uid]}" if uid in names else m.group(0)

        return re.sub(r"<@!?(\d+)>", name, text).strip()

    async def _quoted(self, message: discord.Message) -> Quoted | None:
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        target = ref.resolved or ref.cached_message
        if isinstance(target, discord.DeletedReferencedMessage):
            return None
        if target is None:
            try:
                target = await message.channel.fetch_message(ref.message_id)
            except discord.HTTPException:
                return None
        me = self.client.user
        voice = target.flags.voice
        return Quoted(
            id=str(target.id),
            author=Author(str(target.author.id), target.author.display_name, target.author.bot),
            text=self._clean(target),
            attachments=tuple(to_attachment(a, voice_flag=voice) for a in target.attachments),
            from_self=me is not None and target.author.id == me.id,
        )

    async def on_message(self, message: discord.Message, *, edited: bool = False) -> None:
        """MESSAGE_CREATE -> Inbound, ignoring ourselves, other bots and system messages;
        an edit goes to the sink's edit() (answered in its new form if still waiting)."""
        me = self.client.user
        if self.sink is None or me is None or message.author.id == me.id or message.author.bot:
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        is_dm = message.guild is None
        quoted = await self._quoted(message)
        mentioned = any(u.id == me.id for u in message.mentions)
        addressed = is_dm or mentioned or bool(quoted and quoted.from_self)
        text = self._clean(message)
        command = None
        if addressed and text.startswith("/"):
            command = self.sink.commands.parse(text, CAPABILITIES, me.name)
        voice = message.flags.voice
        channel = message.channel
        inbound = Inbound(
            id=str(message.id),
            channel=self._channel_key(channel, channel.id),
            author=Author(str(message.author.id), message.author.display_name, False),
            text=text,
            attachments=[to_attachment(a, voice_flag=voice) for a in message.attachments],
            reply_to=quoted,
            is_private=is_dm,
            addressed=addressed,
            command=command,
        )
        if edited:
            await self.sink.edit(inbound)
            return
        replier = DiscordReplier(self, channel, channel.id, None if is_dm else message)
        await self.sink.submit(inbound, replier)
