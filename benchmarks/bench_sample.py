#!/usr/bin/env python
"""Plan time and peak memory of `lcdata sample`'s planner (`lcdata.sample.solver.solve_plan`), beside its limits.

The issue's limits: a plan for 10M documents in seconds and in < 2 GiB. Each measurement runs in a fresh
process, so its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is its own. The process reads a
per-document length table from parquet (``file, row, source, n_tokens``, as `lcdata sample --stats` reads
doc_lengths.parquet), then solves the plan; ``input MiB`` is its RSS once the table is in memory (interpreter
and libraries included), ``peak MiB`` its peak RSS, ``plan s`` the wall time of `solve_plan` alone.

Inputs:

* **synthetic** tables of 1M and 10M documents (lengths only, no text): the 7 SlimPajama sources with their
  token shares and median lengths (PAPER.md), lognormal lengths (sigma 1.0; books and arXiv 0.8), which puts
  ~31% of tokens in documents >= 4K (PAPER.md: 30-35%); ``file`` = ``<source>/part-<k>.jsonl.zst`` with 10,000
  rows per file, and ``row``.
* the **demo corpus**: ``doc_lengths.parquet`` of a `lcdata stats` run (tokenizer mode; done here once unless
  ``--stats DIR`` is given).

Strategies: ``per-source`` (the paper's recipe: threshold 4096, short_keep 0.1) and ``target`` (a spec with
the paper's source shares and, inside each source, the tokens of buckets >= 4K tripled), budget 10% of the
corpus's tokens; ``per-source@2.5``: budget 2.5x the corpus (every document 2-3 times: the worst case, where
the plan itself holds every document).

    python benchmarks/bench_sample.py                 # 1M and 10M rows + demo, ~2 min
    python benchmarks/bench_sample.py --sizes 1000000 # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# PAPER.md: SlimPajama token share and median document length (tokens) per source
PAPER = {
    "RedPajamaCommonCrawl": (0.5337, 1066),
    "RedPajamaC4": (0.2661, 315),
    "RedPajamaGithub": (0.0500, 520),
    "RedPajamaArXiv": (0.0429, 14565),
    "RedPajamaBook": (0.0415, 121602),
    "RedPajamaWikipedia": (0.0340, 409),
    "RedPajamaStackExchange": (0.0317, 507),
}
SIGMA = {"RedPajamaArXiv": 0.8, "RedPajamaBook": 0.8}
ROWS_PER_FILE = 10_000
BUDGET_FRACTION = 0.10
LIMIT_S = 10.0  # "seconds"
LIMIT_MIB = 2048  # < 2 GiB
MIB = 1 << 20


def _rss_now_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def synthetic_table(n_docs: int, seed: int = 0):
    """``file, row, source, n_tokens`` for ``n_docs`` documents whose token shares follow PAPER."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    mean = {s: m * np.exp(SIGMA.get(s, 1.0) ** 2 / 2) for s, (_, m) in PAPER.items()}
    w = {s: PAPER[s][0] / mean[s] for s in PAPER}
    counts = {s: max(1, int(round(n_docs * w[s] / sum(w.values())))) for s in PAPER}
    counts["RedPajamaC4"] += n_docs - sum(counts.values())
    frames = []
    for s, n in sorted(counts.items()):  # files in name order, rows ascending: as `lcdata stats` writes them
        lengths = np.maximum(1, rng.lognormal(np.log(PAPER[s][1]), SIGMA.get(s, 1.0), n)).astype(np.int64)
        frames.append(pl.select(
            file=pl.concat_str(pl.lit(f"{s}/part-"), (pl.int_range(0, n, dtype=pl.Int64) // ROWS_PER_FILE)
                               .cast(pl.String).str.zfill(5), pl.lit(".jsonl.zst")),
            row=pl.int_range(0, n, dtype=pl.Int64) % ROWS_PER_FILE,
            source=pl.repeat(s, n, dtype=pl.String),
            n_tokens=pl.Series(lengths),
        ))
    return pl.concat(frames, rechunk=True)


def target_spec(docs):
    """Paper source shares; inside each source its own bucket distribution with buckets >= 4K tripled."""
    import polars as pl

    from lcdata.sample import TargetSpec
    from lcdata.stats import bucket_index
    from lcdata.util.config import DEFAULT_BUCKETS

    edges = list(DEFAULT_BUCKETS)
    cells = (docs.group_by("source", b=bucket_index(pl.col("n_tokens"), edges))
             .agg(t=pl.col("n_tokens").sum()).rows())
    per: dict[str, list[float]] = {}
    for s, b, t in cells:
        per.setdefault(s, [0.0] * len(edges))[b] = t * (3.0 if edges[b] >= 4096 else 1.0)
    shares = {s: [x / sum(v) for x in v] for s, v in per.items()}
    src = {s: PAPER[s][0] for s in per} if set(per) <= set(PAPER) else None
    if src is None:  # demo corpus: equal source shares
        src = {s: 1 / len(per) for s in per}
    tot = sum(src.values())
    src = {s: v / tot for s, v in src.items()}
    return TargetSpec.from_dict({"source_shares": src, "bucket_edges": edges, "bucket_shares": shares})


def child(path: str, strategy: str) -> dict:
    """Read a length table (as `lcdata sample --stats` reads doc_lengths.parquet) and time `solve_plan`."""
    import polars as pl

    from lcdata.sample import SampleConfig, TargetSpec, copies_stats, solve_plan

    strategy, _, mult = strategy.partition("@")
    t0 = time.perf_counter()
    docs = pl.read_parquet(path, columns=["file", "row", "source", "n_tokens"])
    spec = None
    if strategy == "target":  # written beside a synthetic table by --make (so its memory is not counted here)
        spec = TargetSpec.load(path + ".spec.json") if Path(path + ".spec.json").exists() else target_spec(docs)
    load_s = time.perf_counter() - t0
    input_mib = _rss_now_mib()
    budget = int(docs["n_tokens"].sum() * (float(mult) if mult else BUDGET_FRACTION))
    cfg = SampleConfig(strategy=strategy, budget_tokens=budget, target=spec, on_cap="cap", seed=1)
    t0 = time.perf_counter()
    plan = solve_plan(docs, cfg)
    plan_s = time.perf_counter() - t0
    c = copies_stats(plan)
    return {"rows": docs.height, "load_s": load_s, "plan_s": plan_s, "input_mib": input_mib,
            "peak_mib": _peak_mib(), "budget": budget, "tokens": c["tokens"], "selected": c["n_units"],
            "max_copies": c["max_copies"], "capped": len(plan.capped),
            "long_share": float(docs.filter(pl.col("n_tokens") >= 4096)["n_tokens"].sum() / docs["n_tokens"].sum())}


def run(*args: str) -> str:
    p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{p.stderr}")
    return p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""


def demo_stats(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "lcdata", "stats", str(REPO / "data" / "demo"), "--tokenizer",
                    str(REPO / "data" / "demo" / "tokenizer.json"), "--out", str(out), "--quiet", "--no-figure"],
                   check=True, cwd=REPO)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,10000000", help="synthetic table sizes (documents)")
    ap.add_argument("--strategies", default="per-source,target,per-source@2.5",
                    help="strategies; NAME@F: budget F x the corpus tokens (default 0.1)")
    ap.add_argument("--stats", default=None, help="stats folder of the demo corpus (else computed once)")
    ap.add_argument("--child", nargs=2, metavar=("PARQUET", "STRATEGY"), help=argparse.SUPPRESS)
    ap.add_argument("--make", nargs=2, metavar=("N", "PARQUET"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(*a.child)))
        return
    if a.make:
        docs = synthetic_table(int(a.make[0]))
        docs.write_parquet(a.make[1])
        Path(a.make[1] + ".spec.json").write_text(json.dumps(target_spec(docs).to_dict()))
        return
    import polars as pl

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(a.stats) if a.stats else demo_stats(Path(tmp) / "stats")
        inputs = [("demo corpus", str(stats / "doc_lengths.parquet"))]
        for n in a.sizes.split(","):
            path = str(Path(tmp) / f"lengths-{n}.parquet")
            run("--make", n, path)
            inputs.append((f"synthetic {int(n) / 1e6:g}M", path))
        for label, path in inputs:
            for strategy in a.strategies.split(","):
                r = json.loads(run("--child", path, strategy))
                r["input"], r["strategy"] = label, strategy
                results.append(r)
                print(f"  {label} {strategy}: {r['plan_s']:.2f} s, peak {r['peak_mib']:.0f} MiB", file=sys.stderr)
    print(f"lcdata bench_sample: {platform.platform()}, Python {platform.python_version()}, polars {pl.__version__}, "
          f"{os.cpu_count()} CPUs. Budget {BUDGET_FRACTION:.0%} of the corpus tokens (@F: F x). Limits (issue): "
          f"plan for 10M documents in seconds (<= {LIMIT_S:.0f} s here) and < 2 GiB ({LIMIT_MIB} MiB) peak RSS.")
    print()
    head = ["input", "rows", "strategy", "plan s", "input MiB", "peak MiB", "plan adds MiB", "tokens / budget",
            "selected", "max copies", "within limits"]
    rows = []
    for r in results:
        ok = r["plan_s"] <= LIMIT_S and r["peak_mib"] < LIMIT_MIB
        rows.append([r["input"], f"{r['rows']:,}", r["strategy"], f"{r['plan_s']:.2f}", f"{r['input_mib']:.0f}",
                     f"{r['peak_mib']:.0f}", f"{r['peak_mib'] - r['input_mib']:.0f}",
                     f"{r['tokens'] / r['budget']:.5f}", f"{r['selected']:,}", str(r["max_copies"]),
                     "yes" if ok else "NO"])
    widths = [max(len(h), *(len(x[i]) for x in rows)) for i, h in enumerate(head)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for x in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(x, widths)) + " |")
    syn = [r for r in results if not r["input"].startswith("demo")]
    if syn:
        print(f"\nSynthetic tables: {syn[0]['long_share']:.1%} of tokens in documents >= 4096 tokens "
              "(PAPER.md: 30-35% in SlimPajama).")


if __name__ == "__main__":
    main()
