"""Paired differences with bootstrap confidence intervals: what an ablation's loss differences can claim.

``make paper-ablation`` trains each mixture (strategy) with several seeds and evaluates every run on the
same held-out windows (`lcdata eval-loss`'s ``units.parquet``: per model, window, source and position
bucket, the summed loss and the token count). For a strategy ``X`` against the baseline ``B`` and one cell
(source x bucket), with ``dx[s, w] = loss_sum(X@s, w) - loss_sum(B@s, w)`` and ``n[w]`` the cell's tokens in
window ``w`` (the same for every model: they score the same tokens):

- per seed ``s``: ``d_s = sum_w dx[s, w] / sum_w n[w]`` (the difference of the two runs' mean losses);
- the estimate: ``mean_s d_s`` (runs of one seed are paired: same seed for the sample, the build, the data
  order; every run continues from the same base model);
- the interval: a two-level (hierarchical) percentile bootstrap. Each replicate draws the seeds with
  replacement and the cell's windows with replacement (one draw of windows shared by all seeds and both
  strategies: the pairing), and recomputes the estimate; the interval is the replicates' ``(1 - level) / 2``
  and ``(1 + level) / 2`` quantiles. Seed resampling carries the run-to-run noise (sampling, packing, data
  order), window resampling the held-out-set noise. With one seed only the latter is measured, and the
  report says so.
- ``significant`` is False when the interval contains 0 (the report marks the cell "not significant").

Invariants (tested): a difference that is the same constant on every token has the interval ``[c, c]``;
swapping ``X`` and ``B`` negates the estimate and mirrors the interval; the estimate equals the mean of the
per-seed differences of `lcdata eval-loss`'s own mean losses. Deterministic: the generator is seeded from
``seed`` and the cell's position, so a report is byte-identical on every run.

Cost: O(n_boot x (seeds + windows)) per cell with two matrix products (n_boot = 2,000 by default).
"""

from __future__ import annotations

import numpy as np
import polars as pl

ALL = "ALL"
UNIGRAM = "unigram:"
N_BOOT = 2000
LEVEL = 0.95


def run_label(strategy: str, seed: int | None, unigram: bool = False) -> str:
    """The eval-loss label of a run: ``per-source@1`` (``per-source`` without seeds); ``unigram:`` in front of
    the unigram model of that run's training shards."""
    name = strategy if seed is None else f"{strategy}@{seed}"
    return UNIGRAM + name if unigram else name


def paired_bootstrap(dx: np.ndarray, n: np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL,
                     rng: np.random.Generator | None = None) -> dict:
    """Estimate, interval and per-seed values of a paired difference (see the module docstring).

    ``dx``: (seeds, windows) summed loss differences; ``n``: (windows,) token counts, all > 0.
    """
    dx = np.atleast_2d(np.asarray(dx, dtype=np.float64))
    n = np.asarray(n, dtype=np.float64)
    S, W = dx.shape
    if W == 0 or n.sum() <= 0:
        return {"delta": None, "lo": None, "hi": None, "per_seed": [None] * S, "significant": None}
    rng = rng or np.random.default_rng(0)
    per_seed = dx.sum(1) / n.sum()
    M = rng.multinomial(W, np.full(W, 1.0 / W), size=n_boot).astype(np.float64)  # (B, W) window counts
    K = rng.multinomial(S, np.full(S, 1.0 / S), size=n_boot).astype(np.float64)  # (B, S) seed counts
    reps = ((dx @ M.T).T / (M @ n)[:, None] * K).sum(1) / S  # n > 0 everywhere, so M @ n > 0
    lo, hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    lo, hi = float(min(lo, per_seed.mean())), float(max(hi, per_seed.mean()))  # rounding: the estimate is inside
    return {"delta": float(per_seed.mean()), "lo": lo, "hi": hi, "per_seed": per_seed.tolist(),
            "significant": not (lo <= 0.0 <= hi)}


def _cells(units: pl.DataFrame) -> pl.DataFrame:
    """``units`` plus an ``ALL`` source per (model, window, bucket)."""
    tot = units.group_by("model", "window", "bucket_min").agg(pl.col("n_tokens").sum(), pl.col("loss_sum").sum())
    return pl.concat([units.select("model", "window", "source", "bucket_min", "n_tokens", "loss_sum"),
                      tot.select("model", "window", pl.lit(ALL).alias("source"), "bucket_min", "n_tokens", "loss_sum")])


def ablation_differences(units: pl.DataFrame, strategies: list[str], seeds: list[int | None],
                         baseline: str | None = None, n_boot: int = N_BOOT, level: float = LEVEL,
                         seed: int = 0) -> pl.DataFrame:
    """One row per (strategy other than the baseline, source, bucket_min): the model's paired difference to
    the baseline (``delta``, ``lo``, ``hi``, ``per_seed``, ``significant``) and, where ``units`` holds the
    unigram models (`run_label` ``unigram=True``), the same for them (``unigram_*``). ``n_tokens``: the
    cell's held-out tokens. Sources in first-seen order, ``ALL`` last."""
    baseline = baseline or strategies[0]
    cells = _cells(units)
    sources = [s for s in cells["source"].unique(maintain_order=True).to_list() if s != ALL] + [ALL]
    buckets = sorted(cells["bucket_min"].unique().to_list())
    models = set(cells["model"].unique().to_list())
    rows = []
    for si, strategy in enumerate(s for s in strategies if s != baseline):
        for ci, (source, b) in enumerate((s, b) for s in sources for b in buckets):
            c = cells.filter((pl.col("source") == source) & (pl.col("bucket_min") == b))
            row = {"strategy": strategy, "baseline": baseline, "source": source, "bucket_min": b}
            for prefix, uni in (("", False), ("unigram_", True)):
                names = [(run_label(strategy, k, uni), run_label(baseline, k, uni)) for k in seeds]
                if not all(x in models and y in models for x, y in names):
                    row.update({f"{prefix}{k}": None for k in ("delta", "lo", "hi", "per_seed", "significant")})
                    continue
                wide = c.filter(pl.col("model").is_in([m for pair in names for m in pair])).pivot(
                    on="model", index="window", values="loss_sum", aggregate_function="first").sort("window")
                n = (c.filter(pl.col("model") == names[0][1]).select("window", "n_tokens")
                     .join(wide.select("window"), on="window", how="right").sort("window"))
                if not len(wide):
                    row.update({f"{prefix}{k}": None for k in ("delta", "lo", "hi", "per_seed", "significant")})
                    row.setdefault("n_tokens", 0)
                    continue
                dx = np.stack([wide[x].to_numpy() - wide[y].to_numpy() for x, y in names])
                r = paired_bootstrap(dx, n["n_tokens"].to_numpy(), n_boot, level,
                                     np.random.default_rng([seed, si, ci, int(uni)]))
                row.update({f"{prefix}{k}": v for k, v in r.items()})
                row["n_tokens"] = int(n["n_tokens"].sum())
            rows.append(row)
    schema = {"strategy": pl.Utf8, "baseline": pl.Utf8, "source": pl.Utf8, "bucket_min": pl.Int64}
    for prefix in ("", "unigram_"):
        schema |= {f"{prefix}delta": pl.Float64, f"{prefix}lo": pl.Float64, f"{prefix}hi": pl.Float64,
                   f"{prefix}per_seed": pl.List(pl.Float64), f"{prefix}significant": pl.Boolean}
    schema["n_tokens"] = pl.Int64
    return pl.DataFrame(rows, schema=schema)
