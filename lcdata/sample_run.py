"""Deprecated alias of `lcdata.sample.run` (the package layout of docs/architecture.md); removed in the next release."""

import warnings

from lcdata.sample.run import *  # noqa: F401,F403

warnings.warn("lcdata.sample_run is deprecated: import lcdata.sample.run instead (it goes in the next release)",
              DeprecationWarning, stacklevel=2)
