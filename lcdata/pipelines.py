"""Deprecated alias of `lcdata.scaleout.pipelines` (the package layout of docs/architecture.md); removed in the next release."""

import warnings

from lcdata.scaleout.pipelines import *  # noqa: F401,F403

warnings.warn("lcdata.pipelines is deprecated: import lcdata.scaleout.pipelines instead (it goes in the next release)",
              DeprecationWarning, stacklevel=2)
