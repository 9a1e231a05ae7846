"""Deprecated alias of `lcdata.util.config` / `lcdata.corpus.config` / `lcdata.stats.config` (the package layout of docs/architecture.md); removed in the next release."""

import warnings

from lcdata.corpus.config import *  # noqa: F401,F403
from lcdata.stats.config import *  # noqa: F401,F403
from lcdata.util.config import *  # noqa: F401,F403

warnings.warn("lcdata.config is deprecated: import lcdata.util.config / lcdata.corpus.config / lcdata.stats.config instead (it goes in the next release)",
              DeprecationWarning, stacklevel=2)
