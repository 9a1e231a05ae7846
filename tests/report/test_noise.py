"""Paired bootstrap differences (`lcdata.report.noise`): exact on a constant shift, antisymmetric, the
per-seed estimate equals a hand computation, the interval agrees with an independent index-resampling
bootstrap, and its coverage is near its level on simulated data with a known difference."""

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lcdata.report.noise import ALL, ablation_differences, paired_bootstrap, run_label


@given(c=st.floats(-2, 2, allow_nan=False), S=st.integers(1, 4), n=st.lists(st.integers(1, 500), min_size=1,
                                                                              max_size=30))
@settings(max_examples=40, deadline=None)
def test_a_constant_shift_has_a_point_interval(c, S, n):
    n = np.asarray(n, dtype=float)
    r = paired_bootstrap(np.tile(c * n, (S, 1)), n, n_boot=200)
    assert r["delta"] == pytest.approx(c, abs=1e-9)
    assert r["lo"] == pytest.approx(c, abs=1e-9) and r["hi"] == pytest.approx(c, abs=1e-9)
    if abs(c) > 1e-6:
        assert r["significant"]


@given(seed=st.integers(0, 10_000), S=st.integers(1, 4), W=st.integers(2, 40))
@settings(max_examples=30, deadline=None)
def test_swapping_the_pair_negates_the_estimate_and_mirrors_the_interval(seed, S, W):
    g = np.random.default_rng(seed)
    n = g.integers(1, 300, W).astype(float)
    dx = g.normal(0.01, 0.3, (S, W)) * n
    a = paired_bootstrap(dx, n, 500, rng=np.random.default_rng(1))
    b = paired_bootstrap(-dx, n, 500, rng=np.random.default_rng(1))
    assert b["delta"] == pytest.approx(-a["delta"]) and b["lo"] == pytest.approx(-a["hi"])
    assert b["hi"] == pytest.approx(-a["lo"]) and a["lo"] <= a["delta"] <= a["hi"]
    assert a["per_seed"] == pytest.approx([dx[s].sum() / n.sum() for s in range(S)])


def naive_interval(dx, n, n_boot, g):
    """The same two-level bootstrap written as index draws and a loop (independent of the matrix form)."""
    S, W = dx.shape
    reps = []
    for _ in range(n_boot):
        w = g.integers(0, W, W)
        seeds = g.integers(0, S, S)
        reps.append(np.mean([dx[s, w].sum() / n[w].sum() for s in seeds]))
    return np.quantile(reps, [0.025, 0.975])


def test_the_interval_agrees_with_an_independent_loop_bootstrap():
    g = np.random.default_rng(7)
    n = g.integers(20, 400, 60).astype(float)
    dx = (g.normal(0.02, 0.2, (3, 60)) + g.normal(0, 0.05, (3, 1))) * n
    r = paired_bootstrap(dx, n, 4000, rng=np.random.default_rng(0))
    lo, hi = naive_interval(dx, n, 4000, np.random.default_rng(1))
    assert r["lo"] == pytest.approx(lo, abs=0.1 * (hi - lo)) and r["hi"] == pytest.approx(hi, abs=0.1 * (hi - lo))


def test_coverage_is_near_the_level_when_the_truth_is_known():
    """Simulated ablations whose true difference is 0.05 per token: the 95% interval holds it in most."""
    g = np.random.default_rng(3)
    hits = 0
    trials = 150
    for t in range(trials):
        n = g.integers(50, 300, 40).astype(float)
        dx = (0.05 + g.normal(0, 0.5, (8, 40)) / np.sqrt(n)) * n
        r = paired_bootstrap(dx, n, 400, rng=np.random.default_rng(t))
        hits += r["lo"] <= 0.05 <= r["hi"]
    assert 0.85 <= hits / trials <= 1.0


def test_ablation_differences_pairs_runs_by_seed_and_adds_all():
    """Two seeds, two strategies, the unigram models too: each cell's delta is the mean over seeds of the
    difference of mean losses, by hand; ALL sums the sources; a missing unigram leaves its columns null."""
    g = np.random.default_rng(0)
    rows = []
    for strategy in ("natural", "per-source"):
        for seed in (0, 1):
            for uni in (False, True):
                for w in range(12):
                    for source in ("books", "web"):
                        for b in (0, 256):
                            n = int(g.integers(1, 50))
                            rows.append({"model": run_label(strategy, seed, uni), "window": w, "source": source,
                                         "bucket_min": b, "n_tokens": n, "loss_sum": float(n * g.normal(5, 0.3))})
    units = pl.DataFrame(rows)
    # the same windows score the same tokens in every model
    units = units.with_columns(pl.col("n_tokens").first().over("window", "source", "bucket_min"))
    d = ablation_differences(units, ["natural", "per-source"], [0, 1], n_boot=300)
    assert d["source"].unique(maintain_order=True).to_list() == ["books", "web", ALL]
    for r in d.iter_rows(named=True):
        cell = units if r["source"] == ALL else units.filter(pl.col("source") == r["source"])
        cell = cell.filter(pl.col("bucket_min") == r["bucket_min"])

        def mean_loss(model, cell=cell):
            f = cell.filter(pl.col("model") == model)
            return f["loss_sum"].sum() / f["n_tokens"].sum()

        want = [mean_loss(run_label("per-source", k)) - mean_loss(run_label("natural", k)) for k in (0, 1)]
        assert r["per_seed"] == pytest.approx(want) and r["delta"] == pytest.approx(np.mean(want))
        assert r["unigram_delta"] is not None and r["lo"] <= r["delta"] <= r["hi"]
    no_uni = ablation_differences(units.filter(~pl.col("model").str.starts_with("unigram:")),
                                  ["natural", "per-source"], [0, 1], n_boot=100)
    assert no_uni["unigram_delta"].null_count() == len(no_uni) and no_uni["delta"].null_count() == 0
