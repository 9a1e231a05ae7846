"""Figures (PNG bytes) in the style of the paper's Figure 2: token share by length bucket, per source.

matplotlib is imported lazily (Agg backend), so `import lcdata` stays light.
"""

from __future__ import annotations

import io

import polars as pl


def _label(lo: int, hi) -> str:
    def k(x):
        return f"{x // 1024}K" if x >= 1024 and x % 1024 == 0 else str(x)

    return f">={k(lo)}" if hi is None else f"{k(lo)}-{k(hi)}"


def length_figure(buckets: pl.DataFrame, title: str, series: dict[str, str] | None = None) -> bytes:
    """Bar chart, one panel per source: share of the source's tokens in each length bucket.

    ``series`` maps a column of ``buckets`` holding shares to a legend label (default: the corpus's own
    ``token_share_in_source``); several series are drawn side by side (e.g. original / target / achieved).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = series or {"token_share_in_source": "corpus"}
    sources = buckets["source"].unique(maintain_order=True).to_list()
    n = max(1, len(sources))
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    width = 0.8 / len(series)
    for ax, src in zip(axes.flat, sources):
        sub = buckets.filter(pl.col("source") == src).sort("bucket_min")
        labels = [_label(a, b) for a, b in zip(sub["bucket_min"], sub["bucket_max"])]
        for i, (col, name) in enumerate(series.items()):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, sub[col].to_list(), width=width, label=name)
        ax.set_title(src, fontsize=10)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=60, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of tokens", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if len(series) > 1:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()
