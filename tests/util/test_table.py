"""One table renderer (`lcdata.util.table.render`) for the terminal, report.md and eval-loss."""

from __future__ import annotations

import polars as pl

from lcdata.report.markdown import md_table
from lcdata.util.table import render


def test_columns_are_sized_to_their_content_on_the_terminal_and_in_markdown():
    df = pl.DataFrame({"source": ["RedPajamaCommonCrawl", "RedPajamaBook"], "tokens": [1234567, 89],
                       "share": [0.9999, 0.0001]})
    cols = [("source", "source", "str"), ("tokens", "tokens", "int"), ("share", "share", "pct")]
    text = render(df, cols).splitlines()
    assert len({len(ln) for ln in text}) == 1  # every line as wide as the header: aligned
    assert text[2].startswith("RedPajamaCommonCrawl  1,234,567") and text[2].endswith("100.0%")
    md = render(df, cols, markdown=True).splitlines()
    assert md[1] == "|" + "-" * 22 + "|" + "-" * 10 + ":|" + "-" * 7 + ":|"
    assert len({len(ln) for ln in md}) == 1 and all(ln.startswith("| ") and ln.endswith(" |") for ln in md[2:])
    assert "| 100.0% |" in md[2]  # the same percentage as on the terminal


def test_markdown_table_of_a_frame_formats_by_type():
    df = pl.DataFrame({"model": ["a", None], "n": [1000, 2], "loss": [1.23456, None]})
    lines = md_table(df).splitlines()
    assert lines[0].split("|")[1:-1] == [" model ", "     n ", "   loss "]
    assert "| a     | 1,000 | 1.2346 |" == lines[2] and "| -     |     2 |      - |" == lines[3]


def test_eval_loss_table_aligns_long_source_names():
    from lcdata_train.eval_loss import format_table

    losses = pl.DataFrame({"model": ["base"] * 6, "source": ["RedPajamaCommonCrawl"] * 2 + ["RedPajamaBook"] * 2
                           + ["RedPajamaStackExchange"] * 2, "position": ["document"] * 6,
                           "bucket_min": [0, 4096] * 3, "bucket_max": [4096, None] * 3,
                           "loss": [2.5, None, 1.25, 1.5, 0.75, 11.0]})
    title, *lines = format_table(losses).splitlines()
    assert "position = document" in title
    assert len({len(ln) for ln in lines}) == 1, lines
    assert lines[2].split()[:3] == ["base", "RedPajamaCommonCrawl", "2.5000"] and lines[2].endswith("-")
    assert lines[4].split() == ["base", "RedPajamaStackExchange", "0.7500", "11.0000"]
    assert lines[0].index("0-4K") + len("0-4K") == lines[4].index("0.7500") + len("0.7500")  # right-aligned
