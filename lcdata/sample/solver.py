"""Sampling under a target length distribution: how many copies of each document go into the data.

Algorithm (pure Polars/NumPy over the per-document length table; no per-document Python):

1. **Units.** Each document is one unit of length L = its token count; strategy ``cut`` first truncates
   L to ``max_length`` (or, with ``chunk``, splits the document into ``ceil(L / max_length)`` chunks).
   Empty units (L = 0) are never selected: they carry no tokens.
2. **Groups and targets** (`lcdata.sample.config`): units are grouped (by source, or by source x length
   bucket), each group g gets a token target T_g (``global``: each source's expected tokens under one
   corpus-wide lambda, `_global_shares`, so its budget is balanced across sources like ``per-source``'s), and each unit a weight w (1, or ``short_keep``
   below ``threshold`` for the paper's length upsampling).
3. **Whole passes, then a remainder.** With N_g the group's tokens, every unit gets m_g = floor(T_g / N_g)
   copies, so documents are repeated *only* when a target asks for more than the group has; m_g (+1 for
   the remainder) may not exceed ``max_repeat``. The remainder R_g = T_g - m_g N_g < N_g is filled by
   selecting units with inclusion probability p = min(1, lambda_g w), lambda_g solved exactly so that
   sum(p L) = R_g (piecewise-linear in lambda_g over the distinct weights).
4. **Exact budget by order sampling.** Each unit gets a uniform u from a stable hash of (seed, identity)
   (`lcdata.util.hashing`) and the key u / p (sequential Poisson sampling, Ohlsson 1998). Each group takes a
   prefix of its units in key order: what it can achieve are the prefix sums of their lengths, and the one
   nearest R_g lands within half a unit (the crossing one) of the group's target. The group's last accepted
   key theta_g is recorded: a unit is selected iff (key, hash) <= theta_g. Ties of (key, hash) are broken by
   (file, row, chunk). The selection is a prefix of the key order whose expected end is key 1, so only units
   with key <= ``CANDIDATE_KEY`` are sorted (a group whose candidates hold less than R_g + tol_g, e.g. a small
   one by chance, sorts all its units): the same plan as a sort of every unit, at a fraction of the cost.
5. **The total, by carrying the rounding.** Half a unit per group adds up over groups (demo corpus,
   per-source, 1M, four sources: +0.83% if each group stopped nearest its own remainder). So each group may
   instead take any prefix sum within tol_g = max(its longest unit, ``CARRY_SHARE`` x its target) of its
   target, and the groups are solved in a fixed order (longest units first, then by name: a property of the
   corpus, never of the seed, file order or workers) carrying the running "target minus achieved": a beam
   search over the prefix sums bracketing each group's remainder plus none, part or all of the carry, keeping
   the ``BEAM`` states of smallest |carry| beyond ``TOTAL_SLACK`` x the budget, then smallest summed relative
   deviation of the groups from their own targets (no group moves further than the total needs, and large
   groups absorb most). It changes only which prefix is taken, so theta_g still decides every unit. Demo
   corpus, per-source: 1M -> 999,034 tokens (-0.10%), 2M +0.46%, 500K +0.97% (books: 11 documents
   selected, up to 167K tokens each).

In code, `solve_plan` runs these steps as pure functions: `make_units` (1), `_unit_classes` and
`group_targets` (2), `_group_parameters` and `_carry_tolerance` (3), `_class_probabilities` and
`_select_units` (4-5: `_order_keys`, `_candidates`, `_order`, `_prefix_lengths`), then `_class_outcome`,
`_group_table`, `build_report` and `_selected_rows` turn the selection into the plan's three tables.

Invariants (tests/sample/test_sampling.py): every unit gets m_g or m_g + 1 copies, at most ``max_repeat``, and empty
units none; each group lands within tol_g of its target (each source, for the per-source strategies: within
max(its longest document, 0.5%)); the total within max(``TOTAL_SLACK`` x budget, half the longest unit of
any group) (the greedy path, "nearest to remainder + carry", is among the states, and it never lets the carry
grow past max(carry, half the group's longest unit)); a unit is selected iff (key, hash) <= theta_g; the plan
is a function of (corpus lengths and identities, config, seed) only, its rows in (file, row, chunk) order.

Why it is unbiased: under sequential Poisson sampling the inclusion probability of a unit is p (up to a
correction that vanishes with group size), so the expected number of copies is m_g + p, proportional to
the target (weights and whole passes included), and the expected length distribution inside a group is
the target one. The carry moves each group's stopping point by at most tol_g, a bounded shift of where the
prefix ends, not of the order it is a prefix of. The decision for a document depends only on its identity,
its length, the seed and the solved group parameters (m_g, lambda_g, theta_g), never on file order,
batches or worker count.

What it generalises: the paper's public code streams each source in a seeded shuffled order, keeps a
document estimated under 4,096 tokens with probability 0.1 and longer ones always, and stops once the
source has ``total x original share`` tokens. That is ``per-source`` here with lambda_g <= 1 (the fraction
of the stream read): p_long = lambda_g, p_short = 0.1 lambda_g. Where the public code would run out of
long documents, lambda_g grows past 1 and short documents fill the rest; repeats appear only beyond the
whole source.

Cost: per-unit work is vectorised NumPy on integer codes (a unit's class = source x length bucket x
short/long decides its group, weight, p and passes), plus one sort of the candidate keys; per-unit strings
are only read for hashing and for the plan's rows. 10M documents plan in ~3 s (budget 10% of the corpus)
to ~8 s (2.5x, every document in the plan) with a peak RSS of 1.3-1.9 GiB including the input table
(benchmarks/bench_sample.py, benchmarks/README.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..errors import ConfigError
from ..stats.lengths import bucket_index, bucket_table
from ..util.hashing import doc_hash, to_unit
from .config import SampleConfig

UNIT_COLUMNS = ["doc_id", "file", "row", "source", "n_tokens", "chunk", "token_start", "token_end", "length"]
CANDIDATE_KEY = 1.5  # only units with key u / p <= this are sorted (the expected stopping key is 1); see solve_plan
CARRY_SHARE = 0.005  # a group may miss its target by max(its longest unit, this x its target) to absorb the carry
BEAM = 64  # states of the carry search (`_prefix_lengths`)
CARRY_STEPS = (0.0, 0.25, 0.5, 0.75, 1.0)  # shares of the carry a group may aim to absorb (`_prefix_lengths`)
TOTAL_SLACK = 0.001  # the carry search's aim for the total: within this share of the budget, groups nearest their own


@dataclass
class Plan:
    """A solved sampling plan. ``plan``: one row per selected unit; ``groups``: solved parameters per group;
    ``report``: original / target / achieved tokens per source and per (source, length bucket)."""

    plan: pl.DataFrame
    groups: pl.DataFrame
    report: pl.DataFrame
    capped: list[str]
    config: SampleConfig
    recipe: pl.DataFrame | None = None  # the length-upsampling strategies: `recipe_table`

    @property
    def total_tokens(self) -> int:
        return int((self.plan["length"] * self.plan["copies"]).sum())


def make_units(docs: pl.DataFrame, cfg: SampleConfig, with_doc_id: bool = True) -> pl.DataFrame:
    """Documents -> sampling units (``cut`` truncates or chunks; otherwise one unit per document).

    ``with_doc_id=False`` leaves out the ``doc_id`` column unless ``docs`` has one (`solve_plan` makes the
    ``file:row`` ids of the selected units only)."""
    d = docs
    if "doc_id" not in d.columns and with_doc_id:
        d = d.with_columns(doc_id=_file_row_id())
    cols = ["doc_id"] if "doc_id" in d.columns else []
    d = d.select(*cols, "file", "row", "source", pl.col("n_tokens").cast(pl.Int64))
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
    return d.select(*cols, *UNIT_COLUMNS[1:])


def _file_row_id() -> pl.Expr:
    return pl.format("{}:{}", pl.col("file"), pl.col("row"))


def group_targets(units: pl.DataFrame, cfg: SampleConfig) -> pl.DataFrame:
    """Token target per group: ``group, source, bucket, corpus_tokens, target_tokens`` (float).

    ``units``: rows of ``group, source, bucket, length`` (and ``weight``, for ``global``) whose lengths are summed (one row per unit, or per
    class of units as `solve_plan` passes them)."""
    B = float(cfg.budget_tokens)
    src = units.group_by("source").agg(n=pl.col("length").sum()).sort("source")
    total = float(src["n"].sum())
    if total <= 0:
        raise ConfigError("the corpus has no tokens to sample from (all documents are empty)")
    shares = base_shares(src, total, cfg)
    s = cfg.strategy
    if s == "upsample-code-arxiv-book":  # the paper's code: weight 0.6 per upsampled source, else its share
        missing = sorted(set(cfg.upsampled_sources) - set(shares))
        if missing:
            raise ConfigError(f"upsampled source(s) {missing} are not in the corpus, which has {sorted(shares)}; "
                              "name its code / arXiv / book sources with --upsampled-sources NAME,NAME,...")
        raw = dict(cfg.source_share_table) if cfg.source_share_table is not None else shares  # the code's numbers
        w = {k: (cfg.upsample_weight if k in cfg.upsampled_sources else raw[k]) for k in shares}
        shares = {k: v / sum(w.values()) for k, v in w.items()}
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
    if s == "global":  # one budget for the corpus, solved per source: see `_global_shares`
        shares = _global_shares(units, B, total)
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


def base_shares(src: pl.DataFrame, total: float, cfg: SampleConfig) -> dict[str, float]:
    """Each source's share before the strategy's changes: its token share of the input (``src``: ``source,
    n`` tokens), or ``cfg.source_share_table`` restricted to the corpus's sources and renormalised."""
    own = {r["source"]: r["n"] / total for r in src.iter_rows(named=True)}
    if cfg.source_share_table is None:
        return own
    table = dict(cfg.source_share_table)
    unknown = sorted(set(own) - set(table))
    if unknown:
        raise ConfigError(f"source(s) {unknown} of the corpus have no share in --source-shares "
                          f"{cfg.source_share_origin} (it names {sorted(table)}); add them to a shares file")
    kept = sum(table[k] for k in own)
    if kept <= 0:
        raise ConfigError(f"--source-shares {cfg.source_share_origin} gives the corpus's sources {sorted(own)} "
                          "a share of 0")
    return {k: table[k] / kept for k in own}


def _global_shares(units: pl.DataFrame, B: float, total: float) -> dict[str, float]:
    """Strategy ``global``: each source's share of the budget B under one corpus-wide selection.

    Every unit gets m = floor(B / N) whole passes and inclusion probability p = min(1, lambda w), lambda
    solved over the whole corpus so that sum(p L) = B - m N (`solve_lambda`); a source's share is its expected
    tokens (m N_s + sum over its units of p L) / B. Solving each source for that share gives every unit the
    same p as one corpus-wide order sampling would (the sources' lambdas equal the corpus's), and lets the
    sources carry each other's rounding (module step 5) as ``per-source`` does: one group for the corpus
    could only stop at a prefix sum of its key order, within half its longest document of B.
    ``units``: rows of ``source, length, weight``."""
    m = math.floor(B / total)
    R = B - m * total
    w = units.group_by("source", "weight").agg(W=pl.col("length").sum()).sort("source", "weight")
    lam = solve_lambda(R, [(r["weight"], float(r["W"])) for r in w.iter_rows(named=True)])
    out: dict[str, float] = {}
    for r in w.iter_rows(named=True):
        p = 1.0 if not math.isfinite(lam) else min(1.0, lam * r["weight"])
        out[r["source"]] = out.get(r["source"], 0.0) + (m + p) * float(r["W"]) / B
    return out


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


def solve_plan(docs: pl.DataFrame, cfg: SampleConfig) -> Plan:
    """Solve the plan for a per-document length table (columns ``file, row, source, n_tokens``, optional
    ``doc_id`` when ids come from an id field).

    >>> docs = pl.DataFrame({"file": ["a"] * 4, "row": [0, 1, 2, 3], "source": ["x", "x", "y", "y"],
    ...                      "n_tokens": [10, 5000, 20, 30]})
    >>> p = solve_plan(docs, SampleConfig(strategy="natural", budget_tokens=5060))
    >>> p.total_tokens
    5060
    """
    units = make_units(docs, cfg, with_doc_id=False)  # step 1
    length = units["length"].to_numpy()
    cls, classes = _unit_classes(units, length, cfg)  # step 2: per-unit work is on class codes from here on
    targets = group_targets(classes.select("group", "source", "bucket", "weight", length="tokens"), cfg)
    par, capped = _group_parameters(targets, classes, cfg)  # step 3
    longest, tol = _carry_tolerance(par, classes)
    classes = _class_probabilities(classes, par)
    lut = np.searchsorted(classes["cls"].to_numpy(), cls)  # unit -> row of classes
    del cls
    id_col = "doc_id" if "doc_id" in docs.columns else None
    sel, theta = _select_units(units, length, lut, classes, par, longest, tol, cfg, id_col)  # steps 4-5
    copies = classes["passes"].to_numpy()[lut]
    copies[sel] += 1
    classes = _class_outcome(classes, lut[sel], length[sel])
    del lut, sel, length
    groups = _group_table(targets, par.with_columns(tolerance=pl.Series(tol)), theta, classes)
    report = build_report(docs, classes, targets, cfg)
    plan = _selected_rows(units, copies)
    del copies
    plan = _with_file_row_ids(plan)
    recipe = recipe_table(classes, cfg) if cfg.strategy in UPSAMPLING else None
    return Plan(plan=plan, groups=groups, report=report, capped=capped, config=cfg, recipe=recipe)


UPSAMPLING = ("per-source", "global", "upsample-code-arxiv-book")  # strategies that keep short documents at ``short_keep`` (the paper's rule)


def recipe_table(classes: pl.DataFrame, cfg: SampleConfig) -> pl.DataFrame:
    """Per source, whether the paper's length upsampling held: the short-document keep rate the plan gives
    (``planned_short_rate`` = passes + p of its short documents, token-weighted; ``achieved_short_rate`` =
    selected short tokens / short tokens) against the requested ``short_keep``, and the long share achieved
    against the paper's L / (L + short_keep x S) (L, S: the source's long / short corpus tokens).

    The rate exceeds the request once a source's target is more than its long documents plus short_keep of
    its short ones can give (lambda > 1: every long document is in, short ones fill the rest). ``recipe_budget``
    is the largest budget at which the rule holds: per source (L + short_keep S) / (its target share); for
    ``global`` one value for the corpus, sum(L + short_keep S). ``weakened`` when the planned rate is above
    the request. ``classes``: the solved class table (``source, kind, tokens, passes, p, achieved_tokens``)."""
    k = cfg.short_keep
    c = classes.filter(pl.col("kind") > 0).with_columns(short=pl.col("kind") == 1)
    per = c.group_by("source").agg(
        S=pl.col("tokens").filter(pl.col("short")).sum().cast(pl.Float64),
        L=pl.col("tokens").filter(~pl.col("short")).sum().cast(pl.Float64),
        short_planned=(pl.col("tokens") * pl.col("expected")).filter(pl.col("short")).sum(),
        short_achieved=pl.col("achieved_tokens").filter(pl.col("short")).sum().cast(pl.Float64),
        long_achieved=pl.col("achieved_tokens").filter(~pl.col("short")).sum().cast(pl.Float64),
        target=(pl.col("tokens") * pl.col("expected")).sum(),
    ).sort("source")
    B = float(cfg.budget_tokens)
    out = per.with_columns(
        requested_short_rate=pl.lit(k),
        planned_short_rate=pl.when(pl.col("S") > 0).then(pl.col("short_planned") / pl.col("S")).otherwise(None),
        achieved_short_rate=pl.when(pl.col("S") > 0).then(pl.col("short_achieved") / pl.col("S")).otherwise(None),
        long_share=pl.when(pl.col("short_achieved") + pl.col("long_achieved") > 0)
        .then(pl.col("long_achieved") / (pl.col("short_achieved") + pl.col("long_achieved"))).otherwise(None),
        paper_long_share=pl.when(pl.col("L") + k * pl.col("S") > 0)
        .then(pl.col("L") / (pl.col("L") + k * pl.col("S"))).otherwise(None),
    )
    if cfg.strategy == "global":
        whole = float((out["L"] + k * out["S"]).sum())
        out = out.with_columns(recipe_budget=pl.lit(whole))
    else:
        out = out.with_columns(recipe_budget=pl.when(pl.col("target") > 0)
                               .then((pl.col("L") + k * pl.col("S")) * B / pl.col("target")).otherwise(None))
    out = out.with_columns(weakened=pl.col("planned_short_rate").fill_null(0.0) > k * (1 + 1e-9))
    return out.select("source", pl.col("S").cast(pl.Int64).alias("short_tokens"),
                      pl.col("L").cast(pl.Int64).alias("long_tokens"), "requested_short_rate", "planned_short_rate",
                      "achieved_short_rate", "long_share", "paper_long_share", "weakened",
                      pl.col("recipe_budget").floor().cast(pl.Int64))


def recipe_warnings(recipe: pl.DataFrame | None, budget: int) -> list[str]:
    """One line per source whose short-document rate exceeds the request (`recipe_table`), naming the rate,
    the long share achieved vs the paper's, and the budget at which the recipe holds."""
    if recipe is None:
        return []
    out = []
    for r in recipe.filter(pl.col("weakened")).iter_rows(named=True):
        out.append(
            f"source {r['source']!r}: short documents kept at rate {r['planned_short_rate']:.3f} > requested "
            f"{r['requested_short_rate']:g} (its long documents cannot fill its target at budget {budget:,}); "
            f"long share {r['long_share']:.1%} vs the paper's L/(L+{r['requested_short_rate']:g} S) = "
            f"{r['paper_long_share']:.1%}; the recipe holds up to a budget of {r['recipe_budget']:,} tokens")
    if out:
        lowest = recipe["recipe_budget"].drop_nulls().min()
        out.append(f"every source keeps short documents at <= {recipe['requested_short_rate'][0]:g} up to a budget "
                   f"of {lowest:,} tokens (or add documents longer than the threshold)")
    return out


def _unit_classes(units: pl.DataFrame, length: np.ndarray, cfg: SampleConfig) -> tuple[np.ndarray, pl.DataFrame]:
    """Each unit's class code (source x length bucket x empty/short/long) and the class table: ``cls, tokens,
    n, longest, source, bucket, kind`` (0 empty, 1 short, 2 long), ``group`` and ``weight``, sorted by ``cls``."""
    src_names, src = _codes(units["source"])
    edges = np.asarray(cfg.buckets, dtype=np.int64)
    nb = len(edges)
    bucket = np.maximum(np.searchsorted(edges, length, side="right") - 1, 0).astype(np.int32)
    kind = np.where(length <= 0, 0, np.where(length < cfg.threshold, 1, 2)).astype(np.int32)
    cls = (src * nb + bucket) * 3 + kind
    del src, bucket, kind
    ct = (pl.DataFrame({"cls": cls, "length": length}).group_by("cls").agg(tokens=pl.col("length").sum(),
                                                                          n=pl.len().cast(pl.Int64),
                                                                          longest=pl.col("length").max())
          .sort("cls"))
    c_cls = ct["cls"].to_numpy()
    ct = ct.with_columns(source=pl.Series([src_names[i] for i in c_cls // 3 // nb], dtype=pl.String),
                         bucket=pl.Series(c_cls // 3 % nb, dtype=pl.Int32), kind=pl.Series(c_cls % 3))
    return cls, _class_groups(ct, cfg)


def _class_groups(classes: pl.DataFrame, cfg: SampleConfig) -> pl.DataFrame:
    """The strategy's group of each class (the corpus, its source, or its source x bucket) and its weight
    (``short_keep`` for empty and short units under ``per-source`` and ``global``, else 1)."""
    s = cfg.strategy
    if s == "target":
        ct = classes.with_columns(group=pl.format("{}|{}", pl.col("source"), pl.col("bucket")))
    else:
        ct = classes.with_columns(group=pl.col("source"))
    weighted = s in UPSAMPLING
    return ct.with_columns(weight=pl.when(pl.lit(weighted) & (pl.col("kind") <= 1)).then(pl.lit(cfg.short_keep))
                           .otherwise(pl.lit(1.0)))


def _group_parameters(targets: pl.DataFrame, classes: pl.DataFrame, cfg: SampleConfig) -> tuple[pl.DataFrame, list[str]]:
    """Per group (in ``targets`` order) ``group, granted_tokens, passes, remainder, lambda``, and a message for
    each group whose target was capped (raises `ConfigError` instead unless ``cfg.on_cap`` allows it)."""
    wmap: dict[str, list[tuple[float, float]]] = {}
    for r in classes.group_by("group", "weight").agg(W=pl.col("tokens").sum()).iter_rows(named=True):
        wmap.setdefault(r["group"], []).append((r["weight"], float(r["W"])))
    capped: list[str] = []
    params = []
    for g in targets.iter_rows(named=True):
        param, msg = _group_passes(g, wmap.get(g["group"], []), cfg)
        params.append(param)
        if msg:
            capped.append(msg)
    par = pl.DataFrame(params, schema={"group": pl.String, "granted_tokens": pl.Float64, "passes": pl.Int64,
                                       "remainder": pl.Float64, "lambda": pl.Float64})
    return par, capped


def _group_passes(g: dict, weights: list[tuple[float, float]], cfg: SampleConfig) -> tuple[dict, str | None]:
    """One group's granted tokens, whole passes m, remainder R and lambda (step 3) from its target row ``g`` and
    its ``(weight, tokens)`` classes; the cap message if the target was capped."""
    T, N = g["target_tokens"], float(g["corpus_tokens"])
    granted = T
    capped = None
    if T > 0 and N <= 0:
        msg = f"{_describe(g)} has no tokens in the corpus but its target is {T:,.0f} tokens"
        if cfg.on_cap == "error":
            raise ConfigError(msg + "; change the target or pass --cap to accept a shortfall")
        capped = msg + "; capped to 0"
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
        capped = msg + f"; capped to {cfg.max_repeat * N:,.0f}"
        granted, m, R = cfg.max_repeat * N, cfg.max_repeat, 0.0
    lam = solve_lambda(R, weights)
    return ({"group": g["group"], "granted_tokens": granted, "passes": m, "remainder": R,
             "lambda": lam if math.isfinite(lam) else None}, capped)


def _describe(g: dict) -> str:
    """A group's name in messages: the corpus, a source, or a source's length bucket."""
    if g["bucket"] is None:
        return f"source {g['source']!r}" if g["source"] is not None else "the corpus"
    return f"source {g['source']!r}, length bucket {g['bucket']}"


def _carry_tolerance(par: pl.DataFrame, classes: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per group (``par`` order) its longest non-empty unit and tol_g, how far it may stop from its remainder to
    absorb the carry (step 5): max(longest, ``CARRY_SHARE`` x granted), 0 without a remainder selection."""
    longest = par.select("group").join(
        classes.filter(pl.col("kind") > 0).group_by("group").agg(pl.col("longest").max()), on="group", how="left"
    )["longest"].fill_null(0).to_numpy().astype(np.float64)
    tol = np.where(par["remainder"].to_numpy() >= 0.5,
                   np.maximum(longest, CARRY_SHARE * par["granted_tokens"].to_numpy()), 0.0)
    return longest, tol


def _class_probabilities(classes: pl.DataFrame, par: pl.DataFrame) -> pl.DataFrame:
    """The class table joined with its group's parameters: group index ``gi``, inclusion probability
    p = min(1, lambda x weight), ``passes`` and ``expected`` copies (passes + p); 0 for empty units."""
    return classes.join(par.with_row_index("gi"), on="group", how="left").with_columns(
        p=pl.when(pl.col("kind") == 0).then(0.0)
        .when(pl.col("lambda").is_null()).then(pl.when(pl.col("remainder") > 0).then(1.0).otherwise(0.0))
        .otherwise(pl.min_horizontal(1.0, pl.col("lambda") * pl.col("weight"))),
        passes=pl.when(pl.col("kind") == 0).then(0).otherwise(pl.col("passes")),
    ).with_columns(expected=pl.col("passes").cast(pl.Float64) + pl.col("p")).sort("cls")


def _select_units(units: pl.DataFrame, length: np.ndarray, lut: np.ndarray, classes: pl.DataFrame,
                  par: pl.DataFrame, longest: np.ndarray, tol: np.ndarray, cfg: SampleConfig,
                  id_col: str | None) -> tuple[np.ndarray, pl.DataFrame]:
    """Order sampling (steps 4-5): the units selected for one copy beyond the whole passes (indices into
    ``units``) and per group theta, the ``theta_key, theta_hash`` of its last selected unit."""
    gi = classes["gi"].to_numpy()[lut]  # uint32
    p = classes["p"].to_numpy()[lut]
    remainder = par["remainder"].to_numpy()
    h = doc_hash(units, cfg.seed, id_col, extra="chunk" if cfg.chunk else None)
    key = _order_keys(h, p)
    idx = _candidates(gi, p, key, length, remainder + tol)  # with the carry, a group may aim up to tol past R
    del p
    idx = idx[_order(units, idx, gi, key, h)]
    sg = gi[idx]
    del gi
    granted = par["granted_tokens"].to_numpy()
    n_take = _prefix_lengths(sg, _cumsum_in_groups(sg, length[idx]), par["group"].to_list(), remainder, tol,
                             longest, granted, TOTAL_SLACK * float(granted.sum()))
    tpos = _prefix_positions(sg, n_take)
    # theta: the group's last selected unit in that order (the selection is a prefix of it)
    last = tpos[np.flatnonzero(np.r_[sg[tpos][1:] != sg[tpos][:-1], True])] if len(tpos) else tpos
    theta = pl.DataFrame({"gi": sg[last], "theta_key": key[idx[last]],
                          "theta_hash": pl.Series(h[idx[last]], dtype=pl.UInt64)})
    theta = theta.join(par.with_row_index("gi").select("gi", "group"), on="gi").drop("gi")
    return idx[tpos], theta


def _order_keys(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each unit's order-sampling key u / p, u uniform from its hash ``h``; inf where p = 0 (never selected)."""
    key = to_unit(h)
    np.divide(key, p, out=key, where=p > 0)
    key[p <= 0] = np.inf
    return key


def _candidates(gi: np.ndarray, p: np.ndarray, key: np.ndarray, length: np.ndarray, aim: np.ndarray) -> np.ndarray:
    """Indices of the units that may be selected: key <= ``CANDIDATE_KEY``, or every unit with p > 0 of a group
    whose candidates hold fewer tokens than its ``aim`` (small groups, by chance).

    The selection is a prefix of the key order whose expected stopping key is 1: units past the candidates
    have cumulative length >= the aim and are never taken."""
    cand = (p > 0) & (key <= CANDIDATE_KEY)
    held = np.bincount(gi[cand], weights=length[cand], minlength=len(aim))
    short = held < aim
    if short.any():
        cand |= (p > 0) & short[gi]
    return np.flatnonzero(cand)


def _cumsum_in_groups(sg: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Cumulative sum of lengths ``L`` restarting at each group of the grouped ``sg``."""
    cum = np.cumsum(L)
    starts = np.flatnonzero(np.r_[True, sg[1:] != sg[:-1]]) if len(sg) else np.zeros(0, dtype=np.int64)
    cum -= np.repeat(cum[starts] - L[starts], np.diff(np.r_[starts, len(L)]))
    return cum


def _prefix_positions(sg: np.ndarray, n_take: np.ndarray) -> np.ndarray:
    """Positions in the grouped order ``sg`` of the first ``n_take[g]`` units of each group g."""
    rank = np.arange(len(sg)) - np.searchsorted(sg, sg, side="left")  # position inside the group's order
    return np.flatnonzero(rank < n_take[sg])


def _class_outcome(classes: pl.DataFrame, sel_cls: np.ndarray, sel_length: np.ndarray) -> pl.DataFrame:
    """The class table with what the plan achieved: ``sel_tokens, sel_n`` (selected units), ``achieved_tokens,
    n_selected`` (units with copies > 0) and ``n_copies``, from the passes and the selected units' classes."""
    ct = classes.with_columns(
        sel_tokens=pl.Series(np.bincount(sel_cls, weights=sel_length, minlength=classes.height).astype(np.int64)),
        sel_n=pl.Series(np.bincount(sel_cls, minlength=classes.height).astype(np.int64)))
    return ct.with_columns(
        achieved_tokens=pl.col("passes") * pl.col("tokens") + pl.col("sel_tokens"),
        n_selected=pl.when(pl.col("passes") > 0).then(pl.col("n")).otherwise(pl.col("sel_n")),
        n_copies=pl.col("passes") * pl.col("n") + pl.col("sel_n"),
    )


def _group_table(targets: pl.DataFrame, par: pl.DataFrame, theta: pl.DataFrame, classes: pl.DataFrame) -> pl.DataFrame:
    """The plan's ``groups`` table: targets, solved parameters, theta and achieved tokens per group."""
    return (
        targets.join(par, on="group", how="left").join(theta, on="group", how="left")
        .join(classes.group_by("group").agg(pl.col("achieved_tokens").sum(), n_units=pl.col("n").sum().cast(pl.UInt32),
                                            n_selected=pl.col("n_selected").sum().cast(pl.UInt32)),
              on="group", how="left")
        .with_columns(pl.col("achieved_tokens", "n_units", "n_selected").fill_null(0))
        .sort("group")
    )


def _selected_rows(units: pl.DataFrame, copies: np.ndarray) -> pl.DataFrame:
    """The units with copies > 0 and their ``copies``, in (file, row, chunk) order."""
    keep = np.flatnonzero(copies > 0)
    order = _file_row_order(units, keep)
    if order is not None:
        keep = keep[order]
    whole = order is None and len(keep) == units.height  # every unit, already in order: no copy
    return (units if whole else units[keep]).with_columns(copies=pl.Series(copies if whole else copies[keep]))


def _with_file_row_ids(plan: pl.DataFrame) -> pl.DataFrame:
    """The plan's columns (``UNIT_COLUMNS, copies``), with ``file:row`` ids where the input had no ``doc_id``."""
    if "doc_id" not in plan.columns:  # formatted 1M rows at a time: the whole at once needs ~3x its size
        plan = plan.with_columns(doc_id=pl.concat(
            [plan.slice(i, 1 << 20).select(doc_id=_file_row_id()).to_series() for i in range(0, plan.height, 1 << 20)]
            or [pl.Series("doc_id", [], dtype=pl.String)], rechunk=False))
    return pl.DataFrame([plan[c] for c in (*UNIT_COLUMNS, "copies")])  # not select(): that rechunks every column


def _prefix_lengths(sg: np.ndarray, cum: np.ndarray, names: list[str], remainder: np.ndarray, tol: np.ndarray,
                    longest: np.ndarray, granted: np.ndarray, goal: float) -> np.ndarray:
    """How many units each group takes from the front of its key order (steps 4-5). ``sg``: group of each
    ordered candidate (grouped); ``cum``: cumulative length inside its group; ``tol``: how far a group may miss
    its own remainder so that the total lands (0: it takes the prefix sum nearest its remainder).

    A beam search over the groups, longest units first (a fixed order: the corpus decides it, not the seed):
    a state is the carry (target minus achieved tokens of the groups so far); each group extends it by the
    prefix sums inside its window that bracket its remainder plus 0, 1/4, ..., all of the carry; the ``BEAM``
    states of smallest (|carry| beyond ``goal``, summed relative deviation of the groups from their own
    targets) go on: the carry lands mostly on the large groups, as a share error it is smallest there.
    Vectorised over states, one step per group."""
    n_groups = len(names)
    first = np.searchsorted(sg, np.arange(n_groups), side="left")
    last = np.searchsorted(sg, np.arange(n_groups), side="right")
    carry, dev = np.zeros(1), np.zeros(1)  # per state
    path = np.zeros((1, n_groups), dtype=np.int64)  # per state: units taken by each group
    for g in sorted(range(n_groups), key=lambda g: (-longest[g], names[g])):
        R = remainder[g]
        P = np.r_[0.0, cum[first[g]: last[g]]]  # achievable selections: prefix sums, nothing taken first
        if tol[g] > 0:
            lo, hi = R - tol[g], R + tol[g]
            aims = np.clip(R + np.multiply.outer(carry, CARRY_STEPS).ravel(), lo, hi)  # all, some or none of it
            j = np.searchsorted(P, aims, side="left")
            opts = np.unique(np.clip(np.r_[j - 1, j], 0, len(P) - 1))
            opts = opts[(P[opts] >= lo) & (P[opts] <= hi)]  # never empty: P's steps (units) are <= tol
        else:
            j = int(np.searchsorted(P, R, side="left"))  # the crossing unit kept if that lands nearer R
            opts = np.array([min(j, len(P) - 1) if j == 0 or j >= len(P) or P[j] - R <= R - P[j - 1] else j - 1])
        assert len(opts), (names[g], R, tol[g])
        # every state x every option: carry, deviation, path
        c = (carry[:, None] + (R - P[opts])[None, :]).ravel()
        d = (dev[:, None] + np.abs(P[opts] - R)[None, :] / max(granted[g], 1.0)).ravel()
        keep = np.lexsort((np.abs(c), d, np.maximum(np.abs(c) - goal, 0.0)))
        _, first_of = np.unique(c[keep], return_index=True)  # one state per carry: the best one
        keep = keep[np.sort(first_of)][:BEAM]
        si, oi = np.divmod(keep, len(opts))
        path = path[si]
        path[:, g] = opts[oi]
        carry, dev = c[keep], d[keep]
    return path[0]


def _order(units: pl.DataFrame, idx: np.ndarray, gi: np.ndarray, key: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Permutation of ``idx`` sorting the units by (group, key, hash, file, row, chunk): one float sort, a
    stable radix sort on the group, and a full sort of runs of equal (group, key) only (rare)."""
    k = key[idx]
    o = pl.Series(k).arg_sort().to_numpy()
    g = gi[idx].astype(np.uint16 if gi.max(initial=0) < 1 << 16 else np.uint32)
    o = o[np.argsort(g[o], kind="stable")]
    sk, sg = k[o], g[o]
    tie = (sk[1:] == sk[:-1]) & (sg[1:] == sg[:-1])
    if tie.any():
        pos = np.flatnonzero(np.r_[tie, False] | np.r_[False, tie])
        t = idx[o[pos]]
        sub = units.select("file", "row", "chunk")[t].with_columns(
            gi=pl.Series(gi[t]), key=pl.Series(key[t]), hash=pl.Series(h[t], dtype=pl.UInt64),
            i=pl.int_range(len(t), eager=True))
        o[pos] = o[pos][sub.sort("gi", "key", "hash", "file", "row", "chunk")["i"].to_numpy()]
    return o


def _file_row_order(units: pl.DataFrame, idx: np.ndarray) -> np.ndarray | None:
    """Permutation of ``idx`` (increasing) sorting its units by (file, row, chunk); None if already sorted."""
    if len(idx) < 2:
        return None
    sub = units.select("file", "row", "chunk")
    sub = sub if len(idx) == sub.height else sub[idx]  # idx is increasing: all units = all rows in order
    _, f = _codes(sub["file"])
    r = sub["row"].cast(pl.Int64).to_numpy()
    c = sub["chunk"].cast(pl.Int32).to_numpy()
    block = 1 << 20  # checked a block at a time (bounded temporaries)
    for a in range(0, len(f) - 1, block):
        b = min(a + block + 1, len(f))
        df, dr = np.diff(f[a:b]), np.diff(r[a:b])
        if not ((df > 0) | ((df == 0) & ((dr > 0) | ((dr == 0) & (np.diff(c[a:b]) >= 0))))).all():
            return np.lexsort((c, r, f))
    return None


def _codes(s: pl.Series) -> tuple[list, np.ndarray]:
    """Sorted distinct values of ``s`` and each row's index into them (int32)."""
    names = s.unique().sort()
    if s.null_count():
        codes = s.replace_strict(names, pl.int_range(len(names), dtype=pl.Int32, eager=True), return_dtype=pl.Int32)
        return names.to_list(), codes.to_numpy()
    return names.to_list(), s.cast(pl.Enum(names)).to_physical().to_numpy().astype(np.int32)


def build_report(docs: pl.DataFrame, classes: pl.DataFrame, targets: pl.DataFrame, cfg: SampleConfig) -> pl.DataFrame:
    """Original / target / achieved tokens per source (``level='source'``) and per source x length bucket
    (``level='bucket'``). Shares: ``*_share`` of the whole, ``*_share_in_source`` inside the source.

    ``classes``: rows of ``source, bucket`` (of the unit length), ``kind`` (0 = empty units), ``tokens``
    (their length sum), ``expected`` (passes + p), ``achieved_tokens``, ``n_selected``, ``n_copies``.
    Target per cell = expected tokens under the solved plan (sum over units of (passes + p) x length, summed
    per class in a fixed order); for strategy ``target`` this equals the spec's cell targets wherever the
    corpus can provide them.
    """
    edges = cfg.buckets
    if cfg.strategy == "cut":  # documents' own lengths, not the cut ones
        orig = docs.select("source", n=pl.col("n_tokens").cast(pl.Int64)).with_columns(
            bucket=bucket_index(pl.col("n"), edges)).group_by("source", "bucket").agg(original_tokens=pl.col("n").sum())
    else:
        orig = classes.group_by("source", "bucket").agg(original_tokens=pl.col("tokens").sum())
    ach = classes.sort("source", "bucket", "kind").group_by("source", "bucket", maintain_order=True).agg(
        target_tokens=(pl.col("expected") * pl.col("tokens")).sum(),
        achieved_tokens=pl.col("achieved_tokens").sum(),
        n_docs=pl.col("n_selected").sum().cast(pl.Int64),
        n_copies=pl.col("n_copies").sum(),
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
           "recipe_table", "recipe_warnings", "base_shares", "UPSAMPLING"]
