"""Processes, devices and data parallelism: `torchrun` environment -> process group -> wrapped model.

One process per GPU (``torchrun --nproc-per-node N -m lcdata_train train ...``); without torchrun, one
process. The backend is NCCL on CUDA and gloo on CPU.

Parallelism: ``fsdp`` (default) shards parameters, gradients and optimizer state with FSDP2
(``torch.distributed.fsdp.fully_shard``, one unit per transformer block plus the root; ZeRO-3), with bf16
parameters for compute and fp32 gradient reduction on CUDA. ``ddp`` replicates the model
(``DistributedDataParallel``). In torch 2.13 FSDP2 also runs on CPU with gloo, so the 2-process test runs
both strategies on CPU (fp32).

Weights enter as a *full* state dict (CPU): the model is built on the meta device, sharded, materialised
with ``to_empty`` and filled by ``set_model_state_dict(..., broadcast_from_rank0=True)``, so only rank 0
reads a checkpoint and no rank ever holds an unsharded fp32 model on the GPU. Saving gathers full state
dicts onto rank 0's CPU (``get_model_state_dict`` / ``get_optimizer_state_dict``) for the *full* checkpoint
format; the *sharded* one (`sharded.py`, default under FSDP2 with several ranks) has each rank write its own
shards with ``torch.distributed.checkpoint``, so no rank ever holds the whole model or optimizer state.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from .device import pick_device

_owned = False


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> DistInfo:
    """Join the process group if launched by torchrun (WORLD_SIZE > 1) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank=local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        global _owned
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=30))
        _owned = True
    rank = dist.get_rank() if world > 1 else 0
    return DistInfo(rank=rank, world=world, local_rank=local, device=dev)


def teardown() -> None:
    """Leave the process group if `setup` joined it (a caller's own group is left alone)."""
    global _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def _tie(model) -> None:
    if model.cfg.tie_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight


def prepare_model(model, full_sd: dict | None, info: DistInfo, parallel: str = "fsdp", param_dtype=None):
    """Materialise a meta-device ``model`` on ``info.device`` with ``full_sd`` (needed on rank 0 only when
    world > 1; None: left uninitialised, for a sharded checkpoint to fill) and wrap it for data parallelism.
    Returns the model to train."""
    if info.world == 1:
        model.to_empty(device=info.device)
        _tie(model)
        if full_sd is not None:
            model.load_state_dict(full_sd, strict=True)
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        model.to_empty(device=info.device)
        _tie(model)
        if info.main and full_sd is not None:
            model.load_state_dict(full_sd, strict=True)
        ddp = DDP(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)  # broadcasts rank 0
        ddp.cfg = model.cfg
        return ddp
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    model.to_empty(device=info.device)
    _tie(model)
    if full_sd is not None:
        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(model, full_sd if info.main else {}, options=opts)
    return model


def model_state(model, info: DistInfo) -> dict:
    """The full state dict on rank 0's CPU ({} on other ranks); collective: call on every rank."""
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if info.main else {}


def optim_state(model, opt, info: DistInfo) -> dict:
    osd = get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return osd if info.main else {}


def load_optim_state(model, opt, osd: dict, info: DistInfo) -> None:
    opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=info.world > 1)
    set_optimizer_state_dict(model, opt, osd if info.main or info.world == 1 else {}, options=opts)


@contextlib.contextmanager
def grad_sync(model, enabled: bool):
    """Skip the gradient all-reduce / reduce-scatter on all but the last micro-batch of a step."""
    if hasattr(model, "no_sync") and not enabled:
        with model.no_sync():
            yield
        return
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(enabled)
    yield


def clip_grad_norm(model, max_norm: float) -> float:
    """Clip to ``max_norm`` (0: only measure); returns the global gradient norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # DTensor under FSDP2
        norm = norm.full_tensor()
    return float(norm)
