"""Deprecated alias of `lcdata.sample.config` (the package layout of docs/architecture.md); removed in the next release."""

import warnings

from lcdata.sample.config import *  # noqa: F401,F403

warnings.warn("lcdata.strategies is deprecated: import lcdata.sample.config instead (it goes in the next release)",
              DeprecationWarning, stacklevel=2)
