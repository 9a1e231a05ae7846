"""Figures (PNG bytes) in the style of the paper's Figure 2: token share by length bucket, per source.

The rasterising lives in `lcdata.util.figure` (plain data in, PNG out, Pillow imported lazily), so
`import lcdata` stays light and a figure costs tens of milliseconds.
"""

from __future__ import annotations

import polars as pl

from .figure import draw
from .figure import label as bucket_label

__all__ = ["figure_spec", "length_figure"]


def figure_spec(buckets: pl.DataFrame, title: str, series: dict[str, str] | None = None) -> dict:
    """The plain-data description of `length_figure`'s chart (what `lcdata.util.figure.draw` takes)."""
    series = series or {"token_share_in_source": "corpus"}
    panels = []
    for src in buckets["source"].unique(maintain_order=True).to_list():
        sub = buckets.filter(pl.col("source") == src).sort("bucket_min")
        panels.append({"source": src,
                       "labels": [bucket_label(a, b) for a, b in zip(sub["bucket_min"], sub["bucket_max"])],
                       "values": [sub[col].to_list() for col in series]})
    return {"title": title, "series": list(series.values()), "panels": panels}


def length_figure(buckets: pl.DataFrame, title: str, series: dict[str, str] | None = None) -> bytes:
    """Bar chart, one panel per source: share of the source's tokens in each length bucket.

    ``series`` maps a column of ``buckets`` holding shares to a legend label (default: the corpus's own
    ``token_share_in_source``); several series are drawn side by side (e.g. original / target / achieved).
    """
    return draw(figure_spec(buckets, title, series))
