#!/usr/bin/env python
"""`make bench`: run every benchmark script, one after the other (they measure the same cores, so never in
parallel), and print their tables followed by one summary table (script, claim, seconds, result).

    python benchmarks/run_all.py             # the full runs (>= 200 MB corpora; about 40 minutes on 2 cores)
    python benchmarks/run_all.py --quick     # smoke sizes (20 MB corpora, 1M rows; a few minutes)
    python benchmarks/run_all.py --only bench_sample bench_train

Each script keeps its own command line and prints its own table of ours vs the peer vs the limit (ratios from
one run); see benchmarks/README.md for what each measures and the figures recorded on this project's machine.
A script that fails is reported in the summary with its exit code and does not stop the others.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# script, claim, arguments for --quick
BENCHES = [
    ("bench_stats", "lcdata stats vs parse floor / raw tokenizer / datatrove (issue: foundation)", ["--quick"]),
    ("bench_sample", "plan time and memory, 1M / 10M documents (issue: sample)", ["--sizes", "1000000"]),
    ("bench_build", "lcdata build vs raw tokenizer / datatrove, both engines (issue: build)", ["--quick"]),
    ("bench_scaleout", "datatrove executor layer overhead (issue: scale-out)", ["--quick", "--repeat", "1"]),
    ("bench_train", "training tokens/s, MFU, loader share (issue: train; CPU tiny size without a GPU)", []),
    ("bench_eval", "evaluation forward tokens/s vs transformers (issue: needle; CPU tiny size without a GPU)",
     ["--reps", "2"]),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke sizes")
    ap.add_argument("--only", nargs="+", default=None, help="run only these scripts")
    a = ap.parse_args()
    summary = []
    for name, claim, quick in BENCHES:
        if a.only and name not in a.only:
            continue
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(quick if a.quick else [])]
        print(f"\n===== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        summary.append((name, claim, time.perf_counter() - t0, "ok" if rc == 0 else f"FAILED (exit {rc})"))
    w = max(len(s[1]) for s in summary) if summary else 10
    print("\n===== lcdata benchmarks" + (" (--quick)" if a.quick else ""))
    print(f"{'script':<15} {'claim':<{w}} {'seconds':>8}  result")
    for name, claim, sec, res in summary:
        print(f"{name:<15} {claim:<{w}} {sec:>8.1f}  {res}")
    return 0 if all(s[3] == "ok" for s in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
