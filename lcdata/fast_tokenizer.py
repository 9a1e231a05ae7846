"""Deprecated alias of `lcdata.tokenizer.tiktoken_engine` (the package layout of docs/architecture.md); removed in the next release."""

import warnings

from lcdata.tokenizer.tiktoken_engine import *  # noqa: F401,F403

warnings.warn("lcdata.fast_tokenizer is deprecated: import lcdata.tokenizer.tiktoken_engine instead (it goes in the next release)",
              DeprecationWarning, stacklevel=2)
