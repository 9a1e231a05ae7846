#!/usr/bin/env python
"""Training throughput of `lcdata_train`: tokens/s, MFU and the data loader's share of step time.

On a CUDA GPU: the ``1b`` preset (Llama-3.2-1B shape: dim 2048, 16 layers, 32 heads, 8 KV heads, tied;
0.97B parameters at the demo tokenizer's 16K vocabulary) at sequence lengths 8K, 32K and 64K, with and
without intra-document masking, bf16 autocast, activation checkpointing, one sequence per micro-batch, the
real `train()` loop (data loader, chunked loss, AdamW, clipping) on shards built from the embedded demo
corpus. MFU uses the GPU's dense bf16 peak (`train.PEAK_TFLOPS`) and model FLOPs = 6 N per token +
6 x layers x heads x head_dim x sum of n^2 over attention blocks (the whole sequence, or each document with
``--doc-mask``; causal; forward + backward; recomputation not counted).

Without a GPU it says so and runs the same loop on CPU at a tiny size (``debug`` preset, sequence lengths
256 / 1024 / 2048, fp32). There MFU is relative to a *measured* peak: the best fp32 GEMM throughput
(2048^3 ``torch.mm``) of this machine in this process, not a published number.

Each configuration runs ``--steps`` optimizer steps; the first ``--warmup`` are dropped and the table gives
medians of the rest (JSON with every step under ``--out``).

    python benchmarks/bench_train.py                 # GPU: 1b at 8K/32K/64K; CPU: debug at 256/1K/2K
    python benchmarks/bench_train.py --steps 6 --seq-lens 8192
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEMO = REPO / "data" / "demo"


def measured_cpu_peak(n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def build_shards(seq_len: int, root: Path, inputs: list[str] | None = None, workers: int | None = None) -> str:
    """Shards of ``inputs`` (default: the whole demo corpus) at ``seq_len`` under ``root`` (reused if there)."""
    from lcdata.build import BuildConfig, run_build

    out = root / f"shards-{seq_len}"
    if not (out / "manifest.json").exists():
        run_build(inputs or [str(DEMO)], str(out),
                  BuildConfig(tokenizer=str(DEMO / "tokenizer.json"), seq_len=seq_len), overwrite=True, workers=workers)
    return str(out)


def init_model_folder(model: str, shards: str, root: Path) -> str:
    """The preset ``model`` with the initial weights `train()` would draw (`init_state_dict`, seed 0) as a Hugging
    Face folder under ``root``, made once: each row then loads it (seconds) instead of drawing the ~1B normal
    numbers of ``1b`` again on one CPU thread (about 12 s). Without checksums.json: such a folder loads
    unverified, where hashing 4 GB would cost every row seconds again."""
    from lcdata_train.checkpoint import save_hf
    from lcdata_train.config import preset
    from lcdata_train.data import ShardDataset
    from lcdata_train.model import init_state_dict

    out = root / f"init-{model}"
    if not (out / "config.json").exists():
        cfg = preset(model, ShardDataset(shards).vocab_size)
        save_hf(init_state_dict(cfg, 0), cfg, str(out))
        (out / "checksums.json").unlink(missing_ok=True)
    return str(out)


def run_one(shards: str, model: str, seq_len: int, doc_mask: bool, steps: int, cuda: bool, peak_tflops, root: Path):
    """``steps`` optimizer steps of one sequence of ``seq_len`` with the real `train()` loop, from ``model`` (a
    preset or a folder, `init_model_folder`); no checkpoint is written (``save=False``: at ``1b`` one would be
    12 GB). Returns (the step records, wall seconds)."""
    from lcdata_train.config import TrainConfig
    from lcdata_train.train import train

    out = root / f"run-{Path(model).name}-{seq_len}-{int(doc_mask)}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = TrainConfig(shards=shards, out=str(out), model=model, seq_len=seq_len, lr=2e-5, batch_tokens=seq_len,
                      tokens=seq_len * steps, doc_mask=doc_mask, act_ckpt=cuda, save_every=0, save=False, quiet=True,
                      peak_tflops=peak_tflops)
    t = time.perf_counter()
    res = train(cfg)
    wall = time.perf_counter() - t
    shutil.rmtree(out, ignore_errors=True)
    return res.records, wall


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seq-lens", default=None, help="comma list (default: 8192,32768,65536 on GPU; 256,1024,2048 CPU)")
    p.add_argument("--model", default=None, help="preset (default: 1b on GPU, debug on CPU)")
    p.add_argument("--out", default=str(REPO / "out" / "bench" / "train"))
    p.add_argument("--work", default=None, help="folder for shards and runs (default: a temporary one)")
    a = p.parse_args()

    import torch

    from lcdata_train.attention import pick_backend

    cuda = torch.cuda.is_available()
    model = a.model or ("1b" if cuda else "debug")
    seq_lens = [int(x) for x in (a.seq_lens or ("8192,32768,65536" if cuda else "256,1024,2048")).split(",")]
    peak_tflops = None
    if cuda:
        where = f"GPU {torch.cuda.get_device_name()}, bf16 autocast, activation checkpointing"
    else:
        peak_tflops = measured_cpu_peak() / 1e12
        where = (f"NO GPU: CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads), fp32, tiny '{model}' "
                 f"model; MFU relative to a measured fp32 GEMM peak of {peak_tflops * 1e3:.1f} GFLOP/s")
    print(f"bench_train: {where}; {a.steps} steps per row, first {a.warmup} dropped, medians", flush=True)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="lcdata-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, raw = [], []
    shards = build_shards(max(seq_lens), work)  # shorter runs train on windows of these sequences
    init = init_model_folder(model, shards, work)
    for L in seq_lens:
        for doc_mask in (False, True):
            recs, wall = run_one(shards, init, L, doc_mask, a.steps, cuda, peak_tflops, work)
            keep = recs[a.warmup:] or recs
            med = {k: statistics.median(r[k] for r in keep) for k in ("tokens_per_s", "step_s", "data_share")}
            mfu = statistics.median(r["mfu"] for r in keep) if keep[0]["mfu"] is not None else None
            rows.append((L, doc_mask, pick_backend(torch.device("cuda" if cuda else "cpu"), doc_mask), med, mfu))
            raw.append({"seq_len": L, "doc_mask": doc_mask, "records": recs, "wall_s": wall})
            print(f"  seq {L:>6} doc_mask {str(doc_mask):5}: {med['tokens_per_s']:>10,.0f} tok/s, "
                  f"MFU {'n/a' if mfu is None else f'{mfu:.1%}'}, data {med['data_share']:.2%}", flush=True)
    print()
    print(f"{'seq_len':>8} {'doc_mask':>8} {'attention':>12} {'tokens/s':>12} {'MFU':>7} {'step s':>8} {'data %':>7}")
    for L, dm, be, med, mfu in rows:
        print(f"{L:>8} {str(dm):>8} {be:>12} {med['tokens_per_s']:>12,.0f} "
              f"{'n/a' if mfu is None else f'{mfu:.1%}':>7} {med['step_s']:>8.3f} {med['data_share']:>7.2%}")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "bench_train.json"), "w") as fh:
        json.dump({"where": where, "model": model, "cuda": cuda, "peak_tflops": peak_tflops, "runs": raw}, fh, indent=1)
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
