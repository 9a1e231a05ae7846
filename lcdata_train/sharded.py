"""Sharded training checkpoints (``torch.distributed.checkpoint``, DCP) and the Hugging Face export written
shard by shard: what training at 7B scale needs, where gathering the full model and AdamW state on one rank
(3 x 4 bytes x 6.7B = 81 GB) does not fit.

A sharded checkpoint ``RUN/checkpoints/step-00000100/`` holds DCP's files (``.metadata`` and one
``__<rank>_0.distcp`` per rank: each rank writes the shards of the parameters and AdamW moments it owns
under FSDP2, read back from ``get_state_dict(model, optimizer)``), plus ``config.json`` (the model, Hugging
Face form), ``state.json`` (step, tokens, data-loader position, the run's config, the shards' identity; as
in the full format) and ``checksums.json`` (size and SHA-256 of every file; each rank hashes the files it
wrote). It is written into ``step-N.tmp`` and renamed by rank 0 after every rank has finished: a folder
named ``step-*`` is complete. There is no RNG state to store: training draws no random numbers after the
initialisation (the data order is a function of seed and step), which is why resume is exact.

Loading (`load_sharded_checkpoint`) reshards: DCP reads each rank's slices of the global tensors, so a
checkpoint saved by N ranks resumes on M ranks, or in one process into a plain (non-FSDP) model;
`load_sharded_model_state` gives one process the full model without any process group (evaluation,
conversion). Keys in the DCP files are ``model.<HF name>`` and ``optim.state.<HF name>.<exp_avg|...>``.

Export (`export_hf`): tensors are grouped in file order into shards of at most ``max_shard_bytes``
(`plan_hf_shards`, a pure function of the config and dtype, so the file names ``model-00001-of-0000N`` are
known before writing), and each shard is gathered (collective ``full_tensor`` per parameter under FSDP, or
read from a DCP checkpoint), cast, written atomically by rank 0 and dropped before the next: peak host
memory is one shard, not the model. One shard is written as ``model.safetensors``; several come with
``model.safetensors.index.json`` (``metadata.total_size``, ``weight_map``), as ``save_pretrained`` writes.
Cost: one pass over the weights; at save, the SHA-256 of each file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from lcdata.errors import ConfigError
from lcdata.util.io import atomic_path

from . import distributed as D
from .checkpoint import (
    CHECKSUMS,
    DTYPES,
    CheckpointError,
    checkpoint_paths,
    commit_checkpoint,
    expected_shapes,
    file_sha256,
    hf_config_dict,
    is_sharded,
    read_hf_config,
    resume_fix,
    write_checksums,
    write_json,
)
from .config import ModelConfig

MAX_SHARD_BYTES = 5 * 10**9  # as save_pretrained's default "5GB"
_WEIGHT_FILE = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$")


# ------------------------------------------------------------------------------------- training checkpoints


def save_sharded_checkpoint(run_dir: str, step: int, model, opt, mcfg: ModelConfig, state: dict,
                            info: D.DistInfo, keep: int = 2) -> str:
    """Write checkpoint ``step`` of ``model`` / ``opt`` (FSDP2, DDP or plain) as a DCP folder; collective: every
    rank calls it. ``state``: what goes into state.json (rank 0's is written). Returns the folder."""
    final, tmp = checkpoint_paths(run_dir, step)
    if info.main:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    D.barrier(info)
    msd, osd = get_state_dict(model, opt)
    with _quiet():
        dcp.save({"model": msd, "optim": osd}, checkpoint_id=tmp, no_dist=info.world == 1)
    del msd, osd
    mine = {n: _sum(tmp, n) for n in sorted(os.listdir(tmp)) if n.startswith(f"__{info.rank}_")}
    sums = [mine]
    if info.world > 1:
        sums = [None] * info.world
        dist.all_gather_object(sums, mine)
    if info.main:
        write_json(hf_config_dict(mcfg, "float32"), os.path.join(tmp, "config.json"))
        write_json(dict(state, step=step, format="dcp", world=info.world), os.path.join(tmp, "state.json"))
        files = {k: v for s in sums for k, v in s.items()}
        names = [n for n in os.listdir(tmp) if n != CHECKSUMS]
        write_checksums(tmp, [n for n in names if n not in files], known=files)
        commit_checkpoint(tmp, final, keep)
    D.barrier(info)
    return final


@contextlib.contextmanager
def _quiet():
    """DCP warns on every single-process save/load, which is intended here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _sum(folder: str, name: str) -> dict:
    path = os.path.join(folder, name)
    return {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}


def _dcp_load(sd: dict, path: str, what: str, fix: str = "") -> None:
    """`dcp.load` of ``sd`` in place from ``path`` (collective under a process group), its failure one
    `CheckpointError` naming the folder, ``what`` failed, the cause and ``fix``."""
    try:
        with _quiet():
            dcp.load(sd, checkpoint_id=path, no_dist=not dist.is_initialized())
    except (RuntimeError, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: {what} ({type(e).__name__}: {str(e)[:300]}){fix}") from None


def load_sharded_checkpoint(path: str, model, opt) -> None:
    """Fill ``model`` and ``opt`` (already on their devices, wrapped or not) from the sharded checkpoint
    ``path``; collective under a process group. Each rank reads only its slices."""
    msd, osd = get_state_dict(model, opt)
    sd = {"model": msd, "optim": osd}
    _dcp_load(sd, path, "the sharded checkpoint does not load into this model", f"; {resume_fix(path)}")
    set_state_dict(model, opt, model_state_dict=sd["model"], optim_state_dict=sd["optim"])


def read_tensors(path: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The model tensors ``shapes`` (HF names -> shapes) of the sharded checkpoint ``path``, full and fp32 on
    this process's CPU (DCP reads only those keys); needs no process group."""
    sd = {f"model.{k}": torch.empty(s, dtype=torch.float32) for k, s in shapes.items()}
    _dcp_load(sd, path, f"cannot read {sorted(shapes)[:3]}... from the sharded checkpoint")
    return {k: sd[f"model.{k}"] for k in shapes}


def load_sharded_model_state(path: str, cfg: ModelConfig | None = None) -> dict[str, torch.Tensor]:
    """The full model state dict (fp32, CPU, strict-loadable into `Llama`) of a sharded checkpoint, in one
    process: how evaluation and `sharded_to_hf` read one."""
    cfg = cfg or read_hf_config(path)[0]
    sd = read_tensors(path, expected_shapes(cfg))
    if cfg.tie_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    return sd


# ------------------------------------------------------------------------------------- HF export


def plan_hf_shards(cfg: ModelConfig, dtype: str = "float32",
                   max_shard_bytes: int = MAX_SHARD_BYTES) -> list[list[tuple[str, tuple[int, ...]]]]:
    """The tensors of ``cfg``'s HF folder (a tied ``lm_head`` left out) grouped in state-dict order into files
    of at most ``max_shard_bytes`` each (a larger tensor gets a file of its own)."""
    size = torch.empty((), dtype=DTYPES[dtype]).element_size()
    shards: list[list] = [[]]
    used = 0
    for name, shape in expected_shapes(cfg).items():
        n = size * _numel(shape)
        if shards[-1] and used + n > max_shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append((name, shape))
        used += n
    return shards


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def shard_file_names(n: int) -> list[str]:
    return ["model.safetensors"] if n == 1 else [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


Fetch = Callable[[list[tuple[str, tuple[int, ...]]]], dict[str, torch.Tensor]]


def model_fetcher(model, info: D.DistInfo) -> Fetch:
    """Full tensors of a training model (FSDP2 DTensors gathered one at a time: collective), on rank 0's CPU."""
    base = getattr(model, "module", model)
    params = dict(base.named_parameters(remove_duplicate=False))

    def fetch(group):
        out = {}
        for name, _ in group:
            p = params[name].detach()
            full = p.full_tensor() if hasattr(p, "full_tensor") else p
            if info.main:
                out[name] = full.to("cpu", copy=True)
            del full
        return out

    return fetch


def checkpoint_fetcher(path: str) -> Fetch:
    """Tensors read from a sharded checkpoint, one shard's worth at a time (one process)."""
    return lambda group: read_tensors(path, dict(group))


def export_hf(fetch: Fetch, cfg: ModelConfig, folder: str, dtype: str = "float32", main: bool = True,
              max_shard_bytes: int = MAX_SHARD_BYTES, tokenizer: str | None = None) -> list[str]:
    """Write a Hugging Face LLaMA folder shard by shard from ``fetch`` (collective when it is: call on every
    rank; only ``main`` writes). Weight files an earlier lcdata export left there (listed in its checksums.json)
    are replaced; another program's are refused. Returns the files written (main)."""
    if dtype not in DTYPES:
        raise ConfigError(f"save dtype {dtype!r} must be one of {sorted(DTYPES)}")
    plan = plan_hf_shards(cfg, dtype, max_shard_bytes)
    files = shard_file_names(len(plan))
    if main:
        _clear_old_weights(folder)
    weight_map, total = {}, 0
    for group, fname in zip(plan, files):
        tensors = fetch(group)
        if not main:
            continue
        out = {k: tensors.pop(k).to(DTYPES[dtype]).contiguous() for k, _ in group}
        for k, t in out.items():
            weight_map[k] = fname
            total += t.numel() * t.element_size()
        with atomic_path(os.path.join(folder, fname)) as tmp:
            save_file(out, tmp, metadata={"format": "pt"})
        del out, tensors
    if not main:
        return []
    names = list(files)
    if len(files) > 1:
        write_json({"metadata": {"total_size": total}, "weight_map": weight_map},
                   os.path.join(folder, "model.safetensors.index.json"))
        names.append("model.safetensors.index.json")
    write_json(hf_config_dict(cfg, dtype), os.path.join(folder, "config.json"))
    names.append("config.json")
    if tokenizer:
        with atomic_path(os.path.join(folder, "tokenizer.json")) as tmp:
            shutil.copyfile(tokenizer, tmp)
        names.append("tokenizer.json")
    write_checksums(folder, names)
    return names


def _clear_old_weights(folder: str) -> None:
    """Make ``folder`` ready for new weight files: remove checksums.json and the weight files it lists (an
    earlier lcdata export); refuse weight files nothing of ours wrote."""
    os.makedirs(folder, exist_ok=True)
    ours: set[str] = set()
    path = os.path.join(folder, CHECKSUMS)
    if os.path.isfile(path):
        import json

        with open(path) as fh:
            ours = set(json.load(fh).get("files", {}))
    foreign = [n for n in os.listdir(folder) if _WEIGHT_FILE.match(n) and n not in ours]
    if foreign:
        raise ConfigError(f"{folder!r} holds weight files {sorted(foreign)[:3]} that lcdata did not write; "
                          "export into a new folder")
    if os.path.isfile(path):
        os.remove(path)  # first: a crash leaves a folder that loads unverified, never one failing old sums
    for n in ours:
        if _WEIGHT_FILE.match(n) and os.path.isfile(os.path.join(folder, n)):
            os.remove(os.path.join(folder, n))


def sharded_to_hf(ckpt: str, out: str, dtype: str = "float32", max_shard_bytes: int = MAX_SHARD_BYTES,
                  tokenizer: str | None = None) -> list[str]:
    """Convert the sharded training checkpoint ``ckpt`` into the Hugging Face folder ``out`` (new or empty),
    in one process, one shard in memory at a time. Returns the files written."""
    from .checkpoint import check_training_checkpoint

    if not is_sharded(ckpt):
        raise ConfigError(f"{ckpt!r} is not a sharded checkpoint (no {'.metadata'}); a full checkpoint already is a "
                          "Hugging Face folder (config.json + model.safetensors)")
    if os.path.isdir(out) and os.listdir(out):
        raise ConfigError(f"--out {out!r} is not empty; export into a new folder")
    check_training_checkpoint(ckpt)
    cfg, _ = read_hf_config(ckpt)
    return export_hf(checkpoint_fetcher(ckpt), cfg, out, dtype, True, max_shard_bytes, tokenizer)
