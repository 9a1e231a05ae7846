"""lcdata: long-context training data from multi-source corpora (Fu et al. 2024, per-source upsampling).

The core never imports torch; `lcdata_train` is the training companion. The names below are imported on
first use (PEP 562), so ``import lcdata`` (and the CLI's start) does not load Polars and Arrow before they
are needed.

>>> import lcdata
>>> r = lcdata.compute_stats(["data/demo"], lcdata.StatsConfig())  # doctest: +SKIP
"""

from .util.lazy import lazy_exports
from .version import VERSION as __version__  # noqa: F401 (the package version)

_EXPORTS = {
    "DEFAULT_BUCKETS": "util.config", "ReadConfig": "corpus.config", "StatsConfig": "stats.config",
    "FileReport": "corpus.reader", "Lengths": "corpus.reader", "iter_batches": "corpus.reader",
    "iter_lengths": "corpus.reader", "read_corpus": "corpus.reader",
    "ConfigError": "errors", "InputError": "errors", "LcdataError": "errors", "TokenizerError": "errors",
    "InputFile": "corpus.inputs", "resolve_inputs": "corpus.inputs",
    "StatsResult": "stats.run", "compute_stats": "stats.run", "load_stats": "stats.run",
    "merge_stats": "stats.run", "run_stats": "stats.run",
}

__all__ = [
    "DEFAULT_BUCKETS", "ReadConfig", "StatsConfig", "FileReport", "Lengths", "iter_batches", "iter_lengths",
    "read_corpus",
    "ConfigError", "InputError", "LcdataError", "TokenizerError", "InputFile", "resolve_inputs",
    "StatsResult", "compute_stats", "load_stats", "merge_stats", "run_stats",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
