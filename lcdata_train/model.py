"""A compact LLaMA decoder: RMSNorm, RoPE (settable base; Hugging Face's linear, dynamic NTK, Llama-3 and YaRN
scaling), SwiGLU, grouped-query attention, tied or untied embeddings. The same math as Hugging Face's
``LlamaForCausalLM``.

Parameter names are Hugging Face's (``model.layers.0.self_attn.q_proj.weight``, ...) so a checkpoint's
``model.safetensors`` loads as our ``state_dict`` with no renaming (`checkpoint.py`); tests compare our
logits with transformers' on the same random weights.

``forward(input_ids, position_ids, cu_seqlens=None, max_seqlen=None, labels=None)``:
- without ``labels``: the logits ``(B, L, V)`` (inference and tests only: V floats per token);
- with ``labels``: ``(sum of token losses, scored tokens)`` through `loss.chunked_cross_entropy`, never
  holding more than ``loss_chunk`` rows of logits.
``hidden(...)`` returns the final normed hidden states (evaluation computes logits only where it needs them);
with a `KVCache` it continues cached tokens, so greedy decoding costs one token's forward per step.
``cu_seqlens`` switches on intra-document attention (`attention.py`); with it ``position_ids`` should restart
at 0 in each document (the data loader does that), and then a packed sequence computes exactly what each
document alone would. ``act_ckpt`` recomputes each block in backward (activation memory: one block's
activations plus the residual stream per layer).

RoPE scaling (``cfg.rope_scaling``, Hugging Face's dict): linear divides every frequency by ``factor``;
llama3 divides the low frequencies and blends the middle ones; yarn interpolates the low frequencies, keeps the
high ones, ramps in between and multiplies cos/sin by an attention factor (0.1 ln(factor) + 1 by default);
dynamic NTK keeps the trained frequencies up to ``original_max_position_embeddings`` n0 and beyond it raises the
base to ``theta * (factor * n / n0 - factor + 1) ** (d / (d - 2))`` for the current length n = largest position
+ 1 of the call, so the same token gets other frequencies in a longer input. Unlike transformers, whose dynamic
RoPE module remembers the longest length it has seen until a call shorter than n0, ours depends on the call
alone; the two agree on any single forward of a freshly loaded model and on a decode whose length only grows.

Parameters are kept in fp32 (the optimizer's master copy); on CUDA the trainer runs the forward under bf16
autocast. RoPE angles are always computed in fp32 (position * inverse frequency) and cast afterwards.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .attention import attention
from .config import ModelConfig
from .loss import chunked_cross_entropy


def rope_inv_freq(cfg: ModelConfig, seq_len: int | None = None) -> torch.Tensor:
    """Inverse frequencies (fp32, on CPU) of ``cfg``'s RoPE, op for op as transformers computes them.
    ``seq_len`` (the current length: largest position + 1) matters only for ``dynamic`` scaling."""
    d = cfg.head_dim
    exponent = torch.arange(0, d, 2, dtype=torch.int64).float() / d
    rs = cfg.rope_scaling
    kind = "default" if rs is None else rs["rope_type"]
    if kind == "dynamic":
        return 1.0 / (_dynamic_base(cfg, seq_len) ** exponent)
    inv = 1.0 / (cfg.rope_theta ** exponent)
    if kind == "default":
        return inv
    if kind == "linear":
        return inv / rs["factor"]
    if kind == "yarn":
        return _yarn_inv_freq(cfg, exponent)
    # llama3: long wavelengths divided by factor, short ones kept, a smooth blend in between
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old / lo, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / hi) * ~(wavelen > old / lo)
    return torch.where(medium, blended, scaled)


def _dynamic_base(cfg: ModelConfig, seq_len: int | None):
    """Dynamic NTK: base * (factor * n / n0 - (factor - 1)) ** (d / (d - 2)) with n = max(seq_len, n0). Up to
    n0 transformers evaluates it in Python floats (its initial frequencies); beyond, on the length as an int64
    tensor, so in fp32: both are reproduced here."""
    rs, d = cfg.rope_scaling, cfg.head_dim
    factor, n0 = rs["factor"], rs["original_max_position_embeddings"]
    if seq_len is None or seq_len <= n0:
        return cfg.rope_theta * ((factor * n0 / n0) - (factor - 1)) ** (d / (d - 2))
    n = torch.tensor(seq_len, dtype=torch.int64)
    return cfg.rope_theta * ((factor * n / n0) - (factor - 1)) ** (d / (d - 2))


def _yarn_inv_freq(cfg: ModelConfig, exponent: torch.Tensor) -> torch.Tensor:
    """YaRN: dimensions that rotate more than beta_fast times within the original length keep their frequency,
    those under beta_slow rotations are divided by factor (interpolated), a linear ramp in between."""
    rs, d, base = cfg.rope_scaling, cfg.head_dim, cfg.rope_theta
    factor, n0 = rs["factor"], rs["original_max_position_embeddings"]
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1

    def dim_of(rotations):  # the dimension that makes `rotations` turns over n0 positions
        return (d * math.log(n0 / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = dim_of(beta_fast), dim_of(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, d - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(d // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** exponent
    keep = 1 - ramp
    return (1.0 / (factor * pos_freqs)) * (1 - keep) + (1.0 / pos_freqs) * keep


def rope_attention_factor(cfg: ModelConfig) -> float:
    """The factor cos and sin are multiplied by: 1, except for YaRN (``attention_factor``, or
    0.1 ln(factor) + 1, or with ``mscale`` and ``mscale_all_dim`` their ratio of that form)."""
    rs = cfg.rope_scaling
    if rs is None or rs["rope_type"] != "yarn":
        return 1.0
    if rs.get("attention_factor") is not None:
        return float(rs["attention_factor"])

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    m, m_all = rs.get("mscale"), rs.get("mscale_all_dim")
    if m and m_all:
        return float(mscale(rs["factor"], m) / mscale(rs["factor"], m_all))
    return mscale(rs["factor"])


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, cu_seqlens, max_seqlen, cache=None, layer=0):
        B, L, _ = x.shape
        q = self.q_proj(x).view(B, L, self.n_heads, self.hd)
        k = self.k_proj(x).view(B, L, self.n_kv, self.hd)
        v = self.v_proj(x).view(B, L, self.n_kv, self.hd)
        cos, sin = cos.to(q.dtype)[:, :, None], sin.to(q.dtype)[:, :, None]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            out = cache.attend(layer, q, k, v, cu_seqlens, max_seqlen)
        else:
            out = attention(q, k, v, cu_seqlens, max_seqlen)
        return self.o_proj(out.reshape(B, L, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cu_seqlens=None, max_seqlen=None, cache=None, layer=0):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cu_seqlens, max_seqlen, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


class Llama(nn.Module):
    """``Llama(cfg)``; ``act_ckpt`` and ``loss_chunk`` are attributes the trainer sets."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.act_ckpt = False
        self.loss_chunk = 4096
        self._inv_freq: dict[torch.device, torch.Tensor] = {}
        self._attn_factor = rope_attention_factor(cfg)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """N(0, init_std) for linear and embedding weights, ones for norms; from a CPU generator, so the
        same seed gives the same weights on any device."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.empty(p.shape).normal_(0.0, self.cfg.init_std, generator=g))

    def rope(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) in fp32 for ``position_ids``. Dynamic NTK scaling depends on the current length, the
        largest position + 1 over the whole batch (as in transformers): beyond the original length the
        frequencies are recomputed per call (one host sync); cached keys keep the frequencies they were made with."""
        dev = position_ids.device
        if dev not in self._inv_freq:
            self._inv_freq[dev] = rope_inv_freq(self.cfg).to(dev)
        inv = self._inv_freq[dev]
        rs = self.cfg.rope_scaling
        if rs is not None and rs["rope_type"] == "dynamic":
            n = int(position_ids.max()) + 1
            if n > rs["original_max_position_embeddings"]:
                inv = rope_inv_freq(self.cfg, n).to(dev)
        with torch.autocast(dev.type, enabled=False):
            freqs = position_ids.float()[..., None] * inv
            emb = torch.cat((freqs, freqs), dim=-1)
            cos, sin = emb.cos(), emb.sin()
            if self._attn_factor != 1.0:
                cos, sin = cos * self._attn_factor, sin * self._attn_factor
            return cos, sin

    def hidden(self, input_ids, position_ids=None, cu_seqlens=None, max_seqlen=None, cache=None):
        """The final normed hidden states ``(B, L, dim)``. With a `KVCache` the tokens continue the cached
        ones (positions default to ``cache.length + 0..L-1``) and their keys/values are appended to it."""
        B, L = input_ids.shape
        start = cache.length if cache is not None else 0
        if start + L > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {start + L} > the model's max_seq_len {self.cfg.max_seq_len}")
        if position_ids is None:
            position_ids = torch.arange(start, start + L, device=input_ids.device).expand(B, L)
        if cu_seqlens is not None and max_seqlen is None:
            max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
        cos, sin = self.rope(position_ids)
        x = self.model.embed_tokens(input_ids)
        for i, layer in enumerate(self.model.layers):
            if self.act_ckpt and torch.is_grad_enabled() and cache is None:
                x = checkpoint(layer, x, cos, sin, cu_seqlens, max_seqlen, use_reentrant=False)
            else:
                x = layer(x, cos, sin, cu_seqlens, max_seqlen, cache, i)
        if cache is not None:
            cache.length += L
        return self.model.norm(x)

    def forward(self, input_ids, position_ids=None, cu_seqlens=None, max_seqlen=None, labels=None):
        h = self.hidden(input_ids, position_ids, cu_seqlens, max_seqlen)
        if labels is None:
            return self.lm_head(h)
        return chunked_cross_entropy(h, self.lm_head.weight, labels, self.loss_chunk)


class KVCache:
    """Keys and values of the tokens seen so far, per layer, preallocated for ``max_len`` positions: greedy
    decoding then costs one token's forward per step instead of the whole prefix's.

    ``attend`` stores the new keys/values at ``[length, length + L)`` and attends the new queries to all of
    ``[0, length + L)`` causally (query i sees keys up to ``length + i``). An empty cache (the prefill)
    goes through the `attention` seam, so long prompts use the fused kernels; later steps use SDPA with an
    explicit offset mask (none for a single new token). Memory: ``2 * layers * B * max_len * kv_heads *
    head_dim`` elements.
    """

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, device, dtype):
        shape = (cfg.n_layers, batch, max_len, cfg.n_kv_heads, cfg.head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len, self.length = max_len, 0

    def attend(self, layer: int, q, k, v, cu_seqlens=None, max_seqlen=None):
        a, L = self.length, q.shape[1]
        if a + L > self.max_len:
            raise ValueError(f"KV cache of {self.max_len} positions is full ({a} + {L} tokens)")
        self.k[layer, :, a: a + L] = k
        self.v[layer, :, a: a + L] = v
        if a == 0:
            return attention(q, k, v, cu_seqlens, max_seqlen)
        keys, vals = self.k[layer, :, : a + L], self.v[layer, :, : a + L]
        mask = None
        if L > 1:
            mask = torch.arange(a + L, device=q.device)[None, :] <= torch.arange(a, a + L, device=q.device)[:, None]
        out = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2).to(q.dtype),
                                             vals.transpose(1, 2).to(q.dtype), attn_mask=mask,
                                             enable_gqa=keys.shape[2] != q.shape[2])
        return out.transpose(1, 2)


def init_state_dict(cfg: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Freshly initialised weights (CPU, fp32) of a model of shape ``cfg``."""
    with torch.device("meta"):
        m = Llama(cfg)
    m.to_empty(device="cpu")
    if cfg.tie_embeddings:
        m.lm_head.weight = m.model.embed_tokens.weight
    m.init_weights(seed)
    return m.state_dict()
