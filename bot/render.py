"""Markdown -> Telegram HTML / Discord Markdown / plain text (splitting is bot/split.py).

The model answers in GitHub-flavoured Markdown; adapters call these pure functions on every
streamed edit, so they are linear-time and tolerate partial text: an unclosed fence is closed,
unclosed inline markers (``**``, `` ` ``, ``[text](ur``) stay literal text. Inline Markdown is
parsed one line at a time (emphasis never spans a line break) with a simplified CommonMark
delimiter algorithm (flanking rules, no "rule of 3"), which always yields properly nested tags.
Rendered lines are memoised, so re-rendering a growing text costs about one line's work.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = [
    "closes_fence",
    "discord_len",
    "fence_open",
    "may_have_fence",
    "open_fence",
    "to_discord",
    "to_plain",
    "to_telegram_html",
    "utf16_len",
]

# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_LINK_SCHEMES = ("http://", "https://", "tg://", "mailto:")
_FENCE_OPEN = re.compile(r"([ \t]*)(`{3,}|~{3,})[ \t]*([^\s`]*)([^\n]*)")
_FENCE_CLOSE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*\r?")
_LANG_OK = re.compile(r"[\w+#.-]{1,40}")


def utf16_len(s: str) -> int:
    """Length in UTF-16 code units: what Telegram counts against its 4096 limit."""
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def discord_len(s: str) -> int:
    """Length of `s` once to_discord has neutralised mass mentions (a split measure)."""
    if "@" not in s:
        return len(s)
    return len(s) + s.count("@everyone") + s.count("@here")


def _esc(s: str) -> str:
    """Escape text for Telegram HTML (only <, > and & are special outside attributes)."""
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    return s


def _esc_attr(s: str) -> str:
    """Escape an attribute value for Telegram HTML."""
    return _esc(s).replace('"', "&quot;")


def _same(s: str) -> str:
    """Identity escaper for plain-text output."""
    return s


def _is_punct(c: str) -> bool:
    """CommonMark punctuation: ASCII punctuation or a Unicode P*/S* character."""
    if c in _ASCII_PUNCT:
        return True
    return c > "\x7f" and unicodedata.category(c)[0] in "PS"


def open_fence(line: str) -> tuple[int, str, str] | None:
    """(indent, fence marker, language) when `line` opens a fenced code block."""
    if "``" not in line and "~~" not in line:
        return None
    m = _FENCE_OPEN.fullmatch(line.rstrip("\r"))
    if m is None:
        return None
    marker = m.group(2)
    if marker[0] == "`" and "`" in m.group(4):
        return None  # ```code``` on one line is inline code, not a fence
    return len(m.group(1).expandtabs(4)), marker, m.group(3)


def closes_fence(line: str, marker: str) -> bool:
    """True when `line` closes a fence opened with `marker` (same char, at least as long)."""
    m = _FENCE_CLOSE.fullmatch(line)
    return m is not None and m.group(1)[0] == marker[0] and len(m.group(1)) >= len(marker)


def _dedent(line: str, indent: int) -> str:
    """Remove up to `indent` leading spaces (the opening fence's own indentation)."""
    if not indent or not line.startswith((" ", "\t")):
        return line
    body = line.lstrip(" \t")
    return line[min(indent, len(line) - len(body)):]


def may_have_fence(md: str) -> bool:
    """Cheap pre-check: could this text contain a fence at all?"""
    return "```" in md or "~~~" in md


def _open_marker_at_end(md: str) -> tuple[str, str] | None:
    """(indent, marker) of the fence the text ends inside, or None."""
    if not may_have_fence(md):
        return None
    marker = ""
    indent = ""
    for line in md.split("\n"):
        if marker:
            if closes_fence(line, marker):
                marker = ""
        else:
            f = open_fence(line)
            if f is not None:
                marker = f[1]
                indent = line[: len(line) - len(line.lstrip(" \t"))]
    return (indent, marker) if marker else None


def fence_open(md: str) -> bool:
    """True when the text ends inside an unclosed fenced code block (partial stream)."""
    return _open_marker_at_end(md) is not None


# ---------------------------------------------------------------------------------------------
# Inline Markdown
# ---------------------------------------------------------------------------------------------

_INLINE_SPECIAL = re.compile(r"[\\`*_~|\[<!:]")  # a bare class: scans at C speed
_AUTOLINK = re.compile(r"<((?:https?|tg)://[^\s<>]+|mailto:[^\s<>]+)>")
_BARE_URL = re.compile(r"(?:https?|tg)://[^\s<>\[\]`]+")
_URL_TRAIL = ".,;:!?*_~|'\")"
_LINK_DEST = re.compile(r"<[^\n<>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*")
_LINK_TAIL = re.compile(r"[ \t]*(?:\"[^\"\n]*\"|'[^'\n]*')?[ \t]*\)")
_URL_MAX = 4096

_TAGS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    # char -> (single-char tags, double-char tags)
    "*": (("<i>", "</i>"), ("<b>", "</b>")),
    "_": (("<i>", "</i>"), ("<b>", "</b>")),
    "~": (("<s>", "</s>"), ("<s>", "</s>")),
    "|": (("<tg-spoiler>", "</tg-spoiler>"), ("<tg-spoiler>", "</tg-spoiler>")),
}


class _Run:
    """A run of delimiter characters; matched pairs collect tags, the rest stays literal."""

    __slots__ = ("ch", "closes", "count", "opens", "pos")

    def __init__(self, ch: str, count: int, pos: int) -> None:
        self.ch = ch
        self.count = count
        self.pos = pos
        self.opens: list[str] = []
        self.closes: list[str] = []

    def render(self) -> str:
        """Closing tags, leftover literal characters, then opening tags (outermost first)."""
        opens = "".join(reversed(self.opens)) if self.opens else ""
        return "".join(self.closes) + self.ch * self.count + opens


_ROLE: dict[str, int] = {}  # prev + marker + next -> 1 can open | 2 can close


def _flanking(key: str) -> int:
    """CommonMark left/right-flanking rules for a delimiter run (memoised in _ROLE)."""
    prev, c, nxt = key
    if c in "_*" and prev.isalnum() and nxt.isalnum() and (
        c == "_" or prev.isdigit() or nxt.isdigit()
    ):
        role = 0  # snake_case_word, 2*3*4: never emphasis
    else:
        p_space, n_space = prev.isspace(), nxt.isspace()
        p_punct, n_punct = _is_punct(prev), _is_punct(nxt)
        left = not n_space and (not n_punct or p_space or p_punct)
        right = not p_space and (not p_punct or n_space or n_punct)
        if c == "_":
            role = (left and (not right or p_punct)) | (right and (not left or n_punct)) << 1
        else:
            role = left | right << 1
    if len(_ROLE) > 20000:
        _ROLE.clear()
    _ROLE[key] = role
    return role


def _match(closer: _Run, stacks: dict[str, list[_Run]], html: bool) -> None:
    """Pair a closing run with the nearest openers of its kind; openers in between go literal."""
    st = stacks[closer.ch]
    while closer.count and st:
        opener = st[-1]
        for other in stacks.values():
            if other is not st:
                while other and other[-1].pos > opener.pos:
                    other.pop()
        k = 2 if closer.count >= 2 and opener.count >= 2 else 1
        if html:
            tag_open, tag_close = _TAGS[closer.ch][k - 1]
            opener.opens.append(tag_open)
            closer.closes.append(tag_close)
        else:
            opener.opens.append("")
        opener.count -= k
        closer.count -= k
        if not opener.count:
            st.pop()


def _inline(s: str, html: bool, links: bool = True, code: bool = True) -> str:
    """Render one line of inline Markdown; `links`/`code` off inside link text."""
    esc = _esc if html else _same
    if _INLINE_SPECIAL.search(s) is None:
        return esc(s)
    out: list[str | _Run] = []
    stacks: dict[str, list[_Run]] = {"*": [], "_": [], "~": [], "|": []}
    n = len(s)
    i = 0  # everything before i has been emitted
    tick_fail: dict[int, int] = {}  # backtick run length -> start from which no closer exists
    next_bracket = -1  # cached index of the next "]" (n when there is none)
    search = _INLINE_SPECIAL.search
    m = search(s, 0)
    while m is not None:
        j = m.start()
        c = s[j]
        if c in "*_~|":  # the common case first
            if j > i:
                out.append(esc(s[i:j]))
            k = j + 1
            while k < n and s[k] == c:
                k += 1
            i = k
            if c in "~|" and k - j != 2:
                out.append(s[j:k])
            else:
                key = (s[j - 1] if j else " ") + c + (s[k] if k < n else " ")
                role = _ROLE.get(key)
                if role is None:
                    role = _flanking(key)
                if not role:
                    out.append(s[j:k])
                else:
                    run = _Run(c, k - j, j)
                    out.append(run)
                    if role & 2 and stacks[c]:
                        _match(run, stacks, html)
                    if role & 1 and run.count:
                        stacks[c].append(run)
            m = search(s, i)
            continue
        if c == ":":  # a bare URL? keep it intact so its underscores never become emphasis
            url = ""
            k = j
            if s.startswith("//", j + 1):
                while k > i and k > j - 5 and s[k - 1].isalpha():
                    k -= 1
                if s[k:j].lower() in ("http", "https", "tg"):
                    um = _BARE_URL.match(s, k)
                    url = um.group(0).rstrip(_URL_TRAIL) if um else ""
            if len(url) <= j + 3 - k:
                m = search(s, j + 1)
                continue
            j = k
        elif c == "!" and not s.startswith("[", j + 1):
            m = search(s, j + 1)
            continue
        if j > i:
            out.append(esc(s[i:j]))
        i = j + 1
        if c == "\\":
            if j + 1 < n and s[j + 1] in _ASCII_PUNCT:
                out.append(esc(s[j + 1]))
                i = j + 2
            else:
                out.append("\\")
        elif c == "`":
            k = j + 1
            while k < n and s[k] == "`":
                k += 1
            size = k - j
            end = _find_tick_closer(s, k, size, tick_fail)
            if end < 0:
                out.append(s[j:k])
                i = k
            else:
                content = s[k:end]
                if len(content) > 2 and content[0] == " " == content[-1] and content.strip():
                    content = content[1:-1]
                if html and code:
                    out.append("<code>" + _esc(content) + "</code>")
                else:
                    out.append(esc(content))
                i = end + size
        elif c in "![":
            start = j + 1 if c == "!" else j
            link = None
            if links:
                if next_bracket < start:
                    next_bracket = s.find("]", start + 1)
                    if next_bracket < 0:
                        next_bracket = n
                link = _parse_link(s, start, next_bracket)
            if link is None:
                out.append(c)
            else:
                text, url, end = link
                out.append(_render_link(text, url, html))
                i = end
        elif c == "<":
            am = _AUTOLINK.match(s, j)
            if am is None:
                out.append(esc("<"))
            else:
                url = am.group(1)
                out.append(_render_link(url, url, html))
                i = am.end()
        else:  # ":" of a bare URL, found above
            out.append(esc(url))
            i = j + len(url)
        m = search(s, i)
    if i < n:
        out.append(esc(s[i:]))
    return "".join([p if p.__class__ is str else p.render() for p in out])  # type: ignore[union-attr]


def _find_tick_closer(s: str, start: int, size: int, fail: dict[int, int]) -> int:
    """Index of the next backtick run of exactly `size` at or after `start`, or -1."""
    known = fail.get(size)
    if known is not None and start >= known:
        return -1
    needle = "`" * size
    n = len(s)
    j = s.find(needle, start)
    while j >= 0:
        e = j + size
        if e >= n or s[e] != "`":
            return j
        while e < n and s[e] == "`":
            e += 1
        j = s.find(needle, e)
    fail[size] = start
    return -1


def _parse_link(s: str, start: int, close: int) -> tuple[str, str, int] | None:
    """(text, url, end) for `[text](url "title")` at `start`, or None when incomplete."""
    n = len(s)
    if close >= n - 1 or s[close + 1] != "(" or s.find("[", start + 1, close) >= 0:
        return None
    d = _LINK_DEST.match(s, close + 2)
    if d is None or d.end() - d.start() > _URL_MAX:
        return None
    t = _LINK_TAIL.match(s, d.end())
    if t is None:
        return None
    url = d.group(0)
    if url.startswith("<"):
        url = url[1:-1]
    return s[start + 1 : close], url, t.end()


def _render_link(text: str, url: str, html: bool) -> str:
    """One link: <a href> for safe schemes in HTML, "text (url)" in plain text."""
    label = _inline(text, html, links=False, code=False) if text else ""
    if not label.strip():
        label = _esc(url) if html else url
    if not html:
        if not url or text == url:
            return label
        return f"{label} ({url})"
    if url.lower().startswith(_LINK_SCHEMES):
        return f'<a href="{_esc_attr(url)}">{label}</a>'
    return label


# ---------------------------------------------------------------------------------------------
# Block Markdown
# ---------------------------------------------------------------------------------------------

_HEADING = re.compile(r"[ \t]{0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_HRULE = re.compile(r"[ \t]{0,3}([-*_])[ \t]*(?:\1[ \t]*){2,}")
_BULLET = re.compile(r"([ \t]*)[-*+][ \t]+(\[[ xX]\][ \t]+)?")
_QUOTE = re.compile(r"[ \t]{0,3}(?:>[ \t]?)+")


@lru_cache(maxsize=4096)
def _render_line(line: str, html: bool) -> str:
    """One non-code line: heading, rule, bullet or paragraph text (cached: streaming re-renders
    the same lines on every edit)."""
    if not line:
        return line
    first = line.lstrip(" \t")[:1]
    if first == "#":
        h = _HEADING.fullmatch(line)
        if h is not None:
            text = _inline(h.group(2) or "", html)
            if not text.strip():
                return ""
            if not html:
                return text
            if "<b>" in text:  # already bold: drop the redundant inner pairs
                text = text.replace("<b>", "").replace("</b>", "")
            return f"<b>{text}</b>"
    elif first in "-*+_":
        if first != "+" and _HRULE.fullmatch(line):
            return "———"
        if first != "_":
            b = _BULLET.match(line)
            if b is not None:
                box = b.group(2)
                mark = "• " if box is None else ("☐ " if box[1] == " " else "☑ ")
                return b.group(1) + mark + _inline(line[b.end():], html)
    return _inline(line, html)


def _code_block(lines: list[str], lang: str, html: bool) -> str:
    """A fenced block's content as <pre> (HTML) or verbatim (plain); empty renders nothing."""
    body = "\n".join(lines)
    if not body.strip():
        return ""
    if not html:
        return body
    if lang and _LANG_OK.fullmatch(lang):
        return f'<pre><code class="language-{_esc_attr(lang)}">{_esc(body)}</code></pre>'
    return f"<pre>{_esc(body)}</pre>"


def _render(md: str, html: bool) -> str:
    """Shared block pass of to_telegram_html and to_plain."""
    if "\r" in md:
        md = md.replace("\r\n", "\n")
    out: list[str] = []
    quote: list[str] = []
    code: list[str] = []
    marker = ""  # the open fence's marker, "" outside code
    lang = ""
    indent = 0

    def flush_quote() -> None:
        if not quote:
            return
        body = "\n".join(quote)
        if html and body.strip():
            body = f"<blockquote>{body}</blockquote>"
        out.append(body)
        quote.clear()

    for line in md.split("\n"):
        if marker:
            if closes_fence(line, marker):
                out.append(_code_block(code, lang, html))
                code.clear()
                marker = ""
            else:
                code.append(_dedent(line, indent))
            continue
        first = line.lstrip(" \t")[:1]
        if first in "`~" and first:
            f = open_fence(line)
            if f is not None:
                flush_quote()
                indent, marker, lang = f
                continue
        elif first == ">":
            q = _QUOTE.match(line)
            if q is not None:
                text = _render_line(line[q.end():], html)
                quote.append(text if html else "> " + text)
                continue
        flush_quote()
        out.append(_render_line(line, html))
    flush_quote()
    if marker:
        out.append(_code_block(code, lang, html))
    return "\n".join(out)


def to_telegram_html(md: str) -> str:
    """Markdown -> Telegram HTML parse mode; always well-formed, even for partial text."""
    return _render(md, html=True)


def to_plain(md: str) -> str:
    """Markdown -> readable plain text (terminal, or Telegram's fallback without entities)."""
    return _render(md, html=False)


_MASS_MENTION = re.compile(r"@(everyone|here)")


def to_discord(md: str) -> str:
    """Markdown -> Discord: close an unclosed fence, neutralise @everyone / @here."""
    if "@" in md:
        md = _MASS_MENTION.sub("@\u200b\\1", md)
    tail = _open_marker_at_end(md)
    if tail is not None:
        md += ("" if md.endswith("\n") else "\n") + tail[0] + tail[1]
    return md
