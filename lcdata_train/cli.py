"""Command line: ``python -m lcdata_train train|needle|eval-loss ...`` (and ``lcdata train|needle|eval-loss``
through `main`).

It only maps flags to `TrainConfig` and calls `train.train`; torch is imported after the flags parse, so
``--help`` and flag errors are instant. A user's error (`lcdata.errors.user_message`) prints one message and exit 2
(traceback with ``LCDATA_DEBUG=1`` or ``lcdata --debug``). Multi-GPU: ``torchrun --nproc-per-node 8 -m lcdata_train train ...``.

The `lcdata` CLI dispatches with ``lcdata_train.cli.main(["train", *flags])``: ``argv`` starts with the
subcommand, as after ``lcdata``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from lcdata.errors import MissingDependencyError, cli_errors
from lcdata.util.config import SIZE_HELP
from lcdata.util.flags import HelpFormatter, add_alias, size_help, size_type, with_notes

from .config import CHECKPOINT_FORMATS, DTYPES, PARALLEL, PRESETS, SCHEDULES, TrainConfig


def _rope_scaling(s: str) -> dict:
    """``TYPE:FACTOR`` (linear, dynamic, yarn: original length = the model's max_position_embeddings) or the
    Hugging Face JSON object (llama3, or any type with its optional keys)."""
    if s.strip().startswith("{"):
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"{s!r} is not valid JSON ({e})") from None
    kind, _, factor = s.partition(":")
    try:
        return {"rope_type": kind, "factor": float(factor)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: use linear:FACTOR, dynamic:FACTOR, yarn:FACTOR or a JSON "
                                         "object such as '{\"rope_type\": \"llama3\", ...}'") from None


EVAL_DTYPES = ("auto", "float32", "bfloat16")


def _add_device_args(p: argparse.ArgumentParser, dtypes: tuple[str, ...], dtype_help: str) -> None:
    """``--device`` and ``--dtype`` (the compute precision) as train, needle and eval-loss all take them."""
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    p.add_argument("--dtype", choices=dtypes, default="auto", help=dtype_help)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The `train` flags (for a parent CLI that builds its own subparser)."""
    p.add_argument("--shards", required=True, help="shard folder from `lcdata build`")
    p.add_argument("--model", default="debug", help=f"preset {'|'.join(PRESETS)} or a Hugging Face LLaMA folder "
                   "(config.json + safetensors)")
    p.add_argument("--out", required=True, help="run folder (log.jsonl, checkpoints/, final/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run folder --out holds (only ever a folder `lcdata train` wrote)")
    p.add_argument("--seq-len", type=size_type(), default=None, metavar="TOKENS",
                   help=size_help("tokens per sequence (default: the shards')"))
    p.add_argument("--rope-theta", type=float, default=None, help="RoPE base, e.g. 5e6 (default: the model's)")
    p.add_argument("--rope-scaling", type=_rope_scaling, default=None,
                   help="RoPE scaling: linear|dynamic|yarn:FACTOR or a Hugging Face rope_scaling JSON object "
                        "(llama3, yarn's options); anchored at the model's max_position_embeddings (default: none)")
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (the paper's 2e-5)")
    p.add_argument("--schedule", choices=SCHEDULES, default="constant", help="constant (paper) or warmup + cosine")
    p.add_argument("--warmup-steps", type=size_type("steps"), default=0, metavar="STEPS",
                   help="optimizer steps of linear warmup from 0 to the peak LR")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine: final LR / peak LR (a ratio)")
    p.add_argument("--batch-tokens", default="4M", metavar="TOKENS",
                   help=size_help("tokens per optimizer step over all ranks; a suffixed size is rounded to a "
                                  "multiple of seq-len x world x micro-batch, a plain number must be one"))
    p.add_argument("--tokens", default="5B", metavar="TOKENS", help=size_help("tokens to train on (B = G = 10^9)"))
    p.add_argument("--micro-batch", type=size_type("sequences"), default=1, metavar="N",
                   help="sequences per forward pass per rank")
    p.add_argument("--doc-mask", action="store_true", help="intra-document attention masking (paper: off)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW decoupled weight decay (the paper: 0)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: off)")
    p.add_argument("--no-act-ckpt", action="store_true", help="keep activations instead of recomputing blocks")
    p.add_argument("--loss-chunk", type=size_type(), default=4096, metavar="TOKENS",
                   help=size_help("tokens per cross-entropy chunk"))
    p.add_argument("--seed", type=int, default=0, help="seed of the model init (presets) and the data order")
    p.add_argument("--save-every", type=size_type("steps"), default=100, metavar="STEPS",
                   help="checkpoint every N steps (0: at the end only)")
    p.add_argument("--keep", type=size_type("checkpoints"), default=2, metavar="N", help="training checkpoints to keep")
    p.add_argument("--stop-after", type=size_type("steps"), default=None, metavar="STEPS",
                   help="stop after N steps of this invocation, resumable (default: run to the end)")
    p.add_argument("--log-every", type=size_type("steps"), default=1, metavar="STEPS",
                   help="progress line every N steps (log.jsonl: every step)")
    _add_device_args(p, DTYPES, "compute dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--save-dtype", choices=DTYPES, default="auto", help="final model dtype (auto: the source's)")
    p.add_argument("--attn-backend", default="auto", help="auto, flash_attn, sdpa, torch_varlen or sdpa_docs")
    p.add_argument("--parallel", choices=PARALLEL, default="fsdp", help="multi-process strategy (FSDP2 or DDP)")
    add_alias(p, "--num-workers", p.add_argument(
        "--workers", type=size_type("processes"), default=0, metavar="N",
        help="data-loader worker processes per rank (0 = load in the training process)"))
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak TFLOP/s per device for MFU (default: known GPUs; CPU: none)")
    p.add_argument("--checkpoint-format", choices=CHECKPOINT_FORMATS, default="auto",
                   help="full (rank 0 gathers model + optimizer: safetensors) or sharded (torch.distributed.checkpoint: "
                        "each rank writes its shards; needed at 7B); auto: sharded under FSDP with several ranks")
    p.add_argument("--no-memory-check", action="store_true",
                   help="train even when the memory estimate printed at the start exceeds the GPU's memory")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    return TrainConfig(shards=a.shards, out=a.out, model=a.model, seq_len=a.seq_len, rope_theta=a.rope_theta,
                       rope_scaling=a.rope_scaling, lr=a.lr, schedule=a.schedule, warmup_steps=a.warmup_steps,
                       min_lr_ratio=a.min_lr_ratio, batch_tokens=a.batch_tokens, tokens=a.tokens,
                       micro_batch=a.micro_batch, doc_mask=a.doc_mask, weight_decay=a.weight_decay,
                       grad_clip=a.grad_clip, act_ckpt=not a.no_act_ckpt, loss_chunk=a.loss_chunk, seed=a.seed,
                       resume=a.resume, overwrite=a.overwrite, save_every=a.save_every, keep=a.keep, stop_after=a.stop_after,
                       log_every=a.log_every, device=a.device, dtype=a.dtype, save_dtype=a.save_dtype,
                       attn_backend=a.attn_backend, parallel=a.parallel, num_workers=a.workers,
                       peak_tflops=a.peak_tflops, checkpoint_format=a.checkpoint_format,
                       memory_check=not a.no_memory_check, quiet=a.quiet)


def _need_torch() -> None:
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f"training and evaluation need torch and safetensors ({e}); "
                                     "pip install 'lcdata[train]'") from None


def run_train(a: argparse.Namespace) -> int:
    cfg = config_from_args(a)
    _need_torch()
    from . import attention
    from .train import train

    attention.set_backend(cfg.attn_backend)
    res = train(cfg)
    if res.losses and not cfg.quiet and int(os.environ.get("RANK", "0")) == 0:
        print(f"lcdata train: steps {res.first_step} -> {res.step} of {res.total_steps}, loss "
              f"{res.losses[0]:.4f} -> {res.losses[-1]:.4f}; run in {res.run_dir}"
              + (f", model in {res.final_dir}" if res.final_dir else ""), file=sys.stderr)
    return 0


def add_needle_arguments(p: argparse.ArgumentParser) -> None:
    from .needle import BOS_MODES, MODES, SCORINGS, TASKS

    p.add_argument("--model", required=True, help="run folder of `lcdata train`, a checkpoint or a Hugging Face folder")
    p.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the one saved beside the model)")
    p.add_argument("--haystack", nargs="+", default=(), metavar="PATH",
                   help="text files or corpora (jsonl/zst/parquet, folders) of long prose (default: the demo "
                        "corpus's public-domain books; passkey: repeated filler text)")
    p.add_argument("--task", choices=TASKS, default="needle", help="the paper's needle, passkey, or multi-needle")
    p.add_argument("--mode", choices=MODES, default="generate",
                   help="generate (greedy, word recall) or teacher-forced (one pass, exact match + log-prob)")
    p.add_argument("--scoring", choices=SCORINGS, default=None,
                   help="generate: paper (the paper's raw-word formula, max 91.7 on its needle) or words (punctuation "
                        "stripped, max 100); teacher-forced: exact. Default: paper for the paper's needle and "
                        "template, words otherwise, exact in teacher-forced mode")
    p.add_argument("--bos", choices=BOS_MODES, default="once",
                   help="where the tokenizer's BOS goes: once (the prompt's start, as tokenizer(prompt) adds it; "
                        "default), paper (also before the context and before the needle, as the paper's "
                        "encode->decode->re-encode does with a LLaMA tokenizer), none")
    p.add_argument("--lengths", default="1000:128000:40",
                   help="context lengths in tokens: START:STOP:COUNT or a comma list (values take " + SIZE_HELP + ")")
    p.add_argument("--depths", default="0:100:10", help="needle depths in percent: START:STOP:COUNT or a comma list")
    p.add_argument("--needle", default=None, help="needle text (passkey: may use {key}; default: the task's)")
    p.add_argument("--question", default=None, help="question asked after the context (default: the task's)")
    p.add_argument("--answer", default=None, help="words scored in generate mode (default: the task's)")
    p.add_argument("--target", default=None, help="continuation scored in teacher-forced mode (default: the task's)")
    p.add_argument("--template", default=None, help="prompt with {context} and {question} (default: the paper's)")
    p.add_argument("--n-needles", type=size_type("needles"), default=3, metavar="N", help="multi: needles per context")
    p.add_argument("--reserve", type=size_type(), default=200, metavar="TOKENS",
                   help=size_help("tokens reserved for prompt and answer (paper: 200)"))
    p.add_argument("--max-new-tokens", type=size_type(), default=50, metavar="TOKENS",
                   help=size_help("most tokens generated per answer"))
    p.add_argument("--rope-theta", type=float, default=None, help="override the model's RoPE base (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random parts of each cell's needles (passkeys, magic numbers)")
    _add_device_args(p, EVAL_DTYPES, "compute dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--out", required=True, help="output folder (results.parquet, results.json, heatmap.png)")
    p.add_argument("--name", default=None,
                   help="the run's label in results.json, the heatmap and report.md (default: the model's folder name)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the needle folder --out holds (only ever a folder `lcdata needle` wrote)")
    p.add_argument("--quiet", action="store_true", help="no progress lines and no summary")


def run_needle_cmd(a: argparse.Namespace) -> int:
    from .needle import NeedleConfig, parse_grid, print_summary, run_needle

    cfg = NeedleConfig(model=a.model, out=a.out, tokenizer=a.tokenizer, haystack=tuple(a.haystack), task=a.task,
                       mode=a.mode, lengths=parse_grid(a.lengths, True), depths=parse_grid(a.depths, True),
                       needle=a.needle, question=a.question, answer=a.answer, target=a.target, template=a.template,
                       n_needles=a.n_needles, reserve=a.reserve, max_new_tokens=a.max_new_tokens, seed=a.seed,
                       scoring=a.scoring, bos=a.bos,
                       device=a.device, dtype=a.dtype, rope_theta=a.rope_theta, quiet=a.quiet, overwrite=a.overwrite,
                       name=a.name)
    res = run_needle(cfg)
    if not a.quiet:
        print_summary(res, a.out, cfg.name)
    return 0


def add_eval_loss_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", nargs="+", required=True, metavar="MODEL",
                   help="one model, or several to compare (deltas against the first); `unigram:SHARDS` is the "
                        "unigram model of a shard folder's token counts (the frequency-shift baseline, docs/eval.md)")
    add_alias(p, "--labels", p.add_argument(
        "--name", dest="name", nargs="+", default=None, metavar="NAME",
        help="a name per model, labelling its rows in the table, loss.parquet and report.md (default: "
             "the model's folder name)"))
    p.add_argument("--shards", required=True, help="held-out shard folder from `lcdata build`")
    p.add_argument("--position-buckets", default="0,4096", metavar="EDGES",
                   help="token-position bucket edges, e.g. 0,4096,32Ki (the paper's 0,4Ki; Ki = 1024)")
    p.add_argument("--seq-len", type=size_type(), default=None, metavar="TOKENS",
                   help=size_help("window length in tokens (default: the shards')"))
    p.add_argument("--doc-mask", action="store_true", help="each document computed alone (default: packed)")
    p.add_argument("--position", choices=("document", "sequence"), default="document",
                   help="a token's position: its offset in its own document (short-document sources "
                        "have no long-position tokens) or in the packed sequence window (the paper's 4K-128K "
                        "losses for every source); docs/eval.md")
    p.add_argument("--max-sequences", type=size_type("sequences"), default=None, metavar="N",
                   help=size_help("evaluate at most N windows (default: all)", "sequences"))
    add_alias(p, "--threshold", p.add_argument(
        "--delta-threshold", type=float, default=0.01, metavar="NATS",
        help="flag a loss difference to the first model above this, in nats per token (the paper's 0.01)"))
    p.add_argument("--rope-theta", type=float, default=None, help="override the model's RoPE base (default: the model's)")
    _add_device_args(p, EVAL_DTYPES, "compute dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--out", default=None, help="output folder (loss.parquet, units.parquet, loss.json, compare.parquet; "
                                                "default: none, the table only)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the folder --out holds (only ever a folder `lcdata eval-loss` wrote)")
    p.add_argument("--quiet", action="store_true", help="no progress line (the table still prints)")


def run_eval_loss_cmd(a: argparse.Namespace) -> int:
    from .eval_loss import EvalLossConfig, format_table, parse_edges, run_eval_loss

    cfg = EvalLossConfig(models=tuple(a.model), labels=tuple(a.name) if a.name else None, shards=a.shards,
                         out=a.out, position_buckets=with_notes("lcdata eval-loss", parse_edges, a.position_buckets), seq_len=a.seq_len, doc_mask=a.doc_mask,
                         position=a.position, max_sequences=a.max_sequences, threshold=a.delta_threshold,
                         rope_theta=a.rope_theta, device=a.device, dtype=a.dtype, quiet=a.quiet, overwrite=a.overwrite)
    losses, cmp = run_eval_loss(cfg)
    print(format_table(losses, cmp))
    if a.out:
        print(f"wrote {a.out.rstrip('/')}/: loss.parquet, units.parquet, loss.json"
              + (", compare.parquet" if cmp is not None else ""))
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="a sharded training checkpoint (RUN/checkpoints/step-N)")
    p.add_argument("--out", required=True, help="new Hugging Face folder (config.json + safetensors shards)")
    p.add_argument("--save-dtype", choices=DTYPES, default="bfloat16",
                   help="dtype of the exported weights (auto: the checkpoint's, float32)")
    p.add_argument("--max-shard-size", type=size_type("bytes", minimum=1), default="5G", metavar="BYTES",
                   help=size_help("most bytes per safetensors file, as save_pretrained's 5GB (write 5G)", "bytes"))
    p.add_argument("--tokenizer", default=None, help="tokenizer.json to copy beside the model (default: none copied)")


def run_export_cmd(a: argparse.Namespace) -> int:
    from .sharded import sharded_to_hf

    files = sharded_to_hf(a.checkpoint, a.out, "float32" if a.save_dtype == "auto" else a.save_dtype,
                          a.max_shard_size, a.tokenizer)
    print(f"wrote {a.out}/ ({', '.join(files)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    prog = "lcdata" if os.path.basename(sys.argv[0]) == "lcdata" else "python -m lcdata_train"
    p = argparse.ArgumentParser(prog=prog, formatter_class=HelpFormatter,
                                description="Continual pretraining on lcdata shards, and its evaluations.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", formatter_class=HelpFormatter, help="continual pretraining of a LLaMA model on lcdata shards",
                       description="Continual pretraining of a LLaMA model on lcdata shards (paper recipe).")
    add_train_arguments(t)
    t.set_defaults(func=run_train)
    n = sub.add_parser("needle", formatter_class=HelpFormatter, help="needle-in-a-haystack evaluation (paper's grid, passkey, multi-needle)",
                       description="Needle in a haystack: retrieval at every (context length, depth).")
    add_needle_arguments(n)
    n.set_defaults(func=run_needle_cmd)
    e = sub.add_parser("eval-loss", formatter_class=HelpFormatter, help="validation loss per source x position bucket (and model comparison)",
                       description="Validation loss per source and position bucket on held-out shards.")
    add_eval_loss_arguments(e)
    e.set_defaults(func=run_eval_loss_cmd)
    x = sub.add_parser("export-hf", formatter_class=HelpFormatter, help="a sharded training checkpoint -> Hugging Face safetensors, shard by shard",
                       description="Convert a sharded (torch.distributed.checkpoint) training checkpoint into a "
                                   "Hugging Face LLaMA folder in one process, one safetensors shard in memory at a time.")
    add_export_arguments(x)
    x.set_defaults(func=run_export_cmd)
    return p


def main(argv: list[str] | None = None, debug: bool = False) -> int:
    """``main(["train", "--shards", ...])``; returns the exit code. ``debug``: show tracebacks."""
    args = build_parser().parse_args(argv)

    def go() -> int:
        if args.func is not run_train:
            _need_torch()
        return args.func(args)

    return cli_errors(args.command, go, debug=debug)
