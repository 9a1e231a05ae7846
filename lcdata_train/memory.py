"""Memory estimate of a training run per GPU, printed at the start of `lcdata train`; on CUDA a run that
cannot fit is refused with the numbers and the fix instead of crashing out of memory minutes later.
Torch-free and pure: `estimate_memory` is a function of the model config and the run's shape.

Per rank, with N parameters (`ModelConfig.n_params`, a tied embedding once), S = FSDP shards (the world size
under FSDP2, else 1), T = micro_batch x seq_len tokens, c = bytes of the compute dtype (2 for bf16, 4 fp32):

- weights 4N/S (fp32 master copy), gradients 4N/S (fp32; DDP adds 4N of bucket copies), AdamW 8N/S (two fp32
  moments);
- compute copies: under FSDP2 with bf16 the all-gathered weights of two blocks (the current one and the
  prefetched next) plus the root (embedding, final norm, output layer), c bytes each; in one process or DDP
  with bf16 autocast, autocast's cached c-byte copy of every matmul weight; none in fp32;
- activations, per token per layer, the tensors autograd saves in `model.Block` with weights in the compute
  dtype (FSDP2's bf16 ``param_dtype``, or fp32) and a fused attention kernel (flash / cuDNN / efficient SDPA,
  and PyTorch's CPU flash kernel: output and a log-sum-exp per head, never the L x L scores):
  c x (4 dim [per RMSNorm: the normalised input cast to c, and its product with the weight]
  + 2 Hq hd [rotated q, attention output] + 2 Hkv hd [rotated k, v] + 4 ffn [gate, up, silu(gate), their
  product] + 2 hd [cos and sin cast to c; none in fp32]) + 4 x (2 dim [the fp32 norm inputs] + Hq
  [log-sum-exp] + 2 [the norms' rsqrt]). In tests/train/test_memory.py this equals, byte for byte, what
  ``saved_tensors_hooks`` sees a block save on CPU, in bf16 and in fp32. With activation checkpointing
  (``act_ckpt``, default on) only each block's input stays (c x dim per token per layer) and one block is
  recomputed at a time in backward; without it every layer keeps everything. Plus fp32 cos/sin (2 x 4 hd per
  token, shared by the layers), the final norm ((4 + 2c) dim + 4), and a backward workspace of
  3 x ffn x c + 2 x dim x 4 per token (the gradients of one block's largest activations: a guess, not
  measured). One process with fp32 weights under bf16 autocast saves somewhat different tensors (an fp32
  residual stream, casts at each matmul); the formula is not exact there;
- the loss (`loss.py`): one chunk of fp32 logits and its softmax (2 x 4 x chunk x vocab), the gradient of the
  hidden states (c x dim x T) and of the output layer (fp32, vocab x dim), held from forward to backward.

Not counted: the CUDA context, NCCL buffers and allocator fragmentation; `fits` leaves 5% + 1 GiB of the
device for them. This is an estimate of the largest terms (checked by hand arithmetic and against the
parameter counts of built models in tests/train/test_memory.py), not a measurement: the CUDA figures
(``benchmarks/``) are what calibrate it. Cost: arithmetic only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lcdata.errors import ConfigError

from .config import ModelConfig

GIB = 1 << 30
HEADROOM = (0.95, 1 * GIB)  # usable = 0.95 x device memory - 1 GiB


@dataclass(frozen=True, kw_only=True, slots=True)
class MemoryEstimate:
    """Bytes per rank of each term (see the module docstring); ``total`` is their sum."""

    n_params: int
    shards: int
    seq_len: int
    micro_batch: int
    act_ckpt: bool
    compute_bytes: int
    weights: int
    gradients: int
    optimizer: int
    compute_copies: int
    activations: int
    loss: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.compute_copies + self.activations + self.loss

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "total": self.total}

    def line(self) -> str:
        """One line of GiB per term."""
        g = [(n, getattr(self, n) / GIB) for n in ("weights", "gradients", "optimizer", "compute_copies",
                                                   "activations", "loss")]
        return " + ".join(f"{n.replace('_', ' ')} {v:.2f}" for n, v in g) + f" = {self.total / GIB:.2f} GiB"


def estimate_memory(cfg: ModelConfig, seq_len: int, micro_batch: int = 1, world: int = 1, parallel: str = "fsdp",
                    act_ckpt: bool = True, compute_bytes: int = 2, loss_chunk: int = 4096) -> MemoryEstimate:
    """Bytes per rank of a training run of ``cfg`` (see the module docstring for each term).

    >>> from lcdata_train.config import ModelConfig
    >>> m = ModelConfig(vocab_size=32000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=11008)
    >>> e = estimate_memory(m, 81920, world=8)
    >>> round(e.total / 2**30, 1), e.n_params
    (60.3, 6738415616)
    """
    if compute_bytes not in (2, 4):
        raise ConfigError(f"compute_bytes={compute_bytes} must be 2 (bf16) or 4 (fp32)")
    N, d, L, c = cfg.n_params(), cfg.dim, cfg.n_layers, compute_bytes
    hq, hkv, hd, f, V = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim, cfg.vocab_size
    fsdp = parallel == "fsdp" and world > 1
    S = world if fsdp else 1
    T = micro_batch * seq_len
    grads = -(-4 * N // S) + (4 * N if parallel == "ddp" and world > 1 else 0)
    copies = 0
    if c < 4:
        if fsdp:
            block = d * hd * (2 * hq + 2 * hkv) + 3 * d * f + 2 * d
            root = V * d * (1 if cfg.tie_embeddings else 2) + d
            copies = c * (2 * block + root)
        else:
            copies = c * cfg.matmul_params()
    per_layer = activations_per_layer(cfg, c)
    if act_ckpt:
        acts = L * T * d * c + T * per_layer
    else:
        acts = L * T * per_layer
    acts += T * (2 * 4 * hd + (4 + 2 * c) * d + 4 + 3 * f * c + 2 * d * 4)
    loss = 2 * 4 * min(loss_chunk, T) * V + c * d * T + 4 * V * d
    return MemoryEstimate(n_params=N, shards=S, seq_len=seq_len, micro_batch=micro_batch, act_ckpt=act_ckpt,
                          compute_bytes=c, weights=-(-4 * N // S), gradients=grads, optimizer=-(-8 * N // S),
                          compute_copies=copies, activations=acts, loss=loss)


def activations_per_layer(cfg: ModelConfig, compute_bytes: int = 2) -> int:
    """Bytes one `model.Block` saves for backward per token (the module docstring's formula)."""
    c, d, hd = compute_bytes, cfg.dim, cfg.head_dim
    rope_casts = 2 * hd if c < 4 else 0
    return (c * (4 * d + 2 * cfg.n_heads * hd + 2 * cfg.n_kv_heads * hd + 4 * cfg.ffn_dim + rope_casts)
            + 4 * (2 * d + cfg.n_heads + 2))


def usable_bytes(device_bytes: int) -> int:
    """What a run may plan to use of a device of ``device_bytes``: 95% less 1 GiB (context, NCCL, fragments)."""
    return int(device_bytes * HEADROOM[0]) - HEADROOM[1]


def check_fits(cfg: ModelConfig, est: MemoryEstimate, device_bytes: int, device_name: str, world: int,
               parallel: str, loss_chunk: int = 4096) -> None:
    """Raise `ConfigError` when ``est`` exceeds the usable memory of the device, naming the numbers and what
    would fit: more GPUs (FSDP), activation checkpointing, a shorter sequence."""
    cap = usable_bytes(device_bytes)
    if est.total <= cap:
        return
    kw = dict(micro_batch=est.micro_batch, parallel=parallel, compute_bytes=est.compute_bytes, loss_chunk=loss_chunk)
    fixes = []
    if not est.act_ckpt:
        on = estimate_memory(cfg, est.seq_len, world=world, act_ckpt=True, **kw)
        fixes.append(f"activation checkpointing (drop --no-act-ckpt: activations {est.activations / GIB:.1f} -> "
                     f"{on.activations / GIB:.1f} GiB, total {on.total / GIB:.1f} GiB)")
    if parallel == "fsdp":
        more = next((w for w in (2, 4, 8, 16, 32, 64, 128, 256, 512) if w > world and estimate_memory(
            cfg, est.seq_len, world=w, act_ckpt=est.act_ckpt, **kw).total <= cap), None)
        if more:
            fixes.append(f"more GPUs (FSDP shards weights, gradients and AdamW state: {more} GPUs bring the total to "
                         f"{estimate_memory(cfg, est.seq_len, world=more, act_ckpt=est.act_ckpt, **kw).total / GIB:.1f}"
                         " GiB per GPU)")
    else:
        fixes.append("--parallel fsdp (shards weights, gradients and AdamW state over the GPUs)")
    lo, hi = 0, est.seq_len  # the longest multiple of 1024 that fits
    while hi - lo > 1024:
        mid = (lo + hi) // 2 // 1024 * 1024 or 1024
        if mid <= lo:
            break
        if estimate_memory(cfg, mid, world=world, act_ckpt=est.act_ckpt, **kw).total <= cap:
            lo = mid
        else:
            hi = mid
    if lo:
        fixes.append(f"a shorter --seq-len (<= {lo:,} fits)")
    if est.micro_batch > 1:
        fixes.append("--micro-batch 1 (with more accumulation steps)")
    raise ConfigError(
        f"this run needs about {est.total / GIB:.1f} GiB per GPU ({est.line()}; {est.n_params / 1e9:.2f}B params, "
        f"seq_len {est.seq_len:,} x micro-batch {est.micro_batch}, {est.shards} FSDP shard(s), activation "
        f"checkpointing {'on' if est.act_ckpt else 'off'}) but the {device_name} has {device_bytes / GIB:.1f} GiB "
        f"({cap / GIB:.1f} usable); use " + (", or ".join(fixes) if fixes else "a smaller model")
        + " (--no-memory-check trains anyway: the estimate may be pessimistic)")
