"""Causal attention, the one GPU seam: picks a kernel once per (device, masking) and falls back exactly.

``attention(q, k, v, cu_seqlens=None, max_seqlen=None)`` takes ``q (B, L, Hq, D)``, ``k, v (B, L, Hkv, D)``
(grouped-query: Hq a multiple of Hkv) and returns ``(B, L, Hq, D)``. With ``cu_seqlens`` (int32 boundaries
of the documents over the flattened ``B * L`` tokens, as in flash-attn's varlen API) a token attends only
to earlier tokens of its own document (intra-document masking); without it, to every earlier token of its
row (the paper's default).

Backends, in order of preference:
- ``flash_attn``: flash-attn 2's ``flash_attn_func`` / ``flash_attn_varlen_func`` (CUDA, if installed).
- ``sdpa``: PyTorch's fused ``scaled_dot_product_attention`` (flash / cuDNN / memory-efficient on CUDA,
  a fused C++ kernel on CPU), ``is_causal=True``; the unmasked path everywhere.
- ``torch_varlen``: ``torch.nn.attention.varlen.varlen_attn`` for document masks on CUDA without flash-attn
  (called with the arguments its signature has: `varlen_arguments`).
- ``sdpa_docs``: SDPA run per document (exact; the document-mask path on CPU). A Python loop over the
  documents: fine for tests and tiny runs, slow for thousands of short documents per sequence.

Only ``sdpa`` and ``sdpa_docs`` run on CPU; tests compare them with an explicit masked-softmax reference,
and compare the CUDA backends with them where a GPU exists. ``set_backend(name)`` (or the environment
variable ``LCDATA_ATTN``) forces a backend, for tests and benchmarks.
"""

from __future__ import annotations

import functools
import inspect
import os

import torch
import torch.nn.functional as F

from lcdata.errors import ConfigError

BACKENDS = ("flash_attn", "sdpa", "torch_varlen", "sdpa_docs")
_forced: str | None = None


def set_backend(name: str | None) -> None:
    """Force a backend for every later call (None: automatic). Raises on an unknown name."""
    global _forced
    if name not in (None, "auto", *BACKENDS):
        raise ConfigError(f"attention backend {name!r} is not one of {('auto', *BACKENDS)}")
    _forced = None if name == "auto" else name


@functools.cache
def has_flash_attn() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@functools.cache
def has_torch_varlen() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def pick_backend(device: torch.device, doc_mask: bool) -> str:
    """The backend `attention` uses for tensors on ``device`` with or without document masking."""
    name = _forced or os.environ.get("LCDATA_ATTN") or "auto"
    if name != "auto":
        if name not in BACKENDS:
            raise ConfigError(f"LCDATA_ATTN={name!r} is not one of {BACKENDS}")
        if name in ("flash_attn", "torch_varlen") and device.type != "cuda":
            raise ConfigError(f"attention backend {name!r} needs CUDA tensors, got device {device}")
        return name
    if device.type == "cuda" and has_flash_attn():
        return "flash_attn"
    if not doc_mask:
        return "sdpa"
    return "torch_varlen" if device.type == "cuda" and has_torch_varlen() else "sdpa_docs"


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
              max_seqlen: int | None = None, backend: str | None = None) -> torch.Tensor:
    B, L, H, D = q.shape
    name = backend or pick_backend(q.device, cu_seqlens is not None)
    if name in ("flash_attn", "torch_varlen") and q.dtype not in (torch.float16, torch.bfloat16):
        name = "sdpa"  # the fused varlen kernels take only half precision
    if name == "sdpa" and cu_seqlens is not None:
        name = "sdpa_docs"  # plain SDPA has no document mask
    if name == "flash_attn":
        from flash_attn import flash_attn_func, flash_attn_varlen_func

        if cu_seqlens is None:
            return flash_attn_func(q, k, v, causal=True)
        out = flash_attn_varlen_func(q.reshape(B * L, H, D), k.reshape(B * L, -1, D), v.reshape(B * L, -1, D),
                                     cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, causal=True)
        return out.view(B, L, H, D)
    if name == "torch_varlen":
        from torch.nn.attention.varlen import varlen_attn

        if cu_seqlens is None:
            cu_seqlens = torch.arange(0, (B + 1) * L, L, dtype=torch.int32, device=q.device)
            max_seqlen = L
        kw, repeat = varlen_arguments(varlen_parameters(), H, k.shape[2])
        if repeat > 1:
            k, v = k.repeat_interleave(repeat, 2), v.repeat_interleave(repeat, 2)
        out = varlen_attn(q.reshape(B * L, H, D), k.reshape(B * L, -1, D), v.reshape(B * L, -1, D),
                          cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, **kw)
        return out.view(B, L, H, D)
    if name == "sdpa":
        return _sdpa(q, k, v)
    if name == "sdpa_docs":
        return _sdpa_docs(q, k, v, cu_seqlens)
    raise ConfigError(f"attention backend {name!r} is not one of {BACKENDS}")


@functools.cache
def varlen_parameters() -> frozenset[str]:
    """The parameter names of the installed ``torch.nn.attention.varlen.varlen_attn``."""
    from torch.nn.attention.varlen import varlen_attn

    return frozenset(inspect.signature(varlen_attn).parameters)


def varlen_arguments(params: frozenset[str] | set[str], n_heads: int, n_kv_heads: int) -> tuple[dict, int]:
    """Keyword arguments for a causal ``varlen_attn`` whose parameters are ``params``, and how many times to
    repeat each KV head first. Its signature changed between torch releases: 2.9 takes ``is_causal``, later
    ones ``window_size=(-1, 0)`` for causal, and ``enable_gqa`` came later still (without it, the KV heads
    are repeated to the query heads, as grouped-query attention means)."""
    kw = {"window_size": (-1, 0)} if "window_size" in params else {"is_causal": True}
    repeat = 1
    if n_kv_heads != n_heads:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:
            repeat = n_heads // n_kv_heads
    return kw, repeat


def _sdpa(q, k, v):
    # (B, L, H, D) -> (B, H, L, D) for SDPA and back
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                         enable_gqa=k.shape[2] != q.shape[2])
    return out.transpose(1, 2)


def _sdpa_docs(q, k, v, cu_seqlens):
    B, L, H, D = q.shape
    if cu_seqlens is None:
        return _sdpa(q, k, v)
    qf, kf, vf = q.reshape(1, B * L, H, D), k.reshape(1, B * L, -1, D), v.reshape(1, B * L, -1, D)
    bounds = cu_seqlens.tolist()
    parts = [_sdpa(qf[:, a:b], kf[:, a:b], vf[:, a:b]) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return torch.cat(parts, dim=1).view(B, L, H, D)


def reference_attention(q, k, v, cu_seqlens=None):
    """Explicit masked softmax in float64: the ground truth for tests (O(L^2) memory)."""
    B, L, H, D = q.shape
    rep = H // k.shape[2]
    qd, kd, vd = (t.double().transpose(1, 2) for t in (q, k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2)))
    scores = qd @ kd.transpose(-1, -2) / D**0.5
    pos = torch.arange(L, device=q.device)
    mask = (pos[None, :] <= pos[:, None]).expand(B, L, L)
    if cu_seqlens is not None:
        doc = torch.searchsorted(cu_seqlens.long(), torch.arange(B * L, device=q.device), right=True).view(B, L)
        mask = mask & (doc[:, :, None] == doc[:, None, :])
    scores = scores.masked_fill(~mask[:, None], float("-inf"))
    return (scores.softmax(-1) @ vd).transpose(1, 2).to(q.dtype)
