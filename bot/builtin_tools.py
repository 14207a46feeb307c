"""The built-in tools; `[tools] enabled` picks which ones the model is offered.

Each is a plain async function: its signature is the schema, its docstring the
description the model reads (bot/tools.py builds both). A `Context` parameter is filled
in with the message being answered and is not shown to the model.
"""

from __future__ import annotations

import ast
import asyncio
import html
import ipaddress
import logging
import math
import operator
import re
import socket
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot import memory as memory_mod
from bot.context import Context
from bot.errors import UserError
from bot.tools import ToolError, ToolFn, status

if TYPE_CHECKING:
    from bot.media import PreparedImage

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- current_time


@status("checking the time…")
async def current_time(timezone: str | None = None) -> str:
    """The current date, time and weekday.

    Args:
        timezone: IANA time zone name such as "Europe/Berlin" or "America/New_York";
            null for UTC.
    """
    name = (timezone or "UTC").strip() or "UTC"
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(f"unknown time zone {name!r}; use an IANA name like "
                        "Europe/Berlin") from None
    now = datetime.now(zone)
    offset = now.strftime("%z")
    return (f"{now:%Y-%m-%d %H:%M:%S} {now.tzname()} (UTC{offset[:3]}:{offset[3:]}), "
            f"{now:%A}, time zone {name}")


# --------------------------------------------------------------------------- calculate

MAX_EXPRESSION = 1000
MAX_BITS = 40_000  # ~12,000 decimal digits
MAX_FACTORIAL = 3000

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


def _factorial(n: Any) -> int:
    if not isinstance(n, int) or n < 0:
        raise ToolError("factorial takes a non-negative whole number")
    if n > MAX_FACTORIAL:
        raise ToolError(f"factorial is limited to n <= {MAX_FACTORIAL}")
    return math.factorial(n)


def _log(x: Any, base: Any = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


def _capped_int(fn: Callable[..., int], limit: int = 100_000) -> Callable[..., int]:
    def call(*args: Any) -> int:
        if any(isinstance(a, int) and abs(a) > limit for a in args):
            raise ToolError(f"arguments are limited to {limit}")
        return fn(*args)
    return call


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt, "cbrt": lambda x: math.copysign(abs(x) ** (1 / 3), x),
    "exp": math.exp, "log": _log, "ln": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "atan2": math.atan2, "sinh": math.sinh, "cosh": math.cosh,
    "tanh": math.tanh, "degrees": math.degrees, "radians": math.radians,
    "hypot": math.hypot, "floor": math.floor, "ceil": math.ceil, "trunc": math.trunc,
    "abs": abs, "round": round, "min": min, "max": max, "factorial": _factorial,
    "gcd": math.gcd, "lcm": math.lcm, "comb": _capped_int(math.comb),
    "perm": _capped_int(math.perm), "isqrt": math.isqrt,
}


def _bits(value: Any) -> int:
    return value.bit_length() if isinstance(value, int) else 0


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise ToolError(f"the result is too large (over {MAX_BITS * 3 // 10:,} digits)")
    return value


def _pow(base: Any, exp: Any) -> Any:
    # refuse before computing: 9**9**9 would otherwise run for minutes
    if isinstance(exp, int) and isinstance(base, int | float) and abs(base) > 1 and (
            abs(exp) > MAX_BITS * 4 or (exp > 0 and exp * math.log2(abs(base)) > MAX_BITS)):
        raise ToolError("the result is too large (exponent too big)")
    if isinstance(exp, float) and isinstance(base, int) and abs(base) > 1 and (
            exp * math.log2(abs(base)) > 1100):
        raise ToolError("the result is too large for a floating-point number")
    result = operator.pow(base, exp)
    if isinstance(result, complex):
        raise ToolError("the result is not a real number")
    return result


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError("only numbers are allowed")
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.BitXor):
            raise ToolError("use ** for powers (^ is not a power here)")
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise ToolError(f"operator {type(node.op).__name__} is not allowed")
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_pow(left, right))
        if isinstance(node.op, ast.Mult) and _bits(left) + _bits(right) > MAX_BITS + 64:
            raise ToolError("the result is too large")
        return _check_size(op(left, right))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise ToolError(f"unknown name {node.id!r}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else "?"
            raise ToolError(f"unknown function {name!r}; known: {', '.join(sorted(_FUNCTIONS))}")
        if node.keywords:
            raise ToolError("keyword arguments are not allowed")
        args = [_eval(a) for a in node.args]
        return _check_size(_FUNCTIONS[node.func.id](*args))
    raise ToolError(f"{type(node).__name__} is not allowed in a calculation")


def evaluate(expression: str) -> int | float:
    """Evaluate an arithmetic expression without eval/exec (see calculate)."""
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("−", "-")
    if not text:
        raise ToolError("empty expression")
    if len(text) > MAX_EXPRESSION:
        raise ToolError(f"the expression is too long (limit {MAX_EXPRESSION} characters)")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ToolError(f"not a valid expression ({e.msg})") from None
    try:
        return _eval(tree)  # type: ignore[no-any-return]
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large for a floating-point number") from None
    except (ValueError, TypeError) as e:
        raise ToolError(f"math error: {e}") from None


def format_number(value: int | float) -> str:
    """Integers exactly, floats to 15 significant digits."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".15g")
    return str(value)


@status("calculating…")
async def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly: + - * / // % ** and parentheses, whole
    numbers of any size (within a limit), and math functions (sqrt, exp, log(x[, base]),
    ln, log10, log2, sin, cos, tan, asin, acos, atan, atan2, sinh, cosh, tanh, degrees,
    radians, hypot, floor, ceil, trunc, abs, round, min, max, factorial, gcd, lcm, comb,
    perm, isqrt) and constants pi, e, tau. Use it for any arithmetic instead of guessing.

    Args:
        expression: The expression, e.g. "2**100 % 97" or "sqrt(2) * sin(pi/4)".
    """
    return format_number(await asyncio.to_thread(evaluate, expression))


# --------------------------------------------------------------------------- draw


@status("drawing…")
async def draw(ctx: Context, prompt: str,
               size: Literal["square", "landscape", "portrait"] | None = None) -> str:
    """Draw a picture with the image model and send it to the chat. Call it when the user
    asks for a picture; afterwards just say briefly what was drawn.

    Args:
        prompt: A detailed description of the picture.
        size: The picture's shape; null lets the model choose.
    """
    from bot.replies import OutFile
    from handlers.images import resolve_draw

    model = ctx.config.models.image
    args: dict[str, Any] = {"prompt": prompt}
    if size:
        args["size"] = size
    try:
        req = resolve_draw(model, args, ctx.config.images)
        result = await ctx.ai.generate_images(model, req.prompt, size=req.size,
                                              quality=req.quality, n=1)
    except UserError as e:
        raise ToolError(e.message) from None
    image = result.images[0]
    ext = {"image/jpeg": "jpg", "image/webp": "webp"}.get(image.mime, "png")
    sent = await ctx.reply.send_file(OutFile(image.data, f"image.{ext}", image.mime,
                                             kind="image"))
    try:
        from bot.media import prepare_image_async

        copy = await prepare_image_async(image.data, "high")
        pending = DRAWN.get()
        if pending is not None:  # kept with the answer's turn once it is stored
            pending.append(DrawnImage(copy, sent.id))
        else:
            await keep_drawn(ctx, [DrawnImage(copy, sent.id)], None)
    except Exception:
        log.exception("a drawn image could not be kept in %s", ctx.channel)
    note = f" The image model revised the prompt to: {image.revised_prompt}" if (
        image.revised_prompt) else ""
    return f"The picture was drawn and is already shown in the chat.{note}"


draw.tool_timeout = 180.0  # type: ignore[attr-defined]  # image models take their time


@dataclass(frozen=True, slots=True)
class DrawnImage:
    """A picture the draw tool sent, waiting for the turn it belongs to."""

    copy: PreparedImage
    message_id: str | None


# Set by the chat handler around an answer: pictures drawn by tools wait here, so that they
# are kept with the answer's assistant turn and follow-ups see them like a /draw picture.
DRAWN: ContextVar[list[DrawnImage] | None] = ContextVar("drawn_images", default=None)


async def keep_drawn(ctx: Context, drawn: list[DrawnImage], turn_id: int | None) -> None:
    """Keep drawn pictures for follow-ups (and /edit), tied to a turn when there is one."""
    for d in drawn:
        try:
            await ctx.store.add_image(ctx.channel, d.copy.data, d.copy.mime, d.copy.width,
                                      d.copy.height, d.copy.tokens, turn_id=turn_id,
                                      message_id=d.message_id, source="generated",
                                      keep=ctx.config.vision.keep_images)
        except Exception:
            log.exception("a drawn image could not be kept in %s", ctx.channel)


# --------------------------------------------------------------------------- memory


@status("taking a note…")
async def remember(ctx: Context, note: str) -> str:
    """Save a note in this chat's long-term memory (facts, preferences, decisions) so it
    can be recalled weeks later.

    Args:
        note: The note, self-contained (who, what, when).
    """
    note = " ".join(note.split())
    if not note:
        raise ToolError("the note is empty")
    mem = memory_mod.of(ctx)
    if mem is None or not mem.active:
        raise ToolError(f"memory is not available here ({_off_reason(ctx)})")
    text = f"[note] {note[:2000]}"
    await ctx.store.append_turn(ctx.channel, "assistant", text, ctx.ai.tokenizer.count(text),
                                addressed=False)
    mem.notify()
    return "Noted; it is saved in this chat's memory."


@status("searching memory…")
async def recall(ctx: Context, query: str) -> str:
    """Search this chat's long-term memory (every earlier message and note) for what
    relates to a query; returns the best matches with date and speaker.

    Args:
        query: What to look for, in words.
    """
    mem = memory_mod.of(ctx)
    if mem is None or not mem.active:
        raise ToolError(f"memory is not available here ({_off_reason(ctx)})")
    hits = await mem.search(ctx.channel, query, k=ctx.config.memory.search_results,
                            timeout=ctx.config.openai.timeout)
    if hits is None:
        raise ToolError("the memory search service is unavailable right now")
    if not hits:
        return "Nothing in this chat's memory matches."
    return "\n".join(f"[{memory_mod.label(h)}] {memory_mod.snippet(h.content, 600)}"
                     for h in hits)


def _off_reason(ctx: Context) -> str:
    mem = memory_mod.of(ctx)
    return mem.off_reason if mem is not None and mem.off_reason else "memory is off"


# --------------------------------------------------------------------------- fetch_url

MAX_REDIRECTS = 5
TEXT_LIMIT = 12_000
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml",
               "application/ld+json", "application/rss+xml", "application/atom+xml")


def address_allowed(ip: str, *, allow_loopback: bool = False) -> bool:
    """Public addresses only: loopback, private, link-local (cloud metadata at
    169.254.169.254), CGNAT, multicast and reserved ranges are refused."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return allow_loopback
    return addr.is_global and not addr.is_multicast


async def resolve_checked(host: str, port: int, *, allow_loopback: bool) -> list[str]:
    """Resolve a host and refuse it if ANY of its addresses is not public (a name that
    also points inside must not be reachable by racing the resolver)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        addresses = [host.strip("[]")]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise ToolError(f"cannot resolve {host}: {e.strerror or e}") from None
        addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise ToolError(f"cannot resolve {host}")
    for a in addresses:
        if not address_allowed(a, allow_loopback=allow_loopback):
            raise ToolError(f"refused: {host} resolves to a non-public address ({a})")
    return addresses


class _Text(HTMLParser):
    """Readable text of an HTML page: no scripts, styles or markup; block tags break lines."""

    SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
             "article", "header", "footer", "pre", "blockquote", "table", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self.SKIP:
            self._skip += 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        elif tag in self.BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if not self._skip:
            self.parts.append(data)


def readable_text(body: bytes, content_type: str, charset: str | None) -> str:
    """A page's text for the model (HTML stripped, whitespace folded)."""
    text = body.decode(charset or "utf-8", errors="replace")
    if "html" in content_type or (not content_type and "<html" in text[:1000].lower()):
        parser = _Text()
        parser.feed(text)
        parser.close()
        text = "".join(parser.parts)
        title = " ".join(parser.title.split())
        if title:
            text = f"{title}\n\n{text}"
    lines = [" ".join(line.split()) for line in html.unescape(text).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return text


@status("reading the page…")
async def fetch_url(ctx: Context, url: str) -> str:
    """Fetch a public web page (http or https) and return its readable text.

    Args:
        url: The full address, starting with http:// or https://.
    """
    import aiohttp

    cfg = ctx.config.tools
    limit = int(cfg.fetch_max_mb * 1024 * 1024)
    deadline = time.monotonic() + cfg.fetch_timeout
    current = url.strip()
    connector = aiohttp.TCPConnector(resolver=_CheckedResolver(cfg.fetch_allow_loopback),
                                     use_dns_cache=False, force_close=True)
    timeout = aiohttp.ClientTimeout(total=cfg.fetch_timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     trust_env=False) as session:
        for _hop in range(MAX_REDIRECTS + 1):
            parts = urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ToolError("only http:// and https:// addresses can be fetched")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ToolError(f"the page took longer than {cfg.fetch_timeout:g} s")
            await resolve_checked(parts.hostname, port,
                                  allow_loopback=cfg.fetch_allow_loopback)
            try:
                async with session.get(current, allow_redirects=False,
                                       headers={"User-Agent": "gptbot-fetch/1.0",
                                                "Accept": "text/html,text/plain,*/*;q=0.5"},
                                       timeout=aiohttp.ClientTimeout(total=remaining)) as r:
                    if r.status in (301, 302, 303, 307, 308):
                        location = r.headers.get("Location")
                        if not location:
                            raise ToolError(f"redirect without a Location (HTTP {r.status})")
                        current = urljoin(current, location)
                        continue
                    if r.status >= 400:
                        raise ToolError(f"the server answered HTTP {r.status} {r.reason}")
                    ctype = r.content_type or ""
                    if ctype and not ctype.startswith(_TEXT_TYPES):
                        raise ToolError(f"not a text page ({ctype})")
                    # a larger page is read up to the limit and marked as truncated
                    body = b""
                    async for chunk in r.content.iter_chunked(64 * 1024):
                        body += chunk
                        if len(body) > limit:
                            break
                    truncated = len(body) > limit
                    text = readable_text(body[:limit], ctype, r.charset)
            except TimeoutError:
                raise ToolError(f"the page took longer than {cfg.fetch_timeout:g} s") from None
            except aiohttp.ClientError as e:
                raise ToolError(f"could not fetch the page ({type(e).__name__})") from None
            if not text:
                return f"{current}: the page has no readable text."
            if len(text) > TEXT_LIMIT:
                text, truncated = text[:TEXT_LIMIT], True
            note = "\n[…truncated]" if truncated else ""
            return f"{current}\n\n{text}{note}"
    raise ToolError(f"too many redirects (more than {MAX_REDIRECTS})")


class _CheckedResolver:
    """aiohttp resolver that connects only to checked addresses: the check and the
    connection use the same resolution, so DNS rebinding cannot slip in between."""

    def __init__(self, allow_loopback: bool) -> None:
        self.allow_loopback = allow_loopback

    async def resolve(self, host: str, port: int = 0,
                      family: int = socket.AF_INET) -> list[dict[str, Any]]:
        addresses = await resolve_checked(host, port, allow_loopback=self.allow_loopback)
        out = []
        for a in addresses:
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            out.append({"hostname": host, "host": a, "port": port, "family": fam,
                        "proto": 0, "flags": socket.AI_NUMERICHOST})
        return out

    async def close(self) -> None:
        """Nothing to release."""


BUILTINS: dict[str, ToolFn] = {
    "current_time": current_time,
    "calculate": calculate,
    "draw": draw,
    "remember": remember,
    "recall": recall,
    "fetch_url": fetch_url,
}
