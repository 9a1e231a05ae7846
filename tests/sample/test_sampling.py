"""Properties of the sampling planner (`lcdata.sample.solver`) on generated per-document length tables.

Every expected value here is recomputed independently from the generated table with plain Python / NumPy
(corpus tokens per source, targets B x share, unit lengths after cutting), never read back from the plan.
Guarantees checked (the module docstring's): each group's achieved tokens lie within
tol = max(its longest unit, 0.5% of its target) of the group's target; the total within max(0.1% of the
budget, half the longest unit of any group), plus < 0.5 token per group that has no remainder to select
(float rounding of B x share).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lcdata.errors import ConfigError
from lcdata.sample import SampleConfig, TargetSpec, make_units, recipe_warnings, solve_lambda, solve_plan
from lcdata.sample.config import SLIMPAJAMA_SHARES
from lcdata.util.hashing import doc_hash, to_unit

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
EPS = 1e-6


# ----------------------------------------------------------------------------------------- generators


def _table(docs: list[tuple[int, int, int]], with_id: bool = False) -> pl.DataFrame:
    """(source index, n_tokens, file index) per document -> file, row, source, n_tokens (rows per file)."""
    next_row: dict[int, int] = defaultdict(int)
    rows = []
    for s, n, f in docs:
        rows.append((f"part-{f}.jsonl.zst", next_row[f], f"src{s}", n))
        next_row[f] += 1
    df = pl.DataFrame(rows, schema={"file": pl.String, "row": pl.Int64, "source": pl.String, "n_tokens": pl.Int64},
                      orient="row")
    if with_id:
        df = df.with_columns(doc_id=pl.format("id-{}-{}", pl.col("file"), pl.col("row")))
    return df


_length = st.one_of(st.just(0), st.integers(1, 3_000), st.integers(3_000, 40_000), st.integers(40_000, 200_000))


@st.composite
def length_tables(draw, max_docs: int = 80, max_sources: int = 4, with_id: bool | None = False):
    n_src = draw(st.integers(1, max_sources))
    docs = draw(st.lists(st.tuples(st.integers(0, n_src - 1), _length, st.integers(0, 3)), min_size=1,
                         max_size=max_docs))
    assume(sum(n for _, n, _ in docs) > 0)
    wid = draw(st.booleans()) if with_id is None else with_id
    return _table(docs, with_id=wid)


def _unit_lengths(df: pl.DataFrame, max_length: int | None, chunk: bool) -> list[tuple[str, int]]:
    """(source, unit length) per unit, computed independently of `make_units`."""
    out = []
    for s, n in zip(df["source"].to_list(), df["n_tokens"].to_list()):
        if max_length is None:
            out.append((s, n))
        elif not chunk:
            out.append((s, min(n, max_length)))
        else:
            k = max(1, -(-n // max_length))
            out += [(s, min(n, (i + 1) * max_length) - i * max_length) for i in range(k)]
    return out


def _per_source(pairs) -> tuple[dict[str, int], dict[str, int]]:
    tot: dict[str, int] = defaultdict(int)
    mx: dict[str, int] = defaultdict(int)
    for s, n in pairs:
        tot[s] += n
        mx[s] = max(mx[s], n)
    return dict(tot), dict(mx)


def _achieved_by_source(plan) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for s, n, c in zip(plan.plan["source"].to_list(), plan.plan["length"].to_list(), plan.plan["copies"].to_list()):
        out[s] += n * c
    return dict(out)


# ------------------------------------------------------------------------------- budgets and repeats

CUT_LEN = 4096


@SETTINGS
@given(df=length_tables(), strategy=st.sampled_from(["natural", "per-source", "cut", "cut-chunk", "global"]),
       ratio=st.floats(0.01, 4.0), max_repeat=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_budget_and_source_targets_hit(df, strategy, ratio, max_repeat, seed):
    cut = strategy.startswith("cut")
    chunk = strategy == "cut-chunk"
    units = _unit_lengths(df, CUT_LEN if cut else None, chunk)
    n_src, mx_src = _per_source(units)
    total = sum(n_src.values())
    assume(total > 0)
    ratio = min(ratio, max_repeat)  # a budget the corpus can give under max_repeat
    budget = max(1, int(ratio * total))
    cfg = SampleConfig(strategy="cut" if cut else strategy, budget_tokens=budget, seed=seed, max_repeat=max_repeat,
                       max_length=CUT_LEN if cut else None, chunk=chunk)
    plan = solve_plan(df, cfg)
    assert plan.capped == []
    got = _achieved_by_source(plan)
    assert plan.total_tokens == sum(got.values())
    # the total within half the longest unit (the carry between groups), never the sum of the groups' halves
    slack = max(max(mx_src.values()) / 2, 0.001 * budget) + 0.5 * plan.groups.height + EPS
    assert abs(plan.total_tokens - budget) <= slack
    if strategy != "global":
        # each source (= group) within max(its longest unit, 0.5%) of budget x its corpus share
        for s in n_src:
            target = budget * n_src[s] / total
            assert abs(got.get(s, 0) - target) <= max(mx_src[s], 0.005 * target) + EPS, (s, got.get(s, 0), target)
    # the solved groups agree with the achieved tokens, each within its tolerance of what it was granted
    for g in plan.groups.iter_rows(named=True):  # global too: one group per source (`_global_shares`)
        mx = mx_src[g["source"]]
        tol = max(mx, 0.005 * g["granted_tokens"])
        assert g["tolerance"] in (0.0, pytest.approx(tol))
        assert abs(g["achieved_tokens"] - g["granted_tokens"]) <= (tol if g["tolerance"] else 0.5) + EPS
        assert g["granted_tokens"] == pytest.approx(g["target_tokens"])
    # repeats only when needed, never more than max_repeat
    copies = plan.plan["copies"].to_numpy()
    assert (copies >= 1).all() and (copies <= max_repeat).all()
    if budget <= total:
        assert (copies <= 1).all()
    assert copies.max(initial=0) <= math.ceil(budget / total + 1e-9)
    if budget / total >= 1 + 1e-9:  # whole passes: every non-empty unit is in at least floor(B/N) times
        n_nonempty = sum(1 for _, n in units if n > 0)
        assert plan.plan.height == n_nonempty
        assert copies.min() >= math.floor(budget / total - 1e-9)
    # empty documents never selected; unit lengths as cut
    assert (plan.plan["length"] > 0).all()
    if cut:
        assert (plan.plan["length"] <= CUT_LEN).all()


@SETTINGS
@given(df=length_tables(max_docs=200, max_sources=8),
       strategy=st.sampled_from(["natural", "per-source", "cut", "cut-chunk", "global", "upsample-sources"]),
       ratio=st.floats(0.01, 3.0), seed=st.integers(0, 2**31))
def test_total_lands_within_one_document_or_half_a_percent(df, strategy, ratio, seed):
    """The issue's promise for the strategies with a total budget: the total within max(one document, 0.5% of
    the budget), however many groups round their own target (the carry between groups; module step 5).
    "One document" is the longest unit: the crossing unit the plan stops at may be one it leaves out."""
    cut = strategy.startswith("cut")
    units = _unit_lengths(df, CUT_LEN if cut else None, strategy == "cut-chunk")
    n_src, mx_src = _per_source(units)
    total = sum(n_src.values())
    assume(total > 0)
    budget = max(1, int(min(ratio, 4) * total))
    shares = ()
    if strategy == "upsample-sources":
        assume(sum(v > 0 for v in n_src.values()) >= 2)
        shares = ((min(s for s, v in n_src.items() if v > 0), 0.5),)
        budget = max(1, int(min(ratio, 1.0) * total / 4))  # the named source at 50% stays under max_repeat
    cfg = SampleConfig(strategy="cut" if cut else strategy, budget_tokens=budget, seed=seed, on_cap="cap",
                       max_length=CUT_LEN if cut else None, chunk=strategy == "cut-chunk", source_shares=shares)
    plan = solve_plan(df, cfg)
    assume(plan.capped == [])
    longest = max(mx_src.values())
    assert abs(plan.total_tokens - budget) <= max(longest, 0.005 * budget) + EPS
    # the proven bound (module step 5)
    assert abs(plan.total_tokens - budget) <= max(longest / 2, 0.001 * budget) + 0.5 * plan.groups.height + EPS


@SETTINGS
@given(df=length_tables(max_sources=3), strategy=st.sampled_from(["natural", "per-source", "global", "cut"]),
       seed=st.integers(0, 2**31))
def test_no_repeats_when_the_corpus_suffices(df, strategy, seed):
    """Budget = the whole corpus with max_repeat=1: every non-empty document exactly once, no error."""
    cut = strategy == "cut"
    units = _unit_lengths(df, CUT_LEN if cut else None, False)
    total = sum(n for _, n in units)
    cfg = SampleConfig(strategy=strategy, budget_tokens=total, seed=seed, max_repeat=1,
                       max_length=CUT_LEN if cut else None)
    plan = solve_plan(df, cfg)
    assert plan.total_tokens == total
    assert (plan.plan["copies"] == 1).all()
    assert plan.plan.height == sum(1 for _, n in units if n > 0)


def test_whole_corpus_with_max_repeat_1_on_large_sources():
    """Regression: B x share rounds a hair above a source's tokens when B is the whole corpus; that is not a
    second pass (was a spurious "1.00 passes > --max-repeat 1" error for sources of ~10^9 tokens)."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = 30
        lengths = rng.integers(1, 10**9, n)
        df = pl.DataFrame({"file": ["f"] * n, "row": np.arange(n), "source": [f"s{i % 4}" for i in range(n)],
                           "n_tokens": lengths})
        plan = solve_plan(df, SampleConfig(strategy="natural", budget_tokens=int(lengths.sum()), max_repeat=1))
        assert plan.total_tokens == int(lengths.sum())
        assert (plan.plan["copies"] == 1).all()


def test_over_budget_errors_or_caps():
    df = _table([(0, 1000, 0), (0, 2000, 0), (1, 500, 1)])
    with pytest.raises(ConfigError, match=r"max-repeat 2") as e:
        solve_plan(df, SampleConfig(strategy="natural", budget_tokens=3500 * 3, max_repeat=2))
    assert "src0" in str(e.value) and "--budget-tokens" in str(e.value)
    plan = solve_plan(df, SampleConfig(strategy="natural", budget_tokens=3500 * 3, max_repeat=2, on_cap="cap"))
    assert len(plan.capped) == 2 and all("capped to" in c for c in plan.capped)
    assert (plan.plan["copies"] == 2).all()
    assert plan.total_tokens == 2 * 3500


# ------------------------------------------------------------------------------------- determinism


@SETTINGS
@given(df=length_tables(with_id=None), strategy=st.sampled_from(["natural", "per-source", "cut-chunk", "global"]),
       ratio=st.floats(0.05, 2.5), data=st.data())
def test_plan_independent_of_row_order(df, strategy, ratio, data):
    perm = data.draw(st.permutations(range(df.height)))
    shuffled = df[list(perm)]
    cut = strategy.startswith("cut")
    total = sum(n for _, n in _unit_lengths(df, CUT_LEN if cut else None, False))
    assume(total > 0)
    cfg = SampleConfig(strategy="cut" if cut else strategy, budget_tokens=max(1, int(ratio * total)), seed=7,
                       max_length=CUT_LEN if cut else None, chunk=strategy == "cut-chunk")
    a, b = solve_plan(df, cfg), solve_plan(shuffled, cfg)
    assert a.plan.equals(b.plan)
    assert a.groups.sort("group").equals(b.groups.sort("group"))
    assert a.report.equals(b.report)


ALL_STRATEGIES = ("natural", "cut", "per-source", "global", "upsample-sources", "target")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table_seed=st.integers(0, 2**31), n_books=st.integers(100, 300), n_web=st.integers(4000, 6000),
       ratio=st.floats(0.15, 0.4), seed=st.integers(0, 2**31))
def test_every_strategy_meets_the_budget_as_tightly_as_per_source(table_seed, n_books, n_web, ratio, seed):
    """Issue 16: `global` missed its budget by up to half its longest document (-10.9% to +8.3% on 1M tokens
    of a held-out corpus) while per-source stayed within 0.1%. On a generated corpus of a few long documents
    (books, 4,096-6,000 tokens) and two sources of many short ones (1-1,500 tokens, enough to carry half a
    book), every strategy lands within max(0.1% of the budget, half the longest short document) + 0.5 token
    per group: the error left when the short sources absorb the long documents' rounding."""
    rng = np.random.default_rng(table_seed)
    rows = [("books", int(n)) for n in rng.integers(4096, 6001, n_books)]
    for s in ("web0", "web1"):
        rows += [(s, int(n)) for n in rng.integers(1, 1501, n_web)]
    df = pl.DataFrame({"file": [f"{s}.jsonl" for s, _ in rows], "row": list(range(len(rows))),
                       "source": [s for s, _ in rows], "n_tokens": [n for _, n in rows]})
    total = sum(n for _, n in rows)
    budget = int(ratio * total)
    for strategy in ALL_STRATEGIES:
        cfg = SampleConfig(strategy=strategy, budget_tokens=budget, seed=seed,
                           max_length=4096 if strategy == "cut" else None,
                           source_shares=(("web0", 0.6),) if strategy == "upsample-sources" else (),
                           target=TargetSpec() if strategy == "target" else None)
        plan = solve_plan(df, cfg)
        assert plan.capped == []
        got = sum(n * c for n, c in zip(plan.plan["length"].to_list(), plan.plan["copies"].to_list()))
        assert abs(got - budget) <= max(0.001 * budget, 1500 / 2) + 0.5 * plan.groups.height + EPS, \
            (strategy, got, budget, got / budget - 1)


@SETTINGS
@given(df=length_tables(), strategy=st.sampled_from(["natural", "per-source", "global"]),
       ratio=st.floats(0.05, 2.5), seed=st.integers(0, 2**31))
def test_decision_depends_only_on_identity_length_and_group_parameters(df, strategy, ratio, seed):
    """Recompute every unit's copies from (seed, file, row) and the solved per-group (passes, lambda, theta)
    alone: selected iff (u / p, hash) <= theta with p = min(1, lambda x weight) (the module's claim)."""
    total = int(df["n_tokens"].sum())
    cfg = SampleConfig(strategy=strategy, budget_tokens=max(1, int(ratio * total)), seed=seed)
    plan = solve_plan(df, cfg)
    groups = {g["group"]: g for g in plan.groups.iter_rows(named=True)}
    h = doc_hash(df, seed)
    u = to_unit(h)
    got = {(f, r): c for f, r, c in zip(plan.plan["file"], plan.plan["row"], plan.plan["copies"])}
    for i, (f, r, s, n) in enumerate(df.select("file", "row", "source", "n_tokens").iter_rows()):
        g = groups[s]
        w = cfg.short_keep if strategy != "natural" and n < cfg.threshold else 1.0
        if n == 0:
            expect = 0
        else:
            lam = g["lambda"]
            p = (1.0 if g["remainder"] > 0 else 0.0) if lam is None else min(1.0, lam * w)
            key = u[i] / p if p > 0 else math.inf
            sel = g["theta_key"] is not None and (key, int(h[i])) <= (g["theta_key"], g["theta_hash"])
            expect = g["passes"] + int(sel)
        assert got.get((f, r), 0) == expect, (f, r, n)


def test_hash_depends_only_on_identity_and_seed():
    df = _table([(i % 3, 100 + i, i % 4) for i in range(200)])
    h = doc_hash(df, 3)
    sub = df.with_row_index("i").filter(pl.col("row") % 3 == 1)
    assert (doc_hash(sub, 3) == h[sub["i"].to_numpy()]).all()
    assert (doc_hash(df, 4) != h).mean() > 0.99
    u = to_unit(h)
    assert ((u >= 0) & (u < 1)).all()
    ids = df.with_columns(doc_id=pl.format("{}:{}", "file", "row"))
    hi = doc_hash(ids, 3, "doc_id")
    assert (doc_hash(ids[::-1], 3, "doc_id") == hi[::-1]).all()


# ------------------------------------------------------------------------------------- cut strategy


@SETTINGS
@given(lengths=st.lists(st.integers(0, 30_000), min_size=1, max_size=60), mx=st.integers(1, 9_000))
def test_cut_truncates_and_chunks_tile_each_document(lengths, mx):
    df = _table([(i % 2, n, i % 3) for i, n in enumerate(lengths)])
    trunc = make_units(df, SampleConfig(strategy="cut", budget_tokens=1, max_length=mx))
    assert trunc.height == df.height
    assert (trunc["length"] <= mx).all()
    assert trunc["length"].to_list() == [min(n, mx) for n in df["n_tokens"].to_list()]
    for n, end in zip(trunc["n_tokens"], trunc["token_end"]):
        assert end == (mx if n > mx else None)  # null = the whole document

    ch = make_units(df, SampleConfig(strategy="cut", budget_tokens=1, max_length=mx, chunk=True))
    assert (ch["length"] <= mx).all()
    for _, part in ch.group_by(["file", "row"], maintain_order=True):
        part = part.sort("chunk")
        n = part["n_tokens"][0]
        starts = part["token_start"].to_list()
        ends = [n if e is None else e for e in part["token_end"].to_list()]
        assert part["chunk"].to_list() == list(range(part.height))
        assert starts[0] == 0 and ends[-1] == n
        assert all(a == b for a, b in zip(ends, starts[1:]))  # contiguous, no overlap
        assert part["length"].to_list() == [e - s for s, e in zip(starts, ends)]
        assert sum(part["length"]) == n
        assert part.height == max(1, -(-n // mx))

    # budget = all chunk tokens: the plan is the whole tiling, each chunk once
    total = sum(lengths)
    assume(total > 0)
    plan = solve_plan(df, SampleConfig(strategy="cut", budget_tokens=total, max_length=mx, chunk=True, max_repeat=1))
    assert plan.total_tokens == total and (plan.plan["copies"] == 1).all()
    tiles = plan.plan.group_by("file", "row").agg(pl.col("length").sum(), pl.col("n_tokens").first())
    assert (tiles["length"] == tiles["n_tokens"]).all()
    assert tiles.height == sum(1 for n in lengths if n > 0)


# ---------------------------------------------------------------------------------- solve_lambda


@SETTINGS
@given(classes=st.lists(st.tuples(st.floats(0.01, 1.0), st.integers(0, 10**7)), min_size=1, max_size=6),
       frac=st.one_of(st.just(0.0), st.floats(1e-9, 0.999999)))
def test_solve_lambda_solves_the_piecewise_linear_equation(classes, frac):
    W = sum(c[1] for c in classes)
    assume(W > 0)
    R = frac * W
    lam = solve_lambda(R, classes)
    f = lambda x: sum(min(1.0, x * w) * Wc for w, Wc in classes)  # noqa: E731
    if R == 0:
        assert lam == 0.0
        return
    assert math.isfinite(lam) and lam > 0
    assert f(lam) == pytest.approx(R, rel=1e-9, abs=1e-6)
    assert f(lam * (1 - 1e-6)) < R  # the smallest such lambda (f strictly increases below saturation)
    # more remainder, larger lambda; scaling every weight by c scales lambda by 1/c
    assert solve_lambda(min(W * 0.9999999, R * 1.1 + 1), classes) >= lam
    scaled = solve_lambda(R, [(w / 2, Wc) for w, Wc in classes])
    assert scaled == pytest.approx(2 * lam, rel=1e-9)


def test_solve_lambda_edges():
    assert solve_lambda(0.0, [(1.0, 10.0)]) == 0.0
    assert solve_lambda(-3.0, [(1.0, 10.0)]) == 0.0
    assert solve_lambda(11.0, [(1.0, 10.0)]) == math.inf
    assert solve_lambda(5.0, [(1.0, 10.0)]) == pytest.approx(0.5)
    # below saturation: lam 100 + 0.1 lam 1000 = 150 -> lam = 0.75
    assert solve_lambda(150.0, [(1.0, 100.0), (0.1, 1000.0)]) == pytest.approx(0.75)
    # long docs (w=1) saturate at lambda=1, then short docs (w=0.1) fill: 100 + 0.1 lam 1000 = 300 -> lam = 2
    assert solve_lambda(300.0, [(1.0, 100.0), (0.1, 1000.0)]) == pytest.approx(2.0)
    assert solve_lambda(50.0, [(1.0, 100.0), (0.1, 1000.0), (0.5, 0.0)]) == pytest.approx(50 / 200)


# --------------------------------------------------------------------- statistical properties


def _lognormal_table(n_per_source: dict[str, tuple[int, float, float]], seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for s, (n, median, sigma) in n_per_source.items():
        lengths = np.maximum(1, rng.lognormal(np.log(median), sigma, n).astype(np.int64))
        frames.append(pl.DataFrame({"file": [f"{s}/part-{i // 1000:03d}" for i in range(n)],
                                    "row": np.arange(n) % 1000, "source": [s] * n, "n_tokens": lengths}))
    return pl.concat(frames)


EDGES = np.array([0, 1024, 4096, 16384])


def _bucket_tokens(lengths, weights) -> np.ndarray:
    b = np.searchsorted(EDGES, np.asarray(lengths), side="right") - 1
    return np.bincount(b, weights=np.asarray(weights, dtype=np.float64), minlength=len(EDGES))


def test_natural_keeps_the_length_distribution_in_expectation():
    df = _lognormal_table({"web": (6000, 800, 1.2), "books": (300, 20000, 1.0), "code": (3000, 1500, 1.4)})
    cfg_buckets = tuple(int(x) for x in EDGES)
    achieved = defaultdict(lambda: np.zeros(len(EDGES)))
    seeds = range(8)
    for seed in seeds:
        plan = solve_plan(df, SampleConfig(strategy="natural", budget_tokens=int(df["n_tokens"].sum() * 0.3),
                                           seed=seed, report_buckets=cfg_buckets))
        # the report's target equals the original distribution inside each source, exactly
        cells = plan.report.filter(pl.col("level") == "bucket")
        assert np.allclose(cells["target_share_in_source"], cells["original_share_in_source"], atol=1e-9)
        for s, part in plan.plan.group_by("source"):
            achieved[s[0]] += _bucket_tokens(part["length"], part["length"] * part["copies"])
    for s, part in df.group_by("source"):
        orig = _bucket_tokens(part["n_tokens"], part["n_tokens"])
        orig /= orig.sum()
        ach = achieved[s[0]] / achieved[s[0]].sum()
        assert np.abs(ach - orig).max() < 0.04, (s, orig, ach)


@pytest.mark.parametrize("ratio", [0.2, 0.8])
def test_per_source_keeps_short_docs_at_short_keep_times_the_long_rate(ratio):
    """Inside a source a short document (< threshold) is selected at ~short_keep x the rate of a long one; with
    a large budget (ratio 0.8) the long ones saturate (all taken) and the short ones fill the rest."""
    rng = np.random.default_rng(1)
    n = 20000
    short = rng.integers(100, 4096, n)
    long = rng.integers(4096, 12000, n // 4)
    lengths = np.concatenate([short, long])
    df = pl.DataFrame({"file": ["a"] * len(lengths), "row": np.arange(len(lengths)), "source": ["web"] * len(lengths),
                       "n_tokens": lengths})
    df = pl.concat([df, df.with_columns(source=pl.lit("code"), file=pl.lit("b"))])
    budget = int(ratio * lengths.sum() * 2)
    plan = solve_plan(df, SampleConfig(strategy="per-source", budget_tokens=budget, seed=5))
    assert abs(plan.total_tokens - budget) <= 12000
    for src in ("web", "code"):
        sel = plan.plan.filter(pl.col("source") == src)
        rate_short = (sel["n_tokens"] < 4096).sum() / len(short)
        rate_long = (sel["n_tokens"] >= 4096).sum() / len(long)
        # expected rates from the solved lambda (min(1, lambda w)), independent of the selection itself
        W_long, W_short = float(long.sum()), float(short.sum())
        lam = solve_lambda(budget / 2, [(1.0, W_long), (0.1, W_short)])
        assert rate_long == pytest.approx(min(1.0, lam), abs=0.03)
        assert rate_short == pytest.approx(min(1.0, 0.1 * lam), rel=0.1)
        if lam <= 1:
            assert rate_short / rate_long == pytest.approx(0.1, rel=0.15)
        else:
            # p_long = 1; order sampling's stopping point leaves out at most a few of them (inclusion ~ p)
            assert rate_long >= 0.98 and 0.1 < rate_short < 1
        # the long-document token share goes up
        long_share = float((sel["n_tokens"] * (sel["n_tokens"] >= 4096)).sum()) / sel["n_tokens"].sum()
        assert long_share > W_long / (W_long + W_short)


def test_per_source_is_the_papers_recipe_on_a_slimpajama_like_table():
    """SlimPajama-like sources: per-source keeps each source's share and pushes long-document tokens up.

    The books source has 40 documents of up to 1.2M tokens: its nearest prefix overshoots by 185K tokens (2.6
    points of share); the other sources absorb that (the carry), so the total lands within 0.1%."""
    df = _lognormal_table({"RedPajamaCommonCrawl": (8000, 1066, 1.2), "RedPajamaC4": (12000, 315, 1.0),
                           "RedPajamaArXiv": (200, 14565, 0.8), "RedPajamaBook": (40, 121602, 0.8)}, seed=3)
    total = int(df["n_tokens"].sum())
    budget = total // 5
    plan = solve_plan(df, SampleConfig(strategy="per-source", budget_tokens=budget, seed=1))
    assert abs(plan.total_tokens - budget) <= 0.001 * budget
    longest = dict(df.group_by("source").agg(pl.col("n_tokens").max()).iter_rows())
    src = plan.report.filter(pl.col("level") == "source")
    for r in src.iter_rows(named=True):
        assert r["target_share"] == pytest.approx(r["original_share"], abs=1e-9)
        assert r["achieved_share"] == pytest.approx(r["original_share"], abs=0.03)
        t = budget * r["original_share"]
        assert abs(r["achieved_tokens"] - t) <= max(longest[r["source"]], 0.005 * t)
    long_orig = float(df.filter(pl.col("n_tokens") >= 4096)["n_tokens"].sum()) / total
    sel = plan.plan
    long_ach = float((sel["length"] * sel["copies"] * (sel["length"] >= 4096)).sum()) / plan.total_tokens
    assert long_ach > long_orig + 0.2


# ------------------------------------------------------------------------------------------- target


@st.composite
def target_cases(draw):
    """A table with every (source, bucket) cell populated, a spec and a budget."""
    edges = (0, 1000, 10000)
    bounds = [(1, 999), (1000, 9999), (10000, 60000)]
    n_src = draw(st.integers(1, 3))
    docs = []
    for s in range(n_src):
        for lo, hi in bounds:
            for n in draw(st.lists(st.integers(lo, hi), min_size=1, max_size=12)):
                docs.append((s, n, draw(st.integers(0, 2))))
    df = _table(docs)
    sources = [f"src{s}" for s in range(n_src)]
    w = draw(st.lists(st.integers(0, 10), min_size=n_src, max_size=n_src))
    assume(sum(w) > 0)
    source_shares = None if draw(st.booleans()) else {s: x / sum(w) for s, x in zip(sources, w)}
    bucket_shares = {}
    for key in sources + ["*"]:
        if draw(st.booleans()):
            bw = draw(st.lists(st.integers(0, 10), min_size=3, max_size=3))
            if sum(bw):
                bucket_shares[key] = [x / sum(bw) for x in bw]
    spec = {"source_shares": source_shares, "bucket_edges": list(edges), "bucket_shares": bucket_shares}
    ratio = draw(st.floats(0.05, 1.5))
    return df, spec, max(1, int(ratio * df["n_tokens"].sum()))


def _cell_targets(df: pl.DataFrame, spec: dict, budget: int):
    """B x source share x bucket share per (source, bucket), and cell tokens / max length, from scratch."""
    edges = spec["bucket_edges"]
    cell_tok: dict = defaultdict(int)
    cell_max: dict = defaultdict(int)
    src_tok: dict = defaultdict(int)
    for s, n in zip(df["source"].to_list(), df["n_tokens"].to_list()):
        b = int(np.searchsorted(edges, n, side="right") - 1)
        cell_tok[s, b] += n
        cell_max[s, b] = max(cell_max[s, b], n)
        src_tok[s] += n
    total = sum(src_tok.values())
    targets = {}
    for s in src_tok:
        share = src_tok[s] / total if spec["source_shares"] is None else spec["source_shares"].get(s, 0.0)
        dist = spec["bucket_shares"].get(s, spec["bucket_shares"].get("*"))
        if dist is None:
            dist = [cell_tok[s, b] / src_tok[s] for b in range(len(edges))]
        for b in range(len(edges)):
            targets[s, b] = budget * share * dist[b]
    return targets, cell_tok, cell_max


def _check_target_plan(plan, df, spec, budget, max_repeat):
    targets, cell_tok, cell_max = _cell_targets(df, spec, budget)
    edges = spec["bucket_edges"]
    ach: dict = defaultdict(int)
    for s, n, c in zip(plan.plan["source"], plan.plan["length"], plan.plan["copies"]):
        ach[s, int(np.searchsorted(edges, n, side="right") - 1)] += n * c
    n_capped = 0
    for cell, t in targets.items():
        if t > max_repeat * cell_tok[cell] + 0.5:  # beyond max_repeat passes: capped at all the passes allowed
            n_capped += 1
            assert ach[cell] == max_repeat * cell_tok[cell]
        else:
            assert abs(ach[cell] - t) <= max(cell_max[cell], 0.005 * t) + EPS, (cell, ach[cell], t)
        rep = plan.report.filter((pl.col("level") == "bucket") & (pl.col("source") == cell[0])
                                 & (pl.col("bucket") == cell[1]))
        assert rep["achieved_tokens"][0] == ach[cell]
        assert rep["target_tokens"][0] == pytest.approx(t, rel=1e-9, abs=1e-6)  # the spec's cell target
    assert len(plan.capped) == n_capped
    assert (plan.plan["copies"] <= max_repeat).all()


@SETTINGS
@given(case=target_cases(), max_repeat=st.integers(1, 4))
def test_target_spec_hits_every_cell(case, max_repeat):
    df, spec, budget = case
    cfg = SampleConfig(strategy="target", budget_tokens=budget, target=TargetSpec.from_dict(spec),
                       max_repeat=max_repeat, on_cap="cap")
    _check_target_plan(solve_plan(df, cfg), df, spec, budget, max_repeat)


def test_target_spec_from_json_and_yaml_files(tmp_path):
    df = _lognormal_table({"web": (3000, 600, 1.2), "books": (200, 15000, 1.0), "code": (800, 2000, 1.3)}, seed=2)
    spec = {"source_shares": {"web": 0.4, "books": 0.3, "code": 0.3}, "bucket_edges": [0, 1024, 4096],
            "bucket_shares": {"*": [0.2, 0.3, 0.5], "web": [0.6, 0.3, 0.1], "books": [0.0, 0.2, 0.8]}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    budget = int(df["n_tokens"].sum() * 0.1)
    plans = []
    for name in ("spec.json", "spec.yaml"):
        ts = TargetSpec.load(str(tmp_path / name))
        assert ts.to_dict() == spec
        plan = solve_plan(df, SampleConfig(strategy="target", budget_tokens=budget, target=ts, seed=2))
        assert plan.capped == []
        _check_target_plan(plan, df, spec, budget, 4)
        plans.append(plan.plan)
    assert plans[0].equals(plans[1])


def test_target_spec_errors(tmp_path):
    df = _table([(0, 100, 0), (1, 5000, 0)])
    with pytest.raises(ConfigError, match=r"bookz"):
        solve_plan(df, SampleConfig(strategy="target", budget_tokens=100, target=TargetSpec.from_dict(
            {"source_shares": {"src0": 0.5, "bookz": 0.5}})))
    with pytest.raises(ConfigError, match=r"bookz.*bucket_shares"):  # was silently ignored
        solve_plan(df, SampleConfig(strategy="target", budget_tokens=100, target=TargetSpec.from_dict(
            {"bucket_edges": [0, 1000], "bucket_shares": {"bookz": [0.5, 0.5]}})))
    with pytest.raises(ConfigError, match=r"sum to 0\.9.*not 1"):
        TargetSpec.from_dict({"source_shares": {"src0": 0.5, "src1": 0.4}})
    with pytest.raises(ConfigError, match=r"2 values.*3 buckets"):
        TargetSpec.from_dict({"bucket_edges": [0, 10, 100], "bucket_shares": {"*": [0.5, 0.5]}})
    with pytest.raises(ConfigError, match=r"not found"):
        TargetSpec.load(str(tmp_path / "missing.json"))
    (tmp_path / "bad.yaml").write_text("source_shares: [1, 2\n")
    with pytest.raises(ConfigError, match=r"cannot be parsed"):
        TargetSpec.load(str(tmp_path / "bad.yaml"))
    # a cell the corpus leaves empty but the spec asks tokens of: an error naming it, or capped
    spec = TargetSpec.from_dict({"bucket_edges": [0, 1000], "bucket_shares": {"*": [0.5, 0.5]}})
    with pytest.raises(ConfigError, match=r"'src0', length bucket 1 has no tokens"):
        solve_plan(df, SampleConfig(strategy="target", budget_tokens=100, target=spec))
    plan = solve_plan(df, SampleConfig(strategy="target", budget_tokens=100, target=spec, on_cap="cap"))
    assert any("src0" in c and "capped to 0" in c for c in plan.capped)


# ----------------------------------------------------------------------------- other strategies


@SETTINGS
@given(docs=st.lists(st.tuples(st.integers(0, 2), _length, st.integers(0, 3)), max_size=60),
       share=st.floats(0.05, 0.9), ratio=st.floats(0.05, 1.0))
def test_upsample_sources_hits_the_given_share(docs, share, ratio):
    df = _table(docs + [(0, 700, 9), (1, 3000, 9)])  # at least two sources with tokens
    tok = dict(df.group_by("source").agg(pl.col("n_tokens").sum()).iter_rows())
    mx = dict(df.group_by("source").agg(pl.col("n_tokens").max()).iter_rows())
    total = sum(tok.values())
    budget = max(1, int(ratio * total))
    rest = total - tok["src0"]
    targets = {s: budget * (share if s == "src0" else (1 - share) * tok[s] / rest) for s in tok}
    plan = solve_plan(df, SampleConfig(strategy="upsample-sources", budget_tokens=budget,
                                       source_shares=(("src0", share),), on_cap="cap"))
    got = _achieved_by_source(plan)
    for s, t in targets.items():
        if t > 4 * tok[s] + 0.5:  # more than max_repeat passes: capped, and reported
            assert got[s] == 4 * tok[s] and any(repr(s) in c for c in plan.capped)
        else:
            assert abs(got.get(s, 0) - t) <= max(mx[s], 0.005 * t) + EPS


def test_config_errors_name_the_value_and_the_fix():
    df = _table([(0, 100, 0), (1, 5000, 0)])
    with pytest.raises(ConfigError, match=r"unknown strategy 'bogus'; choose one of natural"):
        SampleConfig(strategy="bogus", budget_tokens=10)
    with pytest.raises(ConfigError, match=r"budget_tokens=0 must be a positive"):
        SampleConfig(strategy="natural", budget_tokens=0)
    with pytest.raises(ConfigError, match=r"threshold=1000000 is outside the length buckets.*between 1 and 131072"):
        SampleConfig(strategy="per-source", budget_tokens=10, threshold=1_000_000)
    with pytest.raises(ConfigError, match=r"unknown source\(s\) \['bookz'\].*--source-share"):
        solve_plan(df, SampleConfig(strategy="upsample-sources", budget_tokens=10, source_shares=(("bookz", 0.5),)))
    with pytest.raises(ConfigError, match=r"sum to at most 1"):
        SampleConfig(strategy="upsample-sources", budget_tokens=10, source_shares=(("src0", 0.7), ("src1", 0.6)))
    with pytest.raises(ConfigError, match=r"sum to 0\.9.*must sum to 1"):
        solve_plan(df, SampleConfig(strategy="upsample-sources", budget_tokens=10,
                                    source_shares=(("src0", 0.5), ("src1", 0.4))))
    with pytest.raises(ConfigError, match=r"'src0' needs 1,000 tokens but has 100 \(10.00 passes > --max-repeat 4\).*--budget-tokens"):
        solve_plan(df, SampleConfig(strategy="natural", budget_tokens=5100 * 10))
    with pytest.raises(ConfigError, match=r"max_length"):
        SampleConfig(strategy="cut", budget_tokens=10)
    with pytest.raises(ConfigError, match=r"no tokens to sample"):
        solve_plan(_table([(0, 0, 0)]), SampleConfig(strategy="natural", budget_tokens=10))


# ------------------------------------------------------------------- the paper's rule, weakened or not


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_long=st.lists(st.integers(1, 30), min_size=2, max_size=2), n_short=st.lists(st.integers(50, 400), min_size=2,
       max_size=2), ratio=st.floats(0.05, 0.95), seed=st.integers(0, 2**31))
def test_per_source_reports_the_short_rate_and_the_budget_at_which_the_recipe_holds(n_long, n_short, ratio, seed):
    """Issue 16: once a source's target exceeds L + 0.1 S (all its long documents plus a tenth of its short
    ones) the short documents' rate rises above 0.1, silently before. Written out from the paper's rule: the
    source's target T = B N_s / N; the rate is 0.1 x T / (L + 0.1 S) while that is <= 1 x 0.1, else
    (T - L) / S with every long document in; the recipe holds up to B* = (L + 0.1 S) x N / N_s."""
    rng = np.random.default_rng(seed)
    rows = []
    for i, (nl, ns) in enumerate(zip(n_long, n_short)):
        rows += [(f"s{i}", int(n)) for n in rng.integers(4096, 20000, nl)]
        rows += [(f"s{i}", int(n)) for n in rng.integers(1, 4096, ns)]
    df = pl.DataFrame({"file": ["f.jsonl"] * len(rows), "row": list(range(len(rows))),
                       "source": [s for s, _ in rows], "n_tokens": [n for _, n in rows]})
    N = sum(n for _, n in rows)
    budget = max(1, int(ratio * N))
    plan = solve_plan(df, SampleConfig(strategy="per-source", budget_tokens=budget, seed=seed))
    rec = {r["source"]: r for r in plan.recipe.iter_rows(named=True)}
    warnings = recipe_warnings(plan.recipe, budget)
    for s in ("s0", "s1"):
        L = sum(n for ss, n in rows if ss == s and n >= 4096)
        S = sum(n for ss, n in rows if ss == s and n < 4096)
        T = budget * (L + S) / N
        rate = 0.1 * T / (L + 0.1 * S) if T <= L + 0.1 * S else (T - L) / S
        r = rec[s]
        assert (r["long_tokens"], r["short_tokens"]) == (L, S)
        assert r["planned_short_rate"] == pytest.approx(rate, rel=1e-9)
        assert r["paper_long_share"] == pytest.approx(L / (L + 0.1 * S))
        assert r["recipe_budget"] == pytest.approx((L + 0.1 * S) * N / (L + S), abs=1.0)
        assert r["weakened"] == (rate > 0.1 * (1 + 1e-9))
        assert any(f"source {s!r}" in w for w in warnings) == r["weakened"]
        got = [(n, c) for ss, n, c in zip(plan.plan["source"], plan.plan["length"], plan.plan["copies"]) if ss == s]
        got_all, got_long = sum(n * c for n, c in got), sum(n * c for n, c in got if n >= 4096)
        assert r["long_share"] == (pytest.approx(got_long / got_all) if got_all else None)
        assert r["achieved_short_rate"] == pytest.approx((got_all - got_long) / S)
    assert bool(warnings) == any(r["weakened"] for r in rec.values())


# ------------------------------------------------------------ the paper's mixtures: fixed shares, joint upsampling

# written out from the paper's code (data_engineering/utils.py): SLIMPAJAMA_ORIGINAL_MIX, UPSAMPLE_CODE_ARXIV_BOOK
PAPER_MIX = {"RedPajamaC4": 0.26609933, "RedPajamaCommonCrawl": 0.53374772, "RedPajamaStackExchange": 0.03169647,
             "RedPajamaWikipedia": 0.03402128, "RedPajamaGithub": 0.05004782, "RedPajamaArXiv": 0.04290379,
             "RedPajamaBook": 0.0414836}
PAPER_UP = {**PAPER_MIX, "RedPajamaGithub": 0.60, "RedPajamaArXiv": 0.60, "RedPajamaBook": 0.60}


def _slimpajama_table(rng, n_docs: int) -> pl.DataFrame:
    """Every SlimPajama source, its documents 1-12,000 tokens (a third long), in proportions unlike the paper's."""
    rows = []
    for i, s in enumerate(sorted(PAPER_MIX)):
        rows += [(s, int(n)) for n in rng.integers(1, 12_000, n_docs * (1 + i % 3))]
    return pl.DataFrame({"file": ["f.jsonl"] * len(rows), "row": list(range(len(rows))),
                         "source": [s for s, _ in rows], "n_tokens": [n for _, n in rows]})


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table_seed=st.integers(0, 2**31), ratio=st.floats(0.02, 0.08), fixed=st.booleans(), seed=st.integers(0, 2**31))
def test_upsample_code_arxiv_book_is_the_papers_mode(table_seed, ratio, fixed, seed):
    """The paper's code's joint mode: budget per source = total x w_s / sum(w), w = 0.6 for Github, ArXiv and
    Book and the SlimPajama share for the rest (`--source-shares slimpajama`; the input's own shares
    otherwise), short documents kept at 0.1 inside each source as in per-source."""
    df = _slimpajama_table(np.random.default_rng(table_seed), 60)
    N = int(df["n_tokens"].sum())
    budget = int(ratio * N)
    kw = {"source_share_table": SLIMPAJAMA_SHARES, "source_share_origin": "slimpajama"} if fixed else {}
    plan = solve_plan(df, SampleConfig(strategy="upsample-code-arxiv-book", budget_tokens=budget, seed=seed, **kw))
    own = {s: int(df.filter(pl.col("source") == s)["n_tokens"].sum()) / N for s in PAPER_MIX}
    w = PAPER_UP if fixed else {s: (0.6 if s in ("RedPajamaGithub", "RedPajamaArXiv", "RedPajamaBook") else v)
                                for s, v in own.items()}
    got = _achieved_by_source(plan)
    groups = {g["source"]: g for g in plan.groups.iter_rows(named=True)}
    for s in PAPER_MIX:
        target = budget * w[s] / sum(w.values())
        assert groups[s]["target_tokens"] == pytest.approx(target, rel=1e-9)
        assert abs(got.get(s, 0) - target) <= max(12_000, 0.005 * target) + EPS
    rec = {r["source"]: r for r in plan.recipe.iter_rows(named=True)}
    for s in PAPER_MIX:  # where the long documents suffice, short ones are kept at 0.1 x lambda <= 0.1
        L = sum(n for ss, n in df.select("source", "n_tokens").iter_rows() if ss == s and n >= 4096)
        S = sum(n for ss, n in df.select("source", "n_tokens").iter_rows() if ss == s and n < 4096)
        T = budget * w[s] / sum(w.values())
        assert rec[s]["planned_short_rate"] == pytest.approx(0.1 * T / (L + 0.1 * S) if T <= L + 0.1 * S
                                                             else (T - L) / S, rel=1e-9)


def test_fixed_source_shares_replace_the_inputs_own():
    """`--source-shares slimpajama`: per-source targets are budget x the paper's table, whatever the input's
    proportions; a file of shares likewise; a corpus source missing from the table is refused by name."""
    df = _slimpajama_table(np.random.default_rng(1), 40)
    budget = int(0.05 * df["n_tokens"].sum())
    for strategy in ("natural", "per-source"):
        plan = solve_plan(df, SampleConfig(strategy=strategy, budget_tokens=budget, source_share_table=SLIMPAJAMA_SHARES,
                                           source_share_origin="slimpajama"))
        for g in plan.groups.iter_rows(named=True):
            assert g["target_tokens"] == pytest.approx(budget * PAPER_MIX[g["source"]] / sum(PAPER_MIX.values()))
    sub = df.filter(pl.col("source").is_in(["RedPajamaBook", "RedPajamaC4"]))  # a subset: renormalised
    plan = solve_plan(sub, SampleConfig(strategy="per-source", budget_tokens=budget // 4,
                                        source_share_table=SLIMPAJAMA_SHARES, source_share_origin="slimpajama"))
    t = {g["source"]: g["target_tokens"] for g in plan.groups.iter_rows(named=True)}
    assert t["RedPajamaBook"] / t["RedPajamaC4"] == pytest.approx(0.0414836 / 0.26609933)
    other = df.with_columns(source=pl.when(pl.col("source") == "RedPajamaC4").then(pl.lit("web"))
                            .otherwise(pl.col("source")))
    with pytest.raises(ConfigError, match=r"\['web'\].*no share in --source-shares slimpajama"):
        solve_plan(other, SampleConfig(strategy="per-source", budget_tokens=budget,
                                       source_share_table=SLIMPAJAMA_SHARES, source_share_origin="slimpajama"))
    with pytest.raises(ConfigError, match="does not apply to strategy 'global'"):
        SampleConfig(strategy="global", budget_tokens=10, source_share_table=SLIMPAJAMA_SHARES)
