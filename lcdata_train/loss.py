"""Cross-entropy over a large vocabulary without materialising the full logits.

For a 128K-token sequence and a 128K vocabulary the logits alone would be 64 GiB in fp32. `chunked_cross_entropy`
walks the tokens ``chunk`` at a time: per chunk it computes the logits (``chunk x V``, upcast to fp32),
their log-sum-exp, the loss, and right away the gradients ``dL/dh = (softmax - onehot) @ W`` and
``dL/dW += (softmax - onehot)^T @ h``, then drops the chunk's logits. Backward only scales the stored
gradients by the incoming one, so no logits are recomputed (unlike wrapping each chunk in activation
checkpointing, which costs one more ``N x D x V`` matmul).

Memory: one chunk of fp32 logits (``chunk * V * 4`` bytes; 256 MiB at 4096 x 16K) plus the gradients of
``h`` (the size of ``h``) and of ``W`` (fp32, ``V x D``) held from forward to backward.

Returns the *sum* of the token losses and the number of scored tokens (labels != ``ignore_index``), so
gradient accumulation and data parallelism can normalise by the whole step's token count exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, labels, chunk: int, compute_dtype: torch.dtype):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        with torch.autocast(h.device.type, enabled=False):
            wc = w.to(compute_dtype)
            acc = torch.promote_types(compute_dtype, torch.float32)  # logits in fp32 at least
            n = h.shape[0]
            total = torch.zeros((), dtype=acc, device=h.device)
            grad_h = torch.empty_like(h) if need_h else None
            grad_w = torch.zeros(w.shape, dtype=acc, device=w.device) if need_w else None
            for a in range(0, n, chunk):
                hc = h[a: a + chunk].to(compute_dtype)
                y = labels[a: a + chunk]
                valid = y != IGNORE
                yi = torch.where(valid, y, 0)
                logits = (hc @ wc.t()).to(acc)
                lse = torch.logsumexp(logits, dim=-1)
                target = logits.gather(1, yi[:, None])[:, 0]
                total += torch.where(valid, lse - target, 0.0).sum()
                if need_h or need_w:
                    p = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                    p[torch.arange(len(yi), device=p.device), yi] -= 1.0
                    p.mul_(valid[:, None])
                    p = p.to(compute_dtype)
                    if need_h:
                        grad_h[a: a + chunk] = (p @ wc).to(h.dtype)
                    if need_w:
                        grad_w += (p.t() @ hc).to(acc)
        ctx.save_for_backward(grad_h, grad_w)
        ctx.w_dtype = w.dtype
        return total

    @staticmethod
    def backward(ctx, g):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * g.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * g).to(ctx.w_dtype) if grad_w is not None else None
        return gh, gw, None, None, None


def compute_dtype_for(h: torch.Tensor) -> torch.dtype:
    """The matmul dtype autocast would pick for ``h`` (bf16 under CUDA autocast), else ``h``'s own."""
    dev = h.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return h.dtype


def chunked_cross_entropy(h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor,
                          chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, number of scored tokens) for hidden states ``h (..., D)``, output weight
    ``w (V, D)`` and ``labels (...)`` (``-100`` = not scored)."""
    h2 = h.reshape(-1, h.shape[-1])
    y = labels.reshape(-1).long()
    if y.shape[0] != h2.shape[0]:
        raise ValueError(f"labels hold {y.shape[0]} tokens but the hidden states {h2.shape[0]}")
    total = _ChunkedCrossEntropy.apply(h2, w, y, int(chunk), compute_dtype_for(h2))
    return total, (y != IGNORE).sum()


def plain_cross_entropy(h: torch.Tensor, w: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same through full logits (``F.cross_entropy``): the reference for tests."""
    logits = h.reshape(-1, h.shape[-1]) @ w.t()
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    y = labels.reshape(-1).long()
    return F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="sum"), (y != IGNORE).sum()
