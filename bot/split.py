"""Splitting Markdown into chunks that fit a platform's message limit, code fences intact.

Pure and linear-time like bot/render.py, whose fence grammar it shares: the streamer calls
it on every flush with the platform's own length measure (Capabilities.measure).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass

from bot.render import closes_fence, fence_open, may_have_fence, open_fence

__all__ = ["split_markdown"]


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
    if not may_have_fence(md):
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
            if closes_fence(line, opened[2]):
                o_ls, o_cs, marker, o_line, o_ind = opened
                fences.append(_Fence(o_ls, o_cs, pos, le, o_line + "\n", "\n" + o_ind + marker))
                opened = None
        else:
            f = open_fence(line)
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
