"""The `lcdata` command line. It only maps flags to config dataclasses and calls the Python API.

A user's error (`errors.user_message`: lcdata's own, a full disk, a read-only or missing path, an unknown
URL scheme) is printed as one message (file, line, fix) with exit code 2; no traceback unless
``lcdata --debug ...`` or ``LCDATA_DEBUG=1``.

`main` is the command line as a function (tests and scripts call it, any number of times); `run` is the
installed ``lcdata`` program: `main` in a one-shot process, which skips the cyclic garbage collector's
passes over the ~10^5 long-lived objects that importing Polars, Arrow and NumPy creates (paused while a
command's modules are imported, which are then frozen out of later collections) and the full collection
at interpreter exit (0.1-0.15 s of the 1.5 s that `lcdata stats` takes on 200 MB). Nothing else differs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys

from .corpus.config import ReadConfig
from .errors import ConfigError, cli_errors
from .scaleout.executors import add_executor_args, executor_from_args
from .stats.config import StatsConfig
from .util.config import ENGINES, LONG_THRESHOLD, PAPER_CHARS_PER_TOKEN, SIZE_HELP, parse_buckets
from .util.flags import HelpFormatter, add_alias, size_help, size_type, with_notes
from .version import VERSION


def _add_read_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading the corpus")
    g.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, directories, globs or fsspec URLs (.jsonl, .jsonl.gz, .jsonl.zst, .json.zst, .parquet)")
    # every reading flag defaults to None (= not given: ReadConfig's default applies), so `sample --stats` can
    # tell a flag given on the command line from one left alone
    g.add_argument("--text-field", default=None, help="dotted path of the text field (default: text)")
    g.add_argument("--source-field", default=None,
                   help="dotted path of the source field (default: meta.redpajama_set_name, as in SlimPajama)")
    g.add_argument("--source-from-path", action="store_true", default=None,
                   help="source = the name of each file's parent folder (default: off)")
    g.add_argument("--source", default=None, metavar="NAME", help="one source name for every document (default: off)")
    g.add_argument("--id-field", default=None, help="field holding a document id (default: file:row)")
    g.add_argument("--on-error", choices=["raise", "skip"], default=None,
                   help="on a bad record: stop with an error (raise) or skip it and count it by reason "
                        "(default: raise)")
    g.add_argument("--workers", type=size_type("processes"), default=None, metavar="N",
                   help="worker processes on this machine (default: all cores; 0 = all cores)")


def _add_engine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="tokenizer engine, speed only (the same ids): auto (tiktoken where provably exact, else hf), "
                        "hf, tiktoken (docs/engines.md)")


READ_FLAGS = ("text_field", "source_field", "source_from_path", "source", "id_field", "on_error")


def _read_options(a) -> dict:
    """The reading flags given on the command line, as ReadConfig fields."""
    return {k: getattr(a, k) for k in READ_FLAGS if getattr(a, k) is not None}


def _read_config(a) -> ReadConfig:
    return ReadConfig(**_read_options(a))


def _add_quiet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress line and no summary table (warnings still print)")


def _add_long_threshold_arg(p: argparse.ArgumentParser, what: str):
    return p.add_argument("--long-threshold", type=size_type(), default=LONG_THRESHOLD, metavar="TOKENS",
                          help=size_help(f"a document of at least this many tokens is long; {what}"))


def _add_buckets_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--buckets", default=None, metavar="EDGES",
                   help=f"{what}: length-bucket edges in tokens, e.g. 0,1Ki,4Ki,32Ki (default: 0,1Ki,2Ki,...,128Ki, "
                        "the paper's; Ki = 1024)")


# (name, one line) of every command, in pipeline order: the top-level help lists them all
COMMANDS = (
    ("stats", "per-source document-length statistics of a corpus"),
    ("sample", "decide how many copies of each document to keep (the paper's mixtures)"),
    ("build", "tokenize and write packed token shards"),
    ("verify", "check every claim of a shard folder's manifest against its data"),
    ("inspect", "decode a sequence with document boundaries and sources marked"),
    ("export", "export shards for datatrove or Megatron-Core readers"),
    ("train", "continual pretraining on shards (lcdata_train; `lcdata train --help`)"),
    ("needle", "needle-in-a-haystack evaluation (lcdata_train; `lcdata needle --help`)"),
    ("eval-loss", "validation loss per source x position (lcdata_train; `lcdata eval-loss --help`)"),
    ("report", "one Markdown page from a pipeline run's output folders"),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lcdata", formatter_class=HelpFormatter,
                                description="Long-context training data (Fu et al. 2024): measure a corpus, sample "
                                            "it under a length distribution, write packed token shards, train on "
                                            "them and evaluate. Ten commands, in pipeline order; `lcdata COMMAND "
                                            "--help` for each. Counts take " + SIZE_HELP + ".")
    p.add_argument("--version", action="version", version=f"lcdata {VERSION}")
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of an error (as LCDATA_DEBUG=1); by default one line")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    line = dict(COMMANDS)

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=line[name], formatter_class=HelpFormatter, **kw)

    s = command("stats", description="Per-source and per-length-bucket document statistics of a corpus.")
    _add_read_args(s)
    s.add_argument("--out", required=True, help="output folder (local path or fsspec URL)")
    m = s.add_mutually_exclusive_group()
    m.add_argument("--tokenizer", default=None, help="local tokenizer.json for exact token counts (default: none, "
                                                     "lengths estimated from characters)")
    m.add_argument("--chars-per-token", type=float, default=None,
                   help=f"estimate tokens as characters / this (default: {PAPER_CHARS_PER_TOKEN}, the paper's)")
    s.add_argument("--calibrate", action="store_true", help="with --tokenizer: report the char estimate's error")
    _add_engine_arg(s)
    _add_buckets_arg(s, "table rows")
    _add_long_threshold_arg(s, "the share of tokens in long documents per source")
    s.add_argument("--no-doc-lengths", action="store_true", help="do not write doc_lengths.parquet")
    s.add_argument("--no-figure", action="store_true", help="do not write the PNG figure")
    _add_quiet_arg(s)
    s.add_argument("--overwrite", action="store_true",
                   help="replace the stats folder --out holds (only ever a folder `lcdata stats` wrote)")
    s.set_defaults(func=cmd_stats)
    add_executor_args(s)

    sp = command("sample", description="Decide how many copies of each document go into the training data.")
    _add_read_args(sp)
    sp.set_defaults(inputs=[])
    sp._actions[[a.dest for a in sp._actions].index("inputs")].nargs = "*"
    sp.add_argument("--strategy", required=True,
                    choices=["natural", "cut", "per-source", "global", "upsample-sources", "upsample-code-arxiv-book",
                             "target"], help="the mixture (docs/sample.md); per-source is the paper's recipe")
    sp.add_argument("--budget-tokens", required=True, type=size_type(minimum=0), metavar="TOKENS",
                    help=size_help("total tokens of the plan, e.g. 5000000, 5M or 1B"))
    sp.add_argument("--seed", type=int, default=0, help="seed of the document draw")
    sp.add_argument("--out", required=True, help="plan folder")
    sp.add_argument("--stats", default=None, help="stats folder from `lcdata stats` (default: lengths computed now)")
    sp.add_argument("--tokenizer", default=None, help="tokenizer.json, when computing lengths now or to check --stats "
                                                      "(default: none, lengths estimated from characters)")
    sp.add_argument("--chars-per-token", type=float, default=None,
                    help=f"character estimate when there is no tokenizer (default: {PAPER_CHARS_PER_TOKEN})")
    _add_engine_arg(sp)
    sp.add_argument("--max-repeat", type=size_type("copies"), default=4, metavar="N", help="most copies of one document")
    sp.add_argument("--cap", action="store_true", help="cap unreachable targets and report them instead of failing")
    add_alias(sp, "--threshold", _add_long_threshold_arg(sp, "per-source/global: shorter ones are down-weighted "
                                                             "by --short-keep"))
    sp.add_argument("--short-keep", type=float, default=0.1,
                    help="per-source/global: relative sampling weight of a short document (a ratio, long = 1)")
    sp.add_argument("--max-length", type=size_type(), default=None, metavar="TOKENS",
                    help=size_help("cut: truncate documents to this many tokens (default: none)"))
    sp.add_argument("--chunk", action="store_true", help="cut: split long documents into max-length chunks instead")
    sp.add_argument("--source-share", action="append", default=[], metavar="NAME=SHARE",
                    help="upsample-sources: target share of a source, a fraction (repeatable; default: none)")
    sp.add_argument("--source-shares", default=None, metavar="slimpajama|FILE",
                    help="fixed source shares instead of the input's own: the paper's SlimPajama table, or a "
                         "JSON/YAML file {source: share} (default: the input's own)")
    sp.add_argument("--upsampled-sources", default=None, metavar="NAME,NAME,...",
                    help="upsample-code-arxiv-book: the code/arXiv/book sources (default: SlimPajama's names)")
    sp.add_argument("--target-spec", default=None, help="target: JSON/YAML spec file (see docs/sample.md; default: none)")
    _add_buckets_arg(sp, "report rows")
    sp.add_argument("--no-figure", action="store_true", help="do not write sample.png")
    _add_quiet_arg(sp)
    sp.add_argument("--overwrite", action="store_true",
                    help="replace the plan folder --out holds (only ever a folder `lcdata sample` wrote)")
    sp.set_defaults(func=cmd_sample)
    add_executor_args(sp)

    b = command("build", description="Tokenize a corpus (optionally through a sample plan) into packed token shards.")
    _add_read_args(b)
    b.add_argument("--plan", default=None, help="plan folder from `lcdata sample` (default: every document once)")
    b.add_argument("--tokenizer", required=True, help="local tokenizer.json")
    b.add_argument("--seq-len", type=size_type(), required=True, metavar="TOKENS",
                   help=size_help("tokens per sequence, e.g. 131072 or 128Ki"))
    b.add_argument("--out", required=True, help="shard folder (local path or fsspec URL)")
    b.add_argument("--packing", choices=["concat", "best-fit"], default="concat",
                   help="concat = the paper's concatenate-and-chunk; best-fit = best-fit-decreasing bins + padding")
    b.add_argument("--bos", default="auto", help="BOS at each document: auto (the tokenizer's, if any), none, or a token")
    b.add_argument("--eos", default="auto", help="EOS after each document: auto (only if there is no BOS), none, or a token")
    b.add_argument("--shard-size", type=size_type(), default="64Mi", metavar="TOKENS",
                   help=size_help("tokens per shard file"))
    b.add_argument("--seed", type=int, default=0, help="seed of the document and sequence shuffles")
    b.add_argument("--memory-limit", type=size_type("bytes", minimum=1), default=None, metavar="BYTES",
                   help=size_help("memory for the layout phase, e.g. 8Gi; above it the layout is computed in chunks "
                                  "through files in the work folder, with the same output bytes (default: a quarter "
                                  "of the memory this process may use: the machine's, or its cgroup limit)", "bytes"))
    b.add_argument("--overwrite", action="store_true",
                   help="replace the shard folder --out holds (only ever a folder `lcdata build` wrote)")
    b.add_argument("--resume", action="store_true", help="continue an interrupted build with the same config")
    b.add_argument("--no-split", action="store_true", help="never cut long texts before encoding")
    add_alias(b, "--dtype", b.add_argument(
        "--token-dtype", dest="token_dtype", choices=["auto", "uint16", "uint32"], default="auto",
        help="integer type of the stored token ids (auto: uint16 when the tokenizer's largest id fits, else uint32)"))
    _add_engine_arg(b)
    _add_quiet_arg(b)
    b.set_defaults(func=cmd_build)
    add_executor_args(b)

    v = command("verify", description="Prints one FAIL line per problem (exit 1) or one OK line (docs/format.md).")
    v.add_argument("folder", help="shard folder from `lcdata build`")
    v.set_defaults(func=cmd_verify)

    i = command("inspect", description="Decode one packed sequence, with document boundaries and sources marked.")
    i.add_argument("folder", help="shard folder from `lcdata build`")
    i.add_argument("--seq", type=int, default=0, metavar="INDEX", help="sequence number, 0 to n_sequences - 1")
    i.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the one in the manifest)")
    i.add_argument("--max-chars", type=size_type("characters"), default=400, metavar="CHARS",
                   help=size_help("characters shown per document piece", "characters"))
    i.set_defaults(func=cmd_inspect)

    e = command("export", description="Verifies the shard folder first; --out may not be, contain or lie inside it.")
    e.add_argument("folder", help="shard folder from `lcdata build`")
    e.add_argument("--format", choices=["datatrove", "megatron"], required=True,
                   help="datatrove (its token-file reader) or megatron (Megatron-Core's .bin/.idx indexed dataset)")
    e.add_argument("--megatron-layout", choices=["document", "pieces"], default="document",
                   help="with --format megatron: 'document' = one Megatron sequence per document instance, its "
                        "pieces joined (Megatron packs itself), 'pieces' = one sequence per piece as lcdata's "
                        "packing cut it (docs/format.md)")
    e.add_argument("--out", required=True, help="export folder")
    e.add_argument("--overwrite", action="store_true",
                   help="replace the export folder --out holds (only ever a folder `lcdata export` wrote)")
    e.set_defaults(func=cmd_export)

    for name in TRAIN_COMMANDS:  # parsed by lcdata_train (torch), listed here
        command(name, add_help=False)

    r = command("report", description="Write DIR/report.md from DIR/{stats,plan,shards,run,needle,eval-loss}.")
    r.add_argument("dir", help="the run folder (the Makefile's OUT): its stage folders are found by their manifests, "
                               "whatever their names")
    r.add_argument("--name", default=None, help="the report's title (default: the run folder's name)")
    r.add_argument("--ablation", nargs="+", default=None, metavar="STRATEGY",
                   help="paper-ablation layout: DIR/<strategy>/seed-K/... side by side, the first strategy the baseline "
                        "(default: a pipeline run's report)")
    r.add_argument("--seeds", nargs="+", type=int, default=None, metavar="K",
                   help="with --ablation: the seeds to read (default: every seed-K folder all strategies have)")
    r.set_defaults(func=cmd_report)
    return p


def cmd_report(a) -> int:
    from .report.markdown import write_ablation_report, write_report

    if a.seeds and not a.ablation:
        raise ConfigError("--seeds only applies with --ablation (the paper-ablation layout)")
    if a.name and a.ablation:
        raise ConfigError("--name titles a pipeline run's report; an --ablation report is titled by its folder: "
                          "drop --name")
    path = write_ablation_report(a.dir, a.ablation, a.seeds) if a.ablation else write_report(a.dir, a.name)
    print(f"wrote {path}")
    return 0


def cmd_build(a) -> int:
    from .build import BuildConfig, run_build

    cfg = BuildConfig(tokenizer=a.tokenizer, seq_len=a.seq_len, packing=a.packing, bos=a.bos, eos=a.eos,
                      shard_tokens=a.shard_size, seed=a.seed, plan=a.plan, split_long=not a.no_split, dtype=a.token_dtype,
                      read=_read_config(a), engine=a.engine)
    r = _run(a, lambda: run_build(a.inputs, a.out, cfg, workers=a.workers, overwrite=a.overwrite,
                                  resume=a.resume, progress=not a.quiet, memory_limit=a.memory_limit),
             lambda ex, pipelines: pipelines.run_build_distributed(a.inputs, a.out, cfg, ex, overwrite=a.overwrite,
                                                                   resume=a.resume, memory_limit=a.memory_limit))
    if r is None:
        return 0
    if not a.quiet:
        m = r.manifest
        print(f"{m['n_sequences']:,} sequences x {m['seq_len']:,} tokens ({m['dtype']}), {m['n_tokens']:,} document "
              f"tokens, padding {m['padding_tokens']:,}, dropped tail {m['dropped_tokens']:,}, "
              f"{len(m['shards'])} shard file(s), {m['elapsed_s']:.1f} s")
        phases = ", ".join(f"{k} {v:.2f} s" for k, v in (m.get("phase_s") or {}).items() if v is not None)
        if phases:
            print(f"phases: {phases}")
        import polars as pl

        from .util.table import render

        rows = pl.DataFrame([{"source": k, "documents": v["documents"], "tokens": v["tokens"],
                              "share": v["tokens"] / max(1, m["n_tokens"])} for k, v in m["per_source"].items()])
        print(render(rows, [("source", "source", "str"), ("documents", "docs", "int"), ("tokens", "tokens", "int"),
                            ("share", "share", "pct")]))
        n = len(m["shards"])
        print(_plan_line(a.plan))
        print(_engine_line(m.get("engine")))
        print(_wrote(a.out, [f"{n} shard file(s) shard-*.bin + shard-*.seg.npy", "documents.parquet", "manifest.json"]))
    _warn_read(r.manifest["read_report"])
    return 0


def _run(a, local, scaled, *, scale: bool = True):
    """The one place a command picks where it runs: ``scaled(executor, lcdata.scaleout.pipelines)`` when ``--executor``
    is given (and ``scale``), else ``local()``. Returns the result, or None when the jobs were submitted
    (Slurm), after saying where the output and the logs will be."""
    ex = executor_from_args(a)
    if ex is None or not scale:
        return local()
    from .scaleout import pipelines as pipelines

    r = scaled(ex, pipelines)
    if r is None:
        logs = getattr(ex, "logging_dir", None) or f"{a.out}/_scaleout/logs"
        print(f"submitted to {getattr(ex, 'kind', 'the executor')}; the last job writes {a.out}/; logs in {logs} "
              "(follow with squeue; --wait waits for the jobs and names any task that fails)")
    return r


def cmd_verify(a) -> int:
    from .shards import verify_shards

    problems = verify_shards(a.folder)
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"OK {a.folder}: every claim of manifest.json matches the data (schema, names, sizes, SHA-256, counts, "
          "pieces, token ids, special tokens, per-source totals)")
    return 0


def cmd_inspect(a) -> int:
    from .shards import inspect_sequence, open_shards

    if a.max_chars < 1:
        raise ConfigError(f"--max-chars {a.max_chars} must be >= 1 (characters shown per document piece)")
    n = len(open_shards(a.folder))
    if not 0 <= a.seq < n:
        have = f"its sequences are numbered 0 to {n - 1:,}" if n else "it holds no sequence"
        raise ConfigError(f"--seq {a.seq} is out of range for {a.folder}: {have}")
    print(inspect_sequence(a.folder, a.seq, a.tokenizer, a.max_chars))
    return 0


def cmd_export(a) -> int:
    from .shards.export import export_shards

    man = export_shards(a.folder, a.format, a.out, overwrite=a.overwrite, megatron_layout=a.megatron_layout)
    print(f"wrote {len(man['files'])} files to {a.out}/; read with {man['read_with']}")
    return 0


def cmd_sample(a) -> int:
    from .sample.config import SampleConfig, TargetSpec, load_source_shares, parse_source_shares
    from .sample.run import run_sample, sample_table

    kw = {}
    if a.source_shares:
        kw["source_share_table"], kw["source_share_origin"] = load_source_shares(a.source_shares)
    if a.upsampled_sources:
        kw["upsampled_sources"] = tuple(sorted(x for x in a.upsampled_sources.split(",") if x))
    if a.buckets:
        kw["report_buckets"] = with_notes("lcdata sample", parse_buckets, a.buckets)
    cfg = SampleConfig(
        strategy=a.strategy, budget_tokens=a.budget_tokens, seed=a.seed, max_repeat=a.max_repeat,
        threshold=a.long_threshold, short_keep=a.short_keep, max_length=a.max_length, chunk=a.chunk,
        source_shares=parse_source_shares(a.source_share),
        target=TargetSpec.load(a.target_spec) if a.target_spec else None,
        on_cap="cap" if a.cap else "error", **kw)
    scfg = None
    if a.stats is None or a.tokenizer:
        skw = {"chars_per_token": a.chars_per_token} if a.chars_per_token else {}
        scfg = StatsConfig(tokenizer=a.tokenizer, read=_read_config(a), engine=a.engine, **skw)
    requested = None
    if a.stats is not None:  # flags that would change the lengths: must agree with the stats folder's
        requested = {f"read.{k}": v for k, v in _read_options(a).items()}
        if a.chars_per_token is not None:
            requested["chars_per_token"] = a.chars_per_token
    res = _run(a, lambda: run_sample(a.inputs, a.out, cfg, stats_dir=a.stats, stats_config=scfg, workers=a.workers,
                                     progress=not a.quiet, figure=not a.no_figure, requested=requested,
                                     overwrite=a.overwrite),
               lambda ex, pipelines: pipelines.run_sample_distributed(a.inputs, a.out, cfg, ex, stats_config=scfg,
                                                                      figure=not a.no_figure, overwrite=a.overwrite),
               scale=a.stats is None)  # with --stats there is nothing to scale out: the plan is solved here
    if res is None:
        return 0
    if not a.quiet:
        print(sample_table(res, cfg.threshold))
        print()
        print(_engine_line(res.manifest.get("engine"), res.manifest["length_unit"]))
        print(_wrote(a.out, ["plan.parquet", "report.parquet", "groups.parquet", "report.json"]
                     + ([] if a.no_figure else ["sample.png"]) + ["plan.json"]))
    for w in res.manifest.get("recipe_warnings", []):  # even with --quiet: the recipe did not hold
        print(f"lcdata sample: warning: {w}", file=sys.stderr)
    from .report.warnings import target_misses

    misses = target_misses(res.plan.report, cfg.budget_tokens)  # the lines report.md gives (docs/sample.md)
    for w in misses if not a.quiet else []:
        print(f"lcdata sample: warning: {w}", file=sys.stderr)
    if misses and a.quiet:
        print(f"lcdata sample: warning: {len(misses)} source or length-bucket targets missed by more than their "
              f"tolerance (run without --quiet, or `lcdata report`)", file=sys.stderr)
    _warn_read(res.manifest["read_report"])
    return 0


def cmd_stats(a) -> int:
    kw = {}
    if a.buckets:
        kw["buckets"] = with_notes("lcdata stats", parse_buckets, a.buckets)
    if a.chars_per_token is not None:
        kw["chars_per_token"] = a.chars_per_token
    cfg = StatsConfig(tokenizer=a.tokenizer, calibrate=a.calibrate, long_threshold=a.long_threshold,
                      doc_lengths=not a.no_doc_lengths, read=_read_config(a), engine=a.engine, **kw)
    from .stats.run import run_stats
    from .util.table import stats_table

    result = _run(a, lambda: run_stats(a.inputs, a.out, cfg, workers=a.workers, progress=not a.quiet,
                                       figure=not a.no_figure, overwrite=a.overwrite),
                  lambda ex, pipelines: pipelines.run_stats_distributed(a.inputs, a.out, cfg, ex,
                                                                        figure=not a.no_figure, overwrite=a.overwrite))
    if result is None:
        return 0

    if not a.quiet:
        print(stats_table(result))
        print()
        print(_engine_line(result.engine, "tokens" if cfg.tokenizer else f"characters / {cfg.chars_per_token}"))
        print(_wrote(a.out, ["sources.parquet", "buckets.parquet", "histogram.parquet", "files.parquet", "skips.parquet"]
                     + ([] if a.no_doc_lengths else ["doc_lengths.parquet"])
                     + ([] if a.no_figure else ["length_distribution.png"]) + ["stats.json"]))
    _warn_read(result.read_report)
    return 0


def _engine_line(engine: dict | None, lengths: str = "tokens") -> str:
    """The line that says which tokenizer engine counted the tokens (or that lengths are estimated)."""
    if not engine:
        return f"tokenizer engine: none (lengths in estimated tokens: {lengths})" if lengths != "tokens" \
            else "tokenizer engine: none"
    return f"tokenizer engine: {engine['name']} ({engine.get('reason', '')})"


def _plan_line(plan: str | None) -> str:
    """The line that says which documents a build took: a plan's strategy, budget, seed and source shares, or
    every document once."""
    if plan is None:
        return "documents: every document once (no --plan)"
    from .util.io import join, read_json

    c = read_json(join(plan, "plan.json"))["config"]
    return (f"documents: plan {plan} (strategy {c['strategy']}, budget {c['budget_tokens']:,} tokens, seed {c['seed']}, "
            f"source shares: {c.get('source_share_origin', 'input')})")


def _wrote(out: str, files: list[str]) -> str:
    """The line that says where a command's outputs went (every file, in the order written)."""
    return f"wrote {out.rstrip('/')}/: {', '.join(files)}"


def _warn_read(read_report: dict) -> None:
    """Print what a command could not read (skipped records by reason, unreadable file remainders) to stderr,
    even with --quiet: data that was not used is never silent."""
    from .util.table import read_warning

    text = read_warning(read_report)
    if text:
        print(text, file=sys.stderr)


TRAIN_COMMANDS = ("train", "needle", "eval-loss")  # dispatched lazily to lcdata_train (torch), never imported otherwise


# The modules a command imports when it runs (`run` imports them first, with the cyclic GC paused).
COMMAND_MODULES = {
    "stats": ("lcdata.stats.run", "lcdata.util.table"),
    "sample": ("lcdata.sample.run", "lcdata.sample.config", "lcdata.util.table"),
    "build": ("lcdata.build.run", "lcdata.util.table"),
}


def _tune_process() -> None:
    """Process settings for the data commands (they do no linear algebra and allocate file-sized buffers):
    NumPy's OpenBLAS without its thread pool (whose threads spin for ~0.1 CPU-s after NumPy loads), and
    glibc's malloc keeping freed buffers of up to 32 MiB for reuse instead of unmapping them and faulting
    in fresh zeroed pages for the next file (together about 10% of the CPU of `lcdata stats` on 2 cores).
    An explicit ``OPENBLAS_NUM_THREADS``, ``MALLOC_*_`` or ``GLIBC_TUNABLES=glibc.malloc.*`` setting wins."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # read when NumPy loads OpenBLAS, which is later
    if (sys.platform != "linux" or any(k.startswith("MALLOC_") for k in os.environ)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (its maximum on 64-bit glibc)
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def run(argv: list[str] | None = None) -> int:
    """The ``lcdata`` program (console script and ``python -m lcdata``): `main` as a one-shot process.

    Only the data commands (``COMMAND_MODULES``) get the process settings; the training commands, whose
    libraries have finalizers, run exactly as `main`. Meant to be called once per process (it freezes the
    process's objects out of the cyclic GC); call `main` to run commands in a longer-lived process."""
    argv = sys.argv[1:] if argv is None else list(argv)
    modules = COMMAND_MODULES.get(argv[0], ()) if argv else ()
    if not modules or "--help" in argv or "-h" in argv:
        return main(argv)
    _tune_process()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for m in modules:
            importlib.import_module(m)
    finally:
        gc.freeze()  # imported objects live as long as the process: no later collection needs to visit them
        if was_enabled:
            gc.enable()
    try:
        return main(argv)
    finally:
        gc.freeze()  # the process ends now: no collection at exit (lcdata's objects have no finalizers)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = bool(argv) and argv[0] == "--debug"
    if debug and len(argv) > 1 and argv[1] in TRAIN_COMMANDS:
        argv = argv[1:]
    if argv and argv[0] in TRAIN_COMMANDS:
        try:
            from lcdata_train.cli import main as train_main
        except ImportError as e:
            print(f"lcdata {argv[0]}: error: needs the training extra ({e}); pip install 'lcdata[train]'",
                  file=sys.stderr)
            return 2
        return train_main(argv, debug=debug)
    parser = build_parser()
    args = parser.parse_args(argv)
    return cli_errors(args.command, lambda: args.func(args), debug=args.debug)

if __name__ == "__main__":
    sys.exit(run())
