#!/usr/bin/env python
"""Evaluation throughput of `lcdata_train.infer`: tokens/s of the forward passes that `lcdata needle` and
`lcdata eval-loss` run, at long context lengths, beside Hugging Face transformers' `LlamaForCausalLM` on the
same weights (the peer; its own SDPA attention).

Measured per context length L (one sequence, random token ids; medians of ``--reps`` after one warm-up):

* **teacher-forced** (`infer.teacher_forced`): one forward of L tokens, logits only at the 12 answer
  positions; the needle's teacher-forced mode.
* **eval-loss** (`infer.token_losses`): one forward of L tokens and the per-token loss, logits 4,096 rows at a
  time; what `lcdata eval-loss` runs per window.
* **generate prefill + 50 steps** (`infer.greedy_generate`): the needle's generate mode (prefill through the
  attention seam, then 50 cached decoding steps); tokens/s counts L + 50.
* **transformers forward**: `LlamaForCausalLM(input_ids).logits` of the same L tokens (full L x V logits, as
  a user of transformers would get them), same weights and dtype.

On a CUDA GPU: the ``1b`` preset (Llama-3.2-1B shape, demo vocabulary) in bf16 at 32K, 64K and 128K. Without
one it says so and runs the ``debug`` preset in fp32 at 1K, 2K and 4K on CPU.

    python benchmarks/bench_eval.py
    python benchmarks/bench_eval.py --lengths 2048 --reps 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(fn, reps: int, cuda: bool) -> float:
    import torch

    fn()
    times = []
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def make_model(name: str, max_len: int, dev, folder: str | None = None):
    """The preset ``name`` (demo vocabulary, 16K) with seeded random weights, on ``dev``, in eval mode; or the
    model of a Hugging Face ``folder`` (the same weights, already drawn: `bench_train.init_model_folder`)."""
    from lcdata_train.checkpoint import load_pretrained
    from lcdata_train.config import preset
    from lcdata_train.model import Llama, init_state_dict

    if folder:
        return load_pretrained(folder, max_seq_len=max_len + 64).to(dev).eval()
    cfg = preset(name, 16384, max_len + 64)
    model = Llama(cfg)
    model.load_state_dict(init_state_dict(cfg, 0))
    return model.to(dev).eval()


def teacher_forced_tps(model, length: int, reps: int, cuda: bool, seed: int = 0) -> float:
    """Tokens/s of `infer.teacher_forced` on ``length`` random ids (12 answer tokens; median of ``reps``)."""
    import numpy as np

    from lcdata_train.infer import teacher_forced

    ids = np.random.default_rng(seed).integers(0, model.cfg.vocab_size, length)
    return length / timed(lambda: teacher_forced(model, ids[:-12], ids[-12:], "auto"), reps, cuda)


def main() -> int:
    import numpy as np
    import torch

    from lcdata_train.infer import greedy_generate, teacher_forced, token_losses

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", default=None, help="comma list (default: 32768,65536,131072 on GPU; 1024,2048,4096 CPU)")
    ap.add_argument("--model", default=None, help="preset (default: 1b on GPU, debug on CPU)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-transformers", action="store_true", help="skip the transformers peer")
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    lengths = [int(x) for x in (a.lengths or ("32768,65536,131072" if cuda else "1024,2048,4096")).split(",")]
    name = a.model or ("1b" if cuda else "debug")
    where = torch.cuda.get_device_name() if cuda else "CPU (no GPU in this environment: tiny size, fp32)"
    model = make_model(name, max(lengths), dev)
    cfg = model.cfg
    dtype = "auto"
    hf = None
    if not a.no_transformers:
        try:
            from transformers import LlamaConfig, LlamaForCausalLM

            from lcdata_train.checkpoint import hf_config_dict

            hcfg = LlamaConfig(**{k: v for k, v in hf_config_dict(cfg).items() if k not in ("architectures",)})
            hcfg._attn_implementation = "sdpa"
            hf = LlamaForCausalLM(hcfg)
            hf.load_state_dict(model.state_dict(), strict=False)
            hf = hf.to(dev, torch.bfloat16 if cuda else torch.float32).eval()
        except Exception as e:  # the peer is optional: say why it is missing
            print(f"transformers peer skipped: {type(e).__name__}: {e}", file=sys.stderr)
            hf = None
    print(f"lcdata bench_eval: {where}; model {name} ({cfg.n_params() / 1e6:.1f}M params), "
          f"{'bf16 autocast' if cuda else 'fp32'}, torch {torch.__version__}; median of {a.reps} after 1 warm-up")
    rows = []
    rng = np.random.default_rng(0)
    for L in lengths:
        ids = rng.integers(0, cfg.vocab_size, L)
        answer = ids[-12:]
        x = torch.as_tensor(ids, device=dev)[None]
        t_tf = timed(lambda ids=ids, answer=answer: teacher_forced(model, ids[:-12], answer, dtype), a.reps, cuda)
        t_loss = timed(lambda x=x: token_losses(model, x, x, dtype=dtype), a.reps, cuda)
        t_gen = timed(lambda ids=ids: greedy_generate(model, ids, 50, None, dtype), max(1, a.reps - 1), cuda)
        t_hf = None
        if hf is not None:
            def hf_fwd(x=x):
                with torch.no_grad():
                    return hf(x).logits
            try:
                t_hf = timed(hf_fwd, a.reps, cuda)
            except (RuntimeError, MemoryError) as e:  # full L x V logits may not fit
                print(f"transformers at {L}: {type(e).__name__}: {str(e)[:120]}", file=sys.stderr)
        rows.append((L, L / t_tf, L / t_loss, (L + 50) / t_gen, L / t_hf if t_hf else None))
    print(f"{'length':>8} {'teacher-forced tok/s':>21} {'eval-loss tok/s':>16} {'generate tok/s':>15} "
          f"{'transformers tok/s':>19} {'ours/peer':>10}")
    for L, tf, ls, gen, peer in rows:
        ratio = f"{tf / peer:.2f}x" if peer else "-"
        print(f"{L:>8,} {tf:>21,.0f} {ls:>16,.0f} {gen:>15,.0f} {peer if peer is None else f'{peer:,.0f}':>19} {ratio:>10}")
    if not cuda:
        print("No GPU: the goal figures (32K/64K/128K on one H100/H200) were not measured; these are CPU figures "
              "at a tiny size.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
