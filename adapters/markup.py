"""Markdown -> Telegram HTML / Discord Markdown / plain text, and splitting at platform limits.

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
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

__all__ = [
    "discord_len",
    "fence_open",
    "split_markdown",
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


def _open_fence(line: str) -> tuple[int, str, str] | None:
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


def _closes_fence(line: str, marker: str) -> bool:
    """True when `line` closes a fence opened with `marker` (same char, at least as long)."""
    m = _FENCE_CLOSE.fullmatch(line)
    return m is not None and m.group(1)[0] == marker[0] and len(m.group(1)) >= len(marker)


def _dedent(line: str, indent: int) -> str:
    """Remove up to `indent` leading spaces (the opening fence's own indentation)."""
    if not indent or not line.startswith((" ", "\t")):
        return line
    body = line.lstrip(" \t")
    return line[min(indent, len(line) - len(body)):]


def _has_fence_chars(md: str) -> bool:
    """Cheap pre-check: could this text contain a fence at all?"""
    return "```" in md or "~~~" in md


def _open_marker_at_end(md: str) -> tuple[str, str] | None:
    """(indent, marker) of the fence the text ends inside, or None."""
    if not _has_fence_chars(md):
        return None
    marker = ""
    indent = ""
    for line in md.split("\n"):
        if marker:
            if _closes_fence(line, marker):
                marker = ""
        else:
            f = _open_fence(line)
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
                out.append(_render_link(text, url, html, image=c == "!"))
                i = end
        elif c == "<":
            am = _AUTOLINK.match(s, j)
            if am is None:
                out.append(esc("<"))
            else:
                url = am.group(1)
                out.append(_render_link(url, url, html, image=False))
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


def _render_link(text: str, url: str, html: bool, image: bool) -> str:
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
            if _closes_fence(line, marker):
                out.append(_code_block(code, lang, html))
                code.clear()
                marker = ""
            else:
                code.append(_dedent(line, indent))
            continue
        first = line.lstrip(" \t")[:1]
        if first in "`~" and first:
            f = _open_fence(line)
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


# ---------------------------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Fence:
    """One fenced block's offsets: opener line start, content start, closer line start/end."""

    open_ls: int
    cs: int
    ce: int  # start of the closing line (len(md) + 1 when unclosed)
    close_le: int  # end of the closing line (len(md) + 1 when unclosed)
    reopen: str  # the opening line plus "\n", repeated at the top of a continuation chunk
    closer: str  # "\n" plus a closing line, added at the end of a chunk cut inside the block


def _scan_fences(md: str) -> list[_Fence]:
    """Every fenced block with its offsets, in order."""
    if not _has_fence_chars(md):
        return []
    n = len(md)
    fences: list[_Fence] = []
    pos = 0
    opened: tuple[int, int, str, str, str] | None = None  # open_ls, cs, marker, line, indent
    while pos <= n:
        nl = md.find("\n", pos)
        le = n if nl < 0 else nl
        line = md[pos:le]
        if opened is not None:
            if _closes_fence(line, opened[2]):
                o_ls, o_cs, marker, o_line, o_ind = opened
                fences.append(_Fence(o_ls, o_cs, pos, le, o_line + "\n", "\n" + o_ind + marker))
                opened = None
        else:
            f = _open_fence(line)
            if f is not None:
                ind = line[: len(line) - len(line.lstrip(" \t"))]
                opened = (pos, min(le + 1, n), f[1], line.rstrip("\r"), ind)
        if nl < 0:
            break
        pos = nl + 1
    if opened is not None:
        o_ls, o_cs, marker, o_line, o_ind = opened
        fences.append(_Fence(o_ls, o_cs, n + 1, n + 1, o_line + "\n", "\n" + o_ind + marker))
    return fences


_PARA = re.compile(r"\n[ \t]*\n")
_SENTENCE = re.compile(r"[.!?…][\"'”’)\]*_]*(?=[ \t])")
# spans a word/sentence cut avoids: inline code, a link, a short bold run
_ATOMIC = re.compile(
    r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)"
    r"|!?\[[^\]\n]{0,300}\]\([^\s)]{0,1000}\)"
    r"|\*\*(?=\S)[^*\n]{1,200}(?<=\S)\*\*"
)
_ATOMIC_HINT = re.compile(r"[`\[]|\*\*")
_WS = re.compile(r"\s*")
_NON_SPACE = re.compile(r"\S")
_OUT, _IN, _END, _BAD = 0, 1, 2, 3

# (end of this chunk's text, start of the next, fence to close here, fence to reopen next)
_Cut = tuple[int, int, "_Fence | None", "_Fence | None"]


class _Splitter:
    """Greedy chunking of one text; see split_markdown."""

    def __init__(self, md: str, limit: int, measure: Callable[[str], int]) -> None:
        self.md = md
        self.n = len(md)
        self.limit = limit
        self.measure = measure
        self.fences = _scan_fences(md)
        self.starts = [f.open_ls for f in self.fences]

    def where(self, e: int) -> tuple[int, _Fence | None]:
        """Does a chunk ending at `e` end outside code, inside a block, just before its closing
        line (_END), or inside a fence line (_BAD)?"""
        idx = bisect_left(self.starts, e) - 1
        if idx < 0:
            return _OUT, None
        f = self.fences[idx]
        if e >= f.close_le:
            return _OUT, None
        if e <= f.cs:
            return _BAD, f
        if e < f.ce - 1:
            return _IN, f
        return (_END if e == f.ce - 1 else _BAD), f

    def cut(self, e: int, nxt: int) -> _Cut | None:
        """The cut ending this chunk at `e`, or None when `e` is inside a fence line."""
        kind, f = self.where(e)
        if kind == _OUT:
            return e, nxt, None, None
        if kind == _IN:
            return e, nxt, f, f
        if kind == _END and f is not None:  # close here; skip the original closing line
            return e, min(f.close_le, self.n), f, None
        return None

    def fit(self, pos: int, budget: int) -> int:
        """Largest end with measure(md[pos:end]) <= budget (measure assumed monotonic)."""
        md, n, measure = self.md, self.n, self.measure
        if budget <= 0:
            return pos
        if measure is len:
            return min(n, pos + budget)
        if measure(md[pos:]) <= budget:
            return n
        lo, hi = pos, n  # measure(lo) fits, measure(hi) does not
        guess = min(n, pos + budget)
        if measure(md[pos:guess]) <= budget:
            lo = guess
        else:
            hi = guess
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if measure(md[pos:mid]) <= budget:
                lo = mid
            else:
                hi = mid
        return lo

    def choose(self, pos: int, budget: int) -> _Cut:
        """The best cut of the text starting at `pos` within the budget."""
        md, n = self.md, self.n
        e_max = self.fit(pos, budget)
        if e_max >= n:
            kind, f = self.where(n)
            return n, n, (None if kind == _OUT else f), None
        if e_max <= pos:
            e_max = pos + 1  # cannot fit even one character: make progress anyway
        half = pos + (e_max - pos) // 2
        spans = self.code_spans(pos, e_max)
        guard = self.line_guard(pos, e_max)
        for lo in (max(half, pos + 1), pos + 1):
            # 1. paragraph: a blank line outside code
            best = -1
            for m in _PARA.finditer(md, lo, min(n, e_max + 64)):
                if m.start() > e_max:
                    break
                if self.where(m.start())[0] == _OUT:
                    best = m.start()
            if best >= 0:
                return best, best + 1, None, None
            # 2. line
            j = md.rfind("\n", lo, e_max + 1)
            while j >= 0:
                c = self.cut(j, j + 1)
                if c is not None:
                    return c
                j = md.rfind("\n", lo, j)
            # 3. sentence end, outside code and inline code
            seg = max(lo, guard)
            cand = -1
            for m in _SENTENCE.finditer(md, seg, e_max + 1):
                e = m.end()
                if self.where(e)[0] == _OUT and not _inside(spans, e) and self.no_fence_at(e):
                    cand = e
            if cand >= 0:
                return cand, cand, None, None
            # 4. word (inside code the space stays with this chunk)
            j = md.rfind(" ", seg, e_max)
            while j > pos:
                if self.no_fence_at(j + 1):
                    if self.where(j + 1)[0] != _OUT:
                        c = self.cut(j + 1, j + 1)
                        if c is not None:
                            return c
                    elif not _inside(spans, j):
                        return j, j + 1, None, None
                j = md.rfind(" ", seg, j)
        # 5. hard cut, never inside a grapheme cluster when avoidable
        e = e_max
        while e > pos + 1 and not self.no_fence_at(e):
            e -= 1
        e = _grapheme_safe(md, pos, e)
        c = self.cut(e, e)
        if c is not None:
            return c
        f = self.where(e)[1]
        assert f is not None
        if e <= f.cs and f.open_ls > pos:  # inside the opening line: cut before it
            return f.open_ls, f.open_ls, None, None
        if e > f.cs and f.ce - 1 > max(pos, f.cs):  # inside the closing line: close before it
            c = self.cut(f.ce - 1, f.ce - 1)
            if c is not None:
                return c
        return e, e, None, None  # a fence line longer than the limit: nothing sensible left

    def line_guard(self, pos: int, e_max: int) -> int:
        """First index a cut inside the line holding `e_max` may use: cutting a line that
        starts with ``` must not leave a head that reads as an opening or closing fence."""
        md, n = self.md, self.n
        ls = md.rfind("\n", 0, e_max) + 1
        if ls < pos:
            return pos  # the line began in an earlier chunk; its head is already out
        i = ls
        while i < n and md[i] in " \t":
            i += 1
        if not md.startswith(("```", "~~~"), i):
            return ls
        k = i
        while k < n and md[k] == md[i]:
            k += 1
        le = md.find("\n", k)
        if le < 0:
            le = n
        kind, f = self.where(e_max)
        if kind == _OUT:  # keep a backtick in the head, so it never becomes an opener
            q = md.find("`", k, le) if md[i] == "`" else -1
        elif f is not None and f.closer[-1] == md[i]:  # inside code: never a bare closer
            m = _NON_SPACE.search(md, k, le)
            q = m.start() if m else -1
        else:
            return ls
        return le + 1 if q < 0 else q + 1

    def no_fence_at(self, e: int) -> bool:
        """False when a cut inside a line at `e` would start the next chunk with a fence."""
        return not self.md.startswith(("```", "~~~"), _WS.match(self.md, e).end())  # type: ignore[union-attr]

    def code_spans(self, pos: int, e_max: int) -> list[tuple[int, int]]:
        """Inline code, links and short bold runs near the window's end (cuts avoid them)."""
        md = self.md
        ls = max(pos, md.rfind("\n", 0, e_max) + 1)
        le = md.find("\n", e_max, e_max + (e_max - pos) + 64)  # bounded: stays linear
        if le < 0:
            le = min(self.n, e_max + (e_max - pos) + 64)
        if self.where(e_max)[0] != _OUT or _ATOMIC_HINT.search(md, ls, le) is None:
            return []
        return [(m.start(), m.end()) for m in _ATOMIC.finditer(md, ls, le)]

    def run(self) -> list[str]:
        """The chunks."""
        md, n, measure, limit = self.md, self.n, self.measure, self.limit
        chunks: list[str] = []
        pos = _WS.match(md, 0).end()  # type: ignore[union-attr]
        cur: _Fence | None = None
        while pos < n:
            prefix = cur.reopen if cur is not None else ""
            budget = limit - (measure(prefix) if prefix else 0)
            end, nxt, close, reopen = self.choose(pos, budget)
            suffix = close.closer if close is not None else ""
            if suffix and measure(prefix + md[pos:end] + suffix) > limit:
                retry = self.choose(pos, budget - measure(suffix))
                if retry[0] > pos:
                    end, nxt, close, reopen = retry
                    suffix = close.closer if close is not None else ""
            body = md[pos:end]
            if close is None:
                body = body.rstrip()
            chunk = prefix + body + suffix
            if chunk.strip():
                chunks.append(chunk)
            if end >= n:
                break
            cur = reopen
            pos = nxt if reopen is not None else _WS.match(md, nxt).end()  # type: ignore[union-attr]
        return chunks


def _inside(spans: list[tuple[int, int]], j: int) -> bool:
    """True when index j falls strictly inside one of the spans."""
    return any(a < j < b for a, b in spans)


def _grapheme_safe(s: str, lo: int, e: int) -> int:
    """Move a hard cut left so it does not separate a combining mark, ZWJ sequence or flag."""
    orig = e
    while e > lo + 1:
        c, p = s[e], s[e - 1]
        oc = ord(c)
        if (
            p == "\u200d"
            or c == "\u200d"
            or 0xFE00 <= oc <= 0xFE0F
            or 0x1F3FB <= oc <= 0x1F3FF
            or 0xE0020 <= oc <= 0xE007F
            or 0xDC00 <= oc <= 0xDFFF
            or (oc > 0x2FF and unicodedata.category(c) in ("Mn", "Me", "Mc"))
        ):
            e -= 1
            continue
        if 0x1F1E6 <= oc <= 0x1F1FF and 0x1F1E6 <= ord(p) <= 0x1F1FF:
            k = e - 1
            while k >= lo and 0x1F1E6 <= ord(s[k]) <= 0x1F1FF:
                k -= 1
            if (e - 1 - k) % 2:
                e -= 1
                continue
        break
    return e if e > lo else orig


def split_markdown(
    md: str, limit: int, measure: Callable[[str], int] = len
) -> list[str]:
    """Chunks of at most `limit` (by `measure`), cut at paragraph > line > sentence > word.

    A chunk cut inside a fenced code block is closed with the fence and the next chunk
    reopens it with the same opening line (language tag included); those added fences count
    toward the limit. Whitespace at cut points is dropped (inside code only the newline);
    empty and whitespace-only chunks are never returned. A text ending inside an unclosed
    fence gets its fence closed in the last chunk.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if not md or not md.strip():
        return []
    if measure(md) <= limit and not fence_open(md):
        return [md.strip()]
    return _Splitter(md, limit, measure).run()
