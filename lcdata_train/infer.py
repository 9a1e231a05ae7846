"""Inference for evaluation: load a trained model, greedy decoding with a KV cache, teacher-forced answer
scoring, and per-token losses. Shared by `needle` and `eval_loss`.

* `load_model(path)`: ``path`` is a run folder of `lcdata train` (its ``final/`` model, else its newest
  training checkpoint), a training checkpoint folder, or any Hugging Face LLaMA folder (config.json +
  safetensors). Weights load through `checkpoint.load_hf_state` (shapes checked, nothing unpickled), or, from
  a sharded (DCP) training checkpoint, through `sharded.load_sharded_model_state` in this one process.
* `resolve_tokenizer(path, tokenizer)`: an explicit tokenizer.json, else the one saved beside the model,
  else the one the run's shards were built with (``run.json`` names the shards, whose manifest records it).
* `greedy_generate`: one prefill of the prompt (through the attention seam: fused kernels on GPU), then one
  token per step against a preallocated `model.KVCache`; only the last position's logits are computed, so
  a 128K prompt never materialises ``L x V`` logits. Cost: one forward of the prompt + ``max_new`` steps.
* `teacher_forced`: one forward of ``prompt + answer[:-1]``; logits only at the answer positions. The answer
  counts as retrieved when the argmax equals the answer token at every position; also returns the answer's
  summed log-probability and the share of positions right.
* `token_losses`: cross-entropy per token of a batch, ``chunk`` positions of logits at a time.

Device ``auto`` is CUDA when available (bf16 autocast there), else CPU in fp32.
"""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from lcdata.errors import ConfigError

from .checkpoint import (
    CheckpointError,
    check_training_checkpoint,
    is_sharded,
    latest_checkpoint,
    load_hf_state,
    read_hf_config,
    verify_model_folder,
)
from .device import pick_device
from .model import KVCache, Llama
from .sharded import load_sharded_model_state

IGNORE = -100


def model_folder(path: str) -> str:
    """The Hugging Face folder behind ``path`` (a run folder, a checkpoint folder or an HF folder)."""
    if os.path.isfile(os.path.join(path, "config.json")):
        return path
    final = os.path.join(path, "final")
    if os.path.isfile(os.path.join(final, "config.json")):
        return final
    ckpt = latest_checkpoint(path) if os.path.isdir(path) else None
    if ckpt:
        return ckpt
    raise CheckpointError(f"{path!r} is not a model: expected a Hugging Face LLaMA folder (config.json + "
                          "model.safetensors) or an `lcdata train` run folder (with final/ or checkpoints/)")


def _damaged_fix(folder: str) -> str:
    """What to do about a damaged model folder: another copy, or the run's checkpoint."""
    run = os.path.dirname(os.path.normpath(folder))
    if os.path.basename(os.path.normpath(folder)) == "final" and latest_checkpoint(run):
        return (f"the model is damaged: evaluate the run's last training checkpoint ({latest_checkpoint(run)}, the "
                "same weights in float32), or copy the folder again")
    return "the model folder is damaged: copy it again or re-create it"


def autocast_for(device: torch.device, dtype: str = "auto"):
    """bf16 autocast on CUDA (dtype auto/bfloat16), nothing on CPU or with float32."""
    if dtype == "float32" or (dtype == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def load_model(path: str, device: str = "auto", rope_theta: float | None = None,
               max_seq_len: int | None = None) -> tuple[Llama, str]:
    """(model in eval mode on ``device``, the folder it came from). ``rope_theta`` overrides the saved base;
    ``max_seq_len`` raises the model's position limit (RoPE extrapolates; nothing is learned for it)."""
    folder = model_folder(path)
    fix = _damaged_fix(folder)
    if is_sharded(folder):  # a sharded training checkpoint: read in this one process
        check_training_checkpoint(folder)
        cfg, _ = read_hf_config(folder, fix)
        sd = load_sharded_model_state(folder, cfg)
    else:
        verify_model_folder(folder, fix)
        cfg, _ = read_hf_config(folder, fix)
        sd = load_hf_state(folder, cfg, fix=fix)
    over = {}
    if rope_theta is not None:
        over["rope_theta"] = float(rope_theta)
    if max_seq_len is not None and max_seq_len > cfg.max_seq_len:
        over["max_seq_len"] = int(max_seq_len)
    cfg = cfg.replace(**over) if over else cfg
    model = Llama(cfg)
    model.load_state_dict(sd, strict=True)
    return model.to(pick_device(device)).eval(), folder


def resolve_tokenizer(model_path: str, tokenizer: str | None) -> str:
    """The tokenizer.json to use with the model at ``model_path``."""
    if tokenizer:
        return tokenizer
    folder = model_folder(model_path)
    for d in (folder, os.path.dirname(folder.rstrip("/")), model_path):
        cand = os.path.join(d, "tokenizer.json")
        if os.path.isfile(cand):
            return cand
    for run in (model_path, os.path.dirname(os.path.dirname(folder.rstrip("/")))):  # run folder, or above a checkpoint
        try:
            with open(os.path.join(run, "run.json")) as fh:
                shards = json.load(fh)["config"]["shards"]
            with open(os.path.join(shards, "manifest.json")) as fh:
                cand = json.load(fh)["tokenizer"]["path"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if cand and os.path.isfile(cand):
            return cand
    raise ConfigError(f"no tokenizer.json beside the model {model_path!r} nor in its run's shards manifest; pass "
                      "--tokenizer (the tokenizer the model's training shards were built with)")


@torch.no_grad()
def greedy_generate(model: Llama, prompt: np.ndarray | list[int], max_new: int, eos: int | None = None,
                    dtype: str = "auto") -> list[int]:
    """Greedy continuation of ``prompt`` (at most ``max_new`` tokens, stopping after ``eos``)."""
    dev = next(model.parameters()).device
    ids = torch.as_tensor(np.asarray(prompt, dtype=np.int64), device=dev)[None]
    ac = autocast_for(dev, dtype)
    cache_dtype = torch.bfloat16 if not isinstance(ac, contextlib.nullcontext) else torch.float32
    cache = KVCache(model.cfg, 1, ids.shape[1] + max_new, dev, cache_dtype)
    out: list[int] = []
    with ac:
        h = model.hidden(ids, cache=cache)[:, -1]
        for _ in range(max_new):
            nxt = int(model.lm_head(h).float().argmax(-1))
            out.append(nxt)
            if nxt == eos or len(out) == max_new:
                break
            h = model.hidden(torch.tensor([[nxt]], device=dev), cache=cache)[:, -1]
    return out


@torch.no_grad()
def teacher_forced(model: Llama, prompt: np.ndarray | list[int], answer: np.ndarray | list[int],
                   dtype: str = "auto") -> dict:
    """One forward pass of ``prompt + answer``: exact match, token accuracy and log-probability of ``answer``."""
    prompt, answer = np.asarray(prompt, dtype=np.int64), np.asarray(answer, dtype=np.int64)
    if len(answer) == 0 or len(prompt) == 0:
        raise ConfigError("teacher-forced scoring needs a non-empty prompt and answer")
    dev = next(model.parameters()).device
    full = torch.as_tensor(np.concatenate([prompt, answer[:-1]]), device=dev)[None]
    with autocast_for(dev, dtype):
        h = model.hidden(full)[0, len(prompt) - 1:]
        logits = model.lm_head(h).float()
    target = torch.as_tensor(answer, device=dev)
    logp = torch.log_softmax(logits, -1).gather(1, target[:, None])[:, 0]
    right = logits.argmax(-1) == target
    return {"exact": bool(right.all()), "token_acc": float(right.float().mean()), "logprob": float(logp.sum()),
            "predicted": logits.argmax(-1).tolist()}


def token_losses(model: Llama, input_ids, labels, position_ids=None, cu_seqlens=None, max_seqlen=None,
                 chunk: int = 4096, dtype: str = "auto") -> torch.Tensor:
    """Cross-entropy of every position (fp32, ``(B, L)``; 0 where ``labels`` is ``IGNORE``)."""
    dev = next(model.parameters()).device
    with torch.no_grad(), autocast_for(dev, dtype):
        h = model.hidden(input_ids, position_ids, cu_seqlens, max_seqlen)
        B, L, D = h.shape
        flat, y = h.reshape(B * L, D), labels.reshape(B * L)
        out = torch.zeros(B * L, dtype=torch.float32, device=dev)
        for a in range(0, B * L, chunk):
            logits = model.lm_head(flat[a: a + chunk]).float()
            out[a: a + chunk] = F.cross_entropy(logits, y[a: a + chunk], ignore_index=IGNORE, reduction="none")
    return out.view(B, L)
