"""lcdata: long-context training data from multi-source corpora (Fu et al. 2024, per-source upsampling).

The core never imports torch; `lcdata_train` is the training companion.

>>> import lcdata
>>> r = lcdata.compute_stats(["data/demo"], lcdata.StatsConfig())  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .config import DEFAULT_BUCKETS, ReadConfig, StatsConfig  # noqa: E402
from .corpus import FileReport, iter_batches, read_corpus  # noqa: E402
from .errors import ConfigError, InputError, LcdataError, TokenizerError  # noqa: E402
from .inputs import InputFile, resolve_inputs  # noqa: E402
from .stats_run import StatsResult, compute_stats, load_stats, merge_stats, run_stats  # noqa: E402

__all__ = [
    "DEFAULT_BUCKETS", "ReadConfig", "StatsConfig", "FileReport", "iter_batches", "read_corpus",
    "ConfigError", "InputError", "LcdataError", "TokenizerError", "InputFile", "resolve_inputs",
    "StatsResult", "compute_stats", "load_stats", "merge_stats", "run_stats",
]
