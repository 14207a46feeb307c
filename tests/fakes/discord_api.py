"""A loopback fake of Discord: HTTP API v10 under /api/v10 plus a websocket gateway.

Faithful to https://discord.com/developers/docs where the bot can tell the difference:
JSON shapes, error bodies and codes (50035 Invalid Form Body, 50006 empty message,
10008 Unknown Message, 10062 Unknown interaction, 40060 already acknowledged...),
the 2000-character limit, the 3-second interaction deadline, rate-limit headers and
429 bodies, and the gateway handshake (HELLO, IDENTIFY, READY, GUILD_CREATE, heartbeats,
RESUME, zlib-stream transport compression) and sharding: IDENTIFY's `shard`
[shard_id, num_shards] (close 4010 Invalid shard when out of range), READY listing only
the shard's guilds, guild events only to the shard `(guild_id >> 22) % num_shards`, DMs
only to shard 0, and GET /gateway/bot's recommended `shards` and `session_start_limit`.

Tests redirect discord.py with ``with fake.redirect_discord_py(): ...``, which sets two
class attributes and restores them afterwards:
- ``discord.http.Route.BASE = fake.api_base``: every REST call, interaction webhooks
  included, is built from it;
- ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)``: a
  plain (unsharded) ``discord.Client`` never asks ``/gateway/bot``, it dials this
  hardcoded ``wss://gateway.discord.gg/`` (``/gateway/bot`` is still served for
  AutoShardedClient). After READY it uses ``resume_gateway_url``, which is ours too.
The only other absolute URLs discord.py uses are CDN ones it receives from the server
(attachments' ``url``), which here point at ``http://127.0.0.1:PORT/attachments/...``;
avatars are never fetched because users have ``avatar: null``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import fnmatch
import hashlib
import io
import json
import math
import mimetypes
import re
import secrets
import struct
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

DISCORD_EPOCH_MS = 1420070400000
API_PREFIX = "/api/v10"
MAX_CONTENT = 2000
IS_VOICE_MESSAGE = 1 << 13
EPHEMERAL = 1 << 6
LOADING = 1 << 7
SUPPRESS_EMBEDS = 1 << 2
SUPPRESS_NOTIFICATIONS = 1 << 12
IS_COMPONENTS_V2 = 1 << 15

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
REQUIRED_INTENTS = INTENT_GUILD_MESSAGES | INTENT_DIRECT_MESSAGES | INTENT_MESSAGE_CONTENT
ALL_INTENTS = (1 << 26) - 1

# how long enforce_nonce remembers a nonce ("the past few minutes" in the docs)
NONCE_WINDOW = 300.0
OPTION_TYPES = range(1, 12)  # SUB_COMMAND .. ATTACHMENT
SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, NUMBER, ATTACHMENT = 1, 2, 3, 4, 10, 11
VALUE_TYPES = range(3, 12)  # what a subcommand's options may be
# Discord: ^[-_'\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$, lowercase where a letter has a
# lowercase form; Python's unicode \w (letters, digits, marks, _) is the close equivalent
_COMMAND_NAME_RE = re.compile(r"^[-_'\w]{1,32}$")


def _valid_name(name: str) -> bool:
    """A chat-input command or option name as Discord accepts it."""
    return bool(_COMMAND_NAME_RE.match(name)) and name.lower() == name


def _command_chars(cmd: dict[str, Any]) -> int:
    """Characters Discord counts toward its 4000 per command: names, descriptions and
    choice names/values, at every level."""
    total = len(str(cmd.get("name", ""))) + len(str(cmd.get("description", "")))
    for opt in cmd.get("options") or []:
        total += _command_chars(opt)
        for ch in opt.get("choices") or []:
            total += len(str(ch.get("name", ""))) + len(str(ch.get("value", "")))
    return total


@dataclass
class FakeMessage:
    """A message the bot sent, as the fake stored it (content is the current text)."""

    id: int
    channel_id: int
    content: str
    edits: list[tuple[float, str]] = field(default_factory=list)
    flags: int = 0
    attachments: list[tuple[str, bytes, str, dict[str, Any]]] = field(default_factory=list)
    message_reference: dict[str, Any] | None = None
    via_interaction: bool = False
    allowed_mentions: dict[str, Any] | None = None
    embeds: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False


@dataclass
class Call:
    """One HTTP request the fake received (path is relative to /api/v10 for API routes)."""

    method: str
    path: str
    json: Any
    time: float
    status: int = 0
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class _FailRule:
    method: str
    pattern: str
    status: int
    retry_after: float
    times: int
    body: dict[str, Any] | None
    scope: str = "user"


@dataclass
class _Interaction:
    id: int
    token: str
    created: float
    channel_id: int
    command: str
    user: dict[str, Any] = field(default_factory=dict)
    acked: bool = False
    callback_type: int | None = None
    original_id: int | None = None
    loading: bool = False
    responses: list[dict[str, Any]] = field(default_factory=list)


@dataclass(eq=False)
class _Session:
    session_id: str
    intents: int
    shard: tuple[int, int] | None = None  # (shard_id, num_shards) from IDENTIFY
    seq: int = 0
    buffer: list[dict[str, Any]] = field(default_factory=list)
    conn: _Conn | None = None


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    compressor: Any = None
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    session: _Session | None = None
    writer: asyncio.Task[None] | None = None


class _Reject(Exception):
    """Raised inside route handlers to answer with a Discord error body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def _err(status: int, code: int, message: str) -> _Reject:
    return _Reject(status, {"message": message, "code": code})


def _form_error(errors: dict[str, Any]) -> _Reject:
    return _Reject(400, {"code": 50035, "message": "Invalid Form Body", "errors": errors})


def _field_error(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def _iso(ts: float | None = None) -> str:
    moment = dt.datetime.fromtimestamp(time.time() if ts is None else ts, dt.UTC)
    return moment.isoformat(timespec="microseconds")


def ogg_duration(data: bytes) -> float | None:
    """Duration of an Ogg/Opus file from its last page's granule position (48 kHz)."""
    if not data.startswith(b"OggS"):
        return None
    last = data.rfind(b"OggS")
    if last < 0 or last + 14 > len(data):
        return None
    granule = struct.unpack_from("<q", data, last + 6)[0]
    pre_skip = 0
    head = data.find(b"OpusHead")
    if head >= 0 and head + 12 <= len(data):
        pre_skip = struct.unpack_from("<H", data, head + 10)[0]
    if granule <= 0:
        return None
    return max(0.0, (granule - pre_skip) / 48000)


class FakeDiscord:
    """Discord REST v10 + gateway on 127.0.0.1 with a user-side driving API for tests."""

    def __init__(
        self,
        token: str = "discord-test-token",
        bot_id: int = 1100000000000000001,
        application_id: int = 1100000000000000001,
        guild_id: int = 1100000000000000100,
        *,
        bot_name: str = "testbot",
        interaction_deadline: float = 3.0,
        rate_limit: tuple[int, float] = (50, 1.0),
        required_intents: int = REQUIRED_INTENTS,
        heartbeat_interval: int = 41250,
        recommended_shards: int = 1,
        max_concurrency: int = 1,
    ) -> None:
        self.token = token
        self.bot_id = bot_id
        self.application_id = application_id
        self.guild_id = guild_id
        self.bot_name = bot_name
        self.interaction_deadline = interaction_deadline
        self.rate_limit = rate_limit
        self.required_intents = required_intents
        self.heartbeat_interval = heartbeat_interval
        # GET /gateway/bot: the shard count Discord recommends, and how many shards may
        # IDENTIFY at once (session_start_limit.max_concurrency; 1 for most bots)
        self.recommended_shards = recommended_shards
        self.max_concurrency = max_concurrency
        self.identifies: list[tuple[float, tuple[int, int] | None]] = []
        self._guilds: dict[int, str] = {guild_id: "Test Guild"}
        self._last_snowflake = 0
        self.bot_user: dict[str, Any] = {
            "id": str(bot_id),
            "username": bot_name,
            "global_name": None,
            "discriminator": "0",
            "avatar": None,
            "bot": True,
            "verified": True,
            "flags": 0,
            "mfa_enabled": False,
            "public_flags": 0,
        }
        self._users: dict[int, dict[str, Any]] = {bot_id: self.bot_user}
        self._channels: dict[int, dict[str, Any]] = {}
        self.channel_id = self._snowflake()
        self.thread_id = self._snowflake()
        self._channels[self.channel_id] = {
            "id": str(self.channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }
        self._channels[self.thread_id] = {
            "id": str(self.thread_id),
            "type": 11,
            "guild_id": str(guild_id),
            "parent_id": str(self.channel_id),
            "owner_id": "1100000000000000900",
            "name": "a thread",
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _iso(),
                "locked": False,
            },
        }
        self._dms: dict[int, int] = {}
        self._messages: dict[int, dict[str, Any]] = {}
        self._nonces: dict[str, tuple[int, float]] = {}  # the bot's nonces: (message, when)
        self._bot_messages: dict[int, FakeMessage] = {}
        self._blobs: dict[int, tuple[bytes, str, str]] = {}
        self._uploads: dict[str, bytes | None] = {}
        self._voice_disallowed: set[int] = set()
        self.commands: list[dict[str, Any]] = []
        self.guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._command_ids: dict[tuple[int | None, str], int] = {}
        self._interactions: dict[int, _Interaction] = {}
        self._interactions_by_token: dict[str, _Interaction] = {}
        self._typing: dict[int, int] = {}
        self.calls: list[Call] = []
        self._fail_rules: list[_FailRule] = []
        self._windows: dict[str, tuple[float, int]] = {}
        self._sessions: dict[str, _Session] = {}
        self._conns: set[_Conn] = set()
        self._cond: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Awaitable[Any]], bool]] = []
        self._build_routes()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind an ephemeral loopback port and serve REST + gateway."""
        self._cond = asyncio.Condition()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._entry)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Close gateway connections and the server."""
        for conn in list(self._conns):
            await conn.queue.put(None)
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"server shutting down")
            if conn.writer is not None:
                conn.writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await conn.writer
        self._conns.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_base(self) -> str:
        """What discord.http.Route.BASE must be set to."""
        return self.url + API_PREFIX

    @contextlib.contextmanager
    def redirect_discord_py(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at this fake, then restore them."""
        import discord.gateway
        import discord.http
        import yarl

        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url + "/")
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    @property
    def gateway_url(self) -> str:
        """The websocket URL /gateway/bot hands out."""
        return f"ws://127.0.0.1:{self._port}"

    # ------------------------------------------------------------------ inspection

    def messages(self, channel_id: int) -> list[FakeMessage]:
        """The bot's (non-deleted) messages in a channel, oldest first."""
        return [
            m
            for m in sorted(self._bot_messages.values(), key=lambda m: m.id)
            if m.channel_id == channel_id and not m.deleted
        ]

    def message(self, message_id: int) -> dict[str, Any] | None:
        """Any stored message (user or bot) as its Discord JSON."""
        return self._messages.get(message_id)

    def interaction_responses(self, interaction_id: int) -> list[dict[str, Any]]:
        """Callback, followups and edits for one interaction, in order."""
        inter = self._interactions.get(int(interaction_id))
        return list(inter.responses) if inter else []

    def typing(self, channel_id: int) -> int:
        """How many typing indicators the bot triggered in a channel."""
        return self._typing.get(channel_id, 0)

    def dm_channel(self, user_id: int) -> int:
        """The DM channel id between the bot and a user (created on demand)."""
        if user_id not in self._dms:
            cid = self._snowflake()
            self._dms[user_id] = cid
            user = self._user(user_id)
            self._channels[cid] = {
                "id": str(cid),
                "type": 1,
                "last_message_id": None,
                "recipients": [user],
                "flags": 0,
            }
        return self._dms[user_id]

    def add_guild(self, *, shard: tuple[int, int] | None = None,
                  name: str = "Another Guild") -> tuple[int, int]:
        """The bot joins another guild with one text channel: (guild id, channel id).

        shard=(shard_id, num_shards) picks an id that lands on that shard. Connected
        sessions on its shard get GUILD_CREATE, as when a bot is added to a server.
        """
        gid = self._snowflake()
        if shard is not None:
            while (gid >> 22) % shard[1] != shard[0]:
                gid = self._snowflake() + (1 << 22)
                self._last_snowflake = gid
        cid = self._snowflake()
        self._guilds[gid] = name
        self._channels[cid] = {
            **self._channels[self.channel_id], "id": str(cid), "guild_id": str(gid),
            "last_message_id": None}
        self._dispatch("GUILD_CREATE", self._guild_payload(gid), channel=None, guild=gid)
        return gid, cid

    @staticmethod
    def shard_of(guild_id: int, num_shards: int) -> int:
        """The shard a guild's events go to (Discord's formula)."""
        return (guild_id >> 22) % num_shards

    def disallow_voice(self, channel_id: int) -> None:
        """Make voice messages fail in a channel (code 50173), to test fallbacks."""
        self._voice_disallowed.add(channel_id)

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        *,
        status: int = 429,
        retry_after: float = 0.5,
        times: int = 1,
        body: dict[str, Any] | None = None,
        scope: str = "user",
    ) -> None:
        """Answer the next `times` matching requests with an error (429 like Discord by default).

        path_pattern is an fnmatch glob on the path relative to /api/v10, without the
        query, e.g. "/channels/*/messages". A 429's scope is "user" (the route's bucket),
        "shared" (the resource's) or "global" (every request of the bot: no bucket
        headers, X-RateLimit-Global: true and "global": true in the body).
        """
        if scope not in ("user", "shared", "global"):
            raise ValueError("scope is user, shared or global (X-RateLimit-Scope)")
        self._fail_rules.append(
            _FailRule(method.upper(), path_pattern, status, retry_after, times, body, scope)
        )

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until predicate() holds; re-checked on every request and gateway frame."""
        assert self._cond is not None, "FakeDiscord.start() was not awaited"
        deadline = time.monotonic() + timeout
        async with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    recent = [f"{c.method} {c.path} -> {c.status}" for c in self.calls[-8:]]
                    raise AssertionError(
                        f"condition not met within {timeout}s; last calls: {recent}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), min(left, 0.05))

    # ------------------------------------------------------------------ user side

    def user_message(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        *,
        username: str = "alice",
        global_name: str | None = None,
        mention_bot: bool = False,
        reply_to: int | None = None,
        reply_ping: bool = True,
        attachments: list[tuple[bytes, str, str]] | None = None,
        flags: int = 0,
        is_bot: bool = False,
        dm: bool = False,
        message_type: int = 0,
        while_down: bool = False,
    ) -> dict[str, Any]:
        """A user posts a message: dispatch MESSAGE_CREATE with a real Message object.

        while_down: the bot is not connected; the message is only stored in the channel
        (a new gateway session does not replay it; GET .../messages lists it).
        """
        if not while_down:
            self._require_session("user_message")
        author = self._user(author_id, username, global_name, is_bot)
        if dm:
            channel_id = self.dm_channel(author_id)
        channel = self._channel(channel_id)
        guild = channel.get("guild_id")
        mid = self._snowflake()
        mentions: list[dict[str, Any]] = []
        if mention_bot:
            content = f"<@{self.bot_id}> {content}"
            mentions.append(dict(self.bot_user))
        msg: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": message_type,
            "flags": flags,
            "components": [],
        }
        if guild:
            msg["guild_id"] = guild
            msg["member"] = self._member_stub()
        if reply_to is not None:
            ref = self._messages.get(reply_to)
            if ref is None:
                raise AssertionError(f"reply_to: no stored message {reply_to}")
            msg["type"] = 19 if message_type == 0 else message_type
            msg["message_reference"] = {
                "type": 0,
                "message_id": str(reply_to),
                "channel_id": ref["channel_id"],
                **({"guild_id": guild} if guild else {}),
            }
            msg["referenced_message"] = {
                k: v for k, v in ref.items() if k not in ("referenced_message", "member")
            }
            if reply_ping and all(u["id"] != ref["author"]["id"] for u in mentions):
                mentions.append(dict(ref["author"]))
        for data, filename, ctype in attachments or []:
            extra: dict[str, Any] = {}
            if flags & IS_VOICE_MESSAGE:
                duration = ogg_duration(data) or max(0.1, len(data) / 4000)
                extra = {
                    "duration_secs": round(duration, 2),
                    "waveform": base64.b64encode(bytes(range(0, 256, 8))).decode(),
                }
            msg["attachments"].append(self._store_blob(channel_id, data, filename, ctype, extra))
        self._messages[mid] = msg
        channel["last_message_id"] = str(mid)
        self._dispatch("MESSAGE_CREATE", msg, channel=channel)
        return msg

    def user_edit(self, message_id: int, content: str) -> dict[str, Any]:
        """A user edits their message: MESSAGE_UPDATE with the whole message, edited_timestamp
        set (an embed resolving also sends MESSAGE_UPDATE, without it)."""
        msg = self._messages.get(message_id)
        if msg is None:
            raise AssertionError(f"user_edit: no stored message {message_id}")
        mentions = [u for u in msg["mentions"] if u["id"] == str(self.bot_id)]
        if mentions and not content.startswith(f"<@{self.bot_id}>"):
            content = f"<@{self.bot_id}> {content}"
        msg["content"] = content
        msg["edited_timestamp"] = _iso()
        self._dispatch("MESSAGE_UPDATE", msg, channel=self._channels[int(msg["channel_id"])])
        return msg

    def slash(
        self,
        name: str,
        options: dict[str, object],
        *,
        channel_id: int,
        user_id: int,
        username: str = "alice",
        dm: bool = False,
        sub: str | None = None,
    ) -> dict[str, Any]:
        """A user runs a registered slash command: dispatch INTERACTION_CREATE (type 2).

        Attachment option values are (bytes, filename, content_type) tuples. `sub` names
        the subcommand (`/voice speed`); its options arrive nested inside it, as Discord
        sends them. Like Discord's UI, this refuses what a user could not send: unknown
        options, a group without a subcommand, missing required options, values outside
        the choices or the min/max.
        """
        self._require_session("slash")
        if dm:
            channel_id = self.dm_channel(user_id)
        channel = self._channel(channel_id)
        guild = channel.get("guild_id")
        cmd = self._find_command(name, int(guild) if guild else None)
        if cmd is None:
            raise AssertionError(f"slash: command {name!r} is not registered")
        defs_list = cmd.get("options", [])
        subs = {o["name"]: o for o in defs_list if o["type"] == SUB_COMMAND}
        if subs or sub is not None:
            if sub not in subs:
                raise AssertionError(f"slash: /{name} needs one of the subcommands {list(subs)}")
            defs_list = subs[sub].get("options", [])
        defs = {o["name"]: o for o in defs_list}
        opts: list[dict[str, Any]] = []
        resolved: dict[str, Any] = {}
        for key, value in options.items():
            if key not in defs:
                raise AssertionError(f"slash: {name} has no option {key!r}")
            otype = defs[key]["type"]
            if otype == ATTACHMENT:
                assert isinstance(value, tuple), "attachment options take (bytes, name, mime)"
                data, filename, ctype = value
                att = self._store_blob(channel_id, data, filename, ctype, {"ephemeral": True})
                resolved.setdefault("attachments", {})[att["id"]] = att
                value = att["id"]
            elif otype == INTEGER:
                value = int(value)  # type: ignore[call-overload]
            elif otype == NUMBER:
                value = float(value)  # type: ignore[arg-type]
            elif otype == STRING:
                value = str(value)
            self._check_offered(name, defs[key], value)
            opts.append({"name": key, "type": otype, "value": value})
        for d in defs_list:
            if d.get("required") and d["name"] not in options:
                raise AssertionError(f"slash: /{name} requires option {d['name']!r}")
        if sub is not None:
            opts = [{"name": sub, "type": SUB_COMMAND, "options": opts}]
        user = self._user(user_id, username)
        iid = self._snowflake()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        data_obj: dict[str, Any] = {"id": cmd["id"], "name": name, "type": 1, "options": opts}
        if resolved:
            data_obj["resolved"] = resolved
        if cmd.get("guild_id"):
            data_obj["guild_id"] = cmd["guild_id"]
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": 2,
            "data": data_obj,
            "channel_id": str(channel_id),
            "channel": dict(channel),
            "token": token,
            "version": 1,
            "app_permissions": "2248473465835073",
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if guild:
            payload["guild_id"] = guild
            payload["guild_locale"] = "en-US"
            payload["guild"] = {"id": guild, "locale": "en-US", "features": []}
            payload["member"] = {
                **self._member_stub(),
                "user": user,
                "permissions": "2248473465835073",
            }
            payload["authorizing_integration_owners"] = {"0": guild}
            payload["context"] = 0
        else:
            payload["user"] = user
            payload["authorizing_integration_owners"] = {"0": guild or str(self.guild_id)}
            payload["context"] = 1
        inter = _Interaction(iid, token, time.monotonic(), channel_id, name, user)
        self._interactions[iid] = inter
        self._interactions_by_token[token] = inter
        self._dispatch("INTERACTION_CREATE", payload, channel=None,
                       guild=int(guild) if guild else None)
        return payload

    @staticmethod
    def _check_offered(command: str, definition: dict[str, Any], value: Any) -> None:
        """Discord's client only sends a listed choice, and numbers within min/max."""
        choices = definition.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise AssertionError(f"slash: /{command} {definition['name']} offers only "
                                 f"{[c['value'] for c in choices]}, not {value!r}")
        low, high = definition.get("min_value"), definition.get("max_value")
        if (low is not None and value < low) or (high is not None and value > high):
            raise AssertionError(f"slash: /{command} {definition['name']} takes {low}..{high}")

    # ------------------------------------------------------------------ helpers

    def _snowflake(self) -> int:
        value = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        value = max(value, self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    def _user(
        self,
        user_id: int,
        username: str = "alice",
        global_name: str | None = None,
        is_bot: bool = False,
    ) -> dict[str, Any]:
        if user_id == self.bot_id:
            return dict(self.bot_user)
        user = {
            "id": str(user_id),
            "username": username,
            "global_name": global_name,
            "discriminator": "0",
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
        }
        if is_bot:
            user["bot"] = True
        self._users[user_id] = user
        return dict(user)

    def _member_stub(self) -> dict[str, Any]:
        return {
            "roles": [],
            "joined_at": _iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "pending": False,
        }

    def _require_session(self, what: str) -> None:
        if not any(s.conn is not None for s in self._sessions.values()):
            raise AssertionError(f"{what}: no gateway session is connected (start the bot first)")

    def _channel(self, channel_id: int) -> dict[str, Any]:
        channel = self._channels.get(channel_id)
        if channel is None:
            raise AssertionError(f"unknown channel {channel_id}")
        return channel

    def _find_command(self, name: str, guild_id: int | None) -> dict[str, Any] | None:
        if guild_id is not None:
            for cmd in self.guild_commands.get(guild_id, []):
                if cmd["name"] == name:
                    return cmd
        for cmd in self.commands:
            if cmd["name"] == name:
                return cmd
        return None

    def _store_blob(
        self, channel_id: int, data: bytes, filename: str, ctype: str, extra: dict[str, Any]
    ) -> dict[str, Any]:
        aid = self._snowflake()
        self._blobs[aid] = (data, ctype, filename)
        url = f"{self.url}/attachments/{channel_id}/{aid}/{filename}"
        att: dict[str, Any] = {
            "id": str(aid),
            "filename": filename,
            "size": len(data),
            "url": url,
            "proxy_url": url.replace("/attachments/", "/media/attachments/", 1),
            "content_type": ctype,
        }
        if ctype.startswith("image/"):
            with contextlib.suppress(Exception):
                from PIL import Image

                with Image.open(io.BytesIO(data)) as im:
                    att["width"], att["height"] = im.size
        att.update(extra)
        return att

    def _notify(self) -> None:
        cond = self._cond
        if cond is None:
            return

        async def wake() -> None:
            async with cond:
                cond.notify_all()

        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(wake())

    @staticmethod
    def _on_shard(session: _Session, guild_id: int | None) -> bool:
        """Whether a session receives an event of this guild (None: a DM or no guild)."""
        if session.shard is None:
            return True
        shard_id, num_shards = session.shard
        if guild_id is None:
            return shard_id == 0  # DMs go to shard 0 only
        return (guild_id >> 22) % num_shards == shard_id

    def _dispatch(
        self, event: str, data: dict[str, Any], *, channel: dict[str, Any] | None,
        guild: int | None = None,
    ) -> None:
        if guild is None and channel is not None and channel.get("guild_id"):
            guild = int(channel["guild_id"])
        for session in self._sessions.values():
            if not self._on_shard(session, guild):
                continue
            payload_data = data
            if event.startswith("MESSAGE_") and channel is not None:
                dm = channel.get("type") in (1, 3)
                need = INTENT_DIRECT_MESSAGES if dm else INTENT_GUILD_MESSAGES
                if not session.intents & need:
                    continue
                if (
                    event != "MESSAGE_DELETE"
                    and not session.intents & INTENT_MESSAGE_CONTENT
                    and not dm
                    and data.get("author", {}).get("id") != str(self.bot_id)
                    and all(u["id"] != str(self.bot_id) for u in data.get("mentions", []))
                ):
                    payload_data = {**data, "content": "", "embeds": [], "attachments": []}
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": payload_data}
            session.buffer.append(frame)
            del session.buffer[:-500]
            if session.conn is not None:
                session.conn.queue.put_nowait(frame)
        self._notify()

    # ------------------------------------------------------------------ HTTP plumbing

    def _build_routes(self) -> None:
        sf = r"(?P<{}>\d+)"
        tok = r"(?P<token>[^/]+)"
        add = self._routes.append

        def r(
            method: str, path: str, handler: Callable[..., Awaitable[Any]], auth: bool = True
        ) -> None:
            pattern = path
            for name in ("channel", "message", "app", "guild", "command", "user", "interaction"):
                pattern = pattern.replace("{" + name + "}", sf.format(name))
            pattern = pattern.replace("{token}", tok)
            add((method, re.compile("^" + pattern + "$"), handler, auth))

        r("GET", "/users/@me", self._get_me)
        r("GET", "/users/{user}", self._get_user)
        r("POST", "/users/@me/channels", self._create_dm)
        r("GET", "/gateway", self._get_gateway, auth=False)
        r("GET", "/gateway/bot", self._get_gateway_bot)
        r("GET", "/oauth2/applications/@me", self._get_application)
        r("GET", "/applications/@me", self._get_application)
        r("GET", "/applications/{app}/commands", self._list_commands)
        r("PUT", "/applications/{app}/commands", self._put_commands)
        r("POST", "/applications/{app}/commands", self._post_command)
        r("DELETE", "/applications/{app}/commands/{command}", self._delete_command)
        r("GET", "/applications/{app}/guilds/{guild}/commands", self._list_commands)
        r("PUT", "/applications/{app}/guilds/{guild}/commands", self._put_commands)
        r("GET", "/channels/{channel}", self._get_channel)
        r("GET", "/channels/{channel}/messages", self._list_messages)
        r("POST", "/channels/{channel}/messages", self._post_message)
        r("GET", "/channels/{channel}/messages/{message}", self._get_message)
        r("PATCH", "/channels/{channel}/messages/{message}", self._patch_message)
        r("DELETE", "/channels/{channel}/messages/{message}", self._delete_message)
        r("POST", "/channels/{channel}/typing", self._post_typing)
        r("POST", "/channels/{channel}/attachments", self._post_attachments)
        r("POST", "/interactions/{interaction}/{token}/callback", self._callback, auth=False)
        r("POST", "/webhooks/{app}/{token}", self._followup, auth=False)
        r("GET", "/webhooks/{app}/{token}/messages/@original", self._get_webhook_msg, auth=False)
        r("PATCH", "/webhooks/{app}/{token}/messages/@original", self._patch_webhook_msg, False)
        r("DELETE", "/webhooks/{app}/{token}/messages/@original", self._del_webhook_msg, False)
        r("GET", "/webhooks/{app}/{token}/messages/{message}", self._get_webhook_msg, auth=False)
        r("PATCH", "/webhooks/{app}/{token}/messages/{message}", self._patch_webhook_msg, False)
        r("DELETE", "/webhooks/{app}/{token}/messages/{message}", self._del_webhook_msg, False)

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/", "") and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._gateway(request)
        try:
            if path.startswith("/attachments/") or path.startswith("/media/attachments/"):
                return self._record(request, path, None, await self._serve_blob(request))
            if path.startswith("/upload/"):
                return self._record(request, path, None, await self._upload_put(request))
            if not path.startswith(API_PREFIX + "/"):
                return self._record(
                    request, path, None, self._json(404, {"message": "404: Not Found", "code": 0})
                )
            return await self._api(request, path[len(API_PREFIX) :])
        finally:
            self._notify()

    def _record(
        self, request: web.Request, path: str, body: Any, resp: web.StreamResponse
    ) -> web.StreamResponse:
        self.calls.append(
            Call(request.method, path, body, time.monotonic(), resp.status, dict(request.query))
        )
        return resp

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        hdrs = {"Via": "1.1 google"}
        hdrs.update(headers or {})
        if status == 204:
            return web.Response(status=204, headers=hdrs)
        # Discord sends exactly "application/json" (discord.py compares the header verbatim)
        hdrs["Content-Type"] = "application/json"
        return web.Response(
            body=json.dumps(body, separators=(",", ":")).encode(), status=status, headers=hdrs
        )

    def _bucket(self, method: str, path: str) -> tuple[str, str]:
        """Route template -> (bucket hash, major-parameter key), roughly as Discord does."""
        major = ""
        m = re.match(r"^/(channels|guilds|webhooks)/(\d+)(?:/([^/]+))?", path)
        if m:
            major = m.group(2) + (
                "/" + m.group(3) if m.group(1) == "webhooks" and m.group(3) else ""
            )
        template = re.sub(r"/\d{5,}", "/{id}", path)
        if path.startswith("/webhooks/") or path.startswith("/interactions/"):
            template = re.sub(r"^(/\w+/\{id\})/[^/]+", r"\1/{token}", template)
        digest = hashlib.sha1(f"{method} {template}".encode()).hexdigest()[:16]
        return digest, major

    def _ratelimit_headers(self, method: str, path: str) -> tuple[dict[str, str], float | None]:
        limit, window = self.rate_limit
        bucket, major = self._bucket(method, path)
        key = f"{bucket}:{major}"
        now = time.time()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= window:
            start, count = now, 0
        reset_at = start + window
        if count >= limit:
            return self._limit_headers(bucket, limit, 0, reset_at, now), reset_at - now
        count += 1
        self._windows[key] = (start, count)
        return self._limit_headers(bucket, limit, limit - count, reset_at, now), None

    @staticmethod
    def _limit_headers(
        bucket: str, limit: int, remaining: int, reset_at: float, now: float
    ) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": f"{reset_at:.3f}",
            "X-RateLimit-Reset-After": f"{max(0.0, reset_at - now):.3f}",
            "X-RateLimit-Bucket": bucket,
        }

    def _limited(
        self,
        bucket_headers: dict[str, str],
        retry_after: float,
        scope: str,
        body: dict[str, Any] | None = None,
    ) -> web.Response:
        now = time.time()
        headers = dict(bucket_headers)
        headers.update(
            {
                "Retry-After": str(max(1, math.ceil(retry_after))),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{now + retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{retry_after:.3f}",
                "X-RateLimit-Scope": scope,
            }
        )
        payload = body or {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": False,
        }
        return self._json(429, payload, headers)

    def _limited_global(self, retry_after: float, body: dict[str, Any] | None) -> web.Response:
        """The global limit's 429: Discord sends no bucket headers with it."""
        headers = {"Retry-After": str(max(1, math.ceil(retry_after))),
                   "X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"}
        payload = body or {"message": "You are being rate limited.",
                           "retry_after": retry_after, "global": True}
        return self._json(429, payload, headers)

    async def _api(self, request: web.Request, path: str) -> web.StreamResponse:
        method = request.method
        route = None
        path_known = False
        for r_method, pattern, handler, auth in self._routes:
            m = pattern.match(path)
            if m:
                path_known = True
                if r_method == method:
                    route = (handler, auth, m.groupdict())
                    break
        if route is None:
            body = (
                {"message": "405: Method Not Allowed", "code": 0}
                if path_known
                else {"message": "404: Not Found", "code": 0}
            )
            return self._record(request, path, None, self._json(405 if path_known else 404, body))
        handler, auth, params = route
        if auth and request.headers.get("Authorization") != f"Bot {self.token}":
            return self._record(
                request, path, None, self._json(401, {"message": "401: Unauthorized", "code": 0})
            )
        headers, over = self._ratelimit_headers(method, path)
        for rule in self._fail_rules:
            if (
                rule.times > 0
                and rule.method == method
                and fnmatch.fnmatchcase(path, rule.pattern)
            ):
                rule.times -= 1
                if rule.status == 429 and rule.scope == "global":
                    resp = self._limited_global(rule.retry_after, rule.body)
                elif rule.status == 429:
                    resp = self._limited(headers, rule.retry_after, rule.scope, rule.body)
                else:
                    resp = self._json(
                        rule.status,
                        rule.body or {"message": "500: Internal Server Error", "code": 0},
                        headers,
                    )
                return self._record(request, path, None, resp)
        if over is not None:
            return self._record(request, path, None, self._limited(headers, over, "user"))
        body: Any = None
        try:
            result = await handler(request, **{k: v for k, v in params.items()})
            status, payload, body = result
            resp = self._json(status, payload, headers)
        except _Reject as e:
            resp = self._json(e.status, e.body, headers)
            body = getattr(request, "_fake_body", None)
        if body is None:
            body = getattr(request, "_fake_body", None)
        return self._record(request, path, body, resp)

    async def _read_json(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            request._fake_body = None  # type: ignore[attr-defined]
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            raise _err(400, 50109, "The request body contains invalid JSON.") from None
        request._fake_body = data  # type: ignore[attr-defined]
        return data

    async def _read_message_body(
        self, request: web.Request
    ) -> tuple[dict[str, Any], dict[int, tuple[str, bytes, str]]]:
        """JSON or multipart (payload_json + files[n]) -> (payload, files by index)."""
        files: dict[int, tuple[str, bytes, str]] = {}
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                name = part.name or ""  # type: ignore[union-attr]
                data = await part.read(decode=False)  # type: ignore[union-attr]
                m = re.fullmatch(r"files\[(\d+)\]", name)
                if name == "payload_json":
                    try:
                        payload = json.loads(data)
                    except ValueError:
                        raise _err(400, 50109, "The request body contains invalid JSON.") from None
                elif m:
                    fname = part.filename or "unknown"  # type: ignore[union-attr]
                    ctype = part.headers.get("Content-Type", "")  # type: ignore[union-attr]
                    files[int(m.group(1))] = (fname, bytes(data), ctype)
                else:
                    with contextlib.suppress(ValueError):
                        payload[name] = json.loads(data)
            request._fake_body = payload  # type: ignore[attr-defined]
            return payload, files
        data = await self._read_json(request)
        if data is not None and not isinstance(data, dict):
            raise _form_error(
                _field_error("DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            )
        return data or {}, files

    # ------------------------------------------------------------------ REST: users, gateway

    async def _get_me(self, request: web.Request) -> tuple[int, Any, Any]:
        return 200, dict(self.bot_user), None

    async def _get_user(self, request: web.Request, user: str) -> tuple[int, Any, Any]:
        found = self._users.get(int(user))
        if found is None:
            raise _err(404, 10013, "Unknown User")
        return 200, found, None

    async def _create_dm(self, request: web.Request) -> tuple[int, Any, Any]:
        data = await self._read_json(request) or {}
        rid = data.get("recipient_id")
        if rid is None:
            raise _form_error(
                {"recipient_id": _field_error("BASE_TYPE_REQUIRED", "This field is required")}
            )
        return 200, self._channels[self.dm_channel(int(rid))], data

    def _gateway_info(self) -> dict[str, Any]:
        return {"url": self.gateway_url}

    async def _get_gateway(self, request: web.Request) -> tuple[int, Any, Any]:
        return 200, self._gateway_info(), None

    async def _get_gateway_bot(self, request: web.Request) -> tuple[int, Any, Any]:
        return (
            200,
            {
                **self._gateway_info(),
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000 - len(self.identifies),
                    "reset_after": 14400000,
                    "max_concurrency": self.max_concurrency,
                },
            },
            None,
        )

    async def _get_application(self, request: web.Request) -> tuple[int, Any, Any]:
        owner = self._user(1100000000000000900, "owner")
        return (
            200,
            {
                "id": str(self.application_id),
                "name": self.bot_name,
                "icon": None,
                "description": "",
                "rpc_origins": [],
                "bot_public": True,
                "bot_require_code_grant": False,
                "bot": dict(self.bot_user),
                "terms_of_service_url": None,
                "privacy_policy_url": None,
                "owner": owner,
                "verify_key": "0" * 64,
                "team": None,
                "flags": (1 << 19) | (1 << 15) | (1 << 13),
                "tags": [],
                "install_params": None,
                "custom_install_url": None,
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "approximate_guild_count": 1,
            },
            None,
        )

    # ------------------------------------------------------------------ REST: commands

    def _check_app(self, app: str) -> None:
        if int(app) != self.application_id:
            raise _err(403, 50001, "Missing Access")

    async def _list_commands(
        self, request: web.Request, app: str, guild: str | None = None
    ) -> tuple[int, Any, Any]:
        self._check_app(app)
        if guild is not None:
            return 200, self.guild_commands.get(int(guild), []), None
        return 200, self.commands, None

    def _validate_command(self, cmd: Any) -> dict[str, Any]:
        """Check a command like Discord does (application command structure, option types,
        name regex, 1-100 character descriptions, 25 options / choices, subcommand nesting,
        4000 characters in all); a 400 with Discord's nested error keys on failure."""
        errors: dict[str, Any] = {}
        if not isinstance(cmd, dict):
            raise _form_error(
                _field_error("DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            )
        ctype = cmd.get("type", 1)
        name = cmd.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 32:
            errors["name"] = _field_error(
                "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length."
            )
        elif ctype == 1 and not _valid_name(name):
            errors["name"] = _field_error(
                "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
            )
        desc = cmd.get("description", "")
        if ctype == 1 and (not isinstance(desc, str) or not 1 <= len(desc) <= 100):
            errors["description"] = _field_error(
                "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        options = cmd.get("options") or []
        if ctype != 1 and options:
            errors["options"] = _field_error(
                "APPLICATION_COMMAND_OPTIONS_INVALID", "Only chat input commands take options"
            )
        else:
            opt_errors = self._validate_options(options, level=0)
            if opt_errors:
                errors["options"] = opt_errors
        if not errors and ctype == 1 and _command_chars(cmd) > 4000:
            errors["_errors"] = [{
                "code": "APPLICATION_COMMAND_TOO_LARGE",
                "message": "Command exceeds maximum size (4000)",
            }]
        if errors:
            raise _Reject(400, {"errors": errors})
        return cmd

    def _validate_options(self, options: Any, level: int) -> dict[str, Any]:
        """Options of a command (level 0), of a subcommand group (1) or of a subcommand (2).

        A command's options are all subcommands/groups or none of them; a group holds only
        subcommands; a subcommand holds only value options (Discord's nesting rules).
        """
        if not isinstance(options, list):
            return _field_error("LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
        if len(options) > 25:
            return _field_error("BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        types = [o.get("type") if isinstance(o, dict) else None for o in options]
        nesting = [t in (SUB_COMMAND, SUB_COMMAND_GROUP) for t in types]
        out: dict[str, Any] = {}
        if level == 0 and any(nesting) and not all(nesting):
            return _field_error(
                "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                "Sub-command and sub-command group option types are mutually exclusive to "
                "all other types",
            )
        seen_optional = False
        names: set[str] = set()
        for i, opt in enumerate(options):
            e: dict[str, Any] = {}
            if not isinstance(opt, dict):
                out[str(i)] = _field_error(
                    "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                continue
            otype = opt.get("type")
            allowed = {0: OPTION_TYPES, 1: (SUB_COMMAND,), 2: VALUE_TYPES}[level]
            if otype not in allowed:
                e["type"] = _field_error(
                    "BASE_TYPE_CHOICES", f"Value must be one of {set(allowed)}."
                )
            oname = opt.get("name")
            if not isinstance(oname, str) or not _valid_name(oname):
                e["name"] = _field_error(
                    "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            elif oname in names:
                e["name"] = _field_error(
                    "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS",
                    "Option names must be unique",
                )
            else:
                names.add(oname)
            odesc = opt.get("description")
            if not isinstance(odesc, str) or not 1 <= len(odesc) <= 100:
                e["description"] = _field_error(
                    "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            if otype in (SUB_COMMAND, SUB_COMMAND_GROUP):
                if opt.get("required"):
                    e["required"] = _field_error(
                        "APPLICATION_COMMAND_OPTION_REQUIRED_INVALID",
                        "Sub-commands and groups cannot be required",
                    )
                inner = self._validate_options(
                    opt.get("options") or [], level=2 if otype == SUB_COMMAND else 1)
                if inner:
                    e["options"] = inner
            else:
                if opt.get("options"):
                    e["options"] = _field_error(
                        "APPLICATION_COMMAND_OPTIONS_INVALID",
                        "Only sub-commands and groups take options",
                    )
                if opt.get("required"):
                    if seen_optional:
                        e["required"] = _field_error(
                            "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                            "Required options must be placed before non-required options",
                        )
                else:
                    seen_optional = True
                e.update(self._validate_value_option(opt, otype))
            if e:
                out[str(i)] = e
        return out

    @staticmethod
    def _validate_value_option(opt: dict[str, Any], otype: Any) -> dict[str, Any]:
        e: dict[str, Any] = {}
        choices = opt.get("choices")
        if choices:
            if otype not in (STRING, INTEGER, NUMBER):
                e["choices"] = _field_error(
                    "APPLICATION_COMMAND_OPTION_CHOICES_INVALID",
                    "Choices are not allowed for this option type",
                )
            elif len(choices) > 25:
                e["choices"] = _field_error(
                    "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )
            elif opt.get("autocomplete"):
                e["autocomplete"] = _field_error(
                    "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                    "Autocomplete cannot be set with choices",
                )
            else:
                ce: dict[str, Any] = {}
                for j, ch in enumerate(choices):
                    cn, cv = ch.get("name"), ch.get("value")
                    bad = not isinstance(cn, str) or not 1 <= len(cn) <= 100
                    if otype == STRING:
                        bad = bad or not isinstance(cv, str) or not 1 <= len(cv) <= 100
                    elif otype == INTEGER:
                        bad = bad or not isinstance(cv, int) or isinstance(cv, bool)
                    else:
                        bad = bad or not isinstance(cv, int | float) or isinstance(cv, bool)
                    if bad:
                        ce[str(j)] = _field_error(
                            "APPLICATION_COMMAND_OPTION_CHOICE_INVALID", "Invalid choice"
                        )
                if ce:
                    e["choices"] = ce
        for bound in ("min_value", "max_value"):
            if bound in opt and otype not in (INTEGER, NUMBER):
                e[bound] = _field_error(
                    "APPLICATION_COMMAND_OPTION_INVALID",
                    f"{bound} is only valid for number options",
                )
            elif bound in opt and (not isinstance(opt[bound], int | float)
                                   or isinstance(opt[bound], bool)):
                e[bound] = _field_error("NUMBER_TYPE_COERCE", "Value is not a number.")
        low, high = opt.get("min_value"), opt.get("max_value")
        if isinstance(low, int | float) and isinstance(high, int | float) and low > high:
            e["max_value"] = _field_error(
                "APPLICATION_COMMAND_OPTION_INVALID", "max_value must be at least min_value")
        for bound, lo in (("min_length", 0), ("max_length", 1)):
            if bound in opt:
                if otype != STRING:
                    e[bound] = _field_error(
                        "APPLICATION_COMMAND_OPTION_INVALID",
                        f"{bound} is only valid for string options",
                    )
                elif not isinstance(opt[bound], int) or not lo <= opt[bound] <= 6000:
                    e[bound] = _field_error(
                        "NUMBER_TYPE_MAX", f"int value should be between {lo} and 6000.")
        return e

    def _store_command(self, cmd: dict[str, Any], guild: int | None) -> dict[str, Any]:
        key = (guild, cmd["name"])
        cid = self._command_ids.get(key) or self._snowflake()
        self._command_ids[key] = cid
        stored = {
            "id": str(cid),
            "application_id": str(self.application_id),
            "version": str(self._snowflake()),
            "default_member_permissions": cmd.get("default_member_permissions"),
            "type": cmd.get("type", 1),
            "name": cmd["name"],
            "name_localizations": cmd.get("name_localizations"),
            "description": cmd.get("description", ""),
            "description_localizations": cmd.get("description_localizations"),
            "options": cmd.get("options") or [],
            "dm_permission": cmd.get("dm_permission", True),
            "contexts": cmd.get("contexts"),
            "integration_types": cmd.get("integration_types") or [0],
            "nsfw": bool(cmd.get("nsfw", False)),
        }
        if guild is not None:
            stored["guild_id"] = str(guild)
        return stored

    async def _put_commands(
        self, request: web.Request, app: str, guild: str | None = None
    ) -> tuple[int, Any, Any]:
        self._check_app(app)
        data = await self._read_json(request)
        if not isinstance(data, list):
            raise _form_error(
                _field_error("LIST_TYPE_CONVERT", "Only iterables may be used in a ListType")
            )
        if len(data) > 100:
            raise _form_error(
                _field_error("BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
            )
        errors: dict[str, Any] = {}
        names: set[tuple[int, str]] = set()
        for i, cmd in enumerate(data):
            try:
                self._validate_command(cmd)
            except _Reject as e:
                errors[str(i)] = e.body.get("errors", e.body)
                continue
            key = (cmd.get("type", 1), cmd["name"])
            if key in names:
                errors[str(i)] = {
                    "name": _field_error(
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        "Application command names must be unique",
                    )
                }
            names.add(key)
        if errors:
            raise _form_error(errors)
        gid = int(guild) if guild is not None else None
        stored = [self._store_command(c, gid) for c in data]
        if gid is None:
            self.commands = stored
        else:
            self.guild_commands[gid] = stored
        return 200, stored, data

    async def _post_command(self, request: web.Request, app: str) -> tuple[int, Any, Any]:
        self._check_app(app)
        data = await self._read_json(request)
        try:
            self._validate_command(data)
        except _Reject as e:
            raise _form_error(e.body.get("errors", {})) from None
        stored = self._store_command(data, None)
        self.commands = [c for c in self.commands if c["name"] != stored["name"]] + [stored]
        return 201, stored, data

    async def _delete_command(
        self, request: web.Request, app: str, command: str
    ) -> tuple[int, Any, Any]:
        self._check_app(app)
        before = len(self.commands)
        self.commands = [c for c in self.commands if c["id"] != command]
        if len(self.commands) == before:
            raise _err(404, 10063, "Unknown application command")
        return 204, None, None

    # ------------------------------------------------------------------ REST: channels, messages

    def _api_channel(self, channel: str) -> dict[str, Any]:
        found = self._channels.get(int(channel))
        if found is None:
            raise _err(404, 10003, "Unknown Channel")
        return found

    async def _get_channel(self, request: web.Request, channel: str) -> tuple[int, Any, Any]:
        return 200, self._api_channel(channel), None

    async def _list_messages(self, request: web.Request, channel: str) -> tuple[int, Any, Any]:
        self._api_channel(channel)
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            raise _form_error(
                {"limit": _field_error("NUMBER_TYPE_COERCE", "Value is not int.")}
            ) from None
        if not 1 <= limit <= 100:
            raise _form_error(
                {"limit": _field_error("NUMBER_TYPE_MAX", "int value should be <= 100 and >= 1.")}
            )
        anchors = {k: request.query[k] for k in ("around", "before", "after")
                   if k in request.query}
        for name, value in anchors.items():
            if not value.isdigit():
                raise _form_error({name: _field_error(
                    "NUMBER_TYPE_COERCE", f'Value "{value}" is not snowflake.')})
        if len(anchors) > 1:  # "mutually exclusive, only one may be passed at a time"
            raise _err(400, 50035, "Invalid Form Body")
        msgs = [m for m in self._messages.values() if m["channel_id"] == channel]
        msgs.sort(key=lambda m: int(m["id"]))  # oldest first while selecting
        if "after" in anchors:
            pivot = int(anchors["after"])
            msgs = [m for m in msgs if int(m["id"]) > pivot][:limit]
        elif "around" in anchors:
            pivot = int(anchors["around"])
            older = [m for m in msgs if int(m["id"]) < pivot]
            newer = [m for m in msgs if int(m["id"]) >= pivot]
            half = limit // 2
            msgs = older[max(0, len(older) - half):] + newer[: limit - min(half, len(older))]
        else:
            if "before" in anchors:
                pivot = int(anchors["before"])
                msgs = [m for m in msgs if int(m["id"]) < pivot]
            msgs = msgs[max(0, len(msgs) - limit):]
        # the API answers newest first, whichever anchor was given
        return 200, list(reversed(msgs)), None

    async def _get_message(
        self, request: web.Request, channel: str, message: str
    ) -> tuple[int, Any, Any]:
        self._api_channel(channel)
        msg = self._messages.get(int(message))
        if msg is None or msg["channel_id"] != channel:
            raise _err(404, 10008, "Unknown Message")
        return 200, msg, None

    def _validate_payload(
        self,
        payload: dict[str, Any],
        files: dict[int, tuple[str, bytes, str]],
        channel_id: int,
        *,
        editing: FakeMessage | None = None,
        extra_flags: int = 0,
    ) -> tuple[str | None, list[tuple[str, bytes, str, dict[str, Any]]], int]:
        """Check a message body like Discord does; return (content, attachments, flags)."""
        content = payload.get("content")
        if content is not None and not isinstance(content, str):
            content = str(content)
        errors: dict[str, Any] = {}
        if content is not None and len(content) > MAX_CONTENT:
            errors["content"] = _field_error(
                "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
            )
        embeds = payload.get("embeds") or []
        if len(embeds) > 10:
            errors["embeds"] = _field_error(
                "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."
            )
        am = payload.get("allowed_mentions")
        if isinstance(am, dict):
            bad = [p for p in am.get("parse", []) if p not in ("roles", "users", "everyone")]
            if bad:
                errors["allowed_mentions"] = {
                    "parse": _field_error(
                        "BASE_TYPE_CHOICES", "Value must be one of ('roles', 'users', 'everyone')."
                    )
                }
        flags = payload.get("flags") or 0
        if not isinstance(flags, int):
            errors["flags"] = _field_error("NUMBER_TYPE_COERCE", "Value is not int.")
            flags = 0
        allowed = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_VOICE_MESSAGE | IS_COMPONENTS_V2
        allowed |= extra_flags
        if flags & ~allowed and editing is None:
            errors["flags"] = _field_error("MESSAGE_FLAGS_INVALID", "Invalid flags")
        # attachments: metadata referencing files[n] or pre-uploaded files
        atts: list[tuple[str, bytes, str, dict[str, Any]]] = []
        used: set[int] = set()
        meta = payload.get("attachments")
        if meta is not None and not isinstance(meta, list):
            errors["attachments"] = _field_error(
                "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType"
            )
            meta = []
        att_errors: dict[str, Any] = {}
        kept_existing: list[tuple[str, bytes, str, dict[str, Any]]] = []
        for i, a in enumerate(meta or []):
            extra = {k: a[k] for k in ("duration_secs", "waveform", "description") if k in a}
            up = a.get("uploaded_filename")
            try:
                idx = int(a.get("id"))
            except (TypeError, ValueError):
                idx = -1
            if up is not None:
                if up not in self._uploads or self._uploads[up] is None:
                    raise _err(400, 50146, "Uploaded file not found.")
                data = self._uploads[up] or b""
                fname = a.get("filename") or up.rsplit("/", 1)[-1]
                atts.append((fname, data, self._guess_type(fname, ""), extra))
            elif idx in files:
                fname, data, ctype = files[idx]
                fname = a.get("filename") or fname
                atts.append((fname, data, self._guess_type(fname, ctype), extra))
                used.add(idx)
            elif editing is not None and idx in self._blobs:
                data, ctype, fname = self._blobs[idx]
                kept_existing.append((fname, data, ctype, extra))
            else:
                att_errors[str(i)] = _field_error("ATTACHMENT_NOT_FOUND", "Attachment not found")
        for idx, (fname, data, ctype) in sorted(files.items()):
            if idx not in used:
                atts.append((fname, data, self._guess_type(fname, ctype), {}))
        if att_errors:
            errors["attachments"] = att_errors
        if len(atts) + len(kept_existing) > 10:
            errors["files"] = _field_error(
                "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."
            )
        if sum(len(a[1]) for a in atts) > 10 * 1024 * 1024:
            raise _err(413, 40005, "Request entity too large")
        ref = payload.get("message_reference")
        if ref and editing is None:
            rid = ref.get("message_id")
            target = self._messages.get(int(rid)) if rid is not None else None
            same_channel = target is not None and int(target["channel_id"]) == channel_id
            if not same_channel and ref.get("fail_if_not_exists", True):
                errors["message_reference"] = _field_error(
                    "REPLIES_UNKNOWN_MESSAGE", "Unknown message"
                )
        if errors:
            raise _form_error(errors)
        if flags & IS_VOICE_MESSAGE and editing is None:
            if channel_id in self._voice_disallowed:
                raise _err(403, 50173, "You cannot send voice messages in this channel.")
            if content or embeds or payload.get("sticker_ids") or payload.get("poll"):
                raise _err(400, 50159, "Voice messages do not support additional content.")
            if len(atts) != 1 or not atts[0][2].startswith("audio/"):
                raise _err(400, 50160, "Voice messages must have a single audio attachment.")
            extra = atts[0][3]
            if "duration_secs" not in extra or "waveform" not in extra:
                raise _err(400, 50161, "Voice messages must have supporting metadata.")
            try:
                wave = base64.b64decode(extra["waveform"], validate=True)
            except (ValueError, TypeError):
                raise _form_error(
                    {
                        "attachments": {
                            "0": {
                                "waveform": _field_error("BASE_TYPE_BAD_BASE64", "Invalid base64")
                            }
                        }
                    }
                ) from None
            if len(wave) > 256:
                raise _err(400, 50161, "Voice messages must have supporting metadata.")
        has_body = bool((content or "").strip()) or embeds or atts or kept_existing
        has_body = has_body or payload.get("sticker_ids") or payload.get("components")
        has_body = has_body or payload.get("poll")
        if editing is None and not has_body:
            raise _err(400, 50006, "Cannot send an empty message")
        if editing is not None:
            atts = kept_existing + atts if meta is not None else atts
        return content, atts, flags

    @staticmethod
    def _guess_type(filename: str, given: str) -> str:
        if given and given != "application/octet-stream":
            return given
        if filename.lower().endswith((".ogg", ".oga", ".opus")):
            return "audio/ogg"
        return mimetypes.guess_type(filename)[0] or "application/octet-stream"

    def _create_bot_message(
        self,
        channel_id: int,
        content: str | None,
        atts: list[tuple[str, bytes, str, dict[str, Any]]],
        flags: int,
        payload: dict[str, Any],
        *,
        interaction: _Interaction | None = None,
    ) -> dict[str, Any]:
        mid = self._snowflake()
        channel = self._channels[channel_id]
        att_objs = [self._store_blob(channel_id, d, f, c, dict(x)) for f, d, c, x in atts]
        msg: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": dict(self.bot_user),
            "content": content or "",
            "timestamp": _iso(),
            "edited_timestamp": None,
            "tts": bool(payload.get("tts", False)),
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": att_objs,
            "embeds": payload.get("embeds") or [],
            "pinned": False,
            "type": 0,
            "flags": flags,
            "components": payload.get("components") or [],
        }
        if channel.get("guild_id"):
            msg["guild_id"] = channel["guild_id"]
        if payload.get("nonce") is not None:
            msg["nonce"] = payload["nonce"]
        ref = payload.get("message_reference")
        if ref and interaction is None:
            target = self._messages.get(int(ref.get("message_id", 0)))
            if target is not None:
                msg["type"] = 19
                msg["message_reference"] = {
                    "type": 0,
                    "message_id": target["id"],
                    "channel_id": target["channel_id"],
                    **({"guild_id": channel["guild_id"]} if channel.get("guild_id") else {}),
                }
                msg["referenced_message"] = {
                    k: v for k, v in target.items() if k != "referenced_message"
                }
        if interaction is not None:
            msg["webhook_id"] = str(self.application_id)
            msg["application_id"] = str(self.application_id)
            msg["type"] = 20 if interaction.original_id is None else 0
            msg["interaction_metadata"] = {
                "id": str(interaction.id),
                "type": 2,
                "name": interaction.command,
                "user": interaction.user,
                "authorizing_integration_owners": {"0": str(self.guild_id)},
            }
        self._messages[mid] = msg
        fm = FakeMessage(
            id=mid,
            channel_id=channel_id,
            content=content or "",
            edits=[(time.monotonic(), content or "")],
            flags=flags,
            attachments=[(f, d, c, dict(x)) for f, d, c, x in atts],
            message_reference=ref if isinstance(ref, dict) else None,
            via_interaction=interaction is not None,
            allowed_mentions=payload.get("allowed_mentions"),
            embeds=list(payload.get("embeds") or []),
        )
        self._bot_messages[mid] = fm
        channel["last_message_id"] = str(mid)
        if not flags & EPHEMERAL:
            self._dispatch("MESSAGE_CREATE", msg, channel=channel)
        return msg

    def _edit_bot_message(
        self,
        fm: FakeMessage,
        payload: dict[str, Any],
        files: dict[int, tuple[str, bytes, str]],
    ) -> dict[str, Any]:
        if fm.flags & IS_VOICE_MESSAGE:
            raise _err(400, 50162, "Voice messages cannot be edited.")
        content, atts, flags = self._validate_payload(payload, files, fm.channel_id, editing=fm)
        msg = self._messages[fm.id]
        if "content" in payload:
            fm.content = content or ""
            msg["content"] = fm.content
        if "attachments" in payload or files:
            fm.attachments = [(f, d, c, dict(x)) for f, d, c, x in atts]
            msg["attachments"] = [
                self._store_blob(fm.channel_id, d, f, c, dict(x)) for f, d, c, x in atts
            ]
        if "embeds" in payload:
            fm.embeds = list(payload.get("embeds") or [])
            msg["embeds"] = fm.embeds
        if "flags" in payload and isinstance(flags, int):
            fm.flags = (fm.flags & (EPHEMERAL | IS_VOICE_MESSAGE)) | (flags & SUPPRESS_EMBEDS)
        fm.flags &= ~LOADING
        msg["flags"] = fm.flags
        if "allowed_mentions" in payload:
            fm.allowed_mentions = payload["allowed_mentions"]
        body = fm.content.strip() or fm.attachments or fm.embeds or msg.get("components")
        if not body:
            raise _err(400, 50006, "Cannot send an empty message")
        msg["edited_timestamp"] = _iso()
        fm.edits.append((time.monotonic(), fm.content))
        self._dispatch("MESSAGE_UPDATE", msg, channel=self._channels[fm.channel_id])
        return msg

    async def _post_message(self, request: web.Request, channel: str) -> tuple[int, Any, Any]:
        chan = self._api_channel(channel)
        payload, files = await self._read_message_body(request)
        content, atts, flags = self._validate_payload(payload, files, int(chan["id"]))
        nonce = payload.get("nonce")
        if nonce is not None:
            if isinstance(nonce, bool) or not isinstance(nonce, int | str) or (
                    isinstance(nonce, str) and len(nonce) > 25):
                raise _form_error({"nonce": _field_error(
                    "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")})
            # enforce_nonce: "If another message was created by the same author with the same
            # nonce [in the past few minutes], that message will be returned and no new
            # message will be created."
            earlier = self._nonces.get(str(nonce))
            if (payload.get("enforce_nonce") and earlier is not None
                    and time.monotonic() - earlier[1] < NONCE_WINDOW
                    and earlier[0] in self._messages):
                return 200, self._messages[earlier[0]], payload
        msg = self._create_bot_message(int(chan["id"]), content, atts, flags, payload)
        if nonce is not None:
            self._nonces[str(nonce)] = (int(msg["id"]), time.monotonic())
        return 200, msg, payload

    async def _patch_message(
        self, request: web.Request, channel: str, message: str
    ) -> tuple[int, Any, Any]:
        self._api_channel(channel)
        payload, files = await self._read_message_body(request)
        msg = self._messages.get(int(message))
        if msg is None or msg["channel_id"] != channel:
            raise _err(404, 10008, "Unknown Message")
        fm = self._bot_messages.get(int(message))
        if fm is None:
            raise _err(403, 50005, "Cannot edit a message authored by another user")
        return 200, self._edit_bot_message(fm, payload, files), payload

    async def _delete_message(
        self, request: web.Request, channel: str, message: str
    ) -> tuple[int, Any, Any]:
        self._api_channel(channel)
        msg = self._messages.get(int(message))
        if msg is None or msg["channel_id"] != channel:
            raise _err(404, 10008, "Unknown Message")
        self._delete(int(message))
        return 204, None, None

    def _delete(self, mid: int) -> None:
        msg = self._messages.pop(mid)
        fm = self._bot_messages.get(mid)
        if fm is not None:
            fm.deleted = True
        channel = self._channels[int(msg["channel_id"])]
        data = {"id": msg["id"], "channel_id": msg["channel_id"]}
        if channel.get("guild_id"):
            data["guild_id"] = channel["guild_id"]
        self._dispatch("MESSAGE_DELETE", data, channel=channel)

    async def _post_typing(self, request: web.Request, channel: str) -> tuple[int, Any, Any]:
        chan = self._api_channel(channel)
        cid = int(chan["id"])
        self._typing[cid] = self._typing.get(cid, 0) + 1
        return 204, None, None

    async def _post_attachments(self, request: web.Request, channel: str) -> tuple[int, Any, Any]:
        self._api_channel(channel)
        data = await self._read_json(request)
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list) or not files:
            raise _form_error(
                {"files": _field_error("BASE_TYPE_REQUIRED", "This field is required")}
            )
        out = []
        errors: dict[str, Any] = {}
        for i, f in enumerate(files):
            fname = f.get("filename")
            size = f.get("file_size")
            if not isinstance(fname, str) or not fname:
                errors[str(i)] = {
                    "filename": _field_error("BASE_TYPE_REQUIRED", "This field is required")
                }
                continue
            if not isinstance(size, int) or size > 10 * 1024 * 1024:
                errors[str(i)] = {
                    "file_size": _field_error("BASE_TYPE_MAX_VALUE", "File size too large")
                }
                continue
            upload_id = secrets.token_hex(16)
            upload_filename = f"{upload_id}/{fname}"
            self._uploads[upload_filename] = None
            out.append(
                {
                    "id": f.get("id", i),
                    "upload_url": f"{self.url}/upload/{upload_filename}?upload_id={upload_id}",
                    "upload_filename": upload_filename,
                }
            )
        if errors:
            raise _form_error({"files": errors})
        return 200, {"attachments": out}, data

    async def _upload_put(self, request: web.Request) -> web.Response:
        if request.method != "PUT":
            return web.Response(status=405, text="Method Not Allowed")
        key = request.path[len("/upload/") :]
        if key not in self._uploads:
            return web.Response(status=404, text="No such upload session.")
        self._uploads[key] = await request.read()
        return web.Response(status=200)

    async def _serve_blob(self, request: web.Request) -> web.Response:
        parts = request.path.split("/")
        try:
            aid = int(parts[-2])
        except (IndexError, ValueError):
            return web.Response(status=404, text="Not Found")
        blob = self._blobs.get(aid)
        if blob is None or request.method not in ("GET", "HEAD"):
            return web.Response(status=404, text="Not Found")
        return web.Response(body=blob[0], content_type=blob[1].split(";")[0])

    # ------------------------------------------------------------------ REST: interactions

    def _interaction_for(self, app: str, token: str) -> _Interaction:
        inter = self._interactions_by_token.get(token)
        if int(app) != self.application_id or inter is None or not inter.acked:
            raise _err(404, 10015, "Unknown Webhook")
        if time.monotonic() - inter.created > 15 * 60:  # interaction tokens live 15 minutes
            raise _err(401, 50027, "Invalid Webhook Token")
        return inter

    async def _callback(
        self, request: web.Request, interaction: str, token: str
    ) -> tuple[int, Any, Any]:
        inter = self._interactions.get(int(interaction))
        payload, files = await self._read_message_body(request)
        now = time.monotonic()
        if (
            inter is None
            or inter.token != token
            or now - inter.created > self.interaction_deadline
        ):
            raise _err(404, 10062, "Unknown interaction")
        if inter.acked:
            raise _err(400, 40060, "Interaction has already been acknowledged.")
        rtype = payload.get("type")
        if rtype not in (4, 5, 9):
            raise _form_error(
                {"type": _field_error("BASE_TYPE_CHOICES", "Value must be one of {4, 5, 9}.")}
            )
        data = payload.get("data") or {}
        resource_msg: dict[str, Any] | None = None
        if rtype == 4:
            content, atts, flags = self._validate_payload(
                data, files, inter.channel_id, extra_flags=EPHEMERAL
            )
            resource_msg = self._create_bot_message(
                inter.channel_id, content, atts, flags, data, interaction=inter
            )
            inter.original_id = int(resource_msg["id"])
        elif rtype == 5:
            flags = (data.get("flags") or 0) & EPHEMERAL
            resource_msg = self._create_bot_message(
                inter.channel_id, "", [], flags | LOADING, {}, interaction=inter
            )
            inter.original_id = int(resource_msg["id"])
            inter.loading = True
        inter.acked = True
        inter.callback_type = rtype
        inter.responses.append(
            {
                "kind": "callback",
                "type": rtype,
                "json": payload,
                "time": now,
                "message_id": inter.original_id,
            }
        )
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return 204, None, payload
        body: dict[str, Any] = {
            "interaction": {
                "id": str(inter.id),
                "type": 2,
                "response_message_id": str(inter.original_id) if inter.original_id else None,
                "response_message_loading": inter.loading,
                "response_message_ephemeral": bool(
                    resource_msg and resource_msg["flags"] & EPHEMERAL
                ),
            },
        }
        if resource_msg is not None:
            body["resource"] = {"type": rtype, "message": resource_msg}
        return 200, body, payload

    async def _followup(self, request: web.Request, app: str, token: str) -> tuple[int, Any, Any]:
        inter = self._interaction_for(app, token)
        payload, files = await self._read_message_body(request)
        now = time.monotonic()
        if inter.loading and inter.original_id is not None:
            # Discord turns the deferred "thinking" message into the first followup
            fm = self._bot_messages[inter.original_id]
            if payload.get("flags", 0) & IS_VOICE_MESSAGE:
                self._validate_payload(payload, files, inter.channel_id, extra_flags=EPHEMERAL)
                fm.flags |= IS_VOICE_MESSAGE
            inter.loading = False
            msg = self._edit_bot_message_loading(fm, payload, files)
            kind = "followup"
        else:
            content, atts, flags = self._validate_payload(
                payload, files, inter.channel_id, extra_flags=EPHEMERAL
            )
            msg = self._create_bot_message(
                inter.channel_id, content, atts, flags, payload, interaction=inter
            )
            kind = "followup"
        inter.responses.append(
            {"kind": kind, "json": payload, "time": now, "message_id": int(msg["id"])}
        )
        if request.query.get("wait", "").lower() in ("1", "true"):
            return 200, msg, payload
        return 204, None, payload

    def _edit_bot_message_loading(
        self, fm: FakeMessage, payload: dict[str, Any], files: dict[int, tuple[str, bytes, str]]
    ) -> dict[str, Any]:
        voice = fm.flags & IS_VOICE_MESSAGE
        fm.flags &= ~IS_VOICE_MESSAGE
        try:
            msg = self._edit_bot_message(fm, payload, files)
        finally:
            fm.flags |= voice
        self._messages[fm.id]["flags"] = fm.flags
        return msg

    def _webhook_message(self, inter: _Interaction, message: str | None) -> FakeMessage:
        mid = inter.original_id if message is None else int(message)
        fm = self._bot_messages.get(mid) if mid is not None else None
        if fm is None or fm.deleted or mid not in self._messages:
            raise _err(404, 10008, "Unknown Message")
        return fm

    async def _get_webhook_msg(
        self, request: web.Request, app: str, token: str, message: str | None = None
    ) -> tuple[int, Any, Any]:
        inter = self._interaction_for(app, token)
        fm = self._webhook_message(inter, message)
        return 200, self._messages[fm.id], None

    async def _patch_webhook_msg(
        self, request: web.Request, app: str, token: str, message: str | None = None
    ) -> tuple[int, Any, Any]:
        inter = self._interaction_for(app, token)
        payload, files = await self._read_message_body(request)
        fm = self._webhook_message(inter, message)
        if fm.id == inter.original_id:
            inter.loading = False
        msg = self._edit_bot_message(fm, payload, files)
        kind = "edit_original" if message is None else "edit_followup"
        inter.responses.append(
            {"kind": kind, "json": payload, "time": time.monotonic(), "message_id": fm.id}
        )
        return 200, msg, payload

    async def _del_webhook_msg(
        self, request: web.Request, app: str, token: str, message: str | None = None
    ) -> tuple[int, Any, Any]:
        inter = self._interaction_for(app, token)
        fm = self._webhook_message(inter, message)
        self._delete(fm.id)
        return 204, None, None

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = _Conn(ws=ws)
        if request.query.get("compress") == "zlib-stream":
            conn.compressor = zlib.compressobj()
        self._conns.add(conn)
        conn.writer = asyncio.create_task(self._writer(conn))
        self.calls.append(
            Call("GET", "/gateway-ws", None, time.monotonic(), 101, dict(request.query))
        )
        if request.query.get("encoding", "json") != "json":
            await self._close(conn, 4002, "Error while decoding payload.")
            return ws
        conn.queue.put_nowait(
            {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval}, "s": None, "t": None}
        )
        try:
            async for raw in ws:
                if raw.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    try:
                        msg = json.loads(raw.data)
                    except ValueError:
                        await self._close(conn, 4002, "Error while decoding payload.")
                        break
                    if not await self._on_gateway(conn, msg):
                        break
                    self._notify()
                elif raw.type == WSMsgType.ERROR:
                    break
        finally:
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
            self._conns.discard(conn)
            await conn.queue.put(None)
        return ws

    async def _writer(self, conn: _Conn) -> None:
        while True:
            frame = await conn.queue.get()
            if frame is None or conn.ws.closed:
                return
            text = json.dumps(frame, separators=(",", ":"))
            try:
                if conn.compressor is not None:
                    data = conn.compressor.compress(text.encode()) + conn.compressor.flush(
                        zlib.Z_SYNC_FLUSH
                    )
                    await conn.ws.send_bytes(data)
                else:
                    await conn.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    async def _close(self, conn: _Conn, code: int, reason: str) -> None:
        await conn.queue.put(None)
        await conn.ws.close(code=code, message=reason.encode())

    async def _on_gateway(self, conn: _Conn, msg: dict[str, Any]) -> bool:
        op = msg.get("op")
        data = msg.get("d")
        if op == 1:
            conn.queue.put_nowait({"op": 11, "d": None, "s": None, "t": None})
            return True
        if op == 2:
            if conn.session is not None:
                await self._close(conn, 4005, "Already authenticated.")
                return False
            if not isinstance(data, dict) or data.get("token") != self.token:
                await self._close(conn, 4004, "Authentication failed.")
                return False
            intents = data.get("intents")
            if not isinstance(intents, int) or intents < 0 or intents & ~ALL_INTENTS:
                await self._close(conn, 4013, "Invalid intent(s).")
                return False
            if intents & self.required_intents != self.required_intents:
                await self._close(conn, 4014, "Disallowed intent(s).")
                return False
            shard = data.get("shard")
            if shard is not None:
                if (not isinstance(shard, list) or len(shard) != 2
                        or not all(isinstance(x, int) and not isinstance(x, bool)
                                   for x in shard)
                        or not 0 <= shard[0] < shard[1]):
                    await self._close(conn, 4010, "Invalid shard.")
                    return False
                shard = (shard[0], shard[1])
            self.identifies.append((time.monotonic(), shard))
            session = _Session(secrets.token_hex(16), intents, shard=shard, conn=conn)
            self._sessions[session.session_id] = session
            conn.session = session
            self._send_ready(session)
            return True
        if op == 6:
            sid = (data or {}).get("session_id")
            session = self._sessions.get(sid or "")
            if (data or {}).get("token") != self.token:
                await self._close(conn, 4004, "Authentication failed.")
                return False
            if session is None:
                conn.queue.put_nowait({"op": 9, "d": False, "s": None, "t": None})
                return True
            seq = (data or {}).get("seq") or 0
            session.conn = conn
            conn.session = session
            for frame in session.buffer:
                if frame["s"] > seq:
                    conn.queue.put_nowait(frame)
            session.seq += 1
            conn.queue.put_nowait({"op": 0, "t": "RESUMED", "s": session.seq, "d": {}})
            return True
        if conn.session is None:
            await self._close(conn, 4003, "Not authenticated.")
            return False
        if op in (3, 4, 8, 31):  # presence, voice state, request members, soundboard
            return True
        await self._close(conn, 4001, "Unknown opcode.")
        return False

    def _send_ready(self, session: _Session) -> None:
        assert session.conn is not None

        def send(event: str, data: dict[str, Any]) -> None:
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.buffer.append(frame)
            assert session.conn is not None
            session.conn.queue.put_nowait(frame)

        guilds = [g for g in self._guilds if self._on_shard(session, g)]
        ready: dict[str, Any] = {
            "v": 10,
            "user": dict(self.bot_user),
            "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "application": {"id": str(self.application_id), "flags": (1 << 19) | (1 << 15)},
            "_trace": ['["fake-gateway",{"micros":0}]'],
        }
        if session.shard is not None:  # present when IDENTIFY sent one
            ready["shard"] = list(session.shard)
        send("READY", ready)
        for g in guilds:
            send("GUILD_CREATE", self._guild_payload(g))

    def _guild_payload(self, guild_id: int | None = None) -> dict[str, Any]:
        gid = str(self.guild_id if guild_id is None else guild_id)
        channels = [
            {k: v for k, v in c.items() if k != "guild_id"}
            for c in self._channels.values()
            if c.get("guild_id") == gid and c["type"] != 11
        ]
        threads = [
            c for c in self._channels.values() if c.get("guild_id") == gid and c["type"] == 11
        ]
        return {
            "id": gid,
            "name": self._guilds.get(int(gid), "Test Guild"),
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": "1100000000000000900",
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [
                {
                    "id": gid,
                    "name": "@everyone",
                    "color": 0,
                    "colors": {
                        "primary_color": 0,
                        "secondary_color": None,
                        "tertiary_color": None,
                    },
                    "hoist": False,
                    "icon": None,
                    "unicode_emoji": None,
                    "position": 0,
                    "permissions": "2248473465835073",
                    "managed": False,
                    "mentionable": False,
                    "flags": 0,
                }
            ],
            "emojis": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": channels[0]["id"] if channels else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "stickers": [],
            "premium_progress_bar_enabled": False,
            "safety_alerts_channel_id": None,
            "joined_at": _iso(),
            "large": False,
            "unavailable": False,
            "member_count": 2,
            "voice_states": [],
            "members": [{**self._member_stub(), "user": dict(self.bot_user)}],
            "channels": channels,
            "threads": threads,
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }
