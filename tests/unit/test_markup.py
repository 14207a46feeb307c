"""Markdown rendering for Telegram / Discord / plain text, and splitting at platform limits."""

from __future__ import annotations

import html
import random
import re
from html.parser import HTMLParser

import pytest

from bot.render import (
    discord_len,
    fence_open,
    to_discord,
    to_plain,
    to_telegram_html,
    utf16_len,
)
from bot.split import split_markdown

# ---------------------------------------------------------------------------------------------
# A strict checker for Telegram's HTML parse mode
# ---------------------------------------------------------------------------------------------

TELEGRAM_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "tg-spoiler", "a", "code",
    "pre", "blockquote",
}
TELEGRAM_ENTITIES = {"lt", "gt", "amp", "quot"}


class TelegramHTMLChecker(HTMLParser):
    """Parses output like Telegram would and records every rule it breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in TELEGRAM_TAGS:
            self.errors.append(f"tag <{tag}> is not supported by Telegram")
        if "code" in self.stack or ("pre" in self.stack and tag != "code"):
            self.errors.append(f"<{tag}> inside {self.stack}: no tags allowed in code/pre")
        if tag == "code" and attrs:
            if self.stack[-1:] != ["pre"]:
                self.errors.append("<code class> outside <pre>")
            if len(attrs) != 1 or attrs[0][0] != "class" or not (
                attrs[0][1] or ""
            ).startswith("language-"):
                self.errors.append(f"bad <code> attributes {attrs}")
        elif tag == "a":
            if len(attrs) != 1 or attrs[0][0] != "href" or not attrs[0][1]:
                self.errors.append(f"bad <a> attributes {attrs}")
            if "a" in self.stack:
                self.errors.append("nested <a>")
        elif attrs:
            self.errors.append(f"<{tag}> takes no attributes: {attrs}")
        if tag == "blockquote" and "blockquote" in self.stack:
            self.errors.append("nested <blockquote>")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> does not close the innermost tag {self.stack}")
        else:
            self.stack.pop()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.errors.append(f"self-closing <{tag}/>")

    def handle_data(self, data: str) -> None:
        for ch in "<>&":
            if ch in data:
                self.errors.append(f"unescaped {ch!r} in text {data[:40]!r}")
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in TELEGRAM_ENTITIES:
            self.errors.append(f"unsupported entity &{name};")
        self.text.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.text.append(html.unescape(f"&#{name};"))

    def handle_comment(self, data: str) -> None:
        self.errors.append("comment")

    def handle_decl(self, decl: str) -> None:
        self.errors.append("declaration")

    def unknown_decl(self, data: str) -> None:
        self.errors.append("declaration")

    def handle_pi(self, data: str) -> None:
        self.errors.append("processing instruction")


def check_html(out: str) -> str:
    """Assert `out` is acceptable to Telegram's strict parser; return its visible text."""
    checker = TelegramHTMLChecker()
    checker.feed(out)
    checker.close()
    assert not checker.errors, f"{checker.errors} in {out!r}"
    assert not checker.stack, f"unclosed {checker.stack} in {out!r}"
    assert not checker.rawdata, f"unparsed tail {checker.rawdata!r} in {out!r}"
    return "".join(checker.text)


# ---------------------------------------------------------------------------------------------
# Telegram HTML
# ---------------------------------------------------------------------------------------------


def test_html_special_characters_survive_as_text() -> None:
    md = "<script>alert('x') && 1 < 2</script> & \"quotes\" > arrows"
    out = to_telegram_html(md)
    assert "<script>" not in out
    assert check_html(out) == md


@pytest.mark.parametrize(
    ("md", "expected"),
    [
        ("**bold**", "<b>bold</b>"),
        ("__bold__", "<b>bold</b>"),
        ("*italic*", "<i>italic</i>"),
        ("_italic_", "<i>italic</i>"),
        ("~~gone~~", "<s>gone</s>"),
        ("||secret||", "<tg-spoiler>secret</tg-spoiler>"),
        ("**bold *nested* bold**", "<b>bold <i>nested</i> bold</b>"),
        ("*it **both** it*", "<i>it <b>both</b> it</i>"),
        ("***all***", "<i><b>all</b></i>"),
        ("**Note:** read", "<b>Note:</b> read"),
        ("a **b** c **d**", "a <b>b</b> c <b>d</b>"),
    ],
)
def test_emphasis(md: str, expected: str) -> None:
    assert to_telegram_html(md) == expected
    check_html(expected)


@pytest.mark.parametrize(
    "md",
    [
        "use snake_case_words and a__dunder__name and my_var_name",
        "2*3*4 = 24 and 2**10 = 1024",
        "a * b * c with spaces",
        "price is 5 * 3",
        "a lone * star and a lone _ underscore",
        "** not bold ** and __ not bold __",
        "~single~ tildes and a | pipe",
    ],
)
def test_not_emphasis_stays_literal(md: str) -> None:
    out = to_telegram_html(md)
    assert out == html.escape(md, quote=False)


def test_fenced_code_with_language_escapes_html() -> None:
    md = "Try:\n```python\nif a < b and c & d:\n    print('<b>**x**</b>')\n```\ndone"
    out = to_telegram_html(md)
    assert out == (
        'Try:\n<pre><code class="language-python">if a &lt; b and c &amp; d:\n'
        "    print('&lt;b&gt;**x**&lt;/b&gt;')</code></pre>\ndone"
    )
    check_html(out)


def test_fenced_code_without_language_has_no_class() -> None:
    out = to_telegram_html("```\nx = 1\n```")
    assert out == "<pre>x = 1</pre>"


def test_indented_fence_and_tilde_fence() -> None:
    out = to_telegram_html("1. step\n   ```bash\n   ls -l\n   ```\n~~~js\nlet a;\n~~~")
    assert '<pre><code class="language-bash">ls -l</code></pre>' in out
    assert '<pre><code class="language-js">let a;</code></pre>' in out
    check_html(out)


def test_inline_code_keeps_markers_and_escapes() -> None:
    out = to_telegram_html("run `a **b** <c> & d_e_f` now and ``x ` y``")
    assert out == "run <code>a **b** &lt;c&gt; &amp; d_e_f</code> now and <code>x ` y</code>"


def test_one_line_triple_backticks_are_inline_code() -> None:
    assert to_telegram_html("say ```hi``` there") == "say <code>hi</code> there"


@pytest.mark.parametrize(
    ("md", "expected"),
    [
        ("[site](https://example.com)", '<a href="https://example.com">site</a>'),
        ("[s](http://e.com/a_b?x=1&y=\"2\")",
         '<a href="http://e.com/a_b?x=1&amp;y=&quot;2&quot;">s</a>'),
        ("[me](tg://user?id=1)", '<a href="tg://user?id=1">me</a>'),
        ("[mail](mailto:a@b.c)", '<a href="mailto:a@b.c">mail</a>'),
        ("[**bold** link](https://e.com)", '<a href="https://e.com"><b>bold</b> link</a>'),
        ("[wiki](https://w.org/Foo_(bar)) x", '<a href="https://w.org/Foo_(bar)">wiki</a> x'),
        ('[t](https://e.com "title")', '<a href="https://e.com">t</a>'),
        ("<https://e.com/a>", '<a href="https://e.com/a">https://e.com/a</a>'),
        ("[bad](javascript:alert(1))", "bad"),
        ("[rel](/path/x)", "rel"),
        ("![cat](https://e.com/c.png)", '<a href="https://e.com/c.png">cat</a>'),
        ("see https://e.com/_a_b_ now", "see https://e.com/_a_b_ now"),
        ("**https://e.com/x**", "<b>https://e.com/x</b>"),
        ("[a `code` b](https://e.com)", '<a href="https://e.com">a code b</a>'),
    ],
)
def test_links(md: str, expected: str) -> None:
    out = to_telegram_html(md)
    assert out == expected
    check_html(out)


def test_blocks_headings_quotes_lists() -> None:
    md = (
        "# Title\n## Sub **bold**\n#hashtag\n- one\n* two\n+ three\n  - nested\n- [ ] todo\n"
        "- [x] done\n1. first\n---\n> quoted *it*\n> > deeper\n\nafter"
    )
    out = to_telegram_html(md)
    assert out == (
        "<b>Title</b>\n<b>Sub bold</b>\n#hashtag\n• one\n• two\n• three\n  • nested\n"
        "☐ todo\n☑ done\n1. first\n———\n<blockquote>quoted <i>it</i>\ndeeper</blockquote>\n"
        "\nafter"
    )
    check_html(out)


def test_backslash_escapes() -> None:
    assert to_telegram_html(r"\*not italic\* and \_x\_ and C:\path") == (
        r"*not italic* and _x_ and C:\path"
    )


@pytest.mark.parametrize(
    ("md", "expected"),
    [
        ("**bold", "**bold"),
        ("some `code", "some `code"),
        ("[link](https://exa", "[link](https://exa"),
        ("[link", "[link"),
        ("~~strike", "~~strike"),
        ("```python\nx = 1", '<pre><code class="language-python">x = 1</code></pre>'),
        ("text\n```py", "text\n"),
        ("**a *b** c*", "<i><i>a <i>b</i></i> c</i>"),
    ],
)
def test_partial_markup_is_literal_or_closed(md: str, expected: str) -> None:
    out = to_telegram_html(md)
    assert out == expected
    check_html(out)


SAMPLE_ANSWER = """## Reading a CSV file

There are **two ways**: the built-in `csv` module and *pandas* (see [the docs](https://docs.python.org/3/library/csv.html?a=1&b=2)).

```python
import csv

with open("data.csv", newline="") as f:
    for row in csv.DictReader(f):  # <row> & more
        print(row["name"])
```

- `newline=""` avoids __blank__ lines on Windows
- ~~old~~ new_style_names keep 2*3*4

> **Note:** pandas loads the _whole_ file; use `chunksize=` for ||huge|| ones.

```
plain block <b>
```
Done! Ask me about [encodings](https://e.com/x_(y)) or <https://e.com>.
"""


def test_every_prefix_of_an_answer_renders_well_formed() -> None:
    for end in range(len(SAMPLE_ANSWER) + 1):
        prefix = SAMPLE_ANSWER[:end]
        check_html(to_telegram_html(prefix))
        assert not fence_open(to_discord(prefix))


def test_full_answer_visible_text() -> None:
    text = check_html(to_telegram_html(SAMPLE_ANSWER))
    assert 'with open("data.csv", newline="") as f:' in text
    assert "# <row> & more" in text
    assert "plain block <b>" in text
    assert "**" not in text and "```" not in text


MD_ALPHABET = [*"ab _*~|`[]()<>&\\#->!:\n", "**", "__", "```", "```py\n", "](", "https://"]


@pytest.mark.parametrize("seed", range(8))
def test_random_markdown_always_renders_well_formed(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        md = "".join(rng.choice(MD_ALPHABET) for _ in range(rng.randint(0, 60)))
        check_html(to_telegram_html(md))
        assert not fence_open(to_discord(md))


def test_visible_text_matches_plain_rendering() -> None:
    md = "# Head\n**b** _i_ `c<d>` ~~s~~\n- item & more\n```sh\necho '<x>'\n```"
    assert check_html(to_telegram_html(md)) == to_plain(md)


# ---------------------------------------------------------------------------------------------
# Discord and plain text
# ---------------------------------------------------------------------------------------------


def test_discord_neutralises_mass_mentions() -> None:
    out = to_discord("hey @everyone and @here, mail a@example.com")
    assert "@everyone" not in out and "@here" not in out
    assert out == "hey @\u200beveryone and @\u200bhere, mail a@example.com"


def test_discord_passes_markdown_through_and_closes_fences() -> None:
    md = "# Title\n**bold** _it_ [l](https://e.com)\n```py\nx = 1\n```"
    assert to_discord(md) == md
    assert to_discord("```py\nx = 1") == "```py\nx = 1\n```"
    assert to_discord("```py\nx = 1\n") == "```py\nx = 1\n```"
    assert to_discord("````\n```\ninner") == "````\n```\ninner\n````"


def test_fence_open() -> None:
    assert fence_open("```python\nx")
    assert fence_open("text\n```")
    assert not fence_open("```python\nx\n```")
    assert not fence_open("inline ```x``` only")
    assert not fence_open("no code")
    assert fence_open("~~~\n```\n")


def test_plain_text() -> None:
    md = (
        "# Title\n**bold** and *it* and `code_x` and ~~old~~\n"
        "[docs](https://e.com/d) and <https://e.com> and [bad](javascript:x)\n"
        "- item\n> quote **q**\n```python\nprint('<x>')  # **not bold**\n```\nsnake_case 2*3"
    )
    assert to_plain(md) == (
        "Title\nbold and it and code_x and old\n"
        "docs (https://e.com/d) and https://e.com and bad (javascript:x)\n"
        "• item\n> quote q\nprint('<x>')  # **not bold**\nsnake_case 2*3"
    )


# ---------------------------------------------------------------------------------------------
# Splitting
# ---------------------------------------------------------------------------------------------

FENCE_LINE = re.compile(r"\s*(`{3,}|~{3,})(.*)")


def code_lines(text: str) -> list[tuple[str, str | None]]:
    """(line, language of the code block holding it or None), skipping fence and blank lines."""
    result: list[tuple[str, str | None]] = []
    lang: str | None = None
    marker = ""
    for line in text.split("\n"):
        f = FENCE_LINE.fullmatch(line)
        if f and lang is None and "`" not in f.group(2):
            lang, marker = f.group(2).strip(), f.group(1)
            continue
        if (
            f
            and lang is not None
            and not f.group(2).strip()
            and f.group(1)[0] == marker[0]
            and len(f.group(1)) >= len(marker)
        ):
            lang = None
            continue
        if line.strip():
            result.append((line.rstrip(), lang))
    return result


def assert_valid_chunks(md: str, chunks: list[str], limit: int, measure=len) -> None:
    """Every invariant split_markdown promises."""
    assert chunks, "no chunks"
    for c in chunks:
        assert c.strip(), "empty or whitespace-only chunk"
        assert measure(c) <= limit, f"chunk of {measure(c)} > {limit}"
        assert not fence_open(c), f"unbalanced fence in chunk {c[-80:]!r}"
        c.encode("utf-16-le")  # no lone surrogate
    # content (modulo fences added at cut points and boundary whitespace) is preserved
    strip = re.compile(r"\s+")
    flat = strip.sub("", "".join(line for line, _ in code_lines(md)))
    got = strip.sub("", "".join(line for c in chunks for line, _ in code_lines(c)))
    assert got == flat


def make_answer(target: int, seed: int = 1) -> str:
    """A long model-like answer with prose, lists and several code blocks."""
    rng = random.Random(seed)
    words = ["the", "model", "answers", "with", "**bold**", "words,", "`inline code`", "links"]
    langs = ["python", "js", "bash", "", "rust"]
    parts: list[str] = []
    n = 0
    while n < target:
        kind = rng.random()
        if kind < 0.5:
            sentences = [
                " ".join(rng.choice(words) for _ in range(rng.randint(5, 15))).capitalize() + "."
                for _ in range(rng.randint(1, 6))
            ]
            part = " ".join(sentences)
        elif kind < 0.7:
            part = "\n".join(f"- item {i} with `x_{i}`" for i in range(rng.randint(2, 6)))
        else:
            lang = rng.choice(langs)
            body = "\n".join(
                f"    line_{i} = compute({i}) * 2  # <{i}> & stuff"
                for i in range(rng.randint(3, 60))
            )
            part = f"```{lang}\n{body}\n```"
        parts.append(part)
        n += len(part) + 2
    return "\n\n".join(parts)


@pytest.mark.parametrize(("limit", "measure"), [(2000, len), (4096, len), (4096, utf16_len)])
def test_long_answer_with_code_blocks(limit: int, measure) -> None:
    md = make_answer(9000)
    assert len(md) >= 9000 and md.count("```") >= 6
    chunks = split_markdown(md, limit, measure=measure)
    assert len(chunks) >= (2 if limit > 4000 else 5)
    assert_valid_chunks(md, chunks, limit, measure)
    # every code line stays in a block with its original language, in order
    assert [x for c in chunks for x in code_lines(c)] == code_lines(md)
    for c in chunks:
        visible = check_html(to_telegram_html(c))
        assert utf16_len(visible) <= limit


def test_code_block_longer_than_limit_is_closed_and_reopened() -> None:
    body = "\n".join(f"x{i} = {i} * {i}" for i in range(500))
    md = f"Intro.\n\n```python\n{body}\n```\n\nOutro."
    chunks = split_markdown(md, 2000)
    assert_valid_chunks(md, chunks, 2000)
    assert chunks[0].startswith("Intro.")
    for c in chunks[1:-1]:
        assert c.startswith("```python\n") and c.endswith("\n```")
    assert [x for c in chunks for x in code_lines(c)] == code_lines(md)
    assert sum(len(c) for c in chunks) > len(md)  # the added fences


def test_unclosed_fence_is_closed_in_the_last_chunk() -> None:
    md = "```js\n" + "\n".join(f"let v{i} = {i};" for i in range(300))
    chunks = split_markdown(md, 1000)
    assert_valid_chunks(md, chunks, 1000)
    assert all(c.startswith("```js\n") and c.endswith("\n```") for c in chunks)


def test_every_limit_around_a_closing_fence() -> None:
    md = "```python\n" + "y" * 100 + "\n" + "z" * 30 + "\n```\nafter the block"
    for limit in range(30, 160):
        chunks = split_markdown(md, limit)
        assert_valid_chunks(md, chunks, limit)
        for c in chunks:
            for line, lang in code_lines(c):
                assert lang == ("python" if set(line) <= {"y", "z"} else None)


@pytest.mark.parametrize(
    "md",
    [
        "text " * 30 + "then ```python and more words follow here " * 5,
        "```inline``` code opening a long line, " * 8,
        "```js\n" + "let s = `a` + ```  also code with spaces " * 8 + "\n```",
        "~~~\n" + "~~~ not a closer because of text " * 8 + "\n~~~",
    ],
)
def test_cuts_inside_a_line_never_create_fences(md: str) -> None:
    for limit in range(40, 240, 3):
        chunks = split_markdown(md, limit)
        assert_valid_chunks(md, chunks, limit)


def test_prefers_not_to_cut_links_and_bold() -> None:
    md = "intro " * 10 + "[a link with several words](https://example.com/page) tail"
    chunks = split_markdown(md, 90)
    assert chunks[1].startswith("[a link with several words](https://example.com/page)")
    md = "intro " * 10 + "**bold words that belong together** tail"
    chunks = split_markdown(md, 80)
    assert chunks[1].startswith("**bold words that belong together**")


def test_discord_measure_accounts_for_neutralised_mentions() -> None:
    assert discord_len("hi @everyone and @here") == len(to_discord("hi @everyone and @here"))
    md = "ping @everyone now. " * 300
    chunks = split_markdown(md, 2000, measure=discord_len)
    assert all(len(to_discord(c)) <= 2000 for c in chunks)
    assert sum(c.count("@everyone") for c in chunks) == 300


def test_prefers_paragraph_boundaries() -> None:
    rng = random.Random(3)
    vocabulary = ["alpha", "beta", "gamma", "delta."]
    paragraphs = [
        " ".join(rng.choice(vocabulary) for _ in range(rng.randint(9, 60))) for _ in range(30)
    ]
    md = "\n\n".join(paragraphs)
    chunks = split_markdown(md, 1000)
    assert_valid_chunks(md, chunks, 1000)
    for c in chunks:
        for p in c.split("\n\n"):
            assert p in paragraphs  # never cut inside a paragraph


def test_prefers_lines_then_sentences_then_words() -> None:
    lines = [f"Line number {i} is here." for i in range(200)]
    chunks = split_markdown("\n".join(lines), 500)
    assert all(set(c.split("\n")) <= set(lines) for c in chunks)
    sentence = "This is one sentence that goes on. "
    chunks = split_markdown(sentence * 100, 500)
    assert all(c.endswith("goes on.") for c in chunks)
    chunks = split_markdown("word " * 1000, 503)
    assert all(set(c.split(" ")) == {"word"} for c in chunks)
    assert sum(c.count("word") for c in chunks) == 1000


def test_single_huge_word_is_hard_cut() -> None:
    word = "x" * 5000
    chunks = split_markdown(word, 2000)
    assert [len(c) for c in chunks] == [2000, 2000, 1000]
    assert "".join(chunks) == word


def test_does_not_split_inside_inline_code() -> None:
    md = "a" * 80 + " " + "`" + "code " * 10 + "`" + " tail"
    chunks = split_markdown(md, 110)
    assert chunks[0] == "a" * 80
    assert chunks[1].startswith("`code ")


def test_utf16_counting_and_emoji() -> None:
    assert utf16_len("abc") == 3
    assert utf16_len("é") == 1
    assert utf16_len("😀") == 2
    assert utf16_len("👨‍👩‍👧") == 8
    assert utf16_len("🇺🇦") == 4
    md = "😀" * 3000
    chunks = split_markdown(md, 4096, measure=utf16_len)
    assert [utf16_len(c) for c in chunks] == [4096, 1904]
    assert "".join(chunks) == md
    assert split_markdown(md, 4096) == [md]  # by len() it fits


@pytest.mark.parametrize("cluster", ["👨‍👩‍👧", "🇺🇦", "e\u0301", "👍🏽", "❤️"])
def test_hard_cut_keeps_grapheme_clusters(cluster: str) -> None:
    md = cluster * 700
    for measure in (len, utf16_len):
        chunks = split_markdown(md, 999, measure=measure)
        assert "".join(chunks) == md
        for c in chunks:
            assert measure(c) <= 999
            assert c == cluster * (len(c) // len(cluster))


def test_split_edge_cases() -> None:
    assert split_markdown("", 10) == []
    assert split_markdown(" \n\n  ", 10) == []
    assert split_markdown("  hello  ", 10) == ["hello"]
    assert split_markdown("a\n\n\n\nb", 1) == ["a", "b"]
    with pytest.raises(ValueError):
        split_markdown("x", 0)


def random_document(rng: random.Random) -> str:
    """Random Markdown: prose, long words, blank lines, code blocks (some left open)."""
    parts: list[str] = []
    for _ in range(rng.randint(1, 25)):
        r = rng.random()
        if r < 0.5:
            parts.append(
                " ".join(
                    rng.choice(["word", "**b**", "`c d`", "end.", "x" * rng.randint(1, 90), "é😀"])
                    for _ in range(rng.randint(1, 40))
                )
            )
        elif r < 0.6:
            parts.append("")
        else:
            lang = rng.choice(["python", "", "c++"])
            lines = [
                " " * rng.randint(0, 8) + "y" * rng.randint(0, 120)
                for _ in range(rng.randint(0, 30))
            ]
            close = "\n```" if rng.random() < 0.9 else ""
            parts.append(f"```{lang}\n" + "\n".join(lines) + close)
            if not close:
                break
    return "\n".join(parts)


@pytest.mark.parametrize("seed", range(10))
def test_random_split_invariants(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(40):
        md = random_document(rng)
        limit = rng.randint(40, 700)
        measure = rng.choice([len, utf16_len])
        chunks = split_markdown(md, limit, measure=measure)
        if not md.strip() or all(line == "" for line, _ in code_lines(md)):
            continue
        assert_valid_chunks(md, chunks, limit, measure)
        for c in chunks:
            check_html(to_telegram_html(c))


# ---------------------------------------------------------------------------------------------
# Adversarial input (speed is measured by bench/, never by a timed test)
# ---------------------------------------------------------------------------------------------


def test_adversarial_input_renders_and_splits() -> None:
    """Delimiter soup that would make a backtracking parser quadratic still comes out
    well-formed and fully split (speed itself is measured in bench/, not here)."""
    nasty = "*a _b [c ` <d " * 5000 + "e* f_ " * 5000
    check_html(to_telegram_html(nasty))
    chunks = split_markdown(nasty + "`" * 3 + " x" * 5000, 4096, measure=utf16_len)
    assert all(utf16_len(c) <= 4096 for c in chunks)
    assert "".join(chunks).count("x") >= 5000
