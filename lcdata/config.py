"""Frozen configuration dataclasses shared by the Python API and the CLI.

The CLI only maps flags to these objects and calls the API; validation happens here, on construction,
so a bad value fails the same way from Python and from the shell (a `ConfigError` naming the value and
the fix). Configs are plain data: `to_dict()` gives what goes into output manifests.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from .errors import ConfigError

ON_ERROR = ("raise", "skip")
ENGINES = ("auto", "hf", "tiktoken")  # tokenizer engines: speed only, never results (lcdata.tokenizer)
# Length-bucket edges of the paper's Figure 2: 0, 1K, 2K, ..., 128K, then an open bucket >128K.
DEFAULT_BUCKETS: tuple[int, ...] = (0,) + tuple(1024 * 2**i for i in range(8))
PAPER_CHARS_PER_TOKEN = 3.68  # LLaMA estimate used by the paper's public code
LONG_THRESHOLD = 4096


def default_workers() -> int:
    """All usable cores (respects CPU affinity / cgroup-pinned sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def as_dict(obj) -> dict:
    """The fields of a config dataclass as a JSON-ready dict (tuples as lists; nested configs as they are)."""
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class ReadConfig:
    """How documents are read from a corpus.

    Source of each document, in order of precedence: ``source`` (one name for all), else
    ``source_from_path`` (the file's parent folder name), else ``source_field`` (a dotted path into
    nested JSON / struct columns, SlimPajama's ``meta.redpajama_set_name`` by default).
    """

    text_field: str = "text"
    source_field: str = "meta.redpajama_set_name"
    source_from_path: bool = False
    source: str | None = None
    id_field: str | None = None
    on_error: str = "raise"
    chunk_bytes: int = 32 << 20  # decompressed bytes parsed at once; memory per worker ~4x this

    def __post_init__(self):
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"on_error={self.on_error!r} is not one of {ON_ERROR}; use 'raise' or 'skip'")
        for name in ("text_field", "source_field"):
            v = getattr(self, name)
            if not v or any(not p for p in v.split(".")):
                raise ConfigError(f"{name}={v!r} is not a dotted field path like 'text' or 'meta.source'")
        if self.id_field is not None and not self.id_field:
            raise ConfigError("id_field='' is empty; give a field name or leave it unset")
        if self.source is not None and not self.source:
            raise ConfigError("source='' is empty; give a source name or leave it unset")
        if self.source is not None and self.source_from_path:
            raise ConfigError("give either source (one name for all) or source_from_path, not both")
        if self.chunk_bytes < 1024:
            raise ConfigError(f"chunk_bytes={self.chunk_bytes} is too small; use at least 1024 (default 32 MiB)")

    @property
    def source_mode(self) -> str:
        if self.source is not None:
            return "constant"
        return "path" if self.source_from_path else "field"

    def to_dict(self) -> dict:
        return as_dict(self)


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


def check_buckets(edges, name: str = "buckets") -> tuple[int, ...]:
    """Length-bucket edges as every command takes them: integers starting at 0, strictly increasing."""
    b = tuple(int(x) for x in edges)
    if len(b) < 1 or b[0] != 0 or any(x >= y for x, y in zip(b, b[1:])):
        raise ConfigError(f"{name}={list(b)} must start at 0 and strictly increase, e.g. 0,1K,4K,32K")
    return b


def check_engine(engine: str) -> str:
    """A tokenizer engine name as every command takes it: one of `ENGINES`."""
    if engine not in ENGINES:
        raise ConfigError(f"engine={engine!r} is not one of {ENGINES}; use auto (tiktoken where exact, else hf)")
    return engine


COUNT_SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}  # decimal, as token budgets


def parse_count(v: int | str, minimum: int = 1) -> tuple[int, bool]:
    """A count of tokens as every command takes it: ``"4M"`` -> (4000000, True); ``4194304`` or ``"4194304"`` ->
    (4194304, False). Suffixes K, M, B (= G), T are decimal; ``_`` and ``,`` are ignored; the flag says
    "nominal" (written with a suffix or an exponent). A string that is not a whole count >= ``minimum`` (1 or
    0) raises `ConfigError`; an int is taken as it is (its config checks its range)."""
    if isinstance(v, int):
        return v, False
    t = str(v).strip().upper().replace("_", "").replace(",", "")
    mult = COUNT_SUFFIXES.get(t[-1:], 1)
    try:
        n = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise ConfigError(f"{v!r} is not a token count; use e.g. 4194304, 4M or 5B") from None
    if n < minimum or n != int(n):
        raise ConfigError(f"{v!r} must be a {'positive ' if minimum > 0 else ''}whole number of tokens")
    return int(n), mult > 1 or "E" in t


def check_seed(seed) -> int:
    """A seed as every command takes it: an integer in [0, 2**63)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed={seed!r} must be an integer in [0, 2**63), e.g. 0")
    return seed


def check_workers(workers) -> None:
    """``workers`` as every data command takes it: None or 0 (all cores) or a positive count."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ConfigError(f"workers={workers!r} must be >= 1 (or 0 / unset for all cores)")


def parse_buckets(spec: str) -> tuple[int, ...]:
    """Parse '0,1K,2K,4k,128K' (K = 1024) into edges (checked by `check_buckets`)."""
    out = []
    for part in spec.split(","):
        p = part.strip().lower()
        if not p:
            continue
        mult = 1
        if p.endswith("k"):
            mult, p = 1024, p[:-1]
        elif p.endswith("m"):
            mult, p = 1024 * 1024, p[:-1]
        try:
            out.append(int(float(p) * mult))
        except ValueError:
            raise ConfigError(f"bucket edge {part!r} in {spec!r} is not a number; use e.g. 0,1K,4K,32K") from None
    return check_buckets(out, f"buckets {spec!r}")
