"""`StatsConfig`: how document lengths are measured (a tokenizer, or the paper's chars/3.68) and summarised.

Frozen and validated on construction (a `ConfigError` naming the value and the fix), shared by the Python
API and the CLI; `to_dict()` is what `stats.json` records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..corpus.config import ReadConfig
from ..errors import ConfigError
from ..util.config import DEFAULT_BUCKETS, LONG_THRESHOLD, PAPER_CHARS_PER_TOKEN, as_dict, check_buckets, check_engine


@dataclass(frozen=True, kw_only=True, slots=True)
class StatsConfig:
    """How document lengths are measured and summarised.

    ``tokenizer``: path to a local HF `tokenizers` JSON file for exact token counts; without it lengths
    are estimated as ceil(chars / chars_per_token); ``engine`` picks how it runs (auto | hf | tiktoken, the
    same counts). ``calibrate`` (needs a tokenizer) also reports, per
    source, the error of that estimate. ``buckets``: increasing edges starting at 0; the last bucket is open.
    """

    tokenizer: str | None = None
    chars_per_token: float = PAPER_CHARS_PER_TOKEN
    buckets: tuple[int, ...] = DEFAULT_BUCKETS
    long_threshold: int = LONG_THRESHOLD
    calibrate: bool = False
    doc_lengths: bool = True  # also write the per-document length table (used by `lcdata sample`)
    read: ReadConfig = field(default_factory=ReadConfig)
    engine: str = "auto"  # tokenizer engine (auto | hf | tiktoken): speed only, not in the stats fingerprint

    def __post_init__(self):
        if not (self.chars_per_token > 0):
            raise ConfigError(f"chars_per_token={self.chars_per_token} must be > 0 (the paper uses 3.68)")
        object.__setattr__(self, "buckets", check_buckets(self.buckets))
        if self.long_threshold < 1:
            raise ConfigError(f"long_threshold={self.long_threshold} must be >= 1 token")
        check_engine(self.engine)
        if self.engine != "auto" and not self.tokenizer:
            raise ConfigError(f"engine={self.engine!r} needs a tokenizer (it runs one); pass --tokenizer "
                              "tokenizer.json, or leave the engine at auto for the chars/token estimate")
        if self.calibrate and not self.tokenizer:
            raise ConfigError("calibrate needs a tokenizer: pass --tokenizer tokenizer.json with --calibrate")

    def to_dict(self) -> dict:
        d = as_dict(self)
        d["read"] = self.read.to_dict()
        return d
