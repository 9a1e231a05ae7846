"""Per-source document-length statistics: per-document lengths, their mergeable histogram, the summaries.

Pipeline: documents (`lcdata.corpus.Lengths`: rows, characters, sources, ids) -> ``doc_table`` (one row per
document: ``doc_id, file, row, source, n_chars, n_tokens, n_est_tokens``) -> ``histogram`` (one row per
distinct (source, n_tokens): ``n_docs, n_chars, n_est_tokens, n_empty``) -> ``summarize_sources`` /
``summarize_buckets`` (the ``sources`` and ``buckets`` tables).

Invariants. The histogram is the *exact, mergeable* partial statistic: histograms of disjoint parts of a
corpus merge by summing rows with the same key (`merge_histograms`), and every summary (counts, shares,
exact percentiles, bucket tables) is a function of the histogram alone. So stats of two halves merged
equal stats of the whole, bit for bit, whatever the split or the number of workers. Its size is bounded by
the number of *distinct* lengths per source (at most the longest document), not by the number of
documents, so memory does not grow with the corpus.

Percentiles are exact "inverted CDF" order statistics: pXX is the smallest length L such that at least
XX% of the source's documents have length <= L (NumPy's ``method="inverted_cdf"``).

Estimated lengths (no tokenizer) are ``ceil(n_chars / chars_per_token)`` in float64, the paper's 3.68
chars/token by default; with a tokenizer, ``n_est_tokens`` keeps that estimate so its error can be
reported per source (calibration).

Cost. ``doc_table`` and ``histogram`` are the per-file hot loop of `lcdata stats` (about 2,000 documents
per MB of text): they run on Arrow and NumPy arrays (a sort and ``reduceat`` per file, no Polars query:
on a few thousand rows a query's fixed cost would exceed the work). Summarising is Polars over the
histogram, O(histogram rows).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

QUANTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}

HIST_SCHEMA = {
    "source": pl.String,
    "n_tokens": pl.Int64,
    "n_docs": pl.Int64,
    "n_chars": pl.Int64,
    "n_est_tokens": pl.Int64,
    "n_empty": pl.Int64,
}

# The per-document table (doc_lengths.parquet); as Arrow, the schema Polars' String columns export to.
DOC_SCHEMA = {"doc_id": pl.String, "file": pl.String, "row": pl.Int64, "source": pl.String,
              "n_chars": pl.Int64, "n_tokens": pl.Int64, "n_est_tokens": pl.Int64}
DOC_ARROW = pa.schema([(k, pa.large_string() if v == pl.String else pa.int64()) for k, v in DOC_SCHEMA.items()])


def estimate_tokens(n_chars: np.ndarray, chars_per_token: float) -> np.ndarray:
    """ceil(chars / chars_per_token) in float64, as int64 (0 for empty texts)."""
    est = np.ceil(np.asarray(n_chars, np.int64) / chars_per_token)
    if len(est) and not est.max() < 2.0**62:
        from ..errors import ConfigError

        raise ConfigError(f"chars_per_token={chars_per_token} makes a document of {int(np.max(n_chars)):,} characters "
                          f"{est.max():.3g} tokens, beyond int64; use a realistic value (the paper uses 3.68)")
    return est.astype(np.int64)


def doc_table(file: str, lengths, chars_per_token: float, n_tokens=None) -> pa.Table:
    """Per-document lengths of one batch of ``file`` as an Arrow table (``DOC_ARROW``).

    ``lengths``: a `lcdata.corpus.Lengths`. ``n_tokens``: exact token counts aligned with it (from
    `lcdata.tokenizer.count_tokens`), or None to use the character estimate. ``doc_id`` is the batch's ids,
    else ``"{file}:{row}"``.

    >>> import numpy as np, pyarrow as pa
    >>> from lcdata.corpus import Lengths
    >>> t = doc_table("a.jsonl", Lengths(np.array([0]), np.array([5]), pa.array(["web"])), 3.68)
    >>> t.column("doc_id").to_pylist(), t.column("n_tokens").to_pylist()
    (['a.jsonl:0'], [2])
    """
    n = len(lengths.rows)
    est = estimate_tokens(lengths.n_chars, chars_per_token)
    name = pa.scalar(file, pa.large_string())
    rows = pa.array(lengths.rows, pa.int64())
    ids = lengths.ids if lengths.ids is not None else pc.binary_join_element_wise(
        name, pc.cast(rows, pa.large_string()), pa.scalar(":", pa.large_string()))
    return pa.Table.from_arrays([
        ids.cast(pa.large_string()), pa.repeat(name, n), rows, lengths.sources.cast(pa.large_string()),
        pa.array(lengths.n_chars, pa.int64()), pa.array(est if n_tokens is None else np.asarray(n_tokens, np.int64)),
        pa.array(est),
    ], schema=DOC_ARROW)


def histogram(docs) -> pl.DataFrame:
    """Aggregate per-document lengths (an Arrow table or Polars frame with ``source, n_tokens, n_chars,
    n_est_tokens``) into the mergeable length histogram, sorted by (source, n_tokens).

    NumPy: sources are dictionary-encoded, documents sorted by (source rank, n_tokens), and each run summed
    with ``reduceat`` (exact int64 sums)."""
    if isinstance(docs, pl.DataFrame):
        docs = docs.select("source", "n_tokens", "n_chars", "n_est_tokens").to_arrow()
    if docs.num_rows == 0:
        return pl.DataFrame(schema=HIST_SCHEMA)
    enc = pc.dictionary_encode(docs.column("source").combine_chunks(), null_encoding="encode")
    names = enc.dictionary.to_pylist()  # a null source (only from direct callers) sorts first, as in Polars
    by_rank = sorted(names, key=lambda x: (x is not None, x or ""))
    rank = np.empty(len(names), np.int64)
    rank[sorted(range(len(names)), key=lambda i: (names[i] is not None, names[i] or ""))] = np.arange(len(names))
    src = rank[enc.indices.to_numpy()]
    n_tok = docs.column("n_tokens").to_numpy()
    order = np.lexsort((n_tok, src))
    src, n_tok = src[order], n_tok[order]
    starts = np.flatnonzero(np.r_[True, (src[1:] != src[:-1]) | (n_tok[1:] != n_tok[:-1])])
    n_chars = docs.column("n_chars").to_numpy()[order]
    return pl.DataFrame({
        "source": [by_rank[i] for i in src[starts]],
        "n_tokens": n_tok[starts],
        "n_docs": np.diff(np.r_[starts, len(src)]),
        "n_chars": np.add.reduceat(n_chars, starts),
        "n_est_tokens": np.add.reduceat(docs.column("n_est_tokens").to_numpy()[order], starts),
        "n_empty": np.add.reduceat((n_chars == 0).astype(np.int64), starts),
    }, schema=HIST_SCHEMA)


def merge_histograms(parts) -> pl.DataFrame:
    """Exact merge of partial histograms (any number, any split of the corpus)."""
    parts = [p for p in parts if p is not None and p.height]
    if not parts:
        return pl.DataFrame(schema=HIST_SCHEMA)
    return (
        pl.concat([p.select(list(HIST_SCHEMA)).cast(HIST_SCHEMA) for p in parts])
        .group_by("source", "n_tokens")
        .agg(pl.col("n_docs", "n_chars", "n_est_tokens", "n_empty").sum())
        .select(list(HIST_SCHEMA))
        .sort("source", "n_tokens")
    )


def _quantile_expr(q: float) -> pl.Expr:
    # smallest n_tokens whose cumulative doc count reaches q * total (inverted CDF)
    cum = pl.col("n_docs").cum_sum()
    total = pl.col("n_docs").sum()
    return pl.col("n_tokens").filter(cum >= total.cast(pl.Float64) * q).first()


def summarize_sources(hist: pl.DataFrame, long_threshold: int = 4096, calibrated: bool = False) -> pl.DataFrame:
    """One row per source: counts, token share, mean/p50/p90/p99/max length, long-document token share.

    Columns: ``source, n_docs, n_empty, n_chars, n_tokens, token_share, doc_share, mean_tokens, p50_tokens,
    p90_tokens, p99_tokens, max_tokens, long_token_share`` (share of the source's tokens in documents with
    ``n_tokens >= long_threshold``), plus ``chars_per_token, est_tokens, est_error`` when ``calibrated``
    (est_error = estimated / exact - 1; both null for a source with no tokens, so no NaN reaches stats.json).
    """
    tok = pl.col("n_tokens") * pl.col("n_docs")
    per = (
        hist.sort("source", "n_tokens")
        .group_by("source", maintain_order=True)
        .agg(
            n_docs=pl.col("n_docs").sum(),
            n_empty=pl.col("n_empty").sum(),
            n_chars=pl.col("n_chars").sum(),
            n_tokens=tok.sum(),
            n_long_tokens=tok.filter(pl.col("n_tokens") >= long_threshold).sum(),
            n_est_tokens=pl.col("n_est_tokens").sum(),
            **{f"{k}_tokens": _quantile_expr(q) for k, q in QUANTILES.items()},
            max_tokens=pl.col("n_tokens").max(),
        )
    )
    total_tokens = per["n_tokens"].sum()
    total_docs = per["n_docs"].sum()
    per = per.with_columns(
        token_share=pl.col("n_tokens") / total_tokens if total_tokens else pl.lit(0.0),
        doc_share=pl.col("n_docs") / total_docs if total_docs else pl.lit(0.0),
        mean_tokens=pl.col("n_tokens") / pl.col("n_docs"),
        long_token_share=pl.when(pl.col("n_tokens") > 0)
        .then(pl.col("n_long_tokens") / pl.col("n_tokens"))
        .otherwise(0.0),
    )
    cols = ["source", "n_docs", "n_empty", "n_chars", "n_tokens", "token_share", "doc_share", "mean_tokens",
            "p50_tokens", "p90_tokens", "p99_tokens", "max_tokens", "long_token_share"]
    if calibrated:
        per = per.with_columns(
            chars_per_token=pl.when(pl.col("n_tokens") > 0).then(pl.col("n_chars") / pl.col("n_tokens")),
            est_tokens=pl.col("n_est_tokens"),
            est_error=pl.when(pl.col("n_tokens") > 0).then(pl.col("n_est_tokens") / pl.col("n_tokens") - 1.0),
        )
        cols += ["chars_per_token", "est_tokens", "est_error"]
    return per.select(cols).sort("source")


def bucket_table(edges) -> pl.DataFrame:
    """``bucket, bucket_min, bucket_max`` for edges e0=0 < e1 < ...; the last bucket is open (max null)."""
    edges = list(edges)
    return pl.DataFrame(
        {"bucket": list(range(len(edges))), "bucket_min": edges, "bucket_max": edges[1:] + [None]},
        schema={"bucket": pl.Int32, "bucket_min": pl.Int64, "bucket_max": pl.Int64},
    )


def bucket_index(n_tokens: pl.Expr, edges) -> pl.Expr:
    """Index of the bucket [edge_i, edge_i+1) holding each length."""
    edges = list(edges)
    expr = pl.lit(0, dtype=pl.Int32)
    for i, e in enumerate(edges[1:], start=1):
        expr = pl.when(n_tokens >= e).then(pl.lit(i, dtype=pl.Int32)).otherwise(expr)
    return expr


def summarize_buckets(hist: pl.DataFrame, edges) -> pl.DataFrame:
    """Per source x length bucket: ``source, bucket, bucket_min, bucket_max, n_docs, n_tokens,
    token_share_in_source, token_share`` (every bucket listed, zeros included)."""
    b = bucket_table(edges)
    agg = (
        hist.with_columns(bucket=bucket_index(pl.col("n_tokens"), edges))
        .group_by("source", "bucket")
        .agg(n_docs=pl.col("n_docs").sum(), n_tokens=(pl.col("n_tokens") * pl.col("n_docs")).sum())
    )
    sources = hist.select("source").unique().sort("source")
    grid = sources.join(b, how="cross").join(agg, on=["source", "bucket"], how="left").with_columns(
        pl.col("n_docs", "n_tokens").fill_null(0)
    )
    total = grid["n_tokens"].sum()
    return grid.with_columns(
        token_share_in_source=pl.when(pl.col("n_tokens").sum().over("source") > 0)
        .then(pl.col("n_tokens") / pl.col("n_tokens").sum().over("source"))
        .otherwise(0.0),
        token_share=(pl.col("n_tokens") / total) if total else pl.lit(0.0),
    ).sort("source", "bucket")
