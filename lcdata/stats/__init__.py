"""`lcdata stats`: the pure length math over Polars/Arrow frames (`lengths`), `StatsConfig` (`config`), and the run with the stats folder (`run`: compute, merge, write, load, fingerprint)."""

from __future__ import annotations

# public name -> the module defining it, imported on first use (PEP 562): importing one module of this
# package (e.g. the CLI importing a light one) does not import the others
_EXPORTS = {
    "StatsConfig": "config",
    "DOC_ARROW": "lengths",
    "DOC_SCHEMA": "lengths",
    "HIST_SCHEMA": "lengths",
    "QUANTILES": "lengths",
    "bucket_index": "lengths",
    "bucket_table": "lengths",
    "doc_table": "lengths",
    "estimate_tokens": "lengths",
    "histogram": "lengths",
    "merge_histograms": "lengths",
    "summarize_buckets": "lengths",
    "summarize_sources": "lengths",
    "FILES_SCHEMA": "run",
    "SKIPS_SCHEMA": "run",
    "DocWriter": "run",
    "StatsResult": "run",
    "compute_stats": "run",
    "fingerprint": "run",
    "load_stats": "run",
    "merge_stats": "run",
    "reports_to_frames": "run",
    "run_stats": "run",
    "stats_one_file": "run",
    "stats_protect": "run",
    "stats_tokenizer": "run",
    "write_stats": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
