"""The `lcdata` command line. It only maps flags to config dataclasses and calls the Python API.

Errors derived from `LcdataError` are printed as one message (file, line, fix) with exit code 2; no
traceback unless ``LCDATA_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import PAPER_CHARS_PER_TOKEN, ReadConfig, StatsConfig, parse_buckets
from .errors import LcdataError


def _add_read_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading the corpus")
    g.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, directories, globs or fsspec URLs (.jsonl, .jsonl.gz, .jsonl.zst, .json.zst, .parquet)")
    g.add_argument("--text-field", default="text", help="dotted path of the text field (default: text)")
    g.add_argument("--source-field", default="meta.redpajama_set_name",
                   help="dotted path of the source field (default: meta.redpajama_set_name, as in SlimPajama)")
    g.add_argument("--source-from-path", action="store_true", help="source = the name of each file's parent folder")
    g.add_argument("--source", default=None, metavar="NAME", help="one source name for every document")
    g.add_argument("--id-field", default=None, help="field holding a document id (default: file:row)")
    g.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                   help="on a bad record: stop with an error (default) or skip it and count it by reason")
    g.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")


def _read_config(a) -> ReadConfig:
    return ReadConfig(text_field=a.text_field, source_field=a.source_field, source_from_path=a.source_from_path,
                      source=a.source, id_field=a.id_field, on_error=a.on_error)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="lcdata", description="Long-context training data: stats, sample, build.")
    p.add_argument("--version", action="version", version=f"lcdata {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("stats", help="per-source document-length statistics",
                       description="Per-source and per-length-bucket document statistics of a corpus.")
    _add_read_args(s)
    s.add_argument("--out", required=True, help="output folder (local path or fsspec URL)")
    m = s.add_mutually_exclusive_group()
    m.add_argument("--tokenizer", default=None, help="local tokenizer.json for exact token counts")
    m.add_argument("--chars-per-token", type=float, default=None,
                   help=f"estimate tokens as chars / this (default {PAPER_CHARS_PER_TOKEN}, the paper's)")
    s.add_argument("--calibrate", action="store_true", help="with --tokenizer: report the char estimate's error")
    s.add_argument("--buckets", default=None, help="length-bucket edges, e.g. 0,1K,2K,4K,...,128K (default)")
    s.add_argument("--long-threshold", type=int, default=4096, help="'long document' threshold in tokens")
    s.add_argument("--no-doc-lengths", action="store_true", help="do not write doc_lengths.parquet")
    s.add_argument("--no-figure", action="store_true", help="do not write the PNG figure")
    s.add_argument("--quiet", action="store_true", help="no progress line and no table")
    s.set_defaults(func=cmd_stats)
    return p


def cmd_stats(a) -> int:
    from .stats_run import run_stats
    from .table import stats_table

    kw = {}
    if a.buckets:
        kw["buckets"] = parse_buckets(a.buckets)
    if a.chars_per_token is not None:
        kw["chars_per_token"] = a.chars_per_token
    cfg = StatsConfig(tokenizer=a.tokenizer, calibrate=a.calibrate, long_threshold=a.long_threshold,
                      doc_lengths=not a.no_doc_lengths, read=_read_config(a), **kw)
    result = run_stats(a.inputs, a.out, cfg, workers=a.workers, progress=not a.quiet, figure=not a.no_figure)
    if not a.quiet:
        print(stats_table(result))
        if result.skips.height:
            print("\nskipped by reason:")
            for r in result.skips.group_by("reason").agg(n=__import__("polars").col("n_docs").sum()).sort("reason").iter_rows():
                print(f"  {r[0]}: {r[1]:,}")
        bad = result.files.filter(result.files["error"].is_not_null())
        for r in bad.iter_rows(named=True):
            print(f"  unreadable: {r['file']}: {r['error']} ({r['error_detail']})")
        print(f"\nwrote {a.out}/ (sources.parquet, buckets.parquet, stats.json, ...)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LcdataError as e:
        if os.environ.get("LCDATA_DEBUG"):
            raise
        print(f"lcdata {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
