"""Deprecated alias of `lcdata.sample.solver` (the package layout of docs/architecture.md); removed in the next release."""

import warnings

from lcdata.sample.solver import *  # noqa: F401,F403

warnings.warn("lcdata.sampling is deprecated: import lcdata.sample.solver instead (it goes in the next release)",
              DeprecationWarning, stacklevel=2)
