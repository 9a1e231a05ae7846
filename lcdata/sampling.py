"""Sampling under a target length distribution: how many copies of each document go into the data.

Algorithm (pure Polars/NumPy over the per-document length table; no per-document Python):

1. **Units.** Each document is one unit of length L = its token count; strategy ``cut`` first truncates
   L to ``max_length`` (or, with ``chunk``, splits the document into ``ceil(L / max_length)`` chunks).
   Empty units (L = 0) are never selected: they carry no tokens.
2. **Groups and targets** (`lcdata.strategies`): units are grouped (by source, by source x length bucket,
   or all together), each group g gets a token target T_g, and each unit a weight w (1, or ``short_keep``
   below ``threshold`` for the paper's length upsampling).
3. **Whole passes, then a remainder.** With N_g the group's tokens, every unit gets m_g = floor(T_g / N_g)
   copies, so documents are repeated *only* when a target asks for more than the group has; m_g (+1 for
   the remainder) may not exceed ``max_repeat``. The remainder R_g = T_g - m_g N_g < N_g is filled by
   selecting units with inclusion probability p = min(1, lambda_g w), lambda_g solved exactly so that
   sum(p L) = R_g (piecewise-linear in lambda_g over the distinct weights).
4. **Exact budget by order sampling.** Each unit gets a uniform u from a stable hash of (seed, identity)
   (`lcdata.hashing`) and the key u / p (sequential Poisson sampling, Ohlsson 1998). Units are taken in
   key order until the group holds R_g tokens (the crossing unit is kept if that lands nearer to R_g), so
   each group, hence each source and the total, hits its target to within one document. The group's last
   accepted key theta_g is recorded: a unit is selected iff (key, hash) <= theta_g.

Why it is unbiased: under sequential Poisson sampling the inclusion probability of a unit is p (up to a
correction that vanishes with group size), so the expected number of copies is m_g + p, proportional to
the target (weights and whole passes included), and the expected length distribution inside a group is
the target one. The decision for a document depends only on its identity, its length, the seed and the
solved group parameters (m_g, lambda_g, theta_g), never on file order, batches or worker count.

What it generalises: the paper's public code streams each source in a seeded shuffled order, keeps a
document estimated under 4,096 tokens with probability 0.1 and longer ones always, and stops once the
source has ``total x original share`` tokens. That is ``per-source`` here with lambda_g <= 1 (the fraction
of the stream read): p_long = lambda_g, p_short = 0.1 lambda_g. Where the public code would run out of
long documents, lambda_g grows past 1 and short documents fill the rest; repeats appear only beyond the
whole source.

Cost: one sort of the unit table (O(n log n)); 10M documents plan in seconds and < 2 GiB
(benchmarks/bench_sample.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from .errors import ConfigError
from .hashing import doc_hash, to_unit
from .stats import bucket_index, bucket_table
from .strategies import SampleConfig

UNIT_COLUMNS = ["doc_id", "file", "row", "source", "n_tokens", "chunk", "token_start", "token_end", "length"]


@dataclass
class Plan:
    """A solved sampling plan. ``plan``: one row per selected unit; ``groups``: solved parameters per group;
    ``report``: original / target / achieved tokens per source and per (source, length bucket)."""

    plan: pl.DataFrame
    groups: pl.DataFrame
    report: pl.DataFrame
    capped: list[str]
    config: SampleConfig

    @property
    def total_tokens(self) -> int:
        return int((self.plan["length"] * self.plan["copies"]).sum())


def make_units(docs: pl.DataFrame, cfg: SampleConfig) -> pl.DataFrame:
    """Documents -> sampling units (``cut`` truncates or chunks; otherwise one unit per document)."""
    d = docs
    if "doc_id" not in d.columns:
        d = d.with_columns(doc_id=pl.format("{}:{}", pl.col("file"), pl.col("row")))
    d = d.select("doc_id", "file", "row", "source", pl.col("n_tokens").cast(pl.Int64))
    if cfg.strategy == "cut" and cfg.chunk:
        mx = cfg.max_length
        d = d.with_columns(chunk=pl.int_ranges(0, pl.max_horizontal(1, (pl.col("n_tokens") + mx - 1) // mx)))
        d = d.explode("chunk").with_columns(pl.col("chunk").cast(pl.Int32))
        start = pl.col("chunk").cast(pl.Int64) * mx
        d = d.with_columns(token_start=start, token_end=pl.min_horizontal(pl.col("n_tokens"), start + mx))
        d = d.with_columns(
            length=pl.col("token_end") - pl.col("token_start"),
            token_end=pl.when(pl.col("n_tokens") > mx).then(pl.col("token_end")).otherwise(None),
        )
    elif cfg.strategy == "cut":
        mx = cfg.max_length
        d = d.with_columns(
            chunk=pl.lit(0, pl.Int32), token_start=pl.lit(0, pl.Int64),
            token_end=pl.when(pl.col("n_tokens") > mx).then(pl.lit(mx, pl.Int64)).otherwise(None),
            length=pl.min_horizontal(pl.col("n_tokens"), pl.lit(mx, pl.Int64)),
        )
    else:
        d = d.with_columns(chunk=pl.lit(0, pl.Int32), token_start=pl.lit(0, pl.Int64),
                           token_end=pl.lit(None, pl.Int64), length=pl.col("n_tokens"))
    return d.select(UNIT_COLUMNS)


def _group_and_weight(units: pl.DataFrame, cfg: SampleConfig) -> pl.DataFrame:
    s = cfg.strategy
    edges = cfg.buckets
    u = units.with_columns(bucket=bucket_index(pl.col("length"), edges))
    if s == "global":
        u = u.with_columns(group=pl.lit("*"))
    elif s == "target":
        u = u.with_columns(group=pl.format("{}|{}", pl.col("source"), pl.col("bucket")))
    else:
        u = u.with_columns(group=pl.col("source"))
    if s in ("per-source", "global"):
        w = pl.when(pl.col("length") < cfg.threshold).then(pl.lit(cfg.short_keep)).otherwise(pl.lit(1.0))
    else:
        w = pl.lit(1.0)
    return u.with_columns(weight=w)


def group_targets(units: pl.DataFrame, cfg: SampleConfig) -> pl.DataFrame:
    """Token target per group: ``group, source, bucket, corpus_tokens, target_tokens`` (float)."""
    B = float(cfg.budget_tokens)
    src = units.group_by("source").agg(n=pl.col("length").sum()).sort("source")
    total = float(src["n"].sum())
    if total <= 0:
        raise ConfigError("the corpus has no tokens to sample from (all documents are empty)")
    shares = {r["source"]: r["n"] / total for r in src.iter_rows(named=True)}
    s = cfg.strategy
    if s == "upsample-sources":
        given = dict(cfg.source_shares)
        unknown = sorted(set(given) - set(shares))
        if unknown:
            raise ConfigError(f"unknown source(s) {unknown} in --source-share; the corpus has {sorted(shares)}")
        rest = {k: v for k, v in shares.items() if k not in given}
        rest_total = sum(rest.values())
        left = 1.0 - sum(given.values())
        if rest and rest_total > 0:
            shares = {**{k: left * v / rest_total for k, v in rest.items()}, **given}
        else:
            if abs(left) > 1e-6:
                raise ConfigError(f"--source-share values sum to {1 - left:.6g} but name every source; they must sum to 1")
            shares = dict(given)
    if s == "target" and cfg.target.source_shares is not None:
        given = dict(cfg.target.source_shares)
        unknown = sorted(set(given) - set(shares))
        if unknown:
            raise ConfigError(f"unknown source(s) {unknown} in the target spec; the corpus has {sorted(shares)}")
        shares = {k: given.get(k, 0.0) for k in shares}
    cells = units.group_by("group", "source", "bucket").agg(corpus_tokens=pl.col("length").sum())
    if s == "global":
        return pl.DataFrame({"group": ["*"], "source": [None], "bucket": [None],
                             "corpus_tokens": [int(total)], "target_tokens": [B]},
                            schema={"group": pl.String, "source": pl.String, "bucket": pl.Int32,
                                    "corpus_tokens": pl.Int64, "target_tokens": pl.Float64})
    if s != "target":
        g = cells.group_by("group", "source").agg(pl.col("corpus_tokens").sum()).with_columns(
            bucket=pl.lit(None, pl.Int32))
        return g.with_columns(
            target_tokens=pl.col("source").replace_strict(shares, return_dtype=pl.Float64) * B
        ).select("group", "source", "bucket", "corpus_tokens", "target_tokens").sort("group")
    # target: every (source, bucket) cell of the spec, including cells the corpus leaves empty
    nb = len(cfg.buckets)
    bshares = dict(cfg.target.bucket_shares)
    unknown = sorted(set(bshares) - set(shares) - {"*"})
    if unknown:
        raise ConfigError(f"unknown source(s) {unknown} in the target spec's bucket_shares; the corpus has "
                          f"{sorted(shares)} (use \"*\" for every source)")
    rows = []
    cell_tokens = {(r["source"], r["bucket"]): r["corpus_tokens"] for r in cells.iter_rows(named=True)}
    for src_name, share in sorted(shares.items()):
        if src_name in bshares or "*" in bshares:
            dist = bshares.get(src_name, bshares.get("*"))
        else:
            n_s = sum(cell_tokens.get((src_name, b), 0) for b in range(nb))
            dist = [cell_tokens.get((src_name, b), 0) / n_s if n_s else 0.0 for b in range(nb)]
        for b in range(nb):
            rows.append({"group": f"{src_name}|{b}", "source": src_name, "bucket": b,
                         "corpus_tokens": int(cell_tokens.get((src_name, b), 0)), "target_tokens": B * share * dist[b]})
    return pl.DataFrame(rows, schema={"group": pl.String, "source": pl.String, "bucket": pl.Int32,
                                      "corpus_tokens": pl.Int64, "target_tokens": pl.Float64})


def solve_lambda(remainder: float, classes: list[tuple[float, float]]) -> float:
    """Smallest lambda with sum_c min(1, lambda w_c) W_c = remainder; ``classes`` = [(w_c, W_c)], W in tokens."""
    if remainder <= 0:
        return 0.0
    cl = sorted(((w, W) for w, W in classes if W > 0), key=lambda x: -x[0])
    saturated = 0.0
    for k in range(len(cl)):
        slope = sum(w * W for w, W in cl[k:])
        lam = (remainder - saturated) / slope
        if lam * cl[k][0] <= 1.0:
            return lam
        saturated += cl[k][1]
    return math.inf


def _describe(g: dict) -> str:
    if g["bucket"] is None:
        return f"source {g['source']!r}" if g["source"] is not None else "the corpus"
    return f"source {g['source']!r}, length bucket {g['bucket']}"


def solve_plan(docs: pl.DataFrame, cfg: SampleConfig) -> Plan:
    """Solve the plan for a per-document length table (columns ``file, row, source, n_tokens``, optional
    ``doc_id`` when ids come from an id field).

    >>> docs = pl.DataFrame({"file": ["a"] * 4, "row": [0, 1, 2, 3], "source": ["x", "x", "y", "y"],
    ...                      "n_tokens": [10, 5000, 20, 30]})
    >>> p = solve_plan(docs, SampleConfig(strategy="natural", budget_tokens=5060))
    >>> p.total_tokens
    5060
    """
    id_col = "doc_id" if "doc_id" in docs.columns else None
    units = _group_and_weight(make_units(docs, cfg), cfg)
    targets = group_targets(units, cfg)
    capped: list[str] = []
    params = []
    weights = units.group_by("group", "weight").agg(W=pl.col("length").sum())
    wmap: dict[str, list[tuple[float, float]]] = {}
    for r in weights.iter_rows(named=True):
        wmap.setdefault(r["group"], []).append((r["weight"], float(r["W"])))
    for g in targets.iter_rows(named=True):
        T, N = g["target_tokens"], float(g["corpus_tokens"])
        granted = T
        if T > 0 and N <= 0:
            msg = f"{_describe(g)} has no tokens in the corpus but its target is {T:,.0f} tokens"
            if cfg.on_cap == "error":
                raise ConfigError(msg + "; change the target or pass --cap to accept a shortfall")
            capped.append(msg + "; capped to 0")
            granted = 0.0
        m = math.floor(granted / N) if N > 0 else 0
        R = granted - m * N if N > 0 else 0.0
        # a remainder under half a token selects nothing (the crossing rule needs L <= 2R, L >= 1): it is
        # float rounding of granted = B x share (e.g. B = the whole corpus), not a further pass
        if m + (R >= 0.5) > cfg.max_repeat:
            msg = (f"{_describe(g)} needs {granted:,.0f} tokens but has {N:,.0f} "
                   f"({granted / N:.2f} passes > --max-repeat {cfg.max_repeat})")
            if cfg.on_cap == "error":
                raise ConfigError(msg + "; lower --budget-tokens, raise --max-repeat, or pass --cap")
            capped.append(msg + f"; capped to {cfg.max_repeat * N:,.0f}")
            granted, m, R = cfg.max_repeat * N, cfg.max_repeat, 0.0
        lam = solve_lambda(R, wmap.get(g["group"], []))
        params.append({"group": g["group"], "granted_tokens": granted, "passes": m, "remainder": R,
                       "lambda": lam if math.isfinite(lam) else None})
    par = pl.DataFrame(params, schema={"group": pl.String, "granted_tokens": pl.Float64, "passes": pl.Int64,
                                       "remainder": pl.Float64, "lambda": pl.Float64})
    h = doc_hash(units, cfg.seed, id_col, extra="chunk" if cfg.chunk else None)
    u = units.with_columns(hash=pl.Series(h, dtype=pl.UInt64), uniform=pl.Series(to_unit(h))).join(
        par, on="group", how="left")
    u = u.with_columns(
        p=pl.when(pl.col("length") <= 0).then(0.0)
        .when(pl.col("lambda").is_null()).then(pl.when(pl.col("remainder") > 0).then(1.0).otherwise(0.0))
        .otherwise(pl.min_horizontal(1.0, pl.col("lambda") * pl.col("weight")))
    ).with_columns(
        key=pl.when(pl.col("p") > 0).then(pl.col("uniform") / pl.col("p")).otherwise(float("inf")),
        passes=pl.when(pl.col("length") > 0).then(pl.col("passes")).otherwise(0),
    )
    # order sampling: take units in (key, hash) order until the group's remainder is reached
    u = u.sort("group", "key", "hash", "file", "row", "chunk")
    cum = pl.col("length").cum_sum().over("group")
    u = u.with_columns(cum=cum).with_columns(prev=pl.col("cum") - pl.col("length"))
    R = pl.col("remainder")
    take = (pl.col("p") > 0) & (pl.col("prev") < R) & (
        (pl.col("cum") <= R) | ((pl.col("cum") - R) <= (R - pl.col("prev"))))
    u = u.with_columns(selected=take).with_columns(copies=(pl.col("passes") + pl.col("selected").cast(pl.Int64)))
    theta = u.filter(pl.col("selected")).group_by("group").agg(
        theta_key=pl.col("key").last(), theta_hash=pl.col("hash").last())
    groups = (
        targets.join(par, on="group", how="left").join(theta, on="group", how="left")
        .join(u.group_by("group").agg(achieved_tokens=(pl.col("length") * pl.col("copies")).sum(),
                                      n_units=pl.len(), n_selected=(pl.col("copies") > 0).sum()),
              on="group", how="left")
        .with_columns(pl.col("achieved_tokens", "n_units", "n_selected").fill_null(0))
        .sort("group")
    )
    u = u.with_columns(expected=pl.col("passes").cast(pl.Float64) + pl.col("p"))
    report = build_report(docs, u, targets, cfg)
    plan = (
        u.filter(pl.col("copies") > 0)
        .select("doc_id", "file", "row", "source", "n_tokens", "chunk", "token_start", "token_end", "length",
                "copies")
        .sort("file", "row", "chunk")
    )
    return Plan(plan=plan, groups=groups, report=report, capped=capped, config=cfg)


def build_report(docs: pl.DataFrame, u: pl.DataFrame, targets: pl.DataFrame, cfg: SampleConfig) -> pl.DataFrame:
    """Original / target / achieved tokens per source (``level='source'``) and per source x length bucket
    (``level='bucket'``). Shares: ``*_share`` of the whole, ``*_share_in_source`` inside the source.

    Target per cell = expected tokens under the solved plan (sum over units of (passes + p) x length); for
    strategy ``target`` this equals the spec's cell targets wherever the corpus can provide them.
    """
    edges = cfg.buckets
    orig = docs.select("source", n=pl.col("n_tokens").cast(pl.Int64)).with_columns(
        bucket=bucket_index(pl.col("n"), edges)).group_by("source", "bucket").agg(original_tokens=pl.col("n").sum())
    ach = u.group_by("source", "bucket").agg(
        target_tokens=(pl.col("expected") * pl.col("length")).sum(),
        achieved_tokens=(pl.col("copies") * pl.col("length")).sum(),
        n_docs=(pl.col("copies") > 0).sum().cast(pl.Int64),
        n_copies=pl.col("copies").sum(),
    )
    if cfg.strategy == "target":  # spec targets, including cells the corpus cannot fill
        spec = targets.select("source", "bucket", spec_tokens="target_tokens")
        ach = ach.join(spec, on=["source", "bucket"], how="full", coalesce=True).with_columns(
            target_tokens=pl.col("spec_tokens")).drop("spec_tokens")
    sources = pl.concat([orig.select("source"), ach.select("source")]).unique().sort("source")
    grid = sources.join(bucket_table(edges), how="cross")
    cells = grid.join(orig, on=["source", "bucket"], how="left").join(ach, on=["source", "bucket"], how="left")
    cells = cells.with_columns(
        pl.col("original_tokens", "achieved_tokens", "n_docs", "n_copies").fill_null(0).cast(pl.Int64),
        pl.col("target_tokens").fill_null(0.0),
    )
    tot = {c: float(cells[c].sum()) for c in ("original_tokens", "target_tokens", "achieved_tokens")}
    src = cells.group_by("source").agg(pl.col("original_tokens", "target_tokens", "achieved_tokens",
                                              "n_docs", "n_copies").sum())

    def shares(df, within: bool):
        out = df
        for c in ("original", "target", "achieved"):
            col = f"{c}_tokens"
            out = out.with_columns(**{f"{c}_share": pl.col(col) / tot[col] if tot[col] else pl.lit(0.0)})
            if within:
                s = pl.col(col).sum().over("source")
                out = out.with_columns(**{f"{c}_share_in_source": pl.when(s > 0).then(pl.col(col) / s).otherwise(0.0)})
            else:
                out = out.with_columns(**{f"{c}_share_in_source": pl.lit(1.0)})
        return out

    src = shares(src, False).with_columns(level=pl.lit("source"), bucket=pl.lit(None, pl.Int32),
                                          bucket_min=pl.lit(None, pl.Int64), bucket_max=pl.lit(None, pl.Int64))
    cells = shares(cells, True).with_columns(level=pl.lit("bucket"))
    cols = ["level", "source", "bucket", "bucket_min", "bucket_max", "original_tokens", "target_tokens",
            "achieved_tokens", "original_share", "target_share", "achieved_share", "original_share_in_source",
            "target_share_in_source", "achieved_share_in_source", "n_docs", "n_copies"]
    return pl.concat([src.select(cols), cells.select(cols)]).sort("level", "source", "bucket", descending=[True, False, False],
                                                                 nulls_last=False)


def copies_stats(plan: Plan) -> dict:
    c = plan.plan["copies"]
    return {"n_units": plan.plan.height, "n_copies": int(c.sum()), "max_copies": int(c.max() or 0),
            "n_repeated": int((c > 1).sum()), "tokens": plan.total_tokens}


__all__ = ["Plan", "make_units", "group_targets", "solve_lambda", "solve_plan", "build_report", "copies_stats",
           "np"]
