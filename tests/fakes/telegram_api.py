"""A loopback fake of the Telegram Bot API (https://core.telegram.org/bots/api, 9.x).

Serves `<root>/bot<token>/<method>` and `<root>/file/bot<token>/<file_path>` like
api.telegram.org, for the real python-telegram-bot client pointed at it with
`base_url(f"{root}/bot")` and `base_file_url(f"{root}/file/bot")`.

Faithful where a bot can tell the difference: the `{"ok": ..., "result"| "error_code",
"description"}` envelope, 401/404 for a wrong token or an unknown method, parameters as
query string, form-urlencoded (what PTB 22 sends), multipart (PTB with uploads) or JSON
(nested objects JSON-encoded inside form fields), long polling `getUpdates` with offset
confirmation and the "terminated by other getUpdates request" conflict, webhooks
(setWebhook / deleteWebhook / getWebhookInfo with Telegram's URL, port and secret-token
rules; updates POSTed as JSON with the X-Telegram-Bot-Api-Secret-Token header, retried
while the answer is not 2xx; getUpdates refused with 409 while a webhook is set), strict HTML
entity parsing ported from TDLib's parse_html (same error wording and byte offsets),
text limits counted in UTF-16 code units after entity parsing and trimming, "message is
not modified", and 429 bodies with `parameters.retry_after` on demand.

Webhook URLs are public HTTPS addresses; `route()` plays the network plus the owner's
reverse proxy (TLS ends there), mapping such an origin to the bot's plain-HTTP listener.

Known simplifications: Markdown/MarkdownV2 parse modes are accepted but not parsed;
photos are not recompressed (the largest PhotoSize is the uploaded bytes); there are no
automatic flood limits (inject them with `fail_next`); a method call in a webhook's
answer body is ignored; retries come after fractions of a second, not minutes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import ipaddress
import itertools
import json
import mimetypes
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_UPLOAD = 50 * 1024 * 1024
MAX_DOWNLOAD = 20 * 1024 * 1024
CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note",
    "upload_video_note",
})
UPDATE_TYPES = (
    "message", "edited_message", "channel_post", "edited_channel_post", "business_connection",
    "business_message", "edited_business_message", "deleted_business_messages",
    "message_reaction", "message_reaction_count", "inline_query", "chosen_inline_result",
    "callback_query", "shipping_query", "pre_checkout_query", "purchased_paid_media", "poll",
    "poll_answer", "my_chat_member", "chat_member", "chat_join_request", "chat_boost",
    "removed_chat_boost",
)
# Without allowed_updates (or with []) these are not delivered, as documented.
NOT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
WEBHOOK_PORTS = (80, 88, 443, 8443)
_SECRET_CHARS = re.compile(r"[A-Za-z0-9_-]*")
WEBHOOK_ACTIVE = ("Conflict: can't use getUpdates method while webhook is active; use "
                  "deleteWebhook to delete the webhook first")
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current message and reply markup"
)
_TRIM = "".join(chr(i) for i in range(33))
_SPACE = frozenset(b" \t\r\n\0\x0b")
_HTML_TAGS = frozenset({
    "a", "b", "strong", "i", "em", "s", "strike", "del", "u", "ins", "tg-spoiler", "tg-emoji",
    "span", "pre", "code", "blockquote",
})
_SIMPLE_ENTITY = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
    "del": "strikethrough", "tg-spoiler": "spoiler", "span": "spoiler",
}


class ApiError(Exception):
    """A Bot API error answer: HTTP status = error_code, plus the description."""

    def __init__(self, code: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters

    def body(self) -> dict[str, Any]:
        """The JSON body Telegram sends for this error."""
        out: dict[str, Any] = {"ok": False, "error_code": self.code,
                               "description": self.description}
        if self.parameters:
            out["parameters"] = self.parameters
        return out


def bad(description: str) -> ApiError:
    """A 400 'Bad Request: ...' error."""
    return ApiError(400, f"Bad Request: {description}")


def utf16_len(text: str) -> int:
    """Telegram measures text and entity offsets in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------- HTML parsing


class EntityParseError(Exception):
    """The HTML could not be parsed; the message is TDLib's wording."""


def _decode_html_entity(t: bytes, pos: int) -> tuple[int, int]:
    """Port of TDLib decode_html_entity: (code point or 0, position after the entity)."""
    n = len(t)

    def at(i: int) -> int:
        return t[i] if i < n else 0

    end = pos + 1
    res = 0
    if at(pos + 1) == ord("#"):
        end += 1
        if at(pos + 2) == ord("x"):
            end += 1
            while chr(at(end)) in "0123456789abcdefABCDEF" and at(end):
                res = res * 16 + int(chr(at(end)), 16)
                end += 1
        else:
            while ord("0") <= at(end) <= ord("9"):
                res = res * 10 + at(end) - ord("0")
                end += 1
        if res == 0 or res >= 0x10FFFF or end - pos >= 10:
            return 0, pos
    else:
        while chr(at(end)).isascii() and chr(at(end)).isalpha():
            end += 1
        name = t[pos + 1 : end]
        res = {b"lt": 0x3C, b"gt": 0x3E, b"amp": 0x26, b"quot": 0x22}.get(name, 0)
        if not res:
            return 0, pos
    if at(end) == ord(";"):
        end += 1
    return res, end


def parse_html(text: str, *, reject_bare_ampersand: bool = False) -> tuple[str, list[dict]]:
    """Telegram's parse_mode=HTML (ported from TDLib): plain text and MessageEntity dicts.

    Raises EntityParseError with the server's description after "can't parse entities: ".
    The real server keeps a bare `&` literally; `reject_bare_ampersand` is stricter.
    """
    t = text.encode("utf-8", "surrogatepass")
    n = len(t)

    def at(i: int) -> int:
        return t[i] if i < n else 0

    def space(c: int) -> bool:
        return c in _SPACE

    out = bytearray()
    entities: list[dict[str, Any]] = []
    u16 = 0
    stack: list[dict[str, Any]] = []
    i = 0
    while i < n:
        c = t[i]
        if c == ord("&"):
            ch, j = _decode_html_entity(t, i)
            if ch:
                u16 += 2 if ch > 0xFFFF else 1
                out += chr(ch).encode("utf-8", "surrogatepass")
                i = j
                continue
            if reject_bare_ampersand:
                raise EntityParseError(f"Unsupported HTML entity at byte offset {i}")
        if c != ord("<"):
            if (c & 0xC0) != 0x80:
                u16 += 2 if c >= 0xF0 else 1
            out.append(c)
            i += 1
            continue
        begin = i
        i += 1
        if at(i) != ord("/"):
            while not space(at(i)) and at(i) != ord(">"):
                i += 1
            if i >= n:
                raise EntityParseError(f"Unclosed start tag at byte offset {begin}")
            tag = t[begin + 1 : i].decode("utf-8", "replace").lower()
            if tag not in _HTML_TAGS:
                raise EntityParseError(f'Unsupported start tag "{tag}" at byte offset {begin}')
            argument = ""
            expandable = False
            spoiler_class = False
            while at(i) != ord(">"):
                while i < n and space(at(i)):
                    i += 1
                if at(i) == ord(">"):
                    break
                attr_begin = i
                while not space(at(i)) and at(i) != ord("=") and at(i) != ord(">"):
                    i += 1
                attr = t[attr_begin:i].decode("utf-8", "replace")
                if not attr:
                    raise EntityParseError(
                        f'Empty attribute name in the tag "{tag}" at byte offset {begin}')
                while i < n and space(at(i)):
                    i += 1
                if at(i) != ord("="):
                    if tag == "blockquote" and attr == "expandable":
                        expandable = True
                        continue
                    raise EntityParseError(
                        "Expected equal sign in declaration of an attribute of the tag "
                        f'"{tag}" at byte offset {begin}')
                i += 1
                while i < n and space(at(i)):
                    i += 1
                if i >= n:
                    raise EntityParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')
                value = bytearray()
                if at(i) not in (ord("'"), ord('"')):
                    token_begin = i
                    while chr(at(i)).isascii() and (chr(at(i)).isalnum() or at(i) in b".-"):
                        if not at(i):
                            break
                        i += 1
                    value += t[token_begin:i].lower()
                    if not space(at(i)) and at(i) != ord(">"):
                        raise EntityParseError(
                            f"Unexpected end of name token at byte offset {token_begin}")
                else:
                    quote = at(i)
                    i += 1
                    while i < n and at(i) != quote:
                        if at(i) == ord("&"):
                            ch, j = _decode_html_entity(t, i)
                            if ch:
                                value += chr(ch).encode("utf-8", "surrogatepass")
                                i = j
                                continue
                        value.append(at(i))
                        i += 1
                    if at(i) == quote:
                        i += 1
                if i >= n:
                    raise EntityParseError(f"Unclosed start tag at byte offset {begin}")
                val = value.decode("utf-8", "replace")
                if tag == "a" and attr == "href":
                    argument = val
                elif tag == "code" and attr == "class" and val.startswith("language-"):
                    argument = val[9:]
                elif tag == "span" and attr == "class" and val == "tg-spoiler":
                    spoiler_class = True
                elif tag == "tg-emoji" and attr == "emoji-id":
                    argument = val
                elif tag == "blockquote" and attr == "expandable":
                    expandable = True
            if tag == "span" and not spoiler_class:
                raise EntityParseError(
                    f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
            if tag == "tg-emoji" and not argument.isdigit():
                raise EntityParseError(
                    f'Tag "tg-emoji" must have attribute "emoji-id" at byte offset {begin}')
            stack.append({"tag": tag, "arg": argument, "offset": u16, "pos": len(out),
                          "expandable": expandable})
            i += 1
            continue
        # an end tag
        if not stack:
            raise EntityParseError(f"Unexpected end tag at byte offset {begin}")
        while not space(at(i)) and at(i) != ord(">"):
            i += 1
        end_name = t[begin + 2 : i].decode("utf-8", "replace")
        while i < n and space(at(i)):
            i += 1
        if at(i) != ord(">"):
            raise EntityParseError(f"Unclosed end tag at byte offset {begin}")
        top = stack.pop()
        tag = top["tag"]
        if end_name and end_name != tag:
            raise EntityParseError(
                f'Unmatched end tag at byte offset {begin}, expected "</{tag}>", '
                f'found "</{end_name}>"')
        i += 1
        offset = top["offset"]
        length = u16 - offset
        if length <= 0:
            continue
        last = entities[-1] if entities else None
        same_span = last is not None and last["offset"] == offset and last["length"] == length
        if tag in _SIMPLE_ENTITY:
            entities.append({"offset": offset, "length": length, "type": _SIMPLE_ENTITY[tag]})
        elif tag == "a":
            url = top["arg"] or out[top["pos"] :].decode("utf-8", "replace")
            if url and not any(ch.isspace() for ch in url):
                entities.append({"offset": offset, "length": length, "type": "text_link",
                                 "url": url})
        elif tag == "tg-emoji":
            entities.append({"offset": offset, "length": length, "type": "custom_emoji",
                             "custom_emoji_id": top["arg"]})
        elif tag == "blockquote":
            kind = "expandable_blockquote" if top["expandable"] else "blockquote"
            entities.append({"offset": offset, "length": length, "type": kind})
        elif tag == "pre":
            if same_span and last is not None and last["type"] == "code" and last.get("_lang"):
                last["type"] = "pre"
                last["language"] = last.pop("_lang")
            else:
                entities.append({"offset": offset, "length": length, "type": "pre"})
        elif tag == "code":
            if same_span and last is not None and last["type"] == "pre" and top["arg"]:
                last["language"] = top["arg"]
            else:
                entities.append({"offset": offset, "length": length, "type": "code",
                                 "_lang": top["arg"]})
    if stack:
        raise EntityParseError(
            f'Can\'t find end tag corresponding to start tag "{stack[-1]["tag"]}"')
    for e in entities:
        e.pop("_lang", None)
    try:
        plain = bytes(out).decode("utf-8")
    except UnicodeDecodeError:
        raise EntityParseError(
            "Text contains invalid Unicode characters after decoding HTML entities, check for "
            "unmatched surrogate code units") from None
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return plain, entities


def _trim(text: str, entities: list[dict]) -> tuple[str, list[dict]]:
    """Telegram strips leading/trailing whitespace and moves or drops entities to match."""
    stripped_left = text.lstrip(_TRIM)
    shift = utf16_len(text) - utf16_len(stripped_left)
    result = stripped_left.rstrip(_TRIM)
    total = utf16_len(result)
    out = []
    for e in entities:
        start = max(e["offset"] - shift, 0)
        end = min(e["offset"] + e["length"] - shift, total)
        if end > start:
            out.append({**e, "offset": start, "length": end - start})
    return result, out


# --------------------------------------------------------------------------- records


@dataclass
class FakeMessage:
    """A message the bot sent, as users see it now (text is after entity parsing)."""

    message_id: int
    chat_id: int
    thread_id: int | None
    text: str
    parse_mode: str | None
    reply_to_message_id: int | None
    kind: str = "text"
    file: bytes | None = None
    caption: str | None = None
    edits: list[tuple[float, str]] = field(default_factory=list)
    deleted: bool = False
    raw_text: str = ""
    entities: list[dict[str, Any]] = field(default_factory=list)
    filename: str | None = None
    mime_type: str | None = None
    media_group_id: str | None = None
    sent_as: str = ""
    data: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class Call:
    """One request to a Bot API method (files: part name -> (filename, bytes, mime))."""

    method: str
    params: dict[str, Any]
    time: float
    files: dict[str, tuple[str, bytes, str]] = field(default_factory=dict, repr=False)
    status: int = 0
    response: Any = field(default=None, repr=False)


@dataclass
class _Rule:
    code: int
    description: str
    retry_after: int | None
    times: int
    parse_mode: str | None = None


@dataclass
class Webhook:
    """What setWebhook registered."""

    url: str
    secret_token: str | None
    max_connections: int = 40
    ip_address: str | None = None
    has_custom_certificate: bool = False


@dataclass
class WebhookPost:
    """One delivery attempt: status 0 means no HTTP answer (error says why)."""

    update_id: int
    url: str
    status: int
    time: float
    error: str = ""
    secret_sent: bool = False


class _Described:
    """A successful result that also carries the server's `description` text."""

    def __init__(self, result: Any, description: str) -> None:
        self.result = result
        self.description = description


@dataclass
class _File:
    file_id: str
    file_unique_id: str
    data: bytes
    mime: str
    filename: str
    folder: str
    path: str | None = None


class FakeTelegram:
    """The fake Bot API server plus a user-side driver and inspection helpers."""

    def __init__(self, token: str = "123456:TEST-token", bot_id: int = 123456,
                 bot_username: str = "test_bot", *, reject_bare_ampersand: bool = False) -> None:
        self.token = token
        self.bot_id = bot_id
        self.bot_username = bot_username
        self.reject_bare_ampersand = reject_bare_ampersand
        self.bot_user: dict[str, Any] = {
            "id": bot_id, "is_bot": True, "first_name": "Test Bot", "username": bot_username,
        }
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self.webhook: Webhook | None = None
        self.webhook_posts: list[WebhookPost] = []
        self.webhook_retry_delay = 0.05  # doubles per failed attempt of an update...
        self.webhook_max_retry_delay = 1.0  # ...up to this
        self.webhook_attempts = 8  # then the update is dropped ("give up")
        self._routes: dict[str, str] = {}
        self._last_webhook_error: tuple[int, str] | None = None
        self._delivering: dict[int, asyncio.Task[None]] = {}
        self._attempts: dict[int, int] = {}
        self._retry_at: dict[int, float] = {}
        self._delivery: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self.commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._topics: dict[int, set[int]] = collections.defaultdict(set)
        self._users: dict[int, dict[str, Any]] = {}
        self._stored: dict[tuple[int, int], dict[str, Any]] = {}
        self._bot_messages: list[FakeMessage] = []
        self._by_key: dict[tuple[int, int], FakeMessage] = {}
        self._next_id: dict[int, itertools.count[int]] = {}
        self._next_update = itertools.count(secrets.randbelow(10**6) + 10**8)
        self._allowed: set[str] | None = None
        self._files: dict[str, _File] = {}
        self._file_counter = itertools.count()
        self._fail: dict[str, collections.deque[_Rule]] = collections.defaultdict(
            collections.deque)
        self._actions: dict[int, list[str]] = collections.defaultdict(list)
        self._poll_generation = 0
        self._closing = False
        self._cond: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._media_groups = itertools.count(13_000_000_000_000_000)

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The API root (what TELEGRAM_API_URL is set to)."""
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        self._cond = asyncio.Condition()
        app = web.Application(client_max_size=MAX_UPLOAD + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_route("*", "/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                           trust_env=False)
        self._delivery = asyncio.create_task(self._deliver_webhooks())

    async def stop(self) -> None:
        """Wake any long poll, stop webhook deliveries and close the server."""
        self._closing = True
        await self._notify()
        tasks = [t for t in (self._delivery, *self._delivering.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._delivery = None
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def webhook_url(self) -> str:
        """The registered webhook URL, or "" while the bot uses getUpdates."""
        return self.webhook.url if self.webhook is not None else ""

    def route(self, public_origin: str, local_origin: str) -> None:
        """Let webhook_url host `public_origin` (https://name[:port]) reach `local_origin`.

        Stands for DNS plus the owner's reverse proxy, which ends TLS and forwards the path
        unchanged to the bot's plain-HTTP listener (e.g. http://127.0.0.1:8443).
        """
        parts = urlsplit(public_origin)
        self._routes[_origin(parts.scheme, parts.hostname or "", parts.port)] = (
            local_origin.rstrip("/"))

    async def _notify(self) -> None:
        if self._cond is None:
            return
        async with self._cond:
            self._cond.notify_all()

    def _notify_soon(self) -> None:
        """Notify from synchronous user-side helpers (they run inside the loop)."""
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self._notify())

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until predicate() holds; re-checked on every request the fake answers."""
        assert self._cond is not None, "start() the fake first"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._cond:
            while not predicate():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    recent = ", ".join(f"{c.method}->{c.status}" for c in self.calls[-8:])
                    raise AssertionError(
                        f"FakeTelegram: condition not met within {timeout}s; "
                        f"last calls: [{recent}]")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), min(remaining, 0.1))

    # ------------------------------------------------------------------ fault injection

    def fail_next(self, method: str, *, error_code: int = 429, description: str | None = None,
                  retry_after: int | None = None, times: int = 1,
                  parse_mode: str | None = None) -> None:
        """Make the next `times` calls of `method` fail (429 carries parameters.retry_after).

        With `parse_mode`, only calls sending that parse_mode fail (and count), e.g. a 400
        "can't parse entities" for HTML while a plain-text retry goes through.
        """
        if error_code == 429:
            retry_after = 1 if retry_after is None else retry_after
            if retry_after < 1:
                raise ValueError("Telegram's retry_after is a whole number of seconds >= 1")
            description = description or f"Too Many Requests: retry after {retry_after}"
        elif description is None:
            defaults = {400: "Bad Request", 401: "Unauthorized",
                        403: "Forbidden: bot was blocked by the user",
                        404: "Not Found", 409: "Conflict"}
            description = defaults.get(error_code, "Internal Server Error")
        self._fail[method.lower()].append(_Rule(error_code, description, retry_after, times,
                                                parse_mode))

    # ------------------------------------------------------------------ inspection

    def messages(self, chat_id: int, thread_id: int | None = None) -> list[FakeMessage]:
        """The bot's messages in one chat and topic (None: outside any topic), in order."""
        return [m for m in self._bot_messages
                if m.chat_id == chat_id and m.thread_id == thread_id]

    def all_messages(self) -> list[FakeMessage]:
        """Every message the bot sent, in order."""
        return list(self._bot_messages)

    def chat_actions(self, chat_id: int) -> list[str]:
        """The sendChatAction actions the bot showed in a chat, in order."""
        return list(self._actions.get(chat_id, []))

    def calls_to(self, method: str) -> list[Call]:
        """Calls of one method (case-insensitive)."""
        return [c for c in self.calls if c.method.lower() == method.lower()]

    @property
    def my_commands(self) -> list[dict[str, str]]:
        """The last setMyCommands list for the default scope and no language."""
        return list(self.commands.get((json.dumps({"type": "default"}), ""), []))

    @property
    def pending_updates(self) -> int:
        """Updates not yet confirmed by a getUpdates offset."""
        return len(self.updates)

    # ------------------------------------------------------------------ user side

    def add_chat(self, chat_id: int, chat_type: str = "private", *, title: str | None = None,
                 first_name: str = "Alice", username: str | None = None,
                 is_forum: bool = False) -> dict[str, Any]:
        """Create (or return) a chat the bot is a member of."""
        if chat_id in self._chats:
            chat = self._chats[chat_id]
            if is_forum and chat["type"] == "supergroup":
                chat["is_forum"] = True
            return chat
        if chat_type == "private":
            chat = {"id": chat_id, "first_name": first_name, "type": "private"}
            if username:
                chat["username"] = username
        elif chat_type in ("group", "supergroup", "channel"):
            chat = {"id": chat_id, "title": title or f"Chat {chat_id}", "type": chat_type}
            if is_forum and chat_type == "supergroup":
                chat["is_forum"] = True
        else:
            raise ValueError(f"unknown chat type {chat_type!r}")
        self._chats[chat_id] = chat
        self._next_id.setdefault(chat_id, itertools.count(1))
        return chat

    def add_topic(self, chat_id: int, thread_id: int | None = None, name: str = "Topic",
                  creator_id: int = 1) -> dict[str, Any]:
        """Create a forum topic: its root is a forum_topic_created service message."""
        chat = self._chats[chat_id]
        chat["is_forum"] = True
        mid = thread_id if thread_id is not None else self._new_id(chat_id)
        creator = self._users.get(creator_id) or {"id": creator_id, "is_bot": False,
                                                  "first_name": "Admin"}
        root = {"message_id": mid, "from": creator, "chat": dict(chat),
                "date": int(time.time()), "message_thread_id": mid,
                "forum_topic_created": {"name": name, "icon_color": 7322096},
                "is_topic_message": True}
        self._stored[(chat_id, mid)] = root
        self._topics[chat_id].add(mid)
        return root

    def _user(self, user_id: int, first_name: str, username: str | None,
              is_bot: bool) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
        if username:
            user["username"] = username
        if not is_bot:
            user["language_code"] = "en"
        self._users[user_id] = user
        return user

    def _new_id(self, chat_id: int) -> int:
        counter = self._next_id.setdefault(chat_id, itertools.count(1))
        while True:
            mid = next(counter)
            if (chat_id, mid) not in self._stored:
                return mid

    def _store_file(self, data: bytes, mime: str, filename: str, folder: str) -> _File:
        f = _File(file_id=_file_id(), file_unique_id=_unique_id(), data=data, mime=mime,
                  filename=filename, folder=folder)
        self._files[f.file_id] = f
        return f

    def _photo_sizes(self, data: bytes) -> list[dict[str, Any]]:
        """Several PhotoSize entries; the largest holds the uploaded bytes unchanged."""
        width, height = 1280, 960
        thumbs: list[tuple[int, int, bytes]] = []
        try:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                for side in (90, 320, 800):
                    if side >= max(width, height):
                        break
                    copy = img.convert("RGB")
                    copy.thumbnail((side, side))
                    buf = io.BytesIO()
                    copy.save(buf, "JPEG", quality=80)
                    thumbs.append((copy.width, copy.height, buf.getvalue()))
        except Exception:  # not an image Pillow can read: same bytes, nominal sizes
            for side in (90, 320, 800):
                scale = side / max(width, height)
                thumbs.append((int(width * scale), int(height * scale), data))
        sizes = []
        for w, h, blob in [*thumbs, (width, height, data)]:
            f = self._store_file(blob, "image/jpeg", "photo.jpg", "photos")
            sizes.append({"file_id": f.file_id, "file_unique_id": f.file_unique_id,
                          "file_size": len(blob), "width": w, "height": h})
        return sizes

    def _media_fields(self, *, photo: bytes | None, document: tuple[bytes, str, str] | None,
                      voice: bytes | None, voice_duration: int,
                      audio: tuple[bytes, str, str] | None,
                      video_note: bytes | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if video_note is not None:
            f = self._store_file(video_note, "video/mp4", "video_note.mp4", "video_notes")
            out["video_note"] = {"duration": voice_duration, "length": 240,
                                 "file_id": f.file_id, "file_unique_id": f.file_unique_id,
                                 "file_size": len(video_note)}
        if photo is not None:
            out["photo"] = self._photo_sizes(photo)
        if document is not None:
            data, name, mime = document
            f = self._store_file(data, mime, name, "documents")
            out["document"] = {"file_name": name, "mime_type": mime, "file_id": f.file_id,
                               "file_unique_id": f.file_unique_id, "file_size": len(data)}
        if voice is not None:
            f = self._store_file(voice, "audio/ogg", "voice.oga", "voice")
            out["voice"] = {"duration": voice_duration, "mime_type": "audio/ogg",
                            "file_id": f.file_id, "file_unique_id": f.file_unique_id,
                            "file_size": len(voice)}
        if audio is not None:
            data, name, mime = audio
            f = self._store_file(data, mime, name, "music")
            out["audio"] = {"duration": voice_duration, "file_name": name, "mime_type": mime,
                            "file_id": f.file_id, "file_unique_id": f.file_unique_id,
                            "file_size": len(data)}
        return out

    def _other_fields(self, *, sticker: str | None, location: tuple[float, float] | None,
                      venue: tuple[float, float, str, str] | None,
                      contact: tuple[str, str] | None) -> dict[str, Any]:
        """Sticker / Location / Venue / Contact as the Bot API sends them."""
        out: dict[str, Any] = {}
        if sticker is not None:
            f = self._store_file(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp", "sticker.webp",
                                 "stickers")
            out["sticker"] = {"file_id": f.file_id, "file_unique_id": f.file_unique_id,
                              "type": "regular", "width": 512, "height": 512,
                              "is_animated": False, "is_video": False, "emoji": sticker,
                              "set_name": "FakeStickers", "file_size": len(f.data)}
        if location is not None:
            out["location"] = {"latitude": location[0], "longitude": location[1]}
        if venue is not None:
            place = {"latitude": venue[0], "longitude": venue[1]}
            out["venue"] = {"location": place, "title": venue[2], "address": venue[3]}
            out["location"] = dict(place)  # the Bot API sets both for a venue
        if contact is not None:
            out["contact"] = {"phone_number": contact[0], "first_name": contact[1]}
        return out

    def user_message(
        self,
        chat_id: int,
        user_id: int,
        text: str | None = None,
        *,
        first_name: str = "Alice",
        username: str | None = None,
        chat_type: str = "private",
        chat_title: str | None = None,
        reply_to: int | None = None,
        thread_id: int | None = None,
        photo: bytes | None = None,
        document: tuple[bytes, str, str] | None = None,
        voice: bytes | None = None,
        voice_duration: int = 1,
        audio: tuple[bytes, str, str] | None = None,
        video_note: bytes | None = None,
        caption: str | None = None,
        media_group_id: str | None = None,
        is_bot: bool = False,
        mention_bot: bool = False,
        sticker: str | None = None,
        location: tuple[float, float] | None = None,
        venue: tuple[float, float, str, str] | None = None,
        contact: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """A user writes in a chat: queue the Update and return its Message dict.

        `document`/`audio` are (bytes, file_name, mime_type); `reply_to` is a message id in
        the same chat (the user's or the bot's); `thread_id` posts in a forum topic.
        `sticker` is the sticker's emoji, `location` (latitude, longitude), `venue`
        (latitude, longitude, title, address), `contact` (phone_number, first_name), shaped
        as the Bot API's Sticker, Location, Venue and Contact objects.
        """
        if chat_type == "private" and chat_title:
            raise ValueError("private chats have no title")
        chat = self.add_chat(chat_id, chat_type, title=chat_title, first_name=first_name,
                             username=username, is_forum=thread_id is not None)
        user = self._user(user_id, first_name, username, is_bot)
        has_media = any(x is not None for x in (photo, document, voice, audio, video_note))
        body = caption if has_media else text
        if has_media and text is not None and caption is None:
            body = text
        entities: list[dict[str, Any]] = []
        if mention_bot:
            mention = f"@{self.bot_username}"
            body = f"{mention} {body or ''}".rstrip()
            entities.append({"offset": 0, "length": utf16_len(mention), "type": "mention"})
        command_at = utf16_len(f"@{self.bot_username} ") if mention_bot else 0
        rest = body[len(f"@{self.bot_username} "):] if mention_bot and body else body
        if rest and rest.startswith("/"):
            word = rest.split(maxsplit=1)[0]
            entities.append({"offset": command_at, "length": utf16_len(word),
                             "type": "bot_command"})
        mid = self._new_id(chat_id)
        msg: dict[str, Any] = {"message_id": mid, "from": user, "chat": dict(chat),
                               "date": int(time.time())}
        if thread_id is not None:
            if thread_id not in self._topics[chat_id]:
                self.add_topic(chat_id, thread_id)
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
        if reply_to is not None:
            replied = self._stored.get((chat_id, reply_to))
            if replied is None:
                raise ValueError(f"no message {reply_to} in chat {chat_id} to reply to")
            msg["reply_to_message"] = _shallow(replied)
        elif thread_id is not None:
            # Telegram: a topic message that replies to nothing "replies" to the topic root
            msg["reply_to_message"] = _shallow(self._stored[(chat_id, thread_id)])
        if media_group_id is not None:
            msg["media_group_id"] = media_group_id
        msg.update(self._media_fields(photo=photo, document=document, voice=voice,
                                      voice_duration=voice_duration, audio=audio,
                                      video_note=video_note))
        msg.update(self._other_fields(sticker=sticker, location=location, venue=venue,
                                      contact=contact))
        if body is not None:
            key = "caption" if has_media else "text"
            msg[key] = body
            if entities:
                msg["caption_entities" if has_media else "entities"] = entities
        self._stored[(chat_id, mid)] = msg
        self._queue_update("message", msg)
        return msg

    def user_edit(self, chat_id: int, message_id: int, text: str) -> dict[str, Any]:
        """A user edits their message: queue an edited_message update."""
        msg = self._stored[(chat_id, message_id)]
        msg = {**msg, "text": text, "edit_date": int(time.time())}
        self._stored[(chat_id, message_id)] = msg
        self._queue_update("edited_message", msg)
        return msg

    def add_service_message(self, chat_id: int, user_id: int = 1,
                            kind: str = "new_chat_members", *, chat_type: str = "group",
                            chat_title: str | None = None, first_name: str = "Alice",
                            thread_id: int | None = None) -> dict[str, Any]:
        """Queue a service message (new_chat_members, left_chat_member, pinned_message...)."""
        chat = self.add_chat(chat_id, chat_type, title=chat_title, first_name=first_name,
                             is_forum=thread_id is not None)
        user = self._user(user_id, first_name, None, False)
        mid = self._new_id(chat_id)
        msg: dict[str, Any] = {"message_id": mid, "from": user, "chat": dict(chat),
                               "date": int(time.time())}
        if thread_id is not None:
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
        if kind == "new_chat_members":
            msg["new_chat_members"] = [user]
            msg["new_chat_member"] = user
            msg["new_chat_participant"] = user
        elif kind == "left_chat_member":
            msg["left_chat_member"] = user
            msg["left_chat_participant"] = user
        elif kind == "new_chat_title":
            msg["new_chat_title"] = chat.get("title", "")
        elif kind == "pinned_message":
            msg["pinned_message"] = {"message_id": max(mid - 1, 1), "chat": dict(chat),
                                     "date": 0}
        elif kind == "group_chat_created":
            msg["group_chat_created"] = True
        else:
            msg[kind] = True
        self._stored[(chat_id, mid)] = msg
        self._queue_update("message", msg)
        return msg

    def queue_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Queue an arbitrary update (e.g. callback_query) for getUpdates."""
        return self._queue_update(kind, payload)

    def _queue_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._next_update), kind: payload}
        self.updates.append(update)
        self._notify_soon()
        return update

    # ------------------------------------------------------------------ HTTP plumbing

    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        params: dict[str, Any] = dict(request.query)
        files: dict[str, tuple[str, bytes, str]] = {}
        ctype = request.content_type
        if request.method == "POST" and request.can_read_body:
            if ctype == "application/json":
                try:
                    body = await request.json()
                except (ValueError, UnicodeDecodeError):
                    raise bad("can't parse JSON encoded request data") from None
                if not isinstance(body, dict):
                    raise bad("JSON object expected")
                params.update(body)
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        files[key] = (value.filename, value.file.read(),
                                      value.content_type or "application/octet-stream")
                    else:
                        params[key] = value
        return params, files

    async def _handle_method(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        call = Call(method=method, params={}, time=time.monotonic())
        if request.match_info["token"] != self.token:
            call.status = 401
            self.calls.append(call)
            await self._notify()
            return _reply(ApiError(401, "Unauthorized").body(), 401)
        handler = getattr(self, f"_m_{method.lower()}", None)
        try:
            call.params, call.files = await self._params(request)
        except ApiError as e:
            call.status = e.code
            self.calls.append(call)
            await self._notify()
            return _reply(e.body(), e.code)
        self.calls.append(call)
        if handler is None:
            call.status = 404
            await self._notify()
            return _reply(ApiError(404, "Not Found").body(), 404)
        try:
            self._inject(method, call.params)
            result = await handler(_Params(call.params, call.files))
            body: dict[str, Any] = {"ok": True, "result": result}
            if isinstance(result, _Described):
                body = {"ok": True, "result": result.result,
                        "description": result.description}
            call.status = 200
        except ApiError as e:
            body = e.body()
            call.status = e.code
        call.response = body
        await self._notify()
        return _reply(body, call.status)

    def _inject(self, method: str, params: dict[str, Any]) -> None:
        rules = self._fail.get(method.lower())
        if not rules:
            return
        rule = rules[0]
        if rule.parse_mode is not None and params.get("parse_mode") != rule.parse_mode:
            return
        rule.times -= 1
        if rule.times <= 0:
            rules.popleft()
        params = {"retry_after": rule.retry_after} if rule.code == 429 else None
        raise ApiError(rule.code, rule.description, params)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return _reply(ApiError(401, "Unauthorized").body(), 401)
        path = request.match_info["path"]
        self.calls.append(Call(method="<download>", params={"file_path": path},
                               time=time.monotonic(), status=200))
        await self._notify()
        for f in self._files.values():
            if f.path == path:
                return web.Response(body=f.data, content_type="application/octet-stream")
        self.calls[-1].status = 404
        return _reply(ApiError(404, "Not Found").body(), 404)

    # ------------------------------------------------------------------ helpers for methods

    def _chat(self, p: _Params) -> dict[str, Any]:
        raw = p.get("chat_id")
        if raw is None or raw == "":
            raise bad("chat_id is empty")
        try:
            chat_id = int(raw)
        except (TypeError, ValueError):
            raise bad("chat not found") from None
        chat = self._chats.get(chat_id)
        if chat is None:
            raise bad("chat not found")
        return chat

    def _format(self, text: str, p: _Params,
                entities_key: str = "entities") -> tuple[str, list[dict]]:
        mode = p.text("parse_mode")
        if mode and mode not in ("HTML", "Markdown", "MarkdownV2"):
            raise bad(f"unsupported parse_mode \"{mode}\"")
        entities: list[dict[str, Any]] = []
        if mode == "HTML":
            try:
                text, entities = parse_html(text,
                                            reject_bare_ampersand=self.reject_bare_ampersand)
            except EntityParseError as e:
                raise bad(f"can't parse entities: {e}") from None
        else:
            given = p.obj(entities_key)
            if isinstance(given, list):
                entities = given
        return _trim(text, entities)

    def _base_message(self, chat: dict[str, Any], p: _Params) -> dict[str, Any]:
        chat_id = chat["id"]
        thread_id = p.integer("message_thread_id")
        if thread_id is not None and thread_id not in self._topics[chat_id]:
            raise bad("message thread not found")
        reply_id = p.integer("reply_to_message_id")
        allow = p.flag("allow_sending_without_reply")
        reply_params = p.obj("reply_parameters")
        if reply_params is not None:
            if not isinstance(reply_params, dict) or "message_id" not in reply_params:
                raise bad("can't parse reply parameters JSON object")
            reply_id = int(reply_params["message_id"])
            allow = bool(reply_params.get("allow_sending_without_reply", False))
            other = reply_params.get("chat_id")
            if other is not None and int(other) != chat_id:
                raise bad("message to be replied not found")
        msg: dict[str, Any] = {"message_id": self._new_id(chat_id), "from": self.bot_user,
                               "chat": dict(chat), "date": int(time.time())}
        if thread_id is not None:
            msg["message_thread_id"] = thread_id
            msg["is_topic_message"] = True
        if reply_id is not None:
            replied = self._stored.get((chat_id, reply_id))
            if replied is None or self._deleted(chat_id, reply_id):
                if not allow:
                    raise bad("message to be replied not found")
            else:
                msg["reply_to_message"] = _shallow(replied)
        elif thread_id is not None:
            msg["reply_to_message"] = _shallow(self._stored[(chat_id, thread_id)])
        markup = p.obj("reply_markup")
        if markup is not None:
            if not isinstance(markup, dict):
                raise bad("can't parse reply keyboard markup JSON object")
            if "inline_keyboard" in markup:
                msg["reply_markup"] = markup
        return msg

    def _deleted(self, chat_id: int, message_id: int) -> bool:
        m = self._by_key.get((chat_id, message_id))
        return m is not None and m.deleted

    def _record(self, msg: dict[str, Any], method: str, *, kind: str, text: str = "",
                raw: str = "", parse_mode: str | None = None, file: bytes | None = None,
                caption: str | None = None, filename: str | None = None,
                mime: str | None = None) -> FakeMessage:
        chat_id = msg["chat"]["id"]
        reply = msg.get("reply_to_message")
        thread = msg.get("message_thread_id")
        fm = FakeMessage(
            message_id=msg["message_id"], chat_id=chat_id, thread_id=thread,
            text=text, parse_mode=parse_mode,
            reply_to_message_id=(reply["message_id"] if reply and reply["message_id"] != thread
                                 else None),
            kind=kind, file=file, caption=caption, raw_text=raw,
            entities=list(msg.get("entities") or msg.get("caption_entities") or []),
            filename=filename, mime_type=mime, media_group_id=msg.get("media_group_id"),
            sent_as=method, data=msg,
        )
        fm.edits.append((time.monotonic(), text if kind == "text" else caption or ""))
        self._stored[(chat_id, fm.message_id)] = msg
        self._bot_messages.append(fm)
        self._by_key[(chat_id, fm.message_id)] = fm
        return fm

    def _caption(self, p: _Params) -> tuple[str | None, list[dict]]:
        raw = p.text("caption")
        if raw is None:
            return None, []
        text, entities = self._format(raw, p, "caption_entities")
        if utf16_len(text) > MAX_CAPTION:
            raise bad("message caption is too long")
        return text, entities

    def _input_file(self, p: _Params, name: str) -> tuple[bytes, str, str]:
        """An uploaded part, or an existing file_id; URLs cannot be fetched here."""
        if name in p.files:
            filename, data, mime = p.files[name]
            return self._check_upload(data, filename, mime)
        value = p.text(name)
        if value is None or value == "":
            raise bad(f"there is no {name} in the request")
        if value.startswith("attach://"):
            part = value[len("attach://"):]
            if part not in p.files:
                raise bad(f"{name} not found")  # real wording for a missing attach:// part
            filename, data, mime = p.files[part]
            return self._check_upload(data, filename, mime)
        if value.startswith(("http://", "https://")):
            raise bad("failed to get HTTP URL content")
        stored = self._files.get(value)
        if stored is None:
            raise bad("wrong file identifier/HTTP URL specified")
        return stored.data, stored.filename, stored.mime

    @staticmethod
    def _check_upload(data: bytes, filename: str, mime: str) -> tuple[bytes, str, str]:
        if not data:
            raise bad("file must be non-empty")
        if len(data) > MAX_UPLOAD:
            raise ApiError(413, "Request Entity Too Large")
        if mime in ("", "application/octet-stream"):
            mime = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return data, filename, mime

    # ------------------------------------------------------------------ methods

    async def _m_getme(self, p: _Params) -> dict[str, Any]:
        return {**self.bot_user, "can_join_groups": True, "can_read_all_group_messages": True,
                "supports_inline_queries": False, "can_connect_to_business": False,
                "has_main_web_app": False}

    async def _m_logout(self, p: _Params) -> bool:
        return True

    async def _m_close(self, p: _Params) -> bool:
        return True

    async def _m_setwebhook(self, p: _Params) -> _Described:
        url = p.text("url") or ""
        if not url:
            return self._remove_webhook(p)
        parts = urlsplit(url)
        if parts.scheme.lower() != "https":
            raise bad("bad webhook: An HTTPS URL must be provided for webhook")
        try:
            port = parts.port or 443
        except ValueError:
            raise bad("bad webhook: Wrong port number specified in the URL") from None
        if port not in WEBHOOK_PORTS:
            raise bad("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
        host = parts.hostname or ""
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None and not ip.is_global:
            raise bad(f"bad webhook: IP address {host} is reserved")
        if ip is None and _origin("https", host, port) not in self._routes:
            raise bad("bad webhook: Failed to resolve host: Name or service not known")
        secret = p.text("secret_token") or ""
        if len(secret) > 256:
            raise bad("secret token is too long")
        if not _SECRET_CHARS.fullmatch(secret):
            raise bad("secret token contains unallowed characters")
        max_connections = min(max(p.integer("max_connections") or 40, 1), 100)
        self._set_allowed(p)
        if p.flag("drop_pending_updates"):
            self.updates.clear()
        hook = Webhook(url=url, secret_token=secret or None, max_connections=max_connections,
                       ip_address=p.text("ip_address"),
                       has_custom_certificate="certificate" in p.files)
        same = self.webhook == hook
        self.webhook = hook
        self._last_webhook_error = None
        self._attempts.clear()
        self._retry_at.clear()
        await self._notify()  # wakes a long poll (it now fails) and the deliverer
        return _Described(True, "Webhook is already set" if same else "Webhook was set")

    async def _m_deletewebhook(self, p: _Params) -> _Described:
        return self._remove_webhook(p)

    def _remove_webhook(self, p: _Params) -> _Described:
        had = self.webhook is not None
        self.webhook = None
        self._attempts.clear()
        self._retry_at.clear()
        if p.flag("drop_pending_updates"):
            self.updates.clear()
        return _Described(True, "Webhook was deleted" if had else "Webhook is already deleted")

    async def _m_getwebhookinfo(self, p: _Params) -> dict[str, Any]:
        info: dict[str, Any] = {"url": self.webhook_url, "has_custom_certificate": False,
                                "pending_update_count": len(self._deliverable())}
        hook = self.webhook
        if hook is not None:
            info["has_custom_certificate"] = hook.has_custom_certificate
            info["max_connections"] = hook.max_connections
            if hook.ip_address:
                info["ip_address"] = hook.ip_address
            if self._allowed:
                info["allowed_updates"] = sorted(self._allowed)
            if self._last_webhook_error is not None:
                info["last_error_date"], info["last_error_message"] = self._last_webhook_error
        return info

    def _set_allowed(self, p: _Params) -> None:
        """allowed_updates: a JSON list; [] means the default set; absent keeps the last."""
        allowed = p.obj("allowed_updates")
        if allowed is not None:
            if not isinstance(allowed, list):
                raise bad("can't parse allowed updates JSON object")
            self._allowed = {str(a) for a in allowed} or None

    async def _m_getupdates(self, p: _Params) -> list[dict[str, Any]]:
        if self.webhook is not None:
            raise ApiError(409, WEBHOOK_ACTIVE)
        offset = p.integer("offset")
        limit = min(max(p.integer("limit") or 100, 1), 100)
        timeout = max(p.integer("timeout") or 0, 0)
        self._set_allowed(p)
        if offset is not None:
            if offset < 0:
                self.updates = self.updates[offset:]
            else:
                self.updates = [u for u in self.updates if u["update_id"] >= offset]
        self._poll_generation += 1
        generation = self._poll_generation
        assert self._cond is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._cond:
            self._cond.notify_all()  # a newer getUpdates ends the older long poll
            while True:
                if generation != self._poll_generation:
                    raise ApiError(409, "Conflict: terminated by other getUpdates request; "
                                        "make sure that only one bot instance is running")
                if self.webhook is not None:
                    raise ApiError(409, WEBHOOK_ACTIVE)
                ready = self._deliverable()
                remaining = deadline - loop.time()
                if ready or remaining <= 0 or self._closing:
                    return ready[:limit]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), remaining)

    def _deliverable(self) -> list[dict[str, Any]]:
        """Pending updates of allowed types; others are dropped as the server does."""
        keep = []
        for u in self.updates:
            kind = next(k for k in u if k != "update_id")
            if (kind in self._allowed) if self._allowed else (kind not in NOT_BY_DEFAULT):
                keep.append(u)
        self.updates = keep
        return list(keep)

    async def _m_setmycommands(self, p: _Params) -> bool:
        commands = p.obj("commands")
        if commands is None:
            raise bad("parameter \"commands\" is required")
        if not isinstance(commands, list):
            raise bad("can't parse commands JSON object")
        if len(commands) > 100:
            raise bad("BOT_COMMANDS_TOO_MUCH")
        clean = []
        for c in commands:
            if not isinstance(c, dict):
                raise bad("can't parse BotCommand JSON object")
            name, desc = str(c.get("command", "")), str(c.get("description", ""))
            name = name.removeprefix("/")
            if not (1 <= len(name) <= 32) or any(
                    not (ch.isascii() and (ch.islower() or ch.isdigit() or ch == "_"))
                    for ch in name):
                raise bad("BOT_COMMAND_INVALID")
            if not (1 <= len(desc.strip()) <= 256):
                raise bad("BOT_COMMAND_DESCRIPTION_INVALID" if desc.strip() else
                          "command description must be non-empty")
            clean.append({"command": name, "description": desc})
        self.commands[self._scope_key(p)] = clean
        return True

    def _scope_key(self, p: _Params) -> tuple[str, str]:
        scope = p.obj("scope") or {"type": "default"}
        if not isinstance(scope, dict) or "type" not in scope:
            raise bad("can't parse BotCommandScope JSON object")
        return json.dumps(scope, sort_keys=True), p.text("language_code") or ""

    async def _m_getmycommands(self, p: _Params) -> list[dict[str, str]]:
        return list(self.commands.get(self._scope_key(p), []))

    async def _m_deletemycommands(self, p: _Params) -> bool:
        self.commands.pop(self._scope_key(p), None)
        return True

    async def _m_sendmessage(self, p: _Params) -> dict[str, Any]:
        chat = self._chat(p)
        raw = p.text("text")
        if raw is None or raw == "":
            raise bad("message text is empty")
        text, entities = self._format(raw, p)
        if not text:
            raise bad("message text is empty")
        if utf16_len(text) > MAX_TEXT:
            raise bad("message is too long")
        msg = self._base_message(chat, p)
        msg["text"] = text
        if entities:
            msg["entities"] = entities
        self._record(msg, "sendMessage", kind="text", text=text, raw=raw,
                     parse_mode=p.text("parse_mode"))
        return msg

    async def _m_editmessagetext(self, p: _Params) -> dict[str, Any]:
        if p.get("inline_message_id"):
            raise bad("message to edit not found")
        chat = self._chat(p)
        mid = p.integer("message_id")
        if mid is None:
            raise bad("message identifier is not specified")
        raw = p.text("text")
        if raw is None or raw == "":
            raise bad("message text is empty")
        text, entities = self._format(raw, p)
        if not text:
            raise bad("message text is empty")
        if utf16_len(text) > MAX_TEXT:
            raise bad("message is too long")
        fm = self._by_key.get((chat["id"], mid))
        if fm is None or fm.deleted:
            if (chat["id"], mid) in self._stored and fm is None:
                raise bad("message can't be edited")
            raise bad("message to edit not found")
        if fm.kind != "text":
            raise bad("there is no text in the message to edit")
        markup = p.obj("reply_markup")
        old_markup = fm.data.get("reply_markup")
        new_markup = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        if (text == fm.text and entities == (fm.data.get("entities") or [])
                and new_markup == old_markup):
            raise bad(NOT_MODIFIED[len("Bad Request: "):])
        msg = dict(fm.data)
        msg["text"] = text
        msg.pop("entities", None)
        if entities:
            msg["entities"] = entities
        msg.pop("reply_markup", None)
        if new_markup:
            msg["reply_markup"] = new_markup
        msg["edit_date"] = int(time.time())
        fm.data = msg
        fm.text = text
        fm.raw_text = raw
        fm.entities = list(entities)
        fm.parse_mode = p.text("parse_mode")
        fm.edits.append((time.monotonic(), text))
        self._stored[(chat["id"], mid)] = msg
        return msg

    async def _m_deletemessage(self, p: _Params) -> bool:
        chat = self._chat(p)
        mid = p.integer("message_id")
        if mid is None:
            raise bad("message identifier is not specified")
        if (chat["id"], mid) not in self._stored or self._deleted(chat["id"], mid):
            raise bad("message to delete not found")
        fm = self._by_key.get((chat["id"], mid))
        if fm is not None:
            fm.deleted = True
        else:
            self._stored.pop((chat["id"], mid))
        return True

    async def _m_sendchataction(self, p: _Params) -> bool:
        chat = self._chat(p)
        action = p.text("action")
        if not action:
            raise bad("parameter \"action\" is required")
        if action not in CHAT_ACTIONS:
            raise bad("wrong parameter action in request")
        thread_id = p.integer("message_thread_id")
        if thread_id is not None and thread_id not in self._topics[chat["id"]]:
            raise bad("message thread not found")
        self._actions[chat["id"]].append(action)
        return True

    async def _m_setmessagereaction(self, p: _Params) -> bool:
        chat = self._chat(p)
        mid = p.integer("message_id")
        if mid is None or (chat["id"], mid) not in self._stored:
            raise bad("message to react not found")
        reaction = p.obj("reaction")
        if reaction is not None and not isinstance(reaction, list):
            raise bad("can't parse reaction types JSON object")
        self._stored[(chat["id"], mid)]["_reaction"] = reaction or []
        return True

    async def _send_media(self, p: _Params, method: str, field_name: str,
                          kind: str) -> dict[str, Any]:
        chat = self._chat(p)
        data, filename, mime = self._input_file(p, field_name)
        caption, cap_entities = self._caption(p)
        msg = self._base_message(chat, p)
        sent_kind = kind
        if kind == "photo":
            if len(data) > 10 * 1024 * 1024:
                raise bad("PHOTO_INVALID_DIMENSIONS")
            msg["photo"] = self._photo_sizes(data)
            mime = "image/jpeg"
        elif kind == "voice" and not _is_voice_format(data):
            # Telegram delivers audio it cannot play as a voice note as a plain document
            sent_kind = "document"
        if sent_kind in ("voice", "audio", "document"):
            folder = {"voice": "voice", "audio": "music", "document": "documents"}[sent_kind]
            stored = self._store_file(data, mime, filename, folder)
            obj: dict[str, Any] = {"file_id": stored.file_id,
                                   "file_unique_id": stored.file_unique_id,
                                   "file_size": len(data)}
            if sent_kind == "voice":
                obj = {"duration": p.integer("duration") or 1, "mime_type": "audio/ogg", **obj}
            elif sent_kind == "audio":
                obj = {"duration": p.integer("duration") or 1, "file_name": filename,
                       "mime_type": mime, **obj}
                for key in ("title", "performer"):
                    if p.text(key):
                        obj[key] = p.text(key)
            else:
                obj = {"file_name": filename, "mime_type": mime, **obj}
            msg[sent_kind] = obj
        if caption:
            msg["caption"] = caption
            if cap_entities:
                msg["caption_entities"] = cap_entities
        self._record(msg, method, kind=sent_kind, file=data, caption=caption,
                     filename=filename, mime=mime, parse_mode=p.text("parse_mode"),
                     raw=p.text("caption") or "")
        return msg

    async def _m_sendphoto(self, p: _Params) -> dict[str, Any]:
        return await self._send_media(p, "sendPhoto", "photo", "photo")

    async def _m_senddocument(self, p: _Params) -> dict[str, Any]:
        return await self._send_media(p, "sendDocument", "document", "document")

    async def _m_sendvoice(self, p: _Params) -> dict[str, Any]:
        return await self._send_media(p, "sendVoice", "voice", "voice")

    async def _m_sendaudio(self, p: _Params) -> dict[str, Any]:
        return await self._send_media(p, "sendAudio", "audio", "audio")

    async def _m_sendmediagroup(self, p: _Params) -> list[dict[str, Any]]:
        chat = self._chat(p)
        media = p.obj("media")
        if media is None:
            raise bad("parameter \"media\" is required")
        if not isinstance(media, list):
            raise bad("can't parse media JSON object")
        if not 2 <= len(media) <= 10:
            raise bad("media group must include 2-10 items")
        types = {m.get("type") for m in media if isinstance(m, dict)}
        if len(types) != 1 and not types <= {"photo", "video"}:
            raise bad("document and audio can't be mixed with other media types")
        group_id = str(next(self._media_groups))
        prepared = []
        for item in media:
            if not isinstance(item, dict) or item.get("type") not in (
                    "photo", "video", "document", "audio"):
                raise bad("can't parse InputMedia JSON object")
            sub = _Params({**item, "chat_id": chat["id"],
                           "parse_mode": item.get("parse_mode")}, p.files)
            data, filename, mime = self._input_file(sub, "media")
            caption, entities = self._caption(sub)
            prepared.append((item["type"], data, filename, mime, caption, entities, sub))
        out = []
        for kind, data, filename, mime, caption, entities, sub in prepared:
            msg = self._base_message(chat, p)
            msg["media_group_id"] = group_id
            if kind == "photo":
                msg["photo"] = self._photo_sizes(data)
                mime = "image/jpeg"
            else:
                stored = self._store_file(data, mime, filename, "documents")
                msg[kind] = {"file_name": filename, "mime_type": mime,
                             "file_id": stored.file_id,
                             "file_unique_id": stored.file_unique_id, "file_size": len(data)}
            if caption:
                msg["caption"] = caption
                if entities:
                    msg["caption_entities"] = entities
            self._record(msg, "sendMediaGroup", kind=kind, file=data, caption=caption,
                         filename=filename, mime=mime, parse_mode=sub.text("parse_mode"),
                         raw=sub.text("caption") or "")
            out.append(msg)
        return out

    async def _m_getfile(self, p: _Params) -> dict[str, Any]:
        file_id = p.text("file_id")
        if not file_id:
            raise bad("file_id not specified")
        f = self._files.get(file_id)
        if f is None:
            raise bad("wrong file_id or the file is temporarily unavailable")
        if len(f.data) > MAX_DOWNLOAD:
            raise bad("file is too big")
        if f.path is None:
            ext = {"photos": ".jpg", "voice": ".oga"}.get(f.folder) or (
                "." + f.filename.rsplit(".", 1)[1] if "." in f.filename else "")
            f.path = f"{f.folder}/file_{next(self._file_counter)}{ext}"
        return {"file_id": f.file_id, "file_unique_id": f.file_unique_id,
                "file_size": len(f.data), "file_path": f.path}


    # ------------------------------------------------------------------ webhook delivery

    async def _deliver_webhooks(self) -> None:
        """While a webhook is set, POST pending updates to it, oldest first.

        Up to max_connections at once, but one chat's updates one at a time and in order;
        an update answered with anything but 2xx is retried later (after
        webhook_retry_delay, doubling up to webhook_max_retry_delay) and dropped after
        webhook_attempts tries.
        """
        assert self._cond is not None
        loop = asyncio.get_running_loop()
        while not self._closing:
            async with self._cond:
                while not self._closing:
                    due, wake = self._due_updates(loop.time())
                    if due:
                        break
                    timeout = None if wake is None else max(wake - loop.time(), 0.001)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._cond.wait(), timeout)
            hook = self.webhook
            if self._closing or hook is None:
                continue
            for update in due:
                uid = update["update_id"]
                self._delivering[uid] = asyncio.create_task(self._post_update(hook, update))

    def _due_updates(self, now: float) -> tuple[list[dict[str, Any]], float | None]:
        """Updates to POST now, and when one waiting out a retry delay becomes due."""
        hook = self.webhook
        if hook is None:
            return [], None
        free = hook.max_connections - len(self._delivering)
        busy: set[Any] = set()
        out: list[dict[str, Any]] = []
        wake: float | None = None
        for update in self._deliverable():
            if free <= 0:
                return out, None  # a delivery that finishes wakes the loop
            chat = _chat_of(update)
            if chat in busy:
                continue
            busy.add(chat)  # later updates of this chat wait for this one
            uid = update["update_id"]
            if uid in self._delivering:
                continue
            retry_at = self._retry_at.get(uid, 0.0)
            if retry_at > now:
                wake = retry_at if wake is None else min(wake, retry_at)
                continue
            out.append(update)
            free -= 1
        return out, wake

    async def _post_update(self, hook: Webhook, update: dict[str, Any]) -> None:
        uid = update["update_id"]
        loop = asyncio.get_running_loop()
        status, error = 0, ""
        try:
            status, error = await self._post(hook, update)
        finally:
            self._delivering.pop(uid, None)
        self.webhook_posts.append(WebhookPost(uid, hook.url, status, time.monotonic(), error,
                                              hook.secret_token is not None))
        if 200 <= status < 300:
            self.updates = [u for u in self.updates if u["update_id"] != uid]
            self._attempts.pop(uid, None)
            self._retry_at.pop(uid, None)
        else:
            self._last_webhook_error = (int(time.time()), error)
            attempts = self._attempts[uid] = self._attempts.get(uid, 0) + 1
            if attempts >= self.webhook_attempts:  # give up on this update
                self.updates = [u for u in self.updates if u["update_id"] != uid]
                self._attempts.pop(uid, None)
                self._retry_at.pop(uid, None)
            else:
                delay = min(self.webhook_retry_delay * 2 ** (attempts - 1),
                            self.webhook_max_retry_delay)
                self._retry_at[uid] = loop.time() + delay
        await self._notify()

    async def _post(self, hook: Webhook, update: dict[str, Any]) -> tuple[int, str]:
        """One HTTPS POST as Telegram makes it: (status, error text for WebhookInfo)."""
        assert self._http is not None
        parts = urlsplit(hook.url)
        local = self._routes.get(_origin("https", parts.hostname or "", parts.port or 443))
        if local is None:
            return 0, "Failed to resolve host: Name or service not known"
        target = local + (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json"}
        if hook.secret_token is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = hook.secret_token
        try:
            async with self._http.post(target, data=json.dumps(update), headers=headers) as r:
                await r.read()
                if 200 <= r.status < 300:
                    return r.status, ""
                return r.status, f"Wrong response from the webhook: {r.status} {r.reason}"
        except TimeoutError:
            return 0, "Read timeout expired"
        except aiohttp.ClientConnectorError:
            return 0, "Connection refused"
        except aiohttp.ClientError as e:
            return 0, f"Connection error: {type(e).__name__}"


def _origin(scheme: str, host: str, port: int | None) -> str:
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host.lower()}:{port or default}"


def _chat_of(update: dict[str, Any]) -> Any:
    """Which chat an update belongs to (its own id when it has none)."""
    for key, value in update.items():
        if key != "update_id" and isinstance(value, dict):
            chat = value.get("chat") or (value.get("message") or {}).get("chat")
            if isinstance(chat, dict):
                return chat.get("id")
            user = value.get("from")
            if isinstance(user, dict):
                return ("user", user.get("id"))
    return ("update", update["update_id"])


class _Params:
    """Request parameters from any transport; values may be native (JSON) or strings."""

    def __init__(self, values: dict[str, Any], files: dict[str, tuple[str, bytes, str]]):
        self.values = values
        self.files = files

    def get(self, name: str) -> Any:
        """The raw value or None."""
        return self.values.get(name)

    def text(self, name: str) -> str | None:
        """A string parameter."""
        v = self.values.get(name)
        if v is None:
            return None
        return v if isinstance(v, str) else json.dumps(v)

    def integer(self, name: str) -> int | None:
        """An integer parameter; a non-number is a Bad Request like the real server's."""
        v = self.values.get(name)
        if v is None or v == "":
            return None
        try:
            return int(v)
        except (TypeError, ValueError):
            raise bad(f"invalid {name} specified") from None

    def flag(self, name: str) -> bool:
        """Booleans arrive as true/false, 1/0 or JSON booleans."""
        v = self.values.get(name)
        if isinstance(v, str):
            return v.lower() in ("true", "1")
        return bool(v)

    def obj(self, name: str) -> Any:
        """A JSON-serialized parameter (an object inside a form field, or native JSON)."""
        v = self.values.get(name)
        if isinstance(v, str):
            try:
                return json.loads(v)
            except ValueError:
                raise bad(f"can't parse {name.replace('_', ' ')} JSON object") from None
        return v


def _reply(body: dict[str, Any], status: int) -> web.Response:
    return web.json_response(body, status=status)


def _shallow(message: dict[str, Any]) -> dict[str, Any]:
    """A replied-to message never carries its own reply_to_message (Bot API rule)."""
    return {k: v for k, v in message.items() if k != "reply_to_message" and not k.startswith("_")}


def _is_voice_format(data: bytes) -> bool:
    """OGG (Opus), MP3 or M4A: what sendVoice shows as a voice message."""
    return (data.startswith(b"OggS") or data.startswith(b"ID3")
            or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
            or data[4:8] == b"ftyp")


def _file_id() -> str:
    return "AgACAgIAAxkBAAI" + secrets.token_urlsafe(48)[:57]


def _unique_id() -> str:
    return "AQAD" + secrets.token_urlsafe(12)[:12]
