"""The training loop: continual pretraining of a LLaMA model on lcdata shards (the paper's recipe: full
fine-tuning, constant LR 2e-5, 4M-token batches, 5B tokens, RoPE base raised before training).

One optimizer step = ``accum`` micro-batches of ``micro_batch`` sequences on each of ``world`` ranks =
``batch_tokens``. The loss of a step is the mean over every scored token of the step: each micro-batch
returns its *sum* (chunked cross-entropy, `loss.py`), scaled by ``world / scored tokens of the whole step``
(counted before the backward passes), so accumulation and data parallelism give the gradient of one big
batch. Then: gradient clipping, the LR of the schedule (constant, or linear warmup + cosine to
``min_lr_ratio``), AdamW (fp32 master weights and moments).

The data: windows of ``seq_len`` over the shards read as one token stream (`data.ShardDataset`,
``windowing="stream"``: every shard token once per epoch at any ``seq_len``); ``run.json`` and the start line
report the windows, tokens used/unused and epochs, with a warning when the run repeats the data.

Per step, rank 0 appends to ``RUN/log.jsonl`` (loss, lr, grad norm, tokens/s, MFU, data-loader share) and
prints a progress line. MFU = model FLOPs / (step time x world x peak), model FLOPs = 6 N per token (N =
parameters in matmuls, `ModelConfig.matmul_params`) + 6 x layers x (heads x head_dim) x sum of n^2 over the
attention blocks (whole sequences, or documents with ``doc_mask``; causal, forward + backward;
activation recomputation not counted). Peak = the GPU's dense bf16 peak from a table, ``peak_tflops``
if given, else MFU is None (on CPU: there is no meaningful published peak).

Before the model is built, rank 0 prints the run's memory estimate per rank (`memory.py`: weights, gradients,
AdamW state, activations at this seq_len and micro-batch, with and without activation checkpointing); on CUDA
a run whose estimate exceeds the GPU's usable memory is refused with the numbers and the fix.

Checkpoints every ``save_every`` steps and at the end (none with ``save=False``, which benchmarks use: a
``1b`` checkpoint with its optimizer is 12 GB): *full* (`checkpoint.py`, rank 0 gathers model and
optimizer) or *sharded* (`sharded.py`, torch.distributed.checkpoint: each rank writes its own shards; the
default under FSDP with several ranks); either resumes, on any number of ranks. The finished model is also
written to ``RUN/final`` in Hugging Face format, one safetensors shard of at most 5 GB at a time (with the
shards' tokenizer.json beside it when the file the manifest names is still there). Resume (``resume=True``) restores weights, optimizer and
the data position from the newest checkpoint and refuses a changed config; with no randomness after
initialisation, the resumed losses equal the uninterrupted run's (bitwise on CPU).

In code: `train` claims ``--out`` (rank 0, `lcdata.util.outdir`) and runs `_train`, a few named steps: `_setup`
(shards and batch shape, model config, `_restore_point`, `_model_and_optimizer`, the loader at the first step
to run), `_start_run_folder` (rank 0: log trimmed to the restored step, ``run.json``), then the step loop:
`_step` (one optimizer step, returning its record), `_log_step` (rank 0: append the record, then the
``train.step`` fault point, then the progress line) and `_save` when a checkpoint is due.

Invariants: the log holds at most one record per step, in step order (a resume drops the records after the
checkpoint it restores, and redoes those steps); a resume refuses a changed config or other shards; every rank
computes the same step count, LR and loss (the reductions are sums over ranks).

Cost per step: ``accum`` forward + backward passes per rank, two small all-reduces (scored tokens; loss and
attention FLOPs) besides the gradient sync on the last micro-batch, one JSON line appended. A full checkpoint
gathers the model and optimizer state onto rank 0's CPU (collective) and writes it; a sharded one writes
1/world of it from each rank: about 3x the fp32 model size on disk either way (the newest ``keep`` stay), plus
the model once more in ``RUN/final``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import torch

from lcdata.errors import ConfigError, InputError
from lcdata.util.faults import fault_point
from lcdata.util.io import write_bytes
from lcdata.util.jsonlog import append_record, read_log, rewrite_log
from lcdata.util.outdir import claim_out

from . import distributed as D
from .attention import pick_backend
from .checkpoint import (
    CheckpointError,
    check_same_model,
    check_training_checkpoint,
    is_sharded,
    latest_checkpoint,
    load_hf_state,
    load_training_checkpoint,
    read_hf_config,
    save_training_checkpoint,
    verify_model_folder,
)
from .config import PRESETS, ModelConfig, TrainConfig, config_changes, parse_count, preset, resolve_batch
from .data import IGNORE, ShardDataset, ShardLoader
from .memory import GIB, MemoryEstimate, check_fits, estimate_memory, usable_bytes
from .model import Llama, init_state_dict
from .sharded import export_hf, load_sharded_checkpoint, model_fetcher, save_sharded_checkpoint

# dense bf16 peak, TFLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "B200": 2250.0, "A100": 312.0, "L40S": 362.0,
               "A10G": 125.0, "L4": 121.0}


@dataclass
class TrainResult:
    run_dir: str
    first_step: int  # steps already done when this invocation started
    step: int  # steps done when it ended
    total_steps: int
    losses: list[float] = field(default_factory=list)  # this invocation's, one per step
    records: list[dict] = field(default_factory=list)
    final_dir: str | None = None


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """LR of optimizer step ``step`` (0-based)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def peak_flops(device: torch.device, dtype: torch.dtype, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda" or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name(device)
    return next((v * 1e12 for k, v in PEAK_TFLOPS.items() if k in name), None)


def attention_flops(mcfg: ModelConfig, batches: list[dict], doc_mask: bool) -> float:
    sq = 0
    for b in batches:
        if doc_mask:
            n = (b["cu_seqlens"][1:] - b["cu_seqlens"][:-1]).double()
            sq += float((n * n).sum())
        else:
            B, L = b["input_ids"].shape
            sq += B * L * L
    return 6.0 * mcfg.n_layers * mcfg.n_heads * mcfg.head_dim * sq


def resolve_model(cfg: TrainConfig, vocab: int, seq_len: int) -> tuple[ModelConfig, str, str | None]:
    """(model config with the run's overrides, dtype to save the final model in, HF folder or None)."""
    folder = None
    if cfg.model in PRESETS:
        mcfg, src_dtype = preset(cfg.model, vocab, max(seq_len, 4096)), "float32"
    elif os.path.isdir(cfg.model):
        folder = cfg.model
        if not os.path.isfile(os.path.join(folder, "config.json")) and os.path.isfile(os.path.join(folder, "run.json")):
            final = os.path.join(folder, "final")
            model = final if os.path.isfile(os.path.join(final, "config.json")) else latest_checkpoint(folder)
            raise ConfigError(f"--model {folder!r} is a run folder of `lcdata train`, not a model; pass its model"
                              + (f", --model {model}" if model else " (it has none yet: --resume it first)"))
        verify_model_folder(folder, f"the model folder {folder} is damaged: restore or re-create it")
        mcfg, src_dtype = read_hf_config(folder)
    else:
        raise ConfigError(f"--model {cfg.model!r} is neither a preset {PRESETS} nor a folder")
    if cfg.rope_scaling is not None:  # first, so its original length defaults to the model's, not seq_len
        mcfg = mcfg.replace(rope_scaling=cfg.rope_scaling)
    over = {"max_seq_len": max(mcfg.max_seq_len, seq_len)}
    if cfg.rope_theta is not None:
        over["rope_theta"] = float(cfg.rope_theta)
    mcfg = mcfg.replace(**over)
    if vocab > mcfg.vocab_size:
        raise ConfigError(f"the shards were built with a tokenizer of {vocab:,} ids but the model {cfg.model!r} has a "
                          f"vocabulary of {mcfg.vocab_size:,}: ids >= {mcfg.vocab_size:,} would index past its "
                          "embedding; build the shards with the model's tokenizer")
    save = cfg.save_dtype if cfg.save_dtype != "auto" else src_dtype
    return mcfg, save if save in ("float32", "bfloat16", "float16") else "float32", folder


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) ``cfg``; under torchrun every rank calls this. Returns this invocation's losses."""
    info = D.setup(cfg.device)
    try:
        # rank 0 claims --out (lcdata.util.outdir) and holds its lock for the run: never the shard or model folder,
        # nor inside one; --overwrite only of a run folder
        claim = (claim_out(cfg.out, "train", overwrite=cfg.overwrite, resume=cfg.resume,
                           inputs=[cfg.shards, *_folders(cfg.model)],
                           protect={"the shard folder": [cfg.shards], "the model": _folders(cfg.model)})
                 if info.main else contextlib.nullcontext())
        with claim:
            D.barrier(info)
            return _train(cfg, info)
    finally:
        D.teardown()


def _folders(*paths: str) -> list[str]:
    """The paths that exist (a model given as a preset name is no folder to protect)."""
    return [p for p in paths if p and os.path.exists(p)]


def _train(cfg: TrainConfig, info: D.DistInfo) -> TrainResult:
    """Set up data and model (restored from the newest checkpoint when resuming), then the step loop: one
    optimizer step, its log record, and a checkpoint when one is due."""
    if info.main and not cfg.quiet:  # the first line, before the model and data load
        print(f"lcdata train: reading {cfg.shards}, loading {cfg.model} on {info.device} ...", file=sys.stderr, flush=True)
    run = _setup(cfg, info)
    log_path = os.path.join(cfg.out, "log.jsonl")
    if info.main:
        _start_run_folder(cfg, info, run, log_path)
    stop = min(run.total_steps, run.start + cfg.stop_after) if cfg.stop_after else run.total_steps
    result = TrainResult(run_dir=cfg.out, first_step=run.start, step=run.start, total_steps=run.total_steps)
    run.model.train()
    step = run.start
    t_loop = time.perf_counter()
    while step < stop:
        rec = _step(cfg, info, run, step)
        step = rec["step"]
        result.losses.append(rec["loss"])
        result.records.append(rec)
        if info.main:
            _log_step(cfg, log_path, rec, run.total_steps, stop, (step - run.start, time.perf_counter() - t_loop))
        if cfg.save and (step == stop or (cfg.save_every and step % cfg.save_every == 0)):
            final_dir = _save(cfg, info, run, step)
            if final_dir:
                result.final_dir = final_dir
    result.step = step
    return result


@dataclass
class _Run:
    """What the step loop needs, made once per invocation by `_setup`."""

    ds: ShardDataset
    mcfg: ModelConfig
    save_dtype: str
    cdtype: torch.dtype
    per_step: int  # sequences per optimizer step, all ranks
    accum: int  # micro-batches per rank per step
    batch_tokens: int
    total_steps: int
    start: int  # steps done before this invocation (the checkpoint restored, else 0)
    ckpt: str | None  # the checkpoint restored
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    loader: ShardLoader
    peak: float | None  # peak FLOP/s of one device, None: no MFU
    backend: str
    autocast: contextlib.AbstractContextManager  # mixed precision of the forward pass (none in float32)
    memory: MemoryEstimate  # per rank, printed at the start


def _setup(cfg: TrainConfig, info: D.DistInfo) -> _Run:
    """The shards and batch shape, the model config and compute dtype, the restore point, the model and
    optimizer on the device, and the data loader positioned at the first step to run."""
    torch.manual_seed(cfg.seed)
    ds = ShardDataset(cfg.shards, cfg.seq_len, cfg.doc_mask, windowing="stream")
    L = ds.seq_len
    per_step, accum = resolve_batch(cfg.batch_tokens, L, info.world, cfg.micro_batch)
    batch_tokens = per_step * L
    total_steps = max(1, math.ceil(parse_count(cfg.tokens)[0] / batch_tokens))
    mcfg, save_dtype, folder = resolve_model(cfg, ds.vocab_size, L)
    cuda = info.device.type == "cuda"
    cdtype = {"auto": torch.bfloat16 if cuda else torch.float32, "float32": torch.float32,
              "bfloat16": torch.bfloat16}[cfg.dtype]
    mem = _memory_check(cfg, info, mcfg, L, cdtype)
    ckpt, state = _restore_point(cfg, info, ds)
    model, opt = _model_and_optimizer(cfg, info, mcfg, cdtype, ckpt, folder)
    start = int(state["step"]) if ckpt else 0
    loader = ShardLoader(ds, per_step=per_step, micro_batch=cfg.micro_batch, rank=info.rank, world=info.world,
                         seed=cfg.seed, start_step=start, num_workers=cfg.num_workers, pin_memory=cuda)
    if state:
        loader.check_state(state["data"])
    return _Run(ds=ds, mcfg=mcfg, save_dtype=save_dtype, cdtype=cdtype, per_step=per_step, accum=accum, memory=mem,
                batch_tokens=batch_tokens, total_steps=total_steps, start=start, ckpt=ckpt, model=model, opt=opt,
                loader=loader, peak=peak_flops(info.device, cdtype, cfg.peak_tflops),
                backend=pick_backend(info.device, cfg.doc_mask),
                autocast=(torch.autocast(info.device.type, dtype=cdtype) if cdtype != torch.float32
                          else contextlib.nullcontext()))


def _memory_check(cfg: TrainConfig, info: D.DistInfo, mcfg: ModelConfig, seq_len: int,
                  cdtype: torch.dtype) -> MemoryEstimate:
    """The run's memory estimate per rank (`memory.py`), printed by rank 0 before the model is built; on CUDA
    a run that does not fit is refused (every rank alike) unless ``memory_check`` is off."""
    est = estimate_memory(mcfg, seq_len, cfg.micro_batch, info.world, cfg.parallel, cfg.act_ckpt,
                          2 if cdtype != torch.float32 else 4, cfg.loss_chunk)
    where = "CPU: not checked"
    if info.device.type == "cuda":
        props = torch.cuda.get_device_properties(info.device)
        where = f"{props.name}: {props.total_memory / GIB:.1f} GiB, {usable_bytes(props.total_memory) / GIB:.1f} usable"
    if info.main and not cfg.quiet:
        other = estimate_memory(mcfg, seq_len, cfg.micro_batch, info.world, cfg.parallel, not cfg.act_ckpt,
                                est.compute_bytes, cfg.loss_chunk)
        print(f"lcdata train: memory estimate per rank ({where}): {est.line()}; activation checkpointing "
              f"{'on' if cfg.act_ckpt else 'off'} (with it {'off' if cfg.act_ckpt else 'on'}: activations "
              f"{other.activations / GIB:.2f} GiB, total {other.total / GIB:.2f} GiB)", file=sys.stderr)
    if info.device.type == "cuda" and cfg.memory_check:
        check_fits(mcfg, est, props.total_memory, props.name, info.world, cfg.parallel, cfg.loss_chunk)
    return est


def _restore_point(cfg: TrainConfig, info: D.DistInfo, ds: ShardDataset) -> tuple[str | None, dict | None]:
    """The newest checkpoint in ``cfg.out`` and its checked state (None, None for a new run); refuses a run
    folder without ``--resume`` and a resume with a changed config or other shards."""
    ckpt = latest_checkpoint(cfg.out)
    state = None
    if ckpt and not cfg.resume:
        raise ConfigError(f"{cfg.out!r} already holds a run (checkpoint {os.path.basename(ckpt)}); pass --resume to "
                          "continue it, or choose another --out")
    if cfg.resume and not ckpt and info.main and not cfg.quiet:
        print(f"lcdata train: --resume: {cfg.out!r} holds no checkpoint yet, starting from step 0", file=sys.stderr)
    if ckpt:
        state = _check_checkpoint(ckpt, info)
        changes = config_changes(state["config"], cfg)
        ident = ds.shards.manifest.get("identity")
        if state.get("shards_identity") != ident:
            changes.append(f"shards identity: {state.get('shards_identity')} (checkpoint) -> {ident} (now)")
        if changes:
            raise ConfigError(f"cannot resume {cfg.out!r} with a changed config: " + "; ".join(changes)
                              + ". Use the checkpoint's values, or start a new run with another --out")
    return ckpt, state


def _check_checkpoint(ckpt: str, info: D.DistInfo) -> dict:
    """`check_training_checkpoint` with the hashing shared by the ranks; every rank raises the first error any
    rank found, so all fail alike on a damaged checkpoint."""
    err, state = None, None
    try:
        state = check_training_checkpoint(ckpt, part=(info.rank, info.world))
    except CheckpointError as e:
        err = str(e)
    if info.world > 1:
        import torch.distributed as dist

        errs = [None] * info.world
        dist.all_gather_object(errs, err)
        err = next((e for e in errs if e), None)
    if err:
        raise CheckpointError(err)
    return state


def _model_and_optimizer(cfg: TrainConfig, info: D.DistInfo, mcfg: ModelConfig, cdtype: torch.dtype,
                         ckpt: str | None, folder: str | None) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The model on the device, wrapped for data parallelism, and its AdamW: weights and optimizer state from
    ``ckpt``, else weights from the HF ``folder`` or a seeded init. Rank 0 reads them; the others get a broadcast."""
    model_sd = osd = None
    sharded = bool(ckpt) and is_sharded(ckpt)
    if sharded:
        check_same_model(ckpt, mcfg)  # every rank reads config.json; the weights come below, each rank its shards
    elif info.main or info.world == 1:
        if ckpt:
            model_sd, osd, _ = load_training_checkpoint(ckpt, mcfg, verify=False)
        elif folder:
            model_sd = load_hf_state(folder, read_hf_config(folder)[0])
        else:
            model_sd = init_state_dict(mcfg, cfg.seed)
    with torch.device("meta"):
        model = Llama(mcfg)
    model.act_ckpt, model.loss_chunk = cfg.act_ckpt, cfg.loss_chunk
    model = D.prepare_model(model, None if sharded else (model_sd or {}), info, cfg.parallel,
                            cdtype if cdtype != torch.float32 else None)
    del model_sd
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas, eps=1e-8,
                            fused=True if info.device.type == "cuda" and info.world == 1 else None)
    if sharded:
        load_sharded_checkpoint(ckpt, model, opt)
    elif ckpt:
        D.load_optim_state(model, opt, osd, info)
    return model, opt


def _start_run_folder(cfg: TrainConfig, info: D.DistInfo, run: _Run, log_path: str) -> None:
    """Rank 0: trim the log to the restored step (warning of steps it lacks), write ``run.json`` (what this
    invocation runs) and print the run's banner."""
    os.makedirs(cfg.out, exist_ok=True)
    dropped, lost = _trim_log(log_path, run.start)
    if dropped and not cfg.quiet:
        print(f"lcdata train: {log_path}: {dropped} record(s) after step {run.start} dropped (redone now)",
              file=sys.stderr)
    if lost:
        print(f"lcdata train: warning: {log_path} has no record of step(s) {_ranges(lost)} (before the "
              f"checkpoint of step {run.start}, so not redone): their losses are missing from the log",
              file=sys.stderr)
    mcfg, dtype = run.mcfg, str(run.cdtype).removeprefix("torch.")
    nominal = parse_count(cfg.batch_tokens)
    meta = {"config": cfg.to_dict(), "model": mcfg.to_dict(), "n_params": mcfg.n_params(),
            "seq_len": run.ds.seq_len, "sequences_per_step": run.per_step, "accum_steps": run.accum,
            "batch_tokens": run.batch_tokens, "batch_tokens_asked": nominal[0], "total_steps": run.total_steps,
            "world": info.world, "device": str(info.device), "compute_dtype": dtype,
            "attention_backend": run.backend, "peak_flops": run.peak, "resumed_from": run.ckpt,
            "memory_estimate": run.memory.to_dict(),
            "data": data_coverage(run.ds, run.total_steps * run.per_step)}
    write_bytes(json.dumps(meta, indent=2, default=str).encode(), os.path.join(cfg.out, "run.json"))
    if not cfg.quiet:
        note = f" (asked {nominal[0]:,})" if nominal[0] != run.batch_tokens else ""
        print(f"lcdata train: {cfg.model} ({mcfg.n_params() / 1e6:.1f}M params), seq_len {run.ds.seq_len:,}, "
              f"{run.batch_tokens:,} tokens/step{note} = {info.world} rank(s) x {run.accum} x {cfg.micro_batch} "
              f"seqs, {run.total_steps} steps, attention {run.backend}, {info.device} {dtype}"
              + (f", resuming at step {run.start}" if run.ckpt else ""), file=sys.stderr)
        print(f"lcdata train: {_coverage_line(meta['data'])}", file=sys.stderr)
    if meta["data"]["epochs"] > 1:
        d = meta["data"]
        print(f"lcdata train: warning: {run.total_steps * run.batch_tokens:,} tokens ({run.total_steps} steps) are "
              f"{d['epochs']:.2f} epochs of the shards ({d['windows']:,} windows of {d['seq_len']:,}): the data repeats; "
              + (f"lower --tokens to <= {d['windows'] // run.per_step * run.batch_tokens:,} for one pass, or "
                 if d["windows"] >= run.per_step else "")
              + "build more shards", file=sys.stderr)


def data_coverage(ds: ShardDataset, sequences: int) -> dict:
    """``ds.coverage()`` (tokens in windows and in none, per epoch) plus ``sequences`` (windows the run reads)
    and ``epochs`` (sequences / windows)."""
    cov = ds.coverage()
    return {**cov, "sequences": sequences, "epochs": sequences / cov["windows"]}


def _coverage_line(d: dict) -> str:
    pad = f", the last window padded by {d['window_padding']:,}" if d["window_padding"] else ""
    unused = (f"; {d['tokens_unused']:,} ({d['tokens_unused'] / d['shard_tokens']:.1%}) in no window"
              if d["tokens_unused"] else "")
    return (f"data: {d['windows']:,} windows of {d['seq_len']:,} per epoch use {d['tokens_used']:,} of the "
            f"{d['shard_tokens']:,} shard tokens ({d['document_tokens']:,} document tokens; sequences of "
            f"{d['shards_seq_len']:,}{pad}){unused}; this run reads {d['sequences']:,} windows = "
            f"{d['epochs']:.2f} epoch(s)")


def _step(cfg: TrainConfig, info: D.DistInfo, run: _Run, step: int) -> dict:
    """Optimizer step ``step`` (0-based): ``accum`` micro-batches forward and backward, the loss scaled by the
    step's scored tokens, clipping, the schedule's LR, AdamW. Returns its log record (``step`` = steps done)."""
    model, mcfg = run.model, run.mcfg
    t0 = time.perf_counter()
    micro = next(run.loader)
    t_data = time.perf_counter() - t0
    scored = torch.tensor([float(sum(int((b["labels"] != IGNORE).sum()) for b in micro))], device=info.device)
    scored = float(D.all_reduce_sum(scored, info)[0])
    scale = info.world / max(scored, 1.0)
    loss_sum = torch.zeros((), device=info.device, dtype=torch.float64)
    for i, b in enumerate(micro):
        t1 = time.perf_counter()
        b = {k: v.to(info.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in b.items()}
        t_data += time.perf_counter() - t1
        cu = b["cu_seqlens"] if cfg.doc_mask else None
        with D.grad_sync(model, i == run.accum - 1):
            with run.autocast:
                ls, _ = model(b["input_ids"], b["position_ids"], cu, b["max_seqlen"] if cu is not None else None,
                              labels=b["labels"])
            (ls * scale).backward()
        loss_sum += ls.detach().double()
    gnorm = D.clip_grad_norm(model, cfg.grad_clip)
    lr = lr_at(step, cfg, run.total_steps)
    for g in run.opt.param_groups:
        g["lr"] = lr
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    red = torch.stack([loss_sum, torch.tensor(attention_flops(mcfg, micro, cfg.doc_mask), dtype=torch.float64,
                                              device=info.device)])
    red = D.all_reduce_sum(red, info).tolist()
    step += 1
    dt = time.perf_counter() - t0
    flops = 6.0 * mcfg.matmul_params() * run.batch_tokens + red[1]
    return {"step": step, "loss": red[0] / max(scored, 1.0), "lr": lr, "grad_norm": gnorm,
            "tokens": step * run.batch_tokens, "scored_tokens": int(scored), "step_s": round(dt, 6),
            "data_s": round(t_data, 6), "data_share": round(t_data / dt, 6), "tokens_per_s": run.batch_tokens / dt,
            "mfu": flops / (dt * info.world * run.peak) if run.peak else None, "model_flops": flops}


def _log_step(cfg: TrainConfig, log_path: str, rec: dict, total_steps: int, stop: int,
              pace: tuple[int, float] = (0, 0.0)) -> None:
    """Rank 0: append the step's record to the log (then the ``train.step`` fault point) and print a progress
    line at the first step of this invocation, every ``log_every`` steps and at its last step. ``pace``: (steps
    done by this invocation, seconds they took): the line's steps/s and the ETA of this invocation's last step."""
    append_record(log_path, rec)
    fault_point("train.step")
    step = rec["step"]
    done, secs = pace
    if not cfg.quiet and (step % cfg.log_every == 0 or step == stop or done == 1):
        mfu = f"MFU {rec['mfu']:.1%}" if rec["mfu"] is not None else "MFU n/a"
        rate = done / secs if done and secs > 0 else 1.0 / max(rec["step_s"], 1e-9)
        print(f"step {step}/{total_steps} | loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | grad {rec['grad_norm']:.3f} | "
              f"{rate:.2f} steps/s | {rec['tokens_per_s']:,.0f} tok/s | {mfu} | data {rec['data_share']:.1%} | "
              f"{rec['step_s']:.2f} s | ETA {eta((stop - step) / rate)}", file=sys.stderr, flush=True)


def eta(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: a remaining time as the progress lines show it."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _save(cfg: TrainConfig, info: D.DistInfo, run: _Run, step: int) -> str | None:
    """Checkpoint after ``step`` steps (collective: every rank calls it), full or sharded (`sharded_checkpoints`);
    after the last step of the run also the model in HF format, written shard by shard, whose folder it
    returns (rank 0; None otherwise)."""
    manifest = run.ds.shards.manifest
    st = {"tokens": step * run.batch_tokens, "data": run.loader.state_dict(), "config": cfg.to_dict(),
          "shards_identity": manifest.get("identity"), "world": info.world, "total_steps": run.total_steps}
    if sharded_checkpoints(cfg, info):
        save_sharded_checkpoint(cfg.out, step, run.model, run.opt, run.mcfg, st, info, keep=cfg.keep)
        fetch = model_fetcher(run.model, info)
    else:
        sd = D.model_state(run.model, info)
        osd = D.optim_state(run.model, run.opt, info)
        if info.main:
            save_training_checkpoint(cfg.out, step, sd, run.mcfg, osd, st, keep=cfg.keep)
        del osd

        def fetch(group):
            return {k: sd[k] for k, _ in group} if info.main else {}
    final_dir = None
    if step == run.total_steps:
        final_dir = os.path.join(cfg.out, "final")
        export_hf(fetch, run.mcfg, final_dir, run.save_dtype, info.main,
                  tokenizer=_shards_tokenizer(manifest.get("tokenizer") or {}) if info.main else None)
    D.barrier(info)
    return final_dir if info.main else None


def sharded_checkpoints(cfg: TrainConfig, info: D.DistInfo) -> bool:
    """Whether this run writes sharded (DCP) checkpoints: ``--checkpoint-format sharded``, or ``auto`` under
    FSDP with several ranks (where gathering the optimizer state on one rank is what does not scale)."""
    if cfg.checkpoint_format != "auto":
        return cfg.checkpoint_format == "sharded"
    return info.world > 1 and cfg.parallel == "fsdp"


def _shards_tokenizer(tok: dict) -> str | None:
    """The shards' tokenizer file, to save beside the final model (so evaluation and HF tools find it), when the
    file the manifest names is still there and has the manifest's hash."""
    import hashlib

    path = tok.get("path")
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as fh:
        return path if hashlib.sha256(fh.read()).hexdigest() == tok.get("sha256") else None


def _trim_log(path: str, step: int) -> tuple[int, list[int]]:
    """Keep the log's records of steps up to ``step`` (the checkpoint resumed from; the later ones are redone),
    rewritten atomically. A torn last line (the crash of the run before) is dropped with them. Returns the
    number of records dropped (a torn line counts as one) and the steps ``<= step`` the log has no record of."""
    if not os.path.exists(path):
        return 0, list(range(1, step + 1))
    records, torn = read_log(path)
    keep = []
    for i, r in enumerate(records):
        s = r.get("step")
        if not isinstance(s, int):
            raise InputError(path, "bad_record", f"record {i + 1} has no integer 'step' ({s!r})",
                             "restore the log, or delete the record to keep the rest")
        if s <= step:
            keep.append(r)
    if torn or len(keep) < len(records):
        rewrite_log(path, keep)
    have = {r["step"] for r in keep}
    return len(records) - len(keep) + torn, [s for s in range(1, step + 1) if s not in have]


def _ranges(steps: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    out, a = [], None
    for i, s in enumerate(steps):
        a = s if a is None else a
        if i + 1 == len(steps) or steps[i + 1] != s + 1:
            out.append(f"{a}" if a == s else f"{a}-{s}")
            a = None
    return ", ".join(out)
