"""Configs of lcdata_train: the model's shape (`ModelConfig`, presets ``debug`` .. ``1b``) and a run
(`TrainConfig`). Torch-free, so the CLI can build and validate them before importing torch.

Both are frozen dataclasses validated on construction; a bad value raises `ConfigError` naming it and the
fix, the same from Python and from the shell. ``TrainConfig.to_dict()`` is what a checkpoint records, and
resuming compares it field by field (`config_changes`).

Sizes: ``batch_tokens`` and ``tokens`` take ints or strings with a decimal suffix (``"4M"`` = 4,000,000,
``"5B"``, as in `lcdata sample`). A plain int batch size must be a multiple of seq_len x world x
micro_batch; a suffixed one is *nominal* and is rounded to the nearest such multiple (the paper's "4M
tokens at 80K" is 49 sequences of 81,920 = 4,014,080 tokens), and the run log says so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from lcdata.errors import ConfigError
from lcdata.util.config import parse_count

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")
# keys each rope_type needs besides rope_type; original_max_position_embeddings defaults to max_seq_len
_ROPE_NEEDS = {"linear": ("factor",), "dynamic": ("factor",), "yarn": ("factor",),
               "llama3": ("factor", "low_freq_factor", "high_freq_factor")}
ROPE_ANCHORED = ("dynamic", "llama3", "yarn")  # types that read original_max_position_embeddings


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelConfig:
    """A LLaMA decoder. Field names follow Hugging Face's LlamaConfig where they differ only in spelling:
    dim = hidden_size, ffn_dim = intermediate_size, max_seq_len = max_position_embeddings.

    ``rope_scaling``: None or Hugging Face's dict for one of `ROPE_TYPES` (the legacy key ``type`` is read as
    ``rope_type``): ``{"rope_type": "linear", "factor": f}``; ``{"rope_type": "dynamic", "factor": f}`` (NTK,
    the base grows with the current length beyond ``original_max_position_embeddings``); the Llama-3 form with
    ``low_freq_factor`` and ``high_freq_factor``; ``{"rope_type": "yarn", "factor": f}`` with optional
    ``beta_fast``, ``beta_slow``, ``attention_factor``, ``mscale``, ``mscale_all_dim``, ``truncate``. For
    dynamic, llama3 and yarn, ``original_max_position_embeddings`` defaults to ``max_seq_len`` at construction
    (transformers' default) and is then kept, so raising ``max_seq_len`` later (`replace`) does not move it.
    ``hf_extra`` carries config.json keys we do not use (token ids,
    ...) so a load -> save round trip keeps them.
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    head_dim: int = 0  # 0 = dim // n_heads
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_seq_len: int = 4096
    tie_embeddings: bool = False
    init_std: float = 0.02
    hf_extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model {name}={getattr(self, name)} must be >= 1")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim == 0:
            if self.dim % self.n_heads:
                raise ConfigError(f"dim ({self.dim}) must be a multiple of n_heads ({self.n_heads}), or set head_dim")
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        if self.head_dim % 2:
            raise ConfigError(f"head_dim ({self.head_dim}) must be even for RoPE")
        if not self.rope_theta > 1:
            raise ConfigError(f"rope_theta={self.rope_theta} must be > 1 (LLaMA-2: 1e4, long context: 5e6-1e7)")
        if self.rope_scaling is not None:
            object.__setattr__(self, "rope_scaling", _rope_scaling(self.rope_scaling, self.max_seq_len))

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def n_params(self) -> int:
        """All parameters (a tied embedding counted once)."""
        d, hd = self.dim, self.head_dim
        attn = d * hd * (2 * self.n_heads + 2 * self.n_kv_heads)
        layer = attn + 3 * d * self.ffn_dim + 2 * d
        emb = self.vocab_size * d
        return self.n_layers * layer + d + emb * (1 if self.tie_embeddings else 2)

    def matmul_params(self) -> int:
        """Parameters used in matmuls per token (everything but the embedding lookup): the N of 6N."""
        return self.n_params() - (0 if self.tie_embeddings else self.vocab_size * self.dim)


def _rope_scaling(given: dict, max_seq_len: int) -> dict | None:
    """The validated, normalised rope_scaling dict (None for the default RoPE)."""
    if not isinstance(given, dict):
        raise ConfigError(f"rope_scaling={given!r} must be a dict like {{'rope_type': 'linear', 'factor': 4.0}}")
    rs = dict(given)
    kind = rs.pop("type", None) or rs.get("rope_type", "default")
    rs["rope_type"] = kind
    rs.pop("rope_theta", None)
    if kind not in ROPE_TYPES:
        raise ConfigError(f"rope scaling type {kind!r} is not supported; use one of {ROPE_TYPES}")
    if kind == "default":
        return None
    missing = [k for k in _ROPE_NEEDS[kind] if rs.get(k) is None]
    if missing:
        raise ConfigError(f"rope scaling {kind!r} needs {missing} (got {sorted(rs)})")
    if not isinstance(rs["factor"], (int, float)) or not rs["factor"] >= 1:
        raise ConfigError(f"rope scaling {kind!r} factor={rs['factor']!r} must be a number >= 1 (the length "
                          "extension ratio, e.g. 4.0 for 4K -> 16K)")
    if rs.get("partial_rotary_factor", 1.0) != 1.0:
        raise ConfigError(f"rope scaling partial_rotary_factor={rs['partial_rotary_factor']} is not supported "
                          "(LLaMA rotates the whole head); remove it")
    if kind in ROPE_ANCHORED:
        rs.setdefault("original_max_position_embeddings", max_seq_len)
        if not rs["original_max_position_embeddings"] >= 1:
            raise ConfigError(f"rope scaling original_max_position_embeddings="
                              f"{rs['original_max_position_embeddings']} must be >= 1")
    return rs


# dim, n_layers, n_heads, n_kv_heads, ffn_dim, tied, rope_theta
_PRESETS = {
    "debug": (64, 2, 4, 2, 192, True, 10000.0),      # every code path in tests, 1.1M params at vocab 16K
    "tiny": (256, 4, 8, 4, 768, False, 10000.0),     # ~3M non-embedding params
    "small": (768, 12, 12, 4, 2048, False, 10000.0),  # GPT-2-small-sized, ~76M non-embedding
    "1b": (2048, 16, 32, 8, 8192, True, 500000.0),   # the shape of Llama-3.2-1B (1.24B at vocab 128K)
}
PRESETS = tuple(_PRESETS)


def preset(name: str, vocab_size: int, max_seq_len: int = 4096) -> ModelConfig:
    """A preset shape with the shards' vocabulary (rounded up to a multiple of 64 for fast matmuls)."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; use one of {PRESETS} or a Hugging Face checkpoint folder")
    dim, n_layers, n_heads, n_kv, ffn, tied, theta = _PRESETS[name]
    return ModelConfig(vocab_size=-(-vocab_size // 64) * 64, dim=dim, n_layers=n_layers, n_heads=n_heads,
                       n_kv_heads=n_kv, ffn_dim=ffn, tie_embeddings=tied, rope_theta=theta, max_seq_len=max_seq_len)


def resolve_batch(batch_tokens: int | str, seq_len: int, world: int, micro_batch: int) -> tuple[int, int]:
    """(sequences per optimizer step over all ranks, gradient-accumulation steps per rank)."""
    n, nominal = parse_count(batch_tokens)
    unit = seq_len * world * micro_batch
    if nominal:
        n = max(1, round(n / unit)) * unit
    elif n % unit:
        lo, hi = (n // unit) * unit, (n // unit + 1) * unit
        raise ConfigError(
            f"batch_tokens ({n:,}) must be a multiple of seq_len x world_size x micro_batch "
            f"({seq_len:,} x {world} x {micro_batch} = {unit:,}); use {lo or hi:,}{f' or {hi:,}' if lo else ''}, "
            "or a nominal size like 4M, which is rounded to the nearest multiple")
    return n // seq_len, n // unit


SCHEDULES = ("constant", "cosine")
PARALLEL = ("fsdp", "ddp")
DTYPES = ("auto", "float32", "bfloat16")
# TrainConfig fields a resumed run may change; every other one must equal the checkpoint's.
RESUMABLE_CHANGES = ("out", "resume", "overwrite", "tokens", "stop_after", "save_every", "keep", "log_every", "num_workers",
                     "quiet", "peak_tflops", "save_dtype", "save", "checkpoint_format", "memory_check")
CHECKPOINT_FORMATS = ("auto", "full", "sharded")


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """One continual-pretraining run (flags of `lcdata train`; defaults are the paper's recipe).

    >>> TrainConfig(shards="out/shards", out="runs/a", model="debug", lr=1e-3, batch_tokens=4096,
    ...             tokens=409600)  # doctest: +SKIP
    """

    shards: str
    out: str
    model: str = "debug"  # preset name or Hugging Face LLaMA checkpoint folder
    seq_len: int | None = None  # default: the shards' sequence length
    rope_theta: float | None = None  # default: the model's (preset or config.json)
    rope_scaling: dict | None = None
    lr: float = 2e-5
    schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine: final lr = lr * this
    batch_tokens: int | str = "4M"
    tokens: int | str = "5B"
    micro_batch: int = 1  # sequences per forward pass per rank
    doc_mask: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0  # 0 = off
    act_ckpt: bool = True
    loss_chunk: int = 4096  # tokens per cross-entropy chunk
    seed: int = 0
    resume: bool = False
    overwrite: bool = False  # replace the run folder --out holds (only ever one `lcdata train` wrote)
    save_every: int = 100  # steps; 0 = only at the end
    keep: int = 2  # training checkpoints kept
    stop_after: int | None = None  # stop (with a checkpoint) after this many steps of this invocation
    log_every: int = 1
    device: str = "auto"
    dtype: str = "auto"  # compute dtype: bf16 autocast on CUDA, fp32 on CPU
    attn_backend: str = "auto"
    parallel: str = "fsdp"  # multi-process: FSDP2 (fully_shard) or DDP
    num_workers: int = 0
    peak_tflops: float | None = None  # for MFU; default: known GPUs, None on CPU
    save_dtype: str = "auto"  # final model: the source checkpoint's dtype, float32 for presets
    save: bool = True  # False: no checkpoint and no final model at all (benchmarks time the steps only)
    checkpoint_format: str = "auto"  # full (rank 0 gathers), sharded (DCP, each rank its shards); auto: sharded
    #                                  under FSDP with several ranks, else full
    memory_check: bool = True  # refuse a CUDA run whose memory estimate exceeds the GPU's memory
    quiet: bool = False

    def __post_init__(self):
        if self.seq_len is not None and self.seq_len < 2:
            raise ConfigError(f"seq_len={self.seq_len} must be >= 2")
        if not self.lr > 0:
            raise ConfigError(f"lr={self.lr} must be > 0")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r} must be one of {SCHEDULES}")
        if self.parallel not in PARALLEL:
            raise ConfigError(f"parallel={self.parallel!r} must be one of {PARALLEL}")
        if self.checkpoint_format not in CHECKPOINT_FORMATS:
            raise ConfigError(f"checkpoint_format={self.checkpoint_format!r} must be one of {CHECKPOINT_FORMATS}")
        if self.dtype not in DTYPES or self.save_dtype not in DTYPES:
            raise ConfigError(f"dtype={self.dtype!r} / save_dtype={self.save_dtype!r} must be one of {DTYPES}")
        for name in ("micro_batch", "loss_chunk", "log_every", "keep"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("warmup_steps", "save_every", "num_workers", "seed", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ConfigError(f"peak_tflops={self.peak_tflops} must be > 0 (the GPU's dense bf16 peak, e.g. 989 for "
                              "an H100)")
        check_out_folder(self.out, local=True)
        if self.stop_after is not None and self.stop_after < 1:
            raise ConfigError(f"stop_after={self.stop_after} must be >= 1")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        parse_count(self.batch_tokens)
        parse_count(self.tokens)
        if self.rope_scaling is not None:
            _rope_scaling(self.rope_scaling, 1)  # checked now; anchored when the model is known
        object.__setattr__(self, "betas", tuple(self.betas))

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["betas"] = list(self.betas)
        return d


def check_out_folder(out: str, local: bool = False) -> None:
    """Refuse an output folder that cannot be one, before any work: an existing file, or (``local``: a command
    that writes with plain file operations) a URL."""
    import os

    if local and "://" in out:
        raise ConfigError(f"--out {out!r} is a URL, but this command writes a local folder; pass a local path "
                          "(copy the folder to remote storage afterwards)")
    if "://" not in out and os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {out!r} is a file, not a folder; choose a folder path")
    if "://" in out:
        import fsspec

        fsspec.core.url_to_fs(out)  # an unknown protocol fails now, not after the work


def config_changes(saved: dict, now: TrainConfig) -> list[str]:
    """Fields that differ from a checkpoint's config and may not change on resume, as 'name: old -> new'."""
    cur = now.to_dict()
    free = set(RESUMABLE_CHANGES) - ({"tokens"} if now.schedule == "cosine" else set())  # cosine spans all steps
    out = []
    for k in sorted(set(saved) | set(cur)):
        if k in free:
            continue
        a, b = saved.get(k), cur.get(k)
        if isinstance(a, float) and isinstance(b, float) and math.isclose(a, b, rel_tol=1e-12):
            continue
        if a != b:
            out.append(f"{k}: {a!r} (checkpoint) -> {b!r} (now)")
    return out
