"""Deprecated alias of `lcdata.scaleout.executors` (the package layout of docs/architecture.md); removed in the next release."""

import warnings

from lcdata.scaleout.executors import *  # noqa: F401,F403

warnings.warn("lcdata.executors is deprecated: import lcdata.scaleout.executors instead (it goes in the next release)",
              DeprecationWarning, stacklevel=2)
