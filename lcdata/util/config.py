"""What every command's configuration shares: the paper's constants, the checks of values every command
takes (seed, workers, buckets, engine, counts and sizes: `parse_size`, one meaning of K/M/G and Ki/Mi/Gi) and
`as_dict` for the frozen config dataclasses.

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
        raise ConfigError(f"{name}={list(b)} must start at 0 and strictly increase, e.g. 0,1Ki,4Ki,32Ki")
    return b


def check_engine(engine: str) -> str:
    """A tokenizer engine name as every command takes it: one of `ENGINES`."""
    if engine not in ENGINES:
        raise ConfigError(f"engine={engine!r} is not one of {ENGINES}; use auto (tiktoken where exact, else hf)")
    return engine


# One meaning of a count or size suffix in every flag, every command and every config (`parse_size`):
# K, M, G (= B, as in "5B tokens"), T are decimal powers of 1000; Ki, Mi, Gi, Ti (optionally followed by B:
# KiB, MiB, ...) are binary powers of 1024. "64M" = 64,000,000; "64Mi" = "64MiB" = 67,108,864.
COUNT_SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}  # decimal
BINARY_SUFFIXES = {"KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}  # binary (IEC)
SIZE_HELP = "K/M/G = 10^3/6/9, Ki/Mi/Gi or KiB/MiB/GiB = 2^10/20/30"


def _split_suffix(t: str) -> tuple[str, int, str]:
    """(number part, multiplier, suffix as written) of an upper-cased, cleaned count string."""
    for suf in ("IB", "I"):
        if t.endswith(suf) and t[-len(suf) - 1:-len(suf)] in "KMGT" and len(t) > len(suf) + 1:
            return t[:-len(suf) - 1], BINARY_SUFFIXES[t[-len(suf) - 1] + "I"], t[-len(suf) - 1:]
    if t[-1:] in COUNT_SUFFIXES:
        return t[:-1], COUNT_SUFFIXES[t[-1]], t[-1]
    return t, 1, ""


def parse_size(v: int | str, minimum: int | None = 1, unit: str = "tokens") -> tuple[int, bool]:
    """A count or size as every command takes it: ``"4M"`` -> (4000000, True); ``"64Mi"`` or ``"64MiB"`` ->
    (67108864, True); ``4194304`` or ``"4194304"`` -> (4194304, False). `COUNT_SUFFIXES` are decimal,
    `BINARY_SUFFIXES` binary (case-insensitive); ``_`` and ``,`` are ignored; the flag says "nominal" (written
    with a suffix or an exponent). ``"64MB"`` is refused as ambiguous (64M or 64MiB?). A string that is not a
    whole number of ``unit`` >= ``minimum`` (None: any sign, the caller's config checks the range) raises
    `ConfigError`; an int is taken as it is."""
    if isinstance(v, bool):
        raise ConfigError(f"{v!r} is not a {unit.removesuffix('s')} count; use e.g. 4194304, 4M or 4Mi")
    if isinstance(v, int):
        return v, False
    t = str(v).strip().upper().replace("_", "").replace(",", "")
    if len(t) > 2 and t.endswith("B") and t[-2] in "KMGT":
        raise ConfigError(f"{v!r} is ambiguous: write {t[:-2]}{t[-2]} (decimal, x10^{3 * ('KMGT'.index(t[-2]) + 1)}) "
                          f"or {t[:-2]}{t[-2]}i (binary, x2^{10 * ('KMGT'.index(t[-2]) + 1)}) {unit}")
    num, mult, suffix = _split_suffix(t)
    try:
        n = float(num) * mult
    except ValueError:
        raise ConfigError(f"{v!r} is not a {unit.removesuffix('s')} count; use e.g. 4194304, 4M (10^6) or 4Mi (2^20)"
                          ) from None
    if (minimum is not None and n < minimum) or n != int(n):
        raise ConfigError(f"{v!r} must be a {'positive ' if minimum else 'non-negative ' if minimum == 0 else ''}"
                          f"whole number of {unit}")
    return int(n), bool(suffix) or "E" in num


def parse_count(v: int | str, minimum: int = 1) -> tuple[int, bool]:
    """A count of tokens: `parse_size` in tokens (kept for its callers)."""
    return parse_size(v, minimum, "tokens")


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
    """Parse '0,1Ki,2Ki,4Ki,128Ki' into edges (checked by `check_buckets`); every edge is read by `parse_size`.

    Until the next release a bare K or M in an edge list keeps its old meaning here, 1024 and 1024^2 (the
    paper's "4K" is 4096), with a FutureWarning asking for Ki / Mi: everywhere else K is 1000."""
    import warnings

    out = []
    for part in spec.split(","):
        p = part.strip()
        if not p:
            continue
        if p[-1:] in ("k", "K", "m", "M"):  # legacy: binary K/M in bucket edges
            mult = 1024 if p[-1] in "kK" else 1024 * 1024
            try:
                out.append(int(float(p[:-1]) * mult))
            except ValueError:
                raise ConfigError(f"bucket edge {part!r} in {spec!r} is not a number; use e.g. 0,1Ki,4Ki,32Ki") from None
            warnings.warn(f"bucket edge {p!r} is read as {p[:-1]}{p[-1].upper()}i = {out[-1]:,} as before; from the next "
                          f"release K and M mean 10^3 and 10^6 here too, as in every other flag: write "
                          f"{p[:-1]}{p[-1].upper()}i", FutureWarning, stacklevel=2)
            continue
        try:
            out.append(parse_size(p, 0, "tokens")[0])
        except ConfigError:
            raise ConfigError(f"bucket edge {part!r} in {spec!r} is not a number; use e.g. 0,1Ki,4Ki,32Ki") from None
    return check_buckets(out, f"buckets {spec!r}")
