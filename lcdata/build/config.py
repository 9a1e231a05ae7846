"""`BuildConfig`: the options of `lcdata build` (tokenizer, sequence length, packing, specials, shard size, seed,
plan, dtype, reading, engine). Frozen and validated on construction; `to_dict()` is what the manifest records."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..corpus.config import ReadConfig
from ..errors import ConfigError
from ..shards.format import PACKINGS
from ..util.config import as_dict, check_engine, check_seed


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildConfig:
    """``bos`` / ``eos``: 'auto' (the tokenizer's BOS at each document start if it has one, else its EOS
    after each document), 'none', or a token string. ``shard_tokens``: tokens per shard file (rounded to
    whole sequences)."""

    tokenizer: str
    seq_len: int
    packing: str = "concat"
    bos: str = "auto"
    eos: str = "auto"
    shard_tokens: int = 1 << 26
    seed: int = 0
    plan: str | None = None
    split_long: bool = True
    dtype: str = "auto"  # auto = uint16 when the tokenizer's largest id fits, else uint32
    read: ReadConfig = field(default_factory=ReadConfig)
    engine: str = "auto"  # tokenizer engine, auto | hf | tiktoken: speed only (same ids), not in the identity

    def __post_init__(self):
        if self.dtype not in ("auto", "uint16", "uint32"):
            raise ConfigError(f"dtype={self.dtype!r} must be auto, uint16 or uint32")
        if self.seq_len < 2:
            raise ConfigError(f"seq_len={self.seq_len} must be >= 2 (inputs and labels need two tokens)")
        if self.packing not in PACKINGS:
            raise ConfigError(f"packing={self.packing!r} must be one of {PACKINGS}")
        if self.shard_tokens < 1:
            raise ConfigError(f"shard_tokens={self.shard_tokens} must be >= 1")
        check_engine(self.engine)
        check_seed(self.seed)

    def to_dict(self) -> dict:
        d = as_dict(self)
        d["read"] = self.read.to_dict()
        return d
