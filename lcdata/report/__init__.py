"""`lcdata report`: one Markdown page (`markdown`) from a pipeline's output folders."""

from __future__ import annotations

from ..util.lazy import lazy_exports

# public name -> the module defining it, imported on first use (PEP 562): importing one module of this
# package (e.g. the CLI importing a light one) does not import the others
_EXPORTS = {
    "STAGES": "markdown",
    "check_run_folder": "markdown",
    "eval_loss_section": "markdown",
    "loss_curve": "markdown",
    "md_table": "markdown",
    "needle_section": "markdown",
    "pivot_deltas": "markdown",
    "pivot_losses": "markdown",
    "sample_section": "markdown",
    "shards_section": "markdown",
    "stats_section": "markdown",
    "train_section": "markdown",
    "ablation_seeds": "markdown",
    "ablation_loss_section": "markdown",
    "write_ablation_report": "markdown",
    "write_report": "markdown",
    "find_stages": "markdown",
    "scrub_paths": "markdown",
    "shown_path": "markdown",
    "settings_section": "markdown",
    "target_misses": "warnings",
    "long_shares": "warnings",
    "SOURCE_TOLERANCE": "warnings",
    "BUCKET_TOLERANCE": "warnings",
    "ablation_differences": "noise",
    "paired_bootstrap": "noise",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
