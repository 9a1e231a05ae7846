"""Sampling strategies: each one is a (grouping, per-group token target, per-unit weight) triple.

A *unit* is a document (or, for ``cut --chunk``, a chunk of one). Every strategy says how units are grouped,
how many tokens each group must receive, and the relative weight of a unit inside its group:

============== ============================ ======================================= =========================
strategy       groups                       group target (B = budget)               weight inside the group
============== ============================ ======================================= =========================
natural        source                       B x corpus share of the source          1
cut            source                       B x share (of cut lengths)              1 (lengths cut first)
per-source     source                       B x corpus share of the source          short_keep if len < thr
global         source                       B x source's expected share under one   short_keep if len < thr
                                            corpus-wide lambda (one budget)
upsample-src.  source                       B x given share / rest keep relative    1
upsample-code- source                       B x w_s / sum(w), w = 0.6 for the        short_keep if len < thr
arxiv-book                                  upsampled sources, else the share
target         (source, length bucket)      B x source share x bucket share         1
============== ============================ ======================================= =========================

``target`` is the general form (a spec file); the others are special cases of it. The paper's recipe is
``per-source`` with threshold 4096 and short_keep 0.1 (PAPER.md, "The mixtures compared").
``upsample-code-arxiv-book`` is the paper's released code's only single-domain mode, exactly: code, arXiv
and books (``upsampled_sources``) get weight ``upsample_weight`` = 0.6 each, every other source its share,
normalised; short documents kept at short_keep as in per-source.

"The share" of a source is the input's own token share, or with ``source_share_table`` a fixed table
(``--source-shares slimpajama``: `SLIMPAJAMA_SHARES`, the table the paper's code hard-codes; or a JSON/YAML
file), restricted to the corpus's sources and renormalised (``global`` and ``target`` have no per-source
shares to replace).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import fsspec

from ..errors import ConfigError
from ..util.config import DEFAULT_BUCKETS, LONG_THRESHOLD, as_dict, check_buckets, check_seed

STRATEGIES = ("natural", "cut", "per-source", "global", "upsample-sources", "upsample-code-arxiv-book", "target")
SHARE_TOL = 1e-6
# SlimPajama's token shares as the paper's code hard-codes them (data_engineering/utils.py, SLIMPAJAMA_ORIGINAL_MIX)
SLIMPAJAMA_SHARES = (("RedPajamaArXiv", 0.04290379), ("RedPajamaBook", 0.0414836), ("RedPajamaC4", 0.26609933),
                     ("RedPajamaCommonCrawl", 0.53374772), ("RedPajamaGithub", 0.05004782),
                     ("RedPajamaStackExchange", 0.03169647), ("RedPajamaWikipedia", 0.03402128))
# the sources the paper's upsample_code_arxiv_book mode gives weight 0.6 (UPSAMPLE_CODE_ARXIV_BOOK)
SLIMPAJAMA_UPSAMPLED = ("RedPajamaArXiv", "RedPajamaBook", "RedPajamaGithub")
SHARE_TABLES = {"slimpajama": SLIMPAJAMA_SHARES}


@dataclass(frozen=True, kw_only=True, slots=True)
class TargetSpec:
    """The general target: token share per source and, per source, a token distribution over length buckets.

    ``source_shares``: {source: share} summing to 1, or None to keep the corpus's shares.
    ``bucket_edges``: increasing, from 0; the last bucket is open. ``bucket_shares``: {source or "*": shares
    per bucket summing to 1}; a source without an entry (and no "*") keeps its own length distribution.
    """

    source_shares: tuple[tuple[str, float], ...] | None = None
    bucket_edges: tuple[int, ...] = DEFAULT_BUCKETS
    bucket_shares: tuple[tuple[str, tuple[float, ...]], ...] = ()

    def __post_init__(self):
        e = tuple(int(x) for x in self.bucket_edges)
        object.__setattr__(self, "bucket_edges", e)
        if not e or e[0] != 0 or any(a >= b for a, b in zip(e, e[1:])):
            raise ConfigError(f"bucket_edges={list(e)} must start at 0 and strictly increase")
        if self.source_shares is not None:
            _check_shares("source_shares", dict(self.source_shares))
        for src, shares in self.bucket_shares:
            if len(shares) != len(e):
                raise ConfigError(
                    f"bucket_shares[{src!r}] has {len(shares)} values but bucket_edges define {len(e)} buckets "
                    f"({list(e)} + open last); give one share per bucket"
                )
            _check_shares(f"bucket_shares[{src!r}]", dict(enumerate(shares)))

    @classmethod
    def from_dict(cls, d: dict) -> TargetSpec:
        unknown = set(d) - {"source_shares", "bucket_edges", "bucket_shares"}
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)} in target spec; allowed: source_shares, bucket_edges, bucket_shares")
        ss = d.get("source_shares")
        return cls(
            source_shares=None if ss in (None, "natural") else tuple(sorted((str(k), float(v)) for k, v in ss.items())),
            bucket_edges=tuple(d.get("bucket_edges", DEFAULT_BUCKETS)),
            bucket_shares=tuple(sorted((str(k), tuple(float(x) for x in v)) for k, v in (d.get("bucket_shares") or {}).items())),
        )

    @classmethod
    def load(cls, path: str) -> TargetSpec:
        """Read a JSON or YAML spec file (YAML needs PyYAML)."""
        try:
            with fsspec.open(path, "rt") as fh:
                text = fh.read()
        except FileNotFoundError:
            raise ConfigError(f"target spec {path!r} not found") from None
        try:
            if path.endswith((".yaml", ".yml")):
                import yaml

                d = yaml.safe_load(text)
            else:
                d = json.loads(text)
        except Exception as e:
            raise ConfigError(f"target spec {path!r} cannot be parsed: {e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"target spec {path!r} must be a mapping with source_shares / bucket_edges / bucket_shares")
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return {
            "source_shares": dict(self.source_shares) if self.source_shares is not None else None,
            "bucket_edges": list(self.bucket_edges),
            "bucket_shares": {k: list(v) for k, v in self.bucket_shares},
        }


def _check_shares(name: str, shares: dict) -> None:
    bad = {k: v for k, v in shares.items() if not (v >= 0)}
    if bad:
        raise ConfigError(f"{name} has negative or invalid shares {bad}; shares must be >= 0")
    total = sum(shares.values())
    if abs(total - 1.0) > SHARE_TOL:
        raise ConfigError(f"{name} sum to {total:.6g}, not 1; rescale them so they add up to 1")


@dataclass(frozen=True, kw_only=True, slots=True)
class SampleConfig:
    """Parameters of `lcdata sample` (see the strategy table in this module's docstring).

    ``budget_tokens``: total tokens of the sample. ``max_repeat``: most copies of one unit; a group whose
    target needs more is an error, or with ``on_cap="cap"`` it is capped and the report says so.
    """

    strategy: str
    budget_tokens: int
    seed: int = 0
    max_repeat: int = 4
    threshold: int = LONG_THRESHOLD
    short_keep: float = 0.1
    max_length: int | None = None
    chunk: bool = False
    source_shares: tuple[tuple[str, float], ...] = ()
    target: TargetSpec | None = None
    on_cap: str = "error"
    report_buckets: tuple[int, ...] = DEFAULT_BUCKETS
    source_share_table: tuple[tuple[str, float], ...] | None = None  # fixed shares instead of the input's
    source_share_origin: str = "input"  # where the shares come from: "input", "slimpajama" or a file path
    upsampled_sources: tuple[str, ...] = SLIMPAJAMA_UPSAMPLED  # upsample-code-arxiv-book
    upsample_weight: float = 0.6  # upsample-code-arxiv-book

    def __post_init__(self):
        check_seed(self.seed)
        if self.source_share_table is not None:
            _check_shares(f"source shares ({self.source_share_origin})", dict(self.source_share_table))
            if self.strategy in ("global", "target"):
                raise ConfigError(f"--source-shares does not apply to strategy {self.strategy!r} (global has one "
                                  "budget for the corpus; target's spec file has its own source_shares)")
        if not (0 < self.upsample_weight):
            raise ConfigError(f"upsample_weight={self.upsample_weight} must be > 0 (the paper uses 0.6)")
        if self.strategy == "upsample-code-arxiv-book" and not self.upsampled_sources:
            raise ConfigError("strategy 'upsample-code-arxiv-book' needs --upsampled-sources NAME,NAME,...")
        object.__setattr__(self, "report_buckets", check_buckets(self.report_buckets, "report_buckets"))
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if not isinstance(self.budget_tokens, int) or self.budget_tokens <= 0:
            raise ConfigError(f"budget_tokens={self.budget_tokens!r} must be a positive number of tokens, e.g. 1000000")
        if self.max_repeat < 1:
            raise ConfigError(f"max_repeat={self.max_repeat} must be >= 1 (1 = never repeat a document)")
        if self.threshold < 1:
            raise ConfigError(f"threshold={self.threshold} must be >= 1 token (the paper uses 4096)")
        if not (0 < self.short_keep <= 1):
            raise ConfigError(f"short_keep={self.short_keep} must be in (0, 1] (the paper uses 0.1)")
        if self.on_cap not in ("error", "cap"):
            raise ConfigError(f"on_cap={self.on_cap!r} must be 'error' or 'cap'")
        if self.strategy == "cut" and (self.max_length is None or self.max_length < 1):
            raise ConfigError("strategy 'cut' needs max_length >= 1 (--max-length 4096 for the paper's baseline)")
        if self.strategy != "cut" and (self.max_length is not None or self.chunk):
            raise ConfigError(f"max_length / chunk only apply to strategy 'cut', not {self.strategy!r}")
        if self.strategy == "upsample-sources":
            if not self.source_shares:
                raise ConfigError("strategy 'upsample-sources' needs --source-share NAME=SHARE (e.g. books=0.5)")
            d = dict(self.source_shares)
            if any(not (0 <= v <= 1) for v in d.values()) or sum(d.values()) > 1 + SHARE_TOL:
                raise ConfigError(f"source shares {d} must each be in [0, 1] and sum to at most 1")
        elif self.source_shares:
            raise ConfigError(f"--source-share only applies to strategy 'upsample-sources', not {self.strategy!r}")
        if self.strategy == "target" and self.target is None:
            raise ConfigError("strategy 'target' needs a spec file: --target-spec spec.json")
        if self.strategy != "target" and self.target is not None:
            raise ConfigError(f"a target spec only applies to strategy 'target', not {self.strategy!r}")
        edges = self.buckets
        if self.strategy in ("per-source", "global", "upsample-code-arxiv-book") and not (0 < self.threshold <= edges[-1] or len(edges) == 1):
            raise ConfigError(
                f"threshold={self.threshold} is outside the length buckets {list(edges)}; "
                f"use a threshold between 1 and {edges[-1]}"
            )

    @property
    def buckets(self) -> tuple[int, ...]:
        """Length buckets of the report (and of the groups, for `target`)."""
        return self.target.bucket_edges if self.target is not None else tuple(self.report_buckets)

    def to_dict(self) -> dict:
        d = as_dict(self)
        d["source_shares"] = dict(self.source_shares)
        d["target"] = self.target.to_dict() if self.target else None
        d["source_share_table"] = dict(self.source_share_table) if self.source_share_table is not None else None
        return d


def load_source_shares(name: str) -> tuple[tuple[tuple[str, float], ...], str]:
    """``--source-shares``: a named table (``slimpajama``) or a JSON/YAML file of ``{source: share}`` (or
    ``{"source_shares": {...}}``) summing to 1 -> (sorted shares, origin to report)."""
    if name in SHARE_TABLES:
        return SHARE_TABLES[name], name
    try:
        with fsspec.open(name, "rt") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"--source-shares {name!r}: neither a named table ({', '.join(SHARE_TABLES)}) nor a "
                          "file; give a JSON/YAML file of {source: share}") from None
    try:
        if name.endswith((".yaml", ".yml")):
            import yaml

            d = yaml.safe_load(text)
        else:
            d = json.loads(text)
    except Exception as e:
        raise ConfigError(f"--source-shares file {name!r} cannot be parsed: {e}") from None
    if isinstance(d, dict) and isinstance(d.get("source_shares"), dict):
        d = d["source_shares"]
    if not isinstance(d, dict) or not d or not all(isinstance(v, (int, float)) for v in d.values()):
        raise ConfigError(f"--source-shares file {name!r} must be a mapping {{source: share}} with numbers")
    shares = tuple(sorted((str(k), float(v)) for k, v in d.items()))
    _check_shares(f"--source-shares file {name!r}", dict(shares))
    return shares, name


def parse_source_shares(items: list[str]) -> tuple[tuple[str, float], ...]:
    out = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"--source-share {it!r} must look like NAME=SHARE, e.g. books=0.5")
        k, v = it.rsplit("=", 1)
        try:
            out[k] = float(v)
        except ValueError:
            raise ConfigError(f"--source-share {it!r}: {v!r} is not a number") from None
    return tuple(sorted(out.items()))
