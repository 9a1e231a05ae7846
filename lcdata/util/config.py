"""What every command's configuration shares: the paper's constants, the checks of values every command
takes (seed, workers, buckets, engine, token counts) and `as_dict` for the frozen config dataclasses.

The config dataclasses live with their stage (`lcdata.corpus.config.ReadConfig`,
`lcdata.stats.config.StatsConfig`, `lcdata.sample.config.SampleConfig`, `lcdata.build.config.BuildConfig`);
the CLI only maps flags to them and calls the API, and validation happens on construction, so a bad value
fails the same way from Python and from the shell (a `ConfigError` naming the value and the fix).
"""

from __future__ import annotations

import dataclasses
import os

from ..errors import ConfigError

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
