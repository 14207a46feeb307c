"""Pure helpers of the assistant: sandbox links, names, sizes, instructions."""

from __future__ import annotations

from bot.assistant import human_size, instructions, rewrite_links, safe_name, sandbox_paths


def test_sandbox_links_become_file_names() -> None:
    text = "Done. [Download the chart](sandbox:/mnt/data/chart.png) and sandbox:/mnt/data/t.csv"
    assert rewrite_links(text, []) == "Done. chart.png and t.csv"
    start = text.index("[")
    end = text.index(")") + 1
    assert rewrite_links(text, [(start, end, "chart.png")]).startswith("Done. chart.png and")
    assert sandbox_paths(text) == ["/mnt/data/chart.png", "/mnt/data/t.csv"]


def test_bad_annotation_spans_are_ignored() -> None:
    assert rewrite_links("abc", [(5, 9, "x.png"), (2, 1, "y.png")]) == "abc"


def test_safe_names() -> None:
    assert safe_name("../../etc/passwd") == "passwd"
    assert safe_name("C:\\Users\\me\\report.pdf") == "report.pdf"
    assert safe_name(".hidden") == "hidden"
    assert safe_name("") == "file"
    assert safe_name("a\x00b.csv") == "ab.csv"


def test_human_sizes() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1536) == "1.5 KB"
    assert human_size(20 * 1024 * 1024) == "20.0 MB"


def test_instructions_name_the_files_and_the_font() -> None:
    text = instructions("Be brief.", [("/mnt/data/s.csv", "s.csv", 2048)], search=True,
                       font="/mnt/data/NotoSansCJK-Regular.ttc", code=True)
    assert text.startswith("Be brief.")
    assert "/mnt/data/s.csv (s.csv, 2.0 KB)" in text
    assert "file search" in text and "python tool for this request" in text
    assert "fm.fontManager.addfont('/mnt/data/NotoSansCJK-Regular.ttc')" in text
    plain = instructions("Hi", [], search=False, font=None, code=False)
    assert "addfont" not in plain and "file search" not in plain
