"""Tables for the terminal and for Markdown, from one renderer (`render`): every command's summary table and
every table of report.md go through it, so numbers look the same everywhere.

Columns are (column, header, kind); kinds: ``str`` (left-aligned), ``rstr`` (a preformatted value,
right-aligned), ``int`` (thousands separators), ``float`` (one decimal), ``float:N`` (N decimals), ``pct``
(a share as a percentage, one decimal), ``signed_pct``, ``signed:N`` (a signed number, N decimals). Nulls are
``-``. Widths are the widest cell of each column (headers included). Cost: O(rows x columns) string work.
"""

from __future__ import annotations

import polars as pl


def _fmt(v, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "float":
        return f"{v:,.1f}"
    if kind.startswith("float:"):
        return f"{v:,.{int(kind[6:])}f}"
    if kind.startswith("signed:"):
        return f"{v:+.{int(kind[7:])}f}"
    if kind == "signed_pct":
        return f"{100 * v:+.1f}%"
    return str(v)


def render(df: pl.DataFrame, columns: list[tuple[str, str, str]], total: dict | None = None,
           markdown: bool = False) -> str:
    """``df`` as a table of ``columns`` ((column, header, kind), kinds in the module docstring), with an optional
    ``total`` row ({column: value}); plain text for the terminal, or a Markdown table with ``markdown``."""
    rows = [[_fmt(r[c], k) for c, _, k in columns] for r in df.iter_rows(named=True)]
    if total:
        rows.append([_fmt(total.get(c), k) if c in total else "" for c, _, k in columns])
    heads = [h for _, h, _ in columns]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)]
    align = [str.ljust if k == "str" else str.rjust for _, _, k in columns]
    if markdown:
        line = lambda cells: "| " + " | ".join(a(c, w) for a, c, w in zip(align, cells, widths)) + " |"  # noqa: E731
        rule = "|" + "|".join(("-" * (w + 1) + ":") if k != "str" else ("-" * (w + 2))
                              for w, (_, _, k) in zip(widths, columns)) + "|"
        return "\n".join([line(heads), rule] + [line(r) for r in rows])
    line = lambda cells: "  ".join(a(c, w) for a, c, w in zip(align, cells, widths))  # noqa: E731
    out = [line(heads), "  ".join("-" * w for w in widths)]
    body = [line(r) for r in rows]
    if total:
        body.insert(len(body) - 1, "  ".join("-" * w for w in widths))
    return "\n".join(out + body)


def is_share(column: str) -> bool:
    """A float column named ``*share*`` holds a share (0-1): shown as a percentage, as the terminal shows it."""
    return "share" in column


def frame_table(df: pl.DataFrame, floats: int = 4, markdown: bool = True, kinds: dict[str, str] | None = None) -> str:
    """Every column of ``df`` with a kind from ``kinds`` ({column: kind}), else from its name and type: a float
    share (`is_share`) as ``pct`` (the terminal's percentages), integers with separators, other floats with
    ``floats`` decimals, anything else as text."""
    kinds = kinds or {}

    def kind(c, dtype) -> str:
        if c in kinds:
            return kinds[c]
        if dtype.is_integer():
            return "int"
        if dtype.is_float():
            return "pct" if is_share(c) else f"float:{floats}"
        return "str"

    return render(df, [(c, c, kind(c, t)) for c, t in df.schema.items()], markdown=markdown)


def stats_table(result) -> str:
    cols = [("source", "source", "str"), ("n_docs", "docs", "int"), ("n_tokens", "tokens", "int"),
            ("token_share", "share", "pct"), ("mean_tokens", "mean", "float"), ("p50_tokens", "p50", "int"),
            ("p90_tokens", "p90", "int"), ("p99_tokens", "p99", "int"), ("max_tokens", "max", "int"),
            ("long_token_share", f">={result.config.long_threshold}", "pct")]
    if result.config.calibrate:
        cols += [("chars_per_token", "chars/tok", "float"), ("est_error", "est.err", "signed_pct")]
    t = result.totals
    total = {"source": "total", "n_docs": t["n_docs"], "n_tokens": t["n_tokens"], "token_share": 1.0 if t["n_tokens"] else 0}
    text = render(result.sources, cols, total)
    unit = "tokens" if result.config.tokenizer else f"estimated tokens (chars/{result.config.chars_per_token})"
    skipped = f", skipped {t['n_skipped']:,}" if t["n_skipped"] else ""
    errors = f", {t['n_file_errors']} file(s) unreadable" if t["n_file_errors"] else ""
    head = (f"{t['n_files']} files, {t['bytes'] / 1e6:,.1f} MB, read {t['n_read']:,} = counted {t['n_counted']:,}"
            f"{skipped}{errors}; lengths in {unit}; {result.elapsed_s:.1f} s")
    return head + "\n" + text


def read_warning(rr: dict) -> str | None:
    """The warning a command prints when its read report (`corpus.read_summary`) shows records skipped or
    files not read to their end; None when everything was read."""
    if not rr["skipped"] and not rr["files_with_errors"]:
        return None
    n_skipped = sum(rr["skipped"].values())
    lines = [f"WARNING: not everything was read: {rr['n_read']:,} records read = {rr['n_counted']:,} used + "
             f"{n_skipped:,} skipped; {rr['files_with_errors']} file(s) empty or not readable to their end, "
             f"{rr['unread_bytes']:,} bytes unread"]
    if rr["skipped"]:
        lines.append("skipped by reason:")
        lines += [f"  {k}: {v:,}" for k, v in rr["skipped"].items()]
    if rr["files_with_errors"]:
        lines.append("unreadable files (records before the break were kept):")
        lines += [f"  {e['file']}: {e['reason']}: {e['detail']}" for e in rr["errors"]]  # the detail says where
    return "\n".join(lines)
