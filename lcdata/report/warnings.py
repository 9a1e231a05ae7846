"""What report.md warns about: the targets a plan missed, and the long-document share per source.

A plan (``plan/report.parquet``, `lcdata sample`) gives per source its target and achieved tokens, and per
(source, length bucket) the target and achieved share of the source's tokens. A target is **missed** when:

- a source: ``|achieved_tokens / target_tokens - 1| > SOURCE_TOLERANCE`` (5%: a relative error of the
  source's tokens; the solver's own slack, the longest document or 0.5% of the target, is far below it at
  any budget where a source holds more than a few documents);
- a bucket: ``|achieved_share_in_source - target_share_in_source| > BUCKET_TOLERANCE`` (5 percentage points
  of the source's tokens). At a small budget a bucket of very long documents misses by construction (one
  128K document is 12% of a 1M-token source), and that is what the warning is for: the budget is too small
  for the length distribution asked for.

Both tolerances are documented in docs/sample.md; `target_misses` returns one line per miss, sources first,
in the report's order. Pure frames, no I/O. Cost: O(rows of report.parquet).
"""

from __future__ import annotations

import polars as pl

from ..util.figure import label as bucket_label

SOURCE_TOLERANCE = 0.05  # relative error of a source's tokens
BUCKET_TOLERANCE = 0.05  # absolute error of a bucket's share of its source's tokens


def target_misses(report: pl.DataFrame, budget: int | None = None, source_tolerance: float = SOURCE_TOLERANCE,
                  bucket_tolerance: float = BUCKET_TOLERANCE) -> list[str]:
    """One line per source and per (source, bucket) whose achieved tokens miss the target by more than the
    tolerance (module docstring). ``budget`` (tokens) is named in the lines when given."""
    at = f" at a budget of {budget:,} tokens" if budget else ""
    out = []
    for r in report.filter((pl.col("level") == "source") & (pl.col("target_tokens") > 0)).iter_rows(named=True):
        err = r["achieved_tokens"] / r["target_tokens"] - 1
        if abs(err) > source_tolerance:
            out.append(f"source `{r['source']}` missed its target: {r['achieved_tokens']:,.0f} tokens achieved vs "
                       f"{r['target_tokens']:,.0f} targeted ({err:+.1%}; tolerance {source_tolerance:.0%}){at}")
    buckets = report.filter(pl.col("level") == "bucket")
    for r in buckets.iter_rows(named=True):
        t, a = r["target_share_in_source"], r["achieved_share_in_source"]
        if t is None or a is None or abs(a - t) <= bucket_tolerance:
            continue
        why = ": not one document of this length was selected" if a == 0 else ""
        out.append(f"source `{r['source']}`, documents of {bucket_label(r['bucket_min'], r['bucket_max'])} tokens: "
                   f"{a:.1%} of the source's tokens achieved vs {t:.1%} targeted ({100 * (a - t):+.1f} pp; tolerance "
                   f"{100 * bucket_tolerance:.0f} pp){at}{why}")
    return out


def long_shares(report: pl.DataFrame, threshold: int) -> pl.DataFrame:
    """Per source: the share of its tokens in documents of at least ``threshold`` tokens, in the corpus
    (``original``), in the target and in the plan (``achieved``): the recipe's key number. Sums the bucket
    rows from ``threshold`` on (a bucket edge; the plan's report buckets include 4096)."""
    b = report.filter((pl.col("level") == "bucket") & (pl.col("bucket_min") >= threshold))
    sources = report.filter(pl.col("level") == "source").select("source")
    long = b.group_by("source").agg(
        pl.col("original_share_in_source").sum().alias("original_long_share"),
        pl.col("target_share_in_source").sum().alias("target_long_share"),
        pl.col("achieved_share_in_source").sum().alias("achieved_long_share"))
    return sources.join(long, on="source", how="left").fill_null(0.0)
