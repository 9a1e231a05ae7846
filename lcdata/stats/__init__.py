"""`lcdata stats`: the pure length math over Polars/Arrow frames (`lengths`), `StatsConfig` (`config`), and the run with the stats folder (`run`: compute, merge, write, load, fingerprint)."""

from __future__ import annotations

from ..util.lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
