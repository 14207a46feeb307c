"""Telegram <-> the core: python-telegram-bot's Application and Updater as an Adapter.

The Application is started by hand (initialize, Updater, start; not run_polling, which
would own the event loop) and receives updates by long polling or by webhook. Incoming
Messages become Inbounds (albums merged into one), replies go out through a
TelegramReplier bound to the chat, topic and message being answered. The bot token is
part of every Bot API and file URL, so no URL ever leaves this module and every log line
from PTB, httpx and tornado passes through a filter that masks the token and the webhook
secret.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import json
import logging
import re
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from telegram import (
    BotCommand,
    InputMediaPhoto,
    Message,
    MessageEntity,
    ReplyParameters,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError
from telegram.ext import Application, ApplicationBuilder, TypeHandler
from telegram.request import HTTPXRequest

from adapters.base import Sink
from bot.config import Config
from bot.errors import ChatForbidden, RateLimited, StartupError, UserError
from bot.events import Attachment, AttachmentKind, Author, ChannelKey, Inbound, Quoted
from bot.render import utf16_len
from bot.replies import Capabilities, ChatAction, OutFile, Replier, Sent

log = logging.getLogger(__name__)

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_UPLOAD = 50 * 1024 * 1024
MAX_PHOTO = 10 * 1024 * 1024
MAX_DOWNLOAD = 20 * 1024 * 1024  # getFile refuses bigger files
RETRIES = 3
GROUP_SENDS_PER_MINUTE = 20

CAPABILITIES = Capabilities(
    max_text=MAX_TEXT,
    max_caption=MAX_CAPTION,
    max_upload=MAX_UPLOAD,
    min_edit_interval=1.0,
    voice_messages=True,
    measure=utf16_len,
    start_command=True,
    max_description=256,
)

# Loggers that may print request URLs (which contain the token).
_URL_LOGGERS = (
    "httpx", "httpcore", "telegram", "telegram.Bot", "telegram.ext", "telegram.ext.ExtBot",
    "telegram.ext.Application", "telegram.ext.Updater", "telegram.request.HTTPXRequest",
    "telegram.request", "telegram.request.BaseRequest", "tornado.access", "tornado.application",
    "tornado.general", __name__,
)
_T = TypeVar("_T")


class _RedactToken(logging.Filter):
    """Mask the bot token (and the webhook secret) in any log record passing through."""

    def __init__(self, token: str, webhook_secret: str = "") -> None:
        super().__init__()
        self.forms = [f for f in {token, quote(token, safe="")} if f]
        self.masks = [(f, "<token>") for f in self.forms]
        if webhook_secret:
            self.masks.append((webhook_secret, "<webhook secret>"))

    def mask(self, text: str) -> str:
        """The text with every secret form replaced."""
        for form, mask in self.masks:
            text = text.replace(form, mask)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Freeze the message with the token masked (args may be mutated after logging)."""
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return True
        text = self.mask(text)
        record.msg = text
        record.args = None
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and any(form in str(exc) for form, _ in self.masks):
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{text} (traceback omitted: it contained a secret)"
        return True


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _seconds(err: RetryAfter) -> float:
    """RetryAfter.retry_after is an int or a timedelta depending on PTB_TIMEDELTA."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = err.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def _display_name(user: Any) -> str:
    name = " ".join(p for p in (user.first_name, user.last_name) if p)
    return name or user.username or str(user.id)


class SendLimiter:
    """Pacing of new messages: per group chat and for the whole bot.

    Per chat: at most `per_minute` new messages in any 60 s window per group. Telegram
    rejects more than about 20 messages a minute in one group; waiting here (in the
    sending coroutine only) spreads a burst instead of collecting 429s. A sliding window is
    used rather than a plain token bucket so that a burst never exceeds the limit either.
    A chat is answered by one process at a time (one bot, or the cluster's channel lease),
    so this count is exact across workers too.

    Whole bot: about 30 messages a second over all chats (Telegram's bot FAQ). That limit
    is the bot's, not the process's, so `[telegram] global_rate` is this process's share:
    30 for one process, 30 / N for each of N workers. A token bucket holding one second's
    worth lets a short burst out at once and then paces at the rate; 0 turns it off.
    """

    def __init__(self, per_minute: int = GROUP_SENDS_PER_MINUTE, window: float = 60.0,
                 global_rate: float = 0.0) -> None:
        self.per_minute = per_minute
        self.window = window
        self.global_rate = global_rate
        self._sent: dict[int, collections.deque[float]] = collections.defaultdict(
            collections.deque)
        self._locks: dict[int, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._capacity = max(1.0, global_rate)
        self._tokens = self._capacity
        self._stamp = time.monotonic()
        self._global_lock = asyncio.Lock()

    async def acquire(self, chat_id: int, *, group: bool = True) -> None:
        """Wait until one more message may go to this chat, then count it (a private
        chat, group=False, has no per-chat window; the bot-wide rate applies to all)."""
        if group:
            async with self._locks[chat_id]:
                stamps = self._sent[chat_id]
                while True:
                    now = time.monotonic()
                    while stamps and now - stamps[0] >= self.window:
                        stamps.popleft()
                    if len(stamps) < self.per_minute:
                        stamps.append(now)
                        break
                    await asyncio.sleep(stamps[0] + self.window - now)
        if self.global_rate > 0:
            await self._take_global()

    async def _take_global(self) -> None:
        async with self._global_lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._capacity,
                                   self._tokens + (now - self._stamp) * self.global_rate)
                self._stamp = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self.global_rate)


@dataclass
class _Album:
    messages: list[Message] = field(default_factory=list)
    receipts: list[str] = field(default_factory=list)
    last: float = 0.0
    task: asyncio.Task[None] | None = None


class TelegramReplier(Replier):
    """Answers in one chat/topic, replying (in groups) to the message being answered."""

    capabilities = CAPABILITIES

    def __init__(self, adapter: TelegramAdapter, chat_id: int, thread_id: int | None,
                 reply_to: int | None, is_private: bool) -> None:
        self.adapter = adapter
        self.chat_id = chat_id
        self.thread_id = thread_id
        self.reply_to = reply_to
        self.is_private = is_private

    def __repr__(self) -> str:
        return f"TelegramReplier(chat={self.chat_id}, thread={self.thread_id})"

    @property
    def _bot(self) -> Any:
        return self.adapter.app.bot

    def _where(self) -> dict[str, Any]:
        """Topic and reply target shared by every send."""
        kw: dict[str, Any] = {"chat_id": self.chat_id}
        if self.thread_id is not None:
            kw["message_thread_id"] = self.thread_id
        if self.reply_to is not None and not self.is_private:
            kw["reply_parameters"] = ReplyParameters(
                message_id=self.reply_to, allow_sending_without_reply=True)
        return kw

    async def _call(self, fn: Callable[..., Awaitable[_T]], *, new_message: bool,
                    **kwargs: Any) -> _T:
        """One Bot API call: group and bot-wide pacing, and 429 waits (this chat only) up
        to 3 retries."""
        for attempt in range(RETRIES + 1):
            if new_message:
                await self.adapter.limiter.acquire(self.chat_id, group=not self.is_private)
            try:
                return await fn(**kwargs)
            except Forbidden as e:  # removed from the group, or blocked: permanent
                raise ChatForbidden(f"telegram chat {self.chat_id}: {e.message}") from None
            except RetryAfter as e:
                delay = _seconds(e)
                if attempt == RETRIES:
                    raise RateLimited(delay) from None
                log.info("telegram asks to wait %.0fs in chat %s", delay, self.chat_id)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def send(self, markdown: str) -> Sent:
        """Send Markdown as Telegram HTML; fall back to plain text if Telegram rejects it."""
        from bot.render import to_plain, to_telegram_html

        kw = self._where()
        try:
            msg = await self._call(self._bot.send_message, new_message=True,
                                   text=to_telegram_html(markdown), parse_mode=ParseMode.HTML,
                                   **kw)
        except BadRequest as e:
            if not _is_entity_error(e):
                raise
            log.warning("Telegram rejected our HTML (%s); sending plain text", e.message)
            msg = await self._call(self._bot.send_message, new_message=True,
                                   text=to_plain(markdown), **kw)
        return Sent(id=str(msg.message_id), text=markdown)

    async def edit(self, sent: Sent, markdown: str) -> Sent:
        """Replace a message's text; 'message is not modified' is success."""
        from bot.render import to_plain, to_telegram_html

        kw: dict[str, Any] = {"chat_id": self.chat_id, "message_id": int(sent.id)}
        try:
            try:
                await self._call(self._bot.edit_message_text, new_message=False,
                                 text=to_telegram_html(markdown), parse_mode=ParseMode.HTML,
                                 **kw)
            except BadRequest as e:
                if not _is_entity_error(e):
                    raise
                log.warning("Telegram rejected our HTML (%s); editing as plain text", e.message)
                await self._call(self._bot.edit_message_text, new_message=False,
                                 text=to_plain(markdown), **kw)
        except BadRequest as e:
            if "not modified" not in e.message.lower():
                raise
        return Sent(id=sent.id, text=markdown)

    async def delete(self, sent: Sent) -> None:
        """deleteMessage (a cut reply left by a crash)."""
        await self._call(self._bot.delete_message, new_message=False, chat_id=self.chat_id,
                         message_id=int(sent.id))

    async def _with_caption(self, fn: Callable[..., Awaitable[_T]], caption: str | None,
                            **kwargs: Any) -> _T:
        """Send a media call with an HTML caption, retrying with a plain one if rejected."""
        if not caption:
            return await self._call(fn, new_message=True, **kwargs)
        html, plain = _caption_forms(caption)
        try:
            return await self._call(fn, new_message=True, caption=html,
                                    parse_mode=ParseMode.HTML, **kwargs)
        except BadRequest as e:
            if not (_is_entity_error(e) or "caption is too long" in e.message.lower()):
                raise
            log.warning("Telegram rejected our caption (%s); sending it as plain text",
                        e.message)
            return await self._call(fn, new_message=True, caption=plain, **kwargs)

    async def send_file(self, file: OutFile) -> Sent:
        """Photo, voice note, audio or document; a refused voice note goes as a document."""
        if len(file.data) > MAX_UPLOAD:
            raise UserError("That file is too large to send on Telegram (the limit is 50 MB).")
        bot = self._bot
        kw = self._where()
        name = file.filename
        if file.kind == "image" and len(file.data) <= MAX_PHOTO:
            msg = await self._with_caption(bot.send_photo, file.caption, photo=file.data,
                                           filename=name, **kw)
        elif file.kind == "voice":
            duration = int(file.duration) if file.duration else None
            try:
                msg = await self._with_caption(bot.send_voice, file.caption, voice=file.data,
                                               filename=name, duration=duration, **kw)
            except BadRequest as e:
                if "voice_messages_forbidden" not in e.message.lower():
                    raise
                log.info("voice messages are forbidden in chat %s; sending a file",
                         self.chat_id)
                msg = await self._with_caption(bot.send_document, file.caption,
                                               document=file.data, filename=name, **kw)
        elif file.kind == "audio":
            duration = int(file.duration) if file.duration else None
            msg = await self._with_caption(bot.send_audio, file.caption, audio=file.data,
                                           filename=name, duration=duration, **kw)
        else:
            msg = await self._with_caption(bot.send_document, file.caption,
                                           document=file.data, filename=name, **kw)
        return Sent(id=str(msg.message_id), text=file.caption or "")

    async def send_files(self, files: list[OutFile]) -> list[Sent]:
        """2-10 images go as one album (sendMediaGroup); anything else one by one."""
        albumable = all(f.kind == "image" and len(f.data) <= MAX_PHOTO for f in files)
        if not albumable or len(files) < 2:
            return [await self.send_file(f) for f in files]
        out: list[Sent] = []
        for start in range(0, len(files), 10):
            chunk = files[start : start + 10]
            if len(chunk) == 1:
                out.append(await self.send_file(chunk[0]))
                continue
            out.extend(await self._album(chunk))
        return out

    async def _album(self, files: list[OutFile]) -> list[Sent]:
        def media(plain: bool) -> list[InputMediaPhoto]:
            items = []
            for f in files:
                if f.caption:
                    html, text = _caption_forms(f.caption)
                    items.append(InputMediaPhoto(
                        media=f.data, filename=f.filename, caption=text if plain else html,
                        parse_mode=None if plain else ParseMode.HTML))
                else:
                    items.append(InputMediaPhoto(media=f.data, filename=f.filename))
            return items

        kw = self._where()
        try:
            msgs = await self._call(self._bot.send_media_group, new_message=True,
                                    media=media(False), **kw)
        except BadRequest as e:
            if not (_is_entity_error(e) or "caption is too long" in e.message.lower()):
                raise
            msgs = await self._call(self._bot.send_media_group, new_message=True,
                                    media=media(True), **kw)
        return [Sent(id=str(m.message_id), text=m.caption or "") for m in msgs]

    async def start_action(self, action: ChatAction) -> None:
        """sendChatAction once (it shows for about 5 seconds); skipped under load.

        The indicator is cosmetic: when every connection is busy (a burst of chats), it
        would only delay real answers, so it is shed.
        """
        if self.adapter.saturated():
            return
        kw: dict[str, Any] = {"chat_id": self.chat_id, "action": action}
        if self.thread_id is not None:
            kw["message_thread_id"] = self.thread_id
        try:
            await self._bot.send_chat_action(**kw)
        except TelegramError as e:
            log.debug("sendChatAction failed in chat %s: %s", self.chat_id, e)


GROUP_ANONYMOUS_BOT = 1087968824


def _anonymous_admin(msg: Message) -> bool:
    """A group admin posting anonymously, as the group itself."""
    return (msg.from_user is not None and msg.from_user.id == GROUP_ANONYMOUS_BOT
            and msg.sender_chat is not None and msg.sender_chat.id == msg.chat.id)


def _is_entity_error(e: BadRequest) -> bool:
    return "can't parse entities" in e.message.lower() or "can't find end" in e.message.lower()


def _caption_forms(caption: str) -> tuple[str, str]:
    """(HTML, plain) forms of a Markdown caption, cut to Telegram's 1024 visible units."""
    from bot.render import to_plain, to_telegram_html, utf16_len
    from bot.split import split_markdown

    plain = to_plain(caption)
    if utf16_len(plain) > MAX_CAPTION:
        caption = split_markdown(caption, MAX_CAPTION, measure=utf16_len)[0]
        plain = to_plain(caption)
        while utf16_len(plain) > MAX_CAPTION:
            plain = plain[: len(plain) - max(1, (utf16_len(plain) - MAX_CAPTION))]
    return to_telegram_html(caption), plain


POOL_SIZE = 16
ALLOWED_UPDATES = [Update.MESSAGE, Update.EDITED_MESSAGE]


class _JournalQueue(asyncio.Queue[object]):
    """The Application's update queue: put() stores each Update in the journal first.

    The Updater awaits put() before it acknowledges an update (polling: the next
    getUpdates offset; webhook: the 200 answer), so only what is stored is acknowledged,
    and an update Telegram delivers again after a crash is recognised by its id.
    """

    def __init__(self, adapter: TelegramAdapter) -> None:
        super().__init__()
        self.adapter = adapter

    async def put(self, item: object) -> None:
        """Store, then queue; a known update is dropped (it was handled or is resumed)."""
        if isinstance(item, Update) and not await self.adapter.record(item):
            return
        await super().put(item)


class _BoundedRequest(HTTPXRequest):
    """PTB's HTTPXRequest that hands httpx no more calls than it has connections.

    A burst of answers otherwise queues inside httpcore 1.x's pool, which re-matches every
    queued request to every connection on each change (O(queued x connections)). Measured
    with bench/load.py burst (500 chats, bot under cProfile): a plain HTTPXRequest spent
    18.4 s of 65.5 s CPU in httpcore's _assign_requests_to_connections (1.65 M is_queued
    checks), this class 3.4 s of 43.2 s. Unprofiled, on a shared and loaded 2-core
    machine, the bot used 4.5-5.0 s of CPU for the burst without it, 3.3-4.8 s with it.
    Waiting on the semaphore costs nothing, so the pool's own timeout (pool_timeout) is
    never reached.
    """

    def __init__(self, *, connection_pool_size: int, **kwargs: Any) -> None:
        super().__init__(connection_pool_size=connection_pool_size, **kwargs)
        self._slots = asyncio.Semaphore(connection_pool_size)

    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        """Wait for a free connection here, then let PTB and httpx send the call."""
        async with self._slots:
            return await super().do_request(*args, **kwargs)

    def saturated(self) -> bool:
        """True when every connection is in use."""
        return self._slots.locked()


class _UpdatesRequest(HTTPXRequest):
    """The getUpdates connection, keeping each update as Telegram sent it, for the journal.

    The journal stores every update before it is acknowledged; serialising the parsed
    Update back (`Update.to_json()`, PTB's to_dict walk) cost more than the rest of the
    journal's Python work: under cProfile, over 1,030 messages of bench/load.py overhead,
    to_json took ~0.5 s of the 3 s this code spent over the state before the journal
    (93b1bf3). json.dumps of the dict parsed here costs ~20 µs. Overriding
    parse_json_payload is the hook PTB documents for this.
    Webhook deliveries (parsed by PTB's server) still go through to_json.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.raw: dict[int, dict[str, Any]] = {}  # update_id -> the update as received

    def parse_json_payload(self, payload: bytes) -> dict[str, Any]:  # type: ignore[override]
        """PTB's parsing, remembering the updates it returns (taken by record())."""
        data: dict[str, Any] = super().parse_json_payload(payload)
        result = data.get("result") if isinstance(data, dict) else None  # PTB judges the rest
        if isinstance(result, list):
            if len(self.raw) > 10_000:  # never taken (no journal): not kept for ever
                self.raw.clear()
            for item in result:
                if isinstance(item, dict) and isinstance(item.get("update_id"), int):
                    self.raw[item["update_id"]] = item
        return data


class TelegramAdapter:
    """Telegram through python-telegram-bot's Application and Updater.

    The Updater receives updates by long polling (getUpdates) or, when
    `[telegram] webhook_url` is set, by a webhook behind the owner's reverse proxy (PTB's
    server checks Telegram's secret-token header). The Application hands every Update to
    one TypeHandler, `_on_update`, which merges albums and submits Inbounds to the sink.
    """

    name = "telegram"
    capabilities = CAPABILITIES

    def __init__(self, config: Config) -> None:
        self.config = config
        self.token = config.secrets.telegram_token
        self._redact = _RedactToken(self.token, config.telegram.webhook_secret)
        for name in _URL_LOGGERS:  # before PTB is built: it logs its URLs at DEBUG
            logging.getLogger(name).addFilter(self._redact)
        root = config.secrets.telegram_api_url.rstrip("/")
        self._api_root = root
        # a loopback API (tests, a local Bot API server) must never go through a proxy
        httpx_kwargs = {"trust_env": False} if _is_loopback(root) else {}
        poll = config.telegram.poll_timeout
        request = _BoundedRequest(connection_pool_size=POOL_SIZE, pool_timeout=5.0,
                                  read_timeout=30.0, media_write_timeout=60.0,
                                  httpx_kwargs=httpx_kwargs)
        updates_request = _UpdatesRequest(connection_pool_size=2, read_timeout=poll + 10.0,
                                          httpx_kwargs=httpx_kwargs)
        # Our own queue: the Updater puts each update here (polling: before confirming it
        # with the next getUpdates offset; webhook: before answering Telegram's POST).
        self.update_queue: asyncio.Queue[object] = _JournalQueue(self)
        self._request = request
        self._updates_request = updates_request
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(self.token)
            .base_url(f"{root}/bot")
            .base_file_url(f"{root}/file/bot")
            .request(request)
            .get_updates_request(updates_request)
            .update_queue(self.update_queue)
            .job_queue(None)
            .build()
        )
        self.app.add_handler(TypeHandler(Update, self._on_update))
        self.limiter = SendLimiter(global_rate=config.telegram.global_rate)
        self.bot_id: int | None = None
        self.bot_username: str | None = None
        self._sink: Sink | None = None
        # False: a send-only worker (start(receive=False)), no Updater running
        self.receiving = True
        self._logged_in = False
        self._albums: dict[tuple[int, str], _Album] = {}

    def saturated(self) -> bool:
        """Whether API calls are queueing for a connection (then cosmetic calls are shed)."""
        return self._request.saturated()

    async def start(self, sink: Sink, *, receive: bool = True) -> None:
        """getMe, setMyCommands, then the Updater and the Application; returns once live.

        receive=False (a worker answering messages another process received): getMe only.
        No polling, no webhook set or deleted, no commands registered: the receiving
        process owns those, and a getUpdates here would steal its updates. Repliers from
        `replier_for` and readers from `attachment_reader` work as usual.

        Raises StartupError (one line, no token) when Telegram rejects the token (exit 2),
        refuses the webhook (exit 2) or cannot be reached (exit 1).
        """
        self._sink = sink
        self.receiving = receive
        try:
            await self._start(sink)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, sink: Sink) -> None:
        try:
            await self.app.initialize()  # getMe
        except InvalidToken:  # PTB's message quotes the token
            raise self._rejected_token() from None
        except TelegramError as e:
            raise self._unreachable(e) from None
        me = self.app.bot
        self.bot_id = me.id
        self.bot_username = me.username
        self._logged_in = True
        if not self.receiving:
            log.info("telegram: @%s sends only (updates are received by another process)",
                     self.bot_username)
            return
        await self._register_commands(sink)
        await self._requeue_undelivered()
        tg = self.config.telegram
        updater = self.app.updater
        assert updater is not None
        try:
            if tg.webhook_url:
                # sets the webhook, then listens; Telegram keeps what arrives meanwhile
                await updater.start_webhook(
                    listen=tg.webhook_listen, port=tg.webhook_port,
                    url_path=urlsplit(tg.webhook_url).path or "/",
                    webhook_url=tg.webhook_url, secret_token=tg.webhook_secret,
                    allowed_updates=ALLOWED_UPDATES, drop_pending_updates=False)
            else:
                # deletes any webhook (getUpdates is refused while one is set), then polls
                await updater.start_polling(
                    timeout=tg.poll_timeout, allowed_updates=ALLOWED_UPDATES,
                    drop_pending_updates=False)
        except InvalidToken:
            raise self._rejected_token() from None
        except BadRequest as e:
            raise StartupError(
                f"Telegram refused the webhook ({e.message}); check [telegram] webhook_url "
                "and webhook_secret", exit_code=2) from None
        except TelegramError as e:
            raise self._unreachable(e) from None
        except OSError as e:  # the webhook port is taken, or the address is not ours
            raise StartupError(
                f"cannot listen for the Telegram webhook on {tg.webhook_listen}:"
                f"{tg.webhook_port} ({e.strerror or e}); check [telegram] webhook_listen and "
                "webhook_port", exit_code=1) from None
        await self.app.start()
        if tg.webhook_url:
            log.info("telegram: @%s receives updates at %s (webhook on %s:%s)",
                     self.bot_username, tg.webhook_url, tg.webhook_listen, tg.webhook_port)
        else:
            log.info("telegram: polling as @%s", self.bot_username)

    @property
    def _journal(self) -> Any:
        return getattr(self._sink, "journal", None)

    async def record(self, update: Update) -> bool:
        """Store an update before it is acknowledged; False when it is known already."""
        raw = self._updates_request.raw.pop(update.update_id, None)
        journal = self._journal
        if journal is None:
            return True
        msg = update.message or update.edited_message
        channel = message_id = None
        if msg is not None:
            channel = str(ChannelKey("telegram", str(msg.chat.id), _thread_str(msg)))
            message_id = str(msg.message_id)
        return bool(await journal.delivered(
            "telegram", str(update.update_id), channel=channel, message_id=message_id,
            raw=update.to_json() if raw is None else json.dumps(raw, ensure_ascii=False)))

    async def _requeue_undelivered(self) -> None:
        """Updates stored (and acknowledged) by the last run but never handed over: queued
        again before polling starts, so they come before anything new."""
        journal = self._journal
        if journal is None:
            return
        raws = await journal.undelivered("telegram")
        for raw in raws:
            update = Update.de_json(json.loads(raw), self.app.bot)
            asyncio.Queue.put_nowait(self.update_queue, update)  # not stored again
        if raws:
            log.info("telegram: %d update(s) received before the restart are handled first",
                     len(raws))

    def replier_for(self, channel: ChannelKey, reply_to: str | None, *,
                    private: bool) -> TelegramReplier:
        """A replier for a stored message: chat, topic and reply target from the key."""
        return TelegramReplier(self, int(channel.chat_id),
                               int(channel.thread_id) if channel.thread_id else None,
                               int(reply_to) if reply_to else None, private)

    def attachment_reader(self, ref: str) -> Callable[[], Awaitable[bytes]]:
        """A stored file is read again by its file_id."""
        async def read() -> bytes:
            return await self._download(ref)

        return read

    def _rejected_token(self) -> StartupError:
        return StartupError(
            "Telegram rejected TELEGRAM_BOT_TOKEN (copy it again from @BotFather, or issue a "
            "new one there with /token)", exit_code=2)

    @property
    def connected(self) -> bool:
        """Receiving updates, or in send-only mode logged in to the Bot API (read by the
        health file behind `doctor --live`)."""
        if not self.receiving:
            return self._logged_in
        updater = self.app.updater
        return bool(self.app.running and updater is not None and updater.running)

    def _unreachable(self, e: TelegramError) -> StartupError:
        return StartupError(
            f"cannot reach the Telegram Bot API at {self._api_root} ({self._safe(e)}); check "
            "the network, a proxy, or TELEGRAM_API_URL", exit_code=1)

    async def stop(self) -> None:
        """Stop receiving, hand over the albums still gathering, finish queued updates, close.

        Safe after a failed or partial start, and when called twice.
        """
        self._logged_in = False
        try:
            updater = self.app.updater
            if updater is not None and updater.running:
                await updater.stop()  # polling: one last getUpdates confirms what we got
            if self.app.running:
                await self.app.stop()  # handles the updates already queued
            for key in list(self._albums):
                album = self._albums.pop(key)
                if album.task is not None:
                    album.task.cancel()
                if self._sink is not None:
                    try:
                        await self._deliver(sorted(album.messages, key=lambda m: m.message_id),
                                            _in_order(album))
                    except Exception:
                        log.exception("telegram: could not deliver an album at shutdown")
            await self.app.shutdown()
        finally:
            for request in (self._request, self._updates_request):
                await request.shutdown()  # also after a failed getMe (PTB skips them then)
            for name in _URL_LOGGERS:
                logging.getLogger(name).removeFilter(self._redact)

    async def _register_commands(self, sink: Sink) -> None:
        commands = [
            BotCommand(spec.name, (spec.description or spec.name)[:CAPABILITIES.max_description])
            for spec in sink.commands.for_platform(CAPABILITIES)
        ]
        try:
            await self.app.bot.set_my_commands(commands)
        except TelegramError as e:
            log.warning("telegram: could not register commands: %s", e)

    # ------------------------------------------------------------------ inbound

    async def _on_update(self, update: Update, _context: Any = None) -> None:
        """The one handler: every Update the Application dispatches comes through here."""
        receipt = str(update.update_id)
        try:
            msg = update.message
            if msg is None and update.edited_message is not None:
                await self._edited(update.edited_message, receipt)
                return
            if msg is None or not self._wanted(msg):
                await self._drop(receipt)
                return
            if msg.media_group_id:
                self._add_to_album(msg, receipt)
                return
            await self._deliver([msg], [receipt])
        except Exception:
            log.exception("telegram: could not handle update %s", update.update_id)

    async def _drop(self, receipt: str) -> None:
        journal = self._journal
        if journal is not None:
            await journal.dropped("telegram", [receipt])

    async def _edited(self, msg: Message, receipt: str) -> None:
        """An edited message goes to the router, which answers it in its new form if the
        original is still waiting and ignores it otherwise (see the README)."""
        edit = getattr(self._sink, "edit", None)
        if edit is None or msg.media_group_id or not self._wanted(msg):
            await self._drop(receipt)
            return
        inbound = self._inbound([msg])
        inbound.receipts = (receipt,)
        await edit(inbound)

    def _wanted(self, msg: Message) -> bool:
        """Drop service messages and bots (ourselves included); keep anonymous admins."""
        user = msg.from_user
        if user is None or user.id == self.bot_id:
            return False
        if user.is_bot and not _anonymous_admin(msg):
            return False
        return bool(msg.text or msg.caption or _media_of(msg) or _unusable(msg))

    def _add_to_album(self, msg: Message, receipt: str) -> None:
        key = (msg.chat.id, str(msg.media_group_id))
        album = self._albums.get(key)
        if album is None:
            album = self._albums[key] = _Album()
            album.task = asyncio.create_task(self._album_timer(key))
        album.messages.append(msg)
        album.receipts.append(receipt)
        album.last = time.monotonic()

    async def _album_timer(self, key: tuple[int, str]) -> None:
        wait = self.config.telegram.album_wait
        try:
            while True:
                album = self._albums[key]
                remaining = album.last + wait - time.monotonic()
                if remaining <= 0:
                    break
                await asyncio.sleep(remaining)
            album = self._albums.pop(key)
            await self._deliver(sorted(album.messages, key=lambda m: m.message_id),
                                _in_order(album))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("telegram: could not deliver an album")

    async def _deliver(self, messages: list[Message], receipts: list[str]) -> None:
        assert self._sink is not None
        inbound = self._inbound(messages)
        inbound.receipts = tuple(receipts)
        replier = TelegramReplier(self, messages[0].chat.id, _thread_of(messages[0]),
                                  messages[0].message_id, inbound.is_private)
        await self._sink.submit(inbound, replier)

    def _inbound(self, messages: list[Message]) -> Inbound:
        """One Inbound from a message (or an album's messages, oldest first)."""
        assert self._sink is not None
        first = messages[0]
        chat = first.chat
        user = first.from_user
        assert user is not None
        author = Author(str(user.id), _display_name(user), user.is_bot)
        if _anonymous_admin(first) and first.sender_chat is not None:
            # an admin posting "as the group": Telegram sends it from @GroupAnonymousBot
            author = Author(f"chat{first.sender_chat.id}",
                            first.sender_chat.title or "Group admin", False)
        carrier = next((m for m in messages if m.text or m.caption), first)
        text = carrier.text or carrier.caption or ""
        is_private = chat.type == "private"
        mentioned = self._mentions_us(carrier)
        text = self._strip_mention(text)
        reply = first.reply_to_message
        if reply is not None and reply.forum_topic_created is not None:
            reply = None  # a topic message "replies" to the topic's root: not a real reply
        replied_to_us = reply is not None and reply.from_user is not None and (
            reply.from_user.id == self.bot_id)
        command = self._sink.commands.parse(text, CAPABILITIES, self.bot_username)
        if command is not None and command.unknown and not is_private and not (
                self._targets_us(text)):
            command = None  # `/foo` in a group may well be another bot's command
        attachments = [a for m in messages for a in self._attachments(m)]
        return Inbound(
            id=str(first.message_id),
            channel=ChannelKey("telegram", str(chat.id), _thread_str(first)),
            author=author,
            text=text,
            attachments=attachments,
            reply_to=self._quoted(reply) if reply is not None else None,
            is_private=is_private,
            addressed=is_private or mentioned or replied_to_us or command is not None,
            command=command,
            language=user.language_code,
            unsupported=None if text or attachments else _unusable(first),
        )

    def _mentions_us(self, msg: Message) -> bool:
        if not self.bot_username:
            return False
        wanted = f"@{self.bot_username}".lower()
        kinds = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
        found = msg.parse_entities(kinds) if msg.text else msg.parse_caption_entities(kinds)
        for entity, value in found.items():
            if entity.type == MessageEntity.TEXT_MENTION:
                if entity.user is not None and entity.user.id == self.bot_id:
                    return True
            elif value.lower() == wanted:
                return True
        return False

    def _strip_mention(self, text: str) -> str:
        if not self.bot_username:
            return text
        pattern = rf"^\s*@{re.escape(self.bot_username)}\b[\s,:;]*"
        return re.sub(pattern, "", text, count=1, flags=re.IGNORECASE)

    def _targets_us(self, text: str) -> bool:
        m = re.match(r"^/\w+@(\w+)", text.strip())
        return bool(m and self.bot_username and m.group(1).lower() == self.bot_username.lower())

    def _quoted(self, reply: Message) -> Quoted:
        author = None
        if reply.from_user is not None:
            u = reply.from_user
            author = Author(str(u.id), _display_name(u), u.is_bot)
        return Quoted(
            id=str(reply.message_id),
            author=author,
            text=reply.text or reply.caption or "",
            attachments=tuple(self._attachments(reply)),
            from_self=reply.from_user is not None and reply.from_user.id == self.bot_id,
        )

    def _attachments(self, msg: Message) -> list[Attachment]:
        out: list[Attachment] = []
        if msg.photo:
            best = max(msg.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
            out.append(self._attachment("image", best.file_id, f"photo_{best.file_unique_id}.jpg",
                                        "image/jpeg", best.file_size))
        if msg.document:
            d = msg.document
            mime = d.mime_type or "application/octet-stream"
            kind: AttachmentKind = "image" if mime.startswith("image/") else "document"
            out.append(self._attachment(kind, d.file_id, d.file_name or "document", mime,
                                        d.file_size))
        if msg.voice:
            v = msg.voice
            out.append(self._attachment("voice", v.file_id, "voice.ogg",
                                        v.mime_type or "audio/ogg", v.file_size,
                                        _duration(v)))
        if msg.audio:
            a = msg.audio
            out.append(self._attachment("audio", a.file_id, a.file_name or "audio.mp3",
                                        a.mime_type or "audio/mpeg", a.file_size,
                                        _duration(a)))
        if msg.video_note:
            n = msg.video_note
            note = self._attachment("video", n.file_id, "video_note.mp4", "video/mp4",
                                    n.file_size, _duration(n))
            note.voice_note = True
            out.append(note)
        if msg.video:
            vd = msg.video
            out.append(self._attachment("video", vd.file_id, vd.file_name or "video.mp4",
                                        vd.mime_type or "video/mp4", vd.file_size,
                                        _duration(vd)))
        return out

    def _attachment(self, kind: AttachmentKind, file_id: str, filename: str, mime: str,
                    size: int | None, duration: float | None = None) -> Attachment:
        async def read() -> bytes:
            return await self._download(file_id)

        return Attachment(kind=kind, filename=filename, mime=mime, size=size, reader=read,
                          duration=duration, max_size=MAX_DOWNLOAD, ref=file_id)

    async def _download(self, file_id: str) -> bytes:
        """getFile + download; errors are re-raised without the token-bearing URL."""
        try:
            tg_file = await self.app.bot.get_file(file_id)
            data = await tg_file.download_as_bytearray()
        except BadRequest as e:
            if "too big" in e.message.lower():
                raise UserError("That file is too large for a Telegram bot to download "
                                "(the limit is 20 MB).") from None
            log.warning("telegram: download failed: %s", self._safe(e))
            raise UserError("I couldn't download that file from Telegram.") from None
        except TelegramError as e:
            log.warning("telegram: download failed: %s", self._safe(e))
            raise UserError("I couldn't download that file from Telegram.") from None
        return bytes(data)

    def _safe(self, e: BaseException) -> str:
        return self._redact.mask(f"{type(e).__name__}: {e}")


def _media_of(msg: Message) -> bool:
    return bool(msg.photo or msg.document or msg.voice or msg.audio or msg.video_note
                or msg.video)


def _unusable(msg: Message) -> str | None:
    """What a message is when it carries nothing the bot can read or hear."""
    if msg.sticker:
        return "stickers"
    if msg.location or msg.venue:
        return "locations"
    if msg.contact:
        return "contacts"
    return None


def _in_order(album: _Album) -> list[str]:
    """An album's update ids, the first message's first (it carries the album)."""
    first = min(range(len(album.messages)), key=lambda i: album.messages[i].message_id)
    return [album.receipts[first]] + [r for i, r in enumerate(album.receipts) if i != first]


def _thread_of(msg: Message) -> int | None:
    return msg.message_thread_id if msg.is_topic_message else None


def _thread_str(msg: Message) -> str | None:
    thread = _thread_of(msg)
    return str(thread) if thread is not None else None


def _duration(media: Any) -> float | None:
    """A media duration in seconds (PTB 22 warns when reading it as an int)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = media.duration
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


__all__ = ["CAPABILITIES", "SendLimiter", "TelegramAdapter", "TelegramReplier"]
