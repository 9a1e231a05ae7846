"""Deprecated alias of `lcdata.stats.run` (the package layout of docs/architecture.md); removed in the next release."""

import warnings

from lcdata.stats.run import *  # noqa: F401,F403

warnings.warn("lcdata.stats_run is deprecated: import lcdata.stats.run instead (it goes in the next release)",
              DeprecationWarning, stacklevel=2)
