#!/usr/bin/env python
"""One command for a lent GPU (issue 18): correctness, speed and an end-to-end run of `lcdata_train`, each part
in its own process under a hard time budget, every result written as JSON and a Markdown table.

    make gpu-check                  # on the GPU image as it is (PyTorch + CUDA): < 8 minutes on one H200
    make gpu-check DRY=1            # the same code paths on CPU at tiny sizes (< 1 minute); run by `make test`
    python benchmarks/gpu_check.py [--dry] [--out DIR] [--parts correctness,speed,e2e] [--budget PART=SECONDS]

Before spending time it imports what the parts need (torch, numpy, polars, pyarrow, zstandard, tokenizers,
matplotlib, safetensors, lcdata, lcdata_train; pytest and flash-attn are optional) and, without ``--dry``, checks
that CUDA is there; it installs nothing (the GPU image lacks polars and zstandard: they travel as wheels,
scripts/gpu_wheels.sh).

Parts (GPU sizes; ``--dry``: the same code at tiny sizes on CPU, ``debug`` model):
1. ``correctness``: ``pytest -m cuda`` (the CUDA-only tests; skipped on CPU); every attention path (the automatic
   choice, SDPA with each of its flash / cuDNN / efficient / math kernels via ``sdpa_kernel``, run per document
   with a mask, ``torch_varlen``, ``flash_attn``) against `attention.reference_attention` in float64 on bf16
   inputs, with and without document masks: output (tol 2e-2) and gradients (max error / max gradient < 3e-2);
   ``small`` trained 4 steps in bf16 and in fp32 from the same weights on the same batches (losses within 2%);
   a run stopped after 2 steps and resumed from its checkpoint gives the uninterrupted run's next loss.
2. ``speed``: `bench_train` rows (``1b`` at 16K, 32K, 64K, then 128K last; activation checkpointing; doc-mask
   off and on: tokens/s, MFU against the chip's dense bf16 peak, loader share of step time, peak memory) and
   `bench_eval` teacher-forced tokens/s at 32K / 64K / 128K, all from one set of initial weights drawn once. A
   row that runs out of memory is reported skipped. Dry: MFU, peak and memory fields null.
3. ``e2e``: shards of the demo corpus at 16K on all the machine's cores, ``small`` trained about 2 minutes (a
   probe of a few steps sets the step count), needle teacher-forced on the final model.

Budgets: the parent runs each part as ``gpu_check.py --run-part NAME`` in a new process group and kills the
group at the part's budget (GPU 65 / 220 / 165 s; dry 90 s each) or when the total cap (450 s; dry 240 s) is
spent. A part writes its result before and after every check, so one cut short keeps what it measured: it is
reported ``timeout`` (and so is the check it was in) and the next part runs. Inside a part, a check that would
start past the deadline is skipped.

Output (``--out``; default ``$OUT`` when set, else ``out/gpu-check``), small enough to send back:
    summary.json, summary.md         environment (device, versions, bf16 peak used) and every part's status
    <part>/result.json, result.md    the part's checks (name, status, seconds, detail and measured fields)
    <part>/log.txt                   the part process's output
    correctness/pytest-cuda.*, e2e/needle/   the CUDA tests' JUnit XML and log; the needle results
Shards, runs and checkpoints (GBs at GPU sizes) go to ``--work`` (default: a temporary folder, removed at the
end). Check statuses: pass, fail, skip (not applicable here, out of memory, or past the deadline), error (an
exception), timeout. Exit status 0 when every part passed, 1 otherwise, 2 when an import is missing or (without
``--dry``) there is no CUDA GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
DEMO = REPO / "data" / "demo"
PARTS = ("correctness", "speed", "e2e")
BUDGETS = {False: {"correctness": 65, "speed": 220, "e2e": 165}, True: {p: 90 for p in PARTS}}
TOTAL = {False: 450, True: 240}  # GPU: 7.5 minutes, imports included
# what the parts import; the GPU image (PyTorch 2.11, CUDA 13) lacks polars and zstandard: they travel as wheels
# (scripts/gpu_wheels.sh, benchmarks/README.md "gpu-check")
REQUIRED = ("numpy", "polars", "pyarrow", "zstandard", "fsspec", "tokenizers", "matplotlib", "torch", "safetensors",
            "lcdata", "lcdata.build", "lcdata_train", "lcdata_train.train", "lcdata_train.needle")
OPTIONAL = ("flash_attn", "pytest")
BF16_TOL = 2e-2  # attention output vs the float64 reference, bf16 inputs (rtol = atol)
GRAD_TOL = 3e-2  # attention gradients vs float64: max |error| / max |gradient|, bf16 inputs
LOSS_TOL = 2e-2  # bf16 vs fp32 training loss, relative


def sizes(dry: bool) -> dict:
    """Every size the parts use: GPU (the issue's) or dry (tiny, CPU). attn = (B, L, Hq, Hkv, head_dim)."""
    docs = [str(DEMO / "docs" / "part-000.jsonl.zst")]  # 236K tokens: the correctness (and dry) shards
    if dry:
        return dict(attn=(2, 64, 4, 2, 16), shard_inputs=docs, train_model="debug", train_seq=128, train_steps=4,
                    lr=1e-3,
                    speed_model="debug", train_lens=(64, 128), eval_lens=(128, 256), long_lens=(256,), steps=2,
                    long_steps=2, warmup=1, eval_reps=1,
                    e2e_inputs=docs, e2e_seq=256, e2e_workers=2, e2e_model="debug", e2e_batch=2, e2e_seconds=3.0,
                    e2e_probe=2, e2e_lr=3e-3, e2e_warmup=0, needle_lengths=(512,))
    return dict(attn=(2, 2048, 16, 4, 64), shard_inputs=docs, train_model="small", train_seq=4096, train_steps=4,
                lr=3e-4,
                speed_model="1b", train_lens=(16384, 32768, 65536), eval_lens=(32768, 65536, 131072),
                long_lens=(131072,), steps=4, long_steps=3, warmup=1, eval_reps=2,
                e2e_inputs=[str(DEMO)], e2e_seq=16384, e2e_workers=os.cpu_count() or 1, e2e_model="small",
                e2e_batch=4, e2e_seconds=120.0, e2e_probe=5, e2e_lr=6e-4, e2e_warmup=10, needle_lengths=(4096, 16384))


# ------------------------------------------------------------------------------------------ results on disk


def write_json(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def write_text(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def md_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def part_markdown(res: dict) -> str:
    """A part's result.md: its status line, the checks, and the speed part's train / eval tables."""
    out = [f"# gpu-check: {res['part']} ({'dry, CPU' if res.get('dry') else 'GPU'})\n",
           f"status **{res['status']}**, {res.get('seconds') or 0:.1f} s of a {res.get('budget_s')} s budget; "
           f"device: {res.get('device')}\n"]
    if res.get("note"):
        out.append(res["note"] + "\n")
    checks = res.get("checks", [])
    out.append(md_table(["check", "status", "seconds", "detail"],
                        [[c["name"], c["status"], c.get("seconds"), c.get("detail", "")] for c in checks]))
    train = [c for c in checks if c.get("kind") == "train" and c.get("tokens_per_s")]
    if train:
        out.append("\n## bench_train\n")
        out.append(md_table(["model", "seq_len", "doc_mask", "attention", "tokens/s", "MFU", "peak TFLOP/s",
                             "step s", "loader share", "peak memory GiB"],
                            [[c["model"], c["seq_len"], c["doc_mask"], c["attention"], c["tokens_per_s"],
                              None if c["mfu"] is None else f"{c['mfu']:.1%}", c["peak_tflops"], c["step_s"],
                              f"{c['data_share']:.3%}", c["peak_memory_gib"]] for c in train]))
    ev = [c for c in checks if c.get("kind") == "eval" and c.get("tokens_per_s")]
    if ev:
        out.append("\n## bench_eval (teacher-forced)\n")
        out.append(md_table(["model", "length", "tokens/s", "peak memory GiB"],
                            [[c["model"], c["length"], c["tokens_per_s"], c["peak_memory_gib"]] for c in ev]))
    return "\n".join(out)


def save_part(res: dict, folder: Path) -> None:
    write_json(res, folder / "result.json")
    write_text(part_markdown(res), folder / "result.md")


# ------------------------------------------------------------------------------------------ one part's process


class Part:
    """A part running in its own process: its checks, written after each one; a soft deadline per sub-step."""

    def __init__(self, name: str, out: Path, work: Path, dry: bool, deadline: float, budget: float):
        import torch

        self.torch, self.dry, self.deadline = torch, dry, deadline
        self.cuda = torch.cuda.is_available() and not dry
        self.dev = torch.device("cuda" if self.cuda else "cpu")
        self.folder = out / name
        self.work = work / name
        self.work.mkdir(parents=True, exist_ok=True)
        self.S = sizes(dry)
        self.res = {"part": name, "status": "running", "dry": dry, "budget_s": round(budget, 1), "seconds": None,
                    "device": torch.cuda.get_device_name() if self.cuda else f"CPU ({os.cpu_count()} cores)",
                    "torch": torch.__version__, "checks": []}
        self.t0 = time.monotonic()
        save_part(self.res, self.folder)

    def check(self, name: str, fn, **fields) -> dict:
        """Run ``fn() -> dict`` (with 'status' and 'detail') as one check, unless the deadline has passed."""
        c = {"name": name, **fields, "status": "running"}
        self.res["checks"].append(c)
        save_part(self.res, self.folder)  # if the part is cut now, the parent marks this check 'timeout'
        t = time.perf_counter()
        if time.time() >= self.deadline:
            c.update(status="skip", detail="part budget spent")
        else:
            try:
                c.update(fn())
            except Exception as e:  # a check that raises is reported, and the part goes on
                oom = isinstance(e, getattr(self.torch, "OutOfMemoryError", ())) or "out of memory" in str(e)
                c.update(status="skip" if oom else "error", detail=("out of memory: " if oom else "")
                         + f"{type(e).__name__}: {str(e)[:300]}")
                traceback.print_exc()
        self.free()  # after the except block: its traceback no longer holds the failed step's tensors
        c["seconds"] = round(time.perf_counter() - t, 2)
        print(f"[{self.res['part']}] {name}: {c['status']} ({c['seconds']} s) {c.get('detail', '')}", flush=True)
        self.res["seconds"] = round(time.monotonic() - self.t0, 1)
        save_part(self.res, self.folder)
        return c

    def free(self) -> None:
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def finish(self) -> None:
        bad = [c for c in self.res["checks"] if c["status"] in ("fail", "error")]
        self.res["status"] = "fail" if bad else "pass"
        self.res["seconds"] = round(time.monotonic() - self.t0, 1)
        save_part(self.res, self.folder)

    # ---- helpers shared by the parts
    def peak_reset(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated() / 2**30, 2) if self.cuda else None

    def shards(self, seq_len: int, inputs: list[str], workers: int | None = 1) -> str:
        from bench_train import build_shards

        return build_shards(seq_len, self.work, inputs, workers)

    def train(self, name: str, **kw):
        from lcdata_train.config import TrainConfig
        from lcdata_train.train import train

        out = self.work / name
        if not kw.get("resume"):
            shutil.rmtree(out, ignore_errors=True)
        return train(TrainConfig(out=str(out), quiet=True, save_every=0, **kw))


def correctness(p: Part) -> None:
    torch, S = p.torch, p.S
    p.check("pytest -m cuda", lambda: cuda_tests(p))
    from lcdata_train import attention as A

    B, L, H, Hkv, D = S["attn"]
    g = torch.Generator().manual_seed(0)
    q, k, v, dout = (torch.randn(B, L, h, D, generator=g).to(p.dev, torch.bfloat16) for h in (H, Hkv, Hkv, H))
    bounds = [0, L // 3, L, L + L // 8, L + L // 2, 2 * L]  # documents, the row boundary among them
    cu = torch.tensor(bounds, dtype=torch.int32, device=p.dev)
    max_len = max(b - a for a, b in zip(bounds, bounds[1:]))
    for masked in (False, True):
        ref = _forward_backward(A.reference_attention, q.double(), k.double(), v.double(), dout.double(),
                                cu if masked else None)
        for label, backend, kernel in attention_variants(p):
            def run(backend=backend, kernel=kernel, ref=ref, masked=masked):
                from torch.nn.attention import sdpa_kernel

                if backend == "flash_attn" and not A.has_flash_attn():
                    return {"status": "skip", "detail": "flash-attn is not installed"}
                if backend == "torch_varlen" and not A.has_torch_varlen():
                    return {"status": "skip", "detail": "torch.nn.attention.varlen is not available"}
                fn = functools.partial(A.attention, max_seqlen=max_len if masked else None, backend=backend)
                try:
                    with sdpa_kernel([kernel]) if kernel is not None else contextlib.nullcontext():
                        got = _forward_backward(lambda q, k, v, cu: fn(q, k, v, cu), q, k, v, dout,
                                                cu if masked else None)
                except RuntimeError as e:
                    if "kernel" not in str(e).lower() and "support" not in str(e).lower():
                        raise
                    return {"status": "skip", "detail": f"kernel unavailable here: {str(e)[:160]}"}
                err = float((got[0].double() - ref[0]).abs().max())
                ok = bool(torch.allclose(got[0].double(), ref[0], rtol=BF16_TOL, atol=BF16_TOL))
                gerr = max(float((a.double() - b).abs().max() / b.abs().max()) for a, b in zip(got[1:], ref[1:]))
                used = backend or A.pick_backend(p.dev, masked)
                used = "sdpa_docs" if used == "sdpa" and masked else used  # `attention` routes it so
                return {"status": "pass" if ok and gerr < GRAD_TOL else "fail", "max_abs_err": err,
                        "grad_rel_err": gerr, "backend_used": used,
                        "detail": f"{used}: output max |err| {err:.2e} (tol {BF16_TOL}), gradients max |err| / max "
                                  f"|grad| {gerr:.2e} (tol {GRAD_TOL}) vs float64"}
            p.check(f"attention {label} {'doc-mask' if masked else 'causal'}", run, kind="attention",
                    masked=masked, shape=[B, L, H, Hkv, D])
        del ref
    shards = p.shards(S["train_seq"], S["shard_inputs"])
    base = dict(shards=shards, model=S["train_model"], seq_len=S["train_seq"], lr=S["lr"], doc_mask=True,
                batch_tokens=2 * S["train_seq"], tokens=2 * S["train_seq"] * S["train_steps"], act_ckpt=p.cuda)
    runs = {}

    def bf16_vs_fp32():
        runs["bf16"] = p.train("bf16", dtype="bfloat16", save=False, **base).losses
        fp32 = p.train("fp32", dtype="float32", save=False, **base).losses
        rel = [abs(a - b) / abs(b) for a, b in zip(runs["bf16"], fp32)]
        ok = len(rel) == S["train_steps"] and max(rel) < LOSS_TOL
        return {"status": "pass" if ok else "fail", "losses_bf16": runs["bf16"], "losses_fp32": fp32,
                "max_rel_diff": max(rel), "detail": f"{len(rel)} steps of {S['train_model']}, max relative loss "
                f"difference {max(rel):.2e} (tol {LOSS_TOL}); fp32 {fp32[0]:.4f} -> {fp32[-1]:.4f}"}
    p.check("train bf16 vs fp32", bf16_vs_fp32, kind="train-dtype")

    def resume():
        full = runs.get("bf16") or p.train("bf16", dtype="bfloat16", save=False, **base).losses
        half = S["train_steps"] // 2
        first = p.train("resumed", dtype="bfloat16", stop_after=half, **base)
        rest = p.train("resumed", dtype="bfloat16", resume=True, **base)
        got = first.losses + rest.losses
        rel = abs(rest.losses[0] - full[half]) / abs(full[half])
        tol = 1e-3 if p.cuda else 1e-6  # CUDA kernels may sum in another order; CPU repeats itself bitwise
        ok = rest.first_step == half and len(got) == len(full) and rel <= tol
        return {"status": "pass" if ok else "fail", "losses_resumed": got, "losses_uninterrupted": full,
                "bitwise": got == full, "next_loss_rel_diff": rel,
                "detail": f"stopped after {half} steps, resumed: next loss {rest.losses[0]:.6f} vs {full[half]:.6f} "
                          f"uninterrupted (relative {rel:.1e}, tol {tol:g}; bitwise {got == full})"}
    p.check("save -> resume, next loss", resume, kind="resume")


def _forward_backward(fn, q, k, v, dout, cu):
    """(output, dq, dk, dv) of ``fn(q, k, v, cu)`` with ``dout`` as the output's gradient."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, cu)
    out.backward(dout)
    return out.detach(), q.grad, k.grad, v.grad


def attention_variants(p: Part) -> list[tuple[str, str | None, object]]:
    """(label, attention backend, SDPA kernel or None) of every path to compare on this device."""
    from torch.nn.attention import SDPBackend

    kernels = (("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH))
    if p.cuda:
        kernels = (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                   ("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH))
    out = [("auto", None, None)]
    out += [(f"sdpa[{n}]", "sdpa", k) for n, k in kernels]  # with a document mask: per document (sdpa_docs)
    if p.cuda:
        out += [("torch_varlen", "torch_varlen", None), ("flash_attn", "flash_attn", None)]
    return out


def cuda_tests(p: Part) -> dict:
    """``pytest -m cuda`` on the test files that use the marker (collecting every file would take 10 s and
    fail on modules whose optional imports the GPU image lacks), in a child process; counts from its JUnit XML."""
    import xml.etree.ElementTree as ET

    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"status": "skip", "detail": "pytest is not installed"}
    xml = p.folder / "pytest-cuda.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", f"--junitxml={xml}",
           *sorted(str(f) for f in (REPO / "tests").rglob("test_*.py") if "mark.cuda" in f.read_text())]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=max(5, p.deadline - time.time()))
    (p.folder / "pytest-cuda.log").write_text(r.stdout + r.stderr)
    if not xml.exists():
        return {"status": "error", "detail": f"pytest exit {r.returncode}: {(r.stdout + r.stderr)[-300:]}"}
    s = ET.parse(xml).getroot()
    s = s if s.tag == "testsuite" else s.find("testsuite")
    n = {k: int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    status = "fail" if n["failures"] or n["errors"] else ("pass" if passed else "skip")
    return {"status": status, **n, "passed": passed,
            "detail": f"{passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped"
                      + ("" if p.cuda else " (no CUDA: skipped by design)")}


def speed(p: Part) -> None:
    import statistics

    from bench_eval import make_model, teacher_forced_tps
    from bench_train import init_model_folder, run_one

    from lcdata_train.attention import pick_backend
    from lcdata_train.train import peak_flops

    torch, S = p.torch, p.S
    peak = peak_flops(p.dev, torch.bfloat16, None) if p.cuda else None
    p.res["peak_tflops"] = peak / 1e12 if peak else None
    p.res["note"] = (f"MFU against {peak / 1e12:g} TFLOP/s, the dense bf16 peak of {p.res['device']} "
                     "(lcdata_train.train.PEAK_TFLOPS)" if peak else
                     "MFU null: " + ("no bf16 peak known for this GPU (PEAK_TFLOPS)" if p.cuda else "CPU (dry run)"))
    print(p.res["note"], flush=True)
    shards = {}

    def prepare():  # the shards and the initial weights, once, in the first check that needs them
        if "s" not in shards:
            shards["s"] = p.shards(max(S["train_lens"] + S["long_lens"]), S["shard_inputs"] if p.dry else
                                   [str(DEMO)], 2 if p.dry else os.cpu_count())
        if "init" not in shards:
            shards["init"] = init_model_folder(S["speed_model"], shards["s"], p.work)

    def train_row(L, doc_mask, steps):
        def run():
            prepare()
            p.peak_reset()
            recs, wall = run_one(shards["s"], shards["init"], L, doc_mask, steps, p.cuda, None, p.work)
            keep = recs[S["warmup"]:] or recs
            med = {k: statistics.median(r[k] for r in keep) for k in ("tokens_per_s", "step_s", "data_share")}
            mfu = statistics.median(r["mfu"] for r in keep) if keep[0]["mfu"] is not None else None
            mem = p.peak_gib()
            p.free()
            return {"status": "pass", **med, "mfu": mfu, "peak_tflops": p.res["peak_tflops"], "peak_memory_gib": mem,
                    "attention": pick_backend(p.dev, doc_mask), "steps": len(recs), "wall_s": round(wall, 2),
                    "detail": f"{med['tokens_per_s']:,.0f} tok/s, MFU {'-' if mfu is None else f'{mfu:.1%}'}, "
                              f"loader {med['data_share']:.2%}" + ("" if mem is None else f", peak {mem} GiB")}
        p.check(f"bench_train {S['speed_model']} {L} doc_mask={doc_mask}", run, kind="train", model=S["speed_model"],
                seq_len=L, doc_mask=doc_mask, act_ckpt=p.cuda)

    for L in S["train_lens"]:
        for dm in (False, True):
            train_row(L, dm, S["steps"])
    model = {}
    for L in S["eval_lens"]:
        def run(L=L):
            if "m" not in model:
                prepare()
                model["m"] = make_model(S["speed_model"], max(S["eval_lens"]), p.dev, shards["init"])
            p.peak_reset()
            tps = teacher_forced_tps(model["m"], L, S["eval_reps"], p.cuda)
            return {"status": "pass", "tokens_per_s": tps, "peak_memory_gib": p.peak_gib(),
                    "detail": f"{tps:,.0f} tok/s teacher-forced"}
        p.check(f"bench_eval teacher-forced {S['speed_model']} {L}", run, kind="eval", model=S["speed_model"],
                length=L)
    model.clear()
    p.free()
    for L in S["long_lens"]:
        for dm in (False, True):
            train_row(L, dm, S["long_steps"])


def e2e(p: Part) -> None:
    import statistics

    S = p.S
    st = {}

    def build():
        t = time.perf_counter()
        st["shards"] = p.shards(S["e2e_seq"], S["e2e_inputs"], S["e2e_workers"])
        m = json.loads((Path(st["shards"]) / "manifest.json").read_text())
        secs = time.perf_counter() - t
        return {"status": "pass", "n_tokens": m.get("n_tokens"), "workers": S["e2e_workers"],
                "detail": f"{m.get('n_tokens'):,} tokens at seq_len {S['e2e_seq']:,} with {S['e2e_workers']} "
                          f"workers in {secs:.1f} s"}
    p.check(f"build shards (demo, {S['e2e_seq']})", build, kind="build")

    def train():
        batch = S["e2e_batch"] * S["e2e_seq"]
        kw = dict(shards=st["shards"], model=S["e2e_model"], lr=S["e2e_lr"], warmup_steps=S["e2e_warmup"],
                  batch_tokens=batch, act_ckpt=p.cuda)
        t = time.monotonic()
        probe = p.train("run", tokens=batch * (S["e2e_probe"] + 1), stop_after=S["e2e_probe"], **kw)
        step_s = statistics.median(r["step_s"] for r in probe.records[1:] or probe.records)
        room = min(S["e2e_seconds"] - (time.monotonic() - t), p.deadline - time.time() - (10 if p.dry else 40))
        total = S["e2e_probe"] + max(1, int(room / step_s))
        rest = p.train("run", tokens=batch * total, resume=True, **kw)
        recs = probe.records + rest.records
        st["run"] = str(p.work / "run")
        mfu = [r["mfu"] for r in rest.records if r["mfu"] is not None]
        tps = statistics.median(r["tokens_per_s"] for r in recs)
        final = rest.final_dir is not None
        falls = recs[-1]["loss"] < recs[0]["loss"] or len(recs) < 20  # a few steps need not lower it
        ok = final and falls and all(math.isfinite(r["loss"]) for r in recs)
        return {"status": "pass" if ok else "fail", "steps": len(recs), "tokens": len(recs) * batch,
                "seconds_training": round(time.monotonic() - t, 1), "loss_first": recs[0]["loss"],
                "loss_last": recs[-1]["loss"], "tokens_per_s": tps, "mfu": statistics.median(mfu) if mfu else None,
                "detail": f"{S['e2e_model']}: {len(recs)} steps of {batch:,} tokens, loss {recs[0]['loss']:.3f} -> "
                          f"{recs[-1]['loss']:.3f}, {tps:,.0f} tok/s, final model {'written' if final else 'MISSING'}"}
    p.check(f"train {S['e2e_model']} (~{S['e2e_seconds']:g} s)", train, kind="e2e-train")

    def needle():
        from lcdata_train.needle import NeedleConfig, run_needle

        out = p.folder / "needle"  # small: results and heatmaps
        res = run_needle(NeedleConfig(model=st["run"], out=str(out), mode="teacher-forced",
                                      lengths=S["needle_lengths"], depths=(0.0, 50.0, 100.0), quiet=True,
                                      overwrite=out.exists()))
        info = json.loads((out / "results.json").read_text())
        score = float(res["score"].mean())
        return {"status": "pass", "mean_score": score, "tokens_per_s": info.get("tokens_per_s"),
                "mean_logprob": float(res["logprob"].mean()),
                "detail": f"{res.height} prompts at lengths {list(S['needle_lengths'])}: mean score {score:.1f}, "
                          f"answer log-prob {float(res['logprob'].mean()):.2f}, "
                          f"{info.get('tokens_per_s') or 0:,.0f} tok/s"}
    p.check("needle teacher-forced", needle, kind="needle")


def run_part(name: str, out: Path, work: Path, dry: bool, deadline: float, budget: float) -> int:
    if dry:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the dry run is the CPU path, whatever the machine
        os.environ["OMP_NUM_THREADS"] = "1"  # tiny sizes: one thread is faster than two that wait for each other
    p = Part(name, out, work, dry, deadline, budget)
    {"correctness": correctness, "speed": speed, "e2e": e2e}[name](p)
    p.finish()
    return 0


# ------------------------------------------------------------------------------------------ the parent


def environment(dry: bool) -> tuple[dict, list[str]]:
    """What this machine has, and the missing required modules (imported here, before any work)."""
    env = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "dry": dry,
           "python": platform.python_version(), "host_cpus": os.cpu_count(), "modules": {}}
    missing = []
    for name in REQUIRED + OPTIONAL:
        try:
            mod = importlib.import_module(name)
            env["modules"][name] = getattr(mod, "__version__", "ok")
        except Exception as e:  # an import that fails for any reason is reported the same way
            env["modules"][name] = None
            if name in REQUIRED:
                missing.append(f"{name} ({type(e).__name__}: {e})")
    if not missing:
        import torch

        from lcdata_train.train import PEAK_TFLOPS

        cuda = torch.cuda.is_available() and not dry
        env.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
                   device=torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)")
        try:  # its signature changed between releases (attention.varlen_arguments adapts; recorded to diagnose)
            from lcdata_train.attention import varlen_parameters

            env["varlen_attn_parameters"] = sorted(varlen_parameters())
        except ImportError:
            env["varlen_attn_parameters"] = None
        if cuda:
            props = torch.cuda.get_device_properties(0)
            name = torch.cuda.get_device_name()
            env.update(gpu_memory_gib=round(props.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count(),
                       bf16_peak_tflops=next((v for k, v in PEAK_TFLOPS.items() if k in name), None))
    return env, missing


def run_one_part(name: str, out: Path, work: Path, dry: bool, budget: float) -> dict:
    """Run part ``name`` in a new process group; kill the group at ``budget`` seconds. Returns its result."""
    folder = out / name
    if folder.exists():
        if not (folder / "result.json").exists() and any(folder.iterdir()):
            raise SystemExit(f"gpu_check: {folder} exists and holds no gpu-check result: choose another --out")
        shutil.rmtree(folder)  # this script's own results, from an earlier run
    folder.mkdir(parents=True)
    deadline = time.time() + budget
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-part", name, "--out", str(out), "--work", str(work),
           "--deadline", repr(deadline), "--budget-s", repr(budget)] + (["--dry"] if dry else [])
    t = time.monotonic()
    with open(folder / "log.txt", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        try:
            rc = proc.wait(timeout=budget)
            timed_out = False
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):  # it may have ended just now
                os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
            timed_out = True
    try:
        res = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        res = {"part": name, "dry": dry, "checks": []}
    res.update(budget_s=round(budget, 1), seconds=round(time.monotonic() - t, 1), exit_code=rc)
    for c in res.get("checks", []):
        if c.get("status") == "running":  # the check the part was in when it was cut (or crashed)
            c.update(status="timeout" if timed_out else "error",
                     detail=f"cut at the part's {budget:.0f} s budget" if timed_out else "the part process died")
    if timed_out:
        res["status"] = "timeout"
        res["note"] = ((res.get("note") or "") + f"\n\nCut at its {budget:.0f} s budget: the checks below are those it "
                       "finished; the rest were not reached.").strip()
    elif rc != 0 or res.get("status") not in ("pass", "fail"):
        res["status"] = "error"
        tail = (folder / "log.txt").read_text()[-600:]
        res["note"] = f"the part process exited with {rc}: {tail}"
    save_part(res, folder)
    return res


def summary_markdown(env: dict, results: list[dict]) -> str:
    lines = [f"# gpu-check {'(dry run, CPU)' if env['dry'] else ''}\n",
             f"{env['date']}; device {env.get('device')}; torch {env.get('torch')} (CUDA {env.get('cuda')}); "
             f"flash-attn {env['modules'].get('flash_attn') or 'absent'}; bf16 peak used for MFU: "
             f"{env.get('bf16_peak_tflops') or '-'} TFLOP/s\n"]
    rows = []
    for r in results:
        cs = r.get("checks", [])
        n = {s: sum(c["status"] == s for c in cs) for s in ("pass", "fail", "error", "skip")}
        rows.append([r["part"], r["status"], r.get("seconds"), r.get("budget_s"), n["pass"], n["fail"] + n["error"],
                     n["skip"], f"{r['part']}/result.md"])
    lines.append(md_table(["part", "status", "seconds", "budget s", "checks passed", "failed", "skipped", "details"],
                          rows))
    return "\n".join(lines)


def parse_budgets(items: list[str], dry: bool) -> dict:
    b = dict(BUDGETS[dry])
    for it in items:
        name, _, sec = it.partition("=")
        if name not in PARTS or not sec.replace(".", "", 1).isdigit():
            raise SystemExit(f"gpu_check: --budget {it!r} must be PART=SECONDS with PART one of {PARTS}")
        b[name] = float(sec)
    return b


def run_parts(parts: list[str], out: Path, work: Path, dry: bool, budgets: dict, total: float,
              start: float) -> list[dict]:
    """Each part in turn, within its budget and what is left of ``total`` (seconds since ``start``)."""
    results = []
    for name in parts:
        left = total - (time.monotonic() - start)
        budget = min(budgets[name], left)
        if left < 5:
            res = {"part": name, "status": "timeout", "dry": dry, "budget_s": 0, "seconds": 0, "checks": [],
                   "note": f"not started: the total budget of {total:.0f} s was spent"}
            save_part(res, out / name)
        else:
            print(f"gpu-check: part {name} (budget {budget:.0f} s)", flush=True)
            res = run_one_part(name, out, work, dry, budget)
        results.append(res)
        print(f"gpu-check: part {name}: {res['status']} in {res.get('seconds')} s", flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry", action="store_true", help="CPU, tiny sizes (the same code paths)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "out" / "gpu-check"))
    ap.add_argument("--work", default=None, help="folder for shards, runs and checkpoints (default: a temporary "
                    "one, removed at the end; a folder given is kept)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    ap.add_argument("--budget", action="append", default=[], metavar="PART=SECONDS", help="override a part's budget")
    ap.add_argument("--total", type=float, default=None, help="cap on all parts together, seconds")
    ap.add_argument("--run-part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--budget-s", type=float, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    out = Path(a.out).resolve()
    if a.run_part:
        return run_part(a.run_part, out, Path(a.work), a.dry, a.deadline, a.budget_s)
    parts = [x for x in a.parts.split(",") if x]
    if bad := [x for x in parts if x not in PARTS]:
        raise SystemExit(f"gpu_check: unknown part(s) {bad}; choose among {PARTS}")
    budgets = parse_budgets(a.budget, a.dry)
    start = time.monotonic()
    total = a.total or TOTAL[a.dry]
    out.mkdir(parents=True, exist_ok=True)
    env, missing = environment(a.dry)
    print(f"gpu-check: {env.get('device')}, torch {env.get('torch')}, out {out}", flush=True)
    problem = None
    if missing:
        problem = ("missing imports: " + "; ".join(missing) + ". This script installs nothing: carry the wheels "
                   "(sh scripts/gpu_wheels.sh here, then on the GPU machine `pip install --no-index --target /tmp/site "
                   ".whl/*.whl` and PYTHONPATH=/tmp/site; benchmarks/README.md, gpu-check)")
    elif not a.dry and not env.get("cuda_available"):
        problem = "no CUDA GPU here: run `make gpu-check DRY=1` (CPU, tiny sizes) instead"
    if problem:
        env["error"] = problem
        write_json({"environment": env, "status": "error", "parts": []}, out / "summary.json")
        write_text(f"# gpu-check\n\n**error**: {problem}\n", out / "summary.md")
        print(f"gpu-check: {problem}", file=sys.stderr)
        return 2
    work = Path(a.work).resolve() if a.work else Path(tempfile.mkdtemp(prefix="lcdata-gpu-check-"))
    try:
        results = run_parts(parts, out, work, a.dry, budgets, total, start)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    status = "pass" if all(r["status"] == "pass" for r in results) else "fail"
    summary = {"environment": env, "status": status, "seconds": round(time.monotonic() - start, 1),
               "parts": [{k: r.get(k) for k in ("part", "status", "seconds", "budget_s", "note")} for r in results]}
    write_json(summary, out / "summary.json")
    md = summary_markdown(env, results)
    write_text(md, out / "summary.md")
    print(md)
    for r in results:
        print(part_markdown(r))
    return 0 if status == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
