"""Stable 64-bit document hashes: a document's random number depends only on (seed, identity).

Default identities are ``file:row``: the file part is hashed once per file with BLAKE2b and mixed with the
row by SplitMix64 in NumPy (vectorised, ~1 ns/doc). Ids from an ``--id-field`` are hashed one by one with
BLAKE2b. Neither depends on Polars' internal hash (not stable across versions), on file order or on
batching, so plans are reproducible across machines, versions and worker counts.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + _GOLD
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _blake(seed: int, s: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{s}".encode(), digest_size=8).digest(), "little")


def doc_hash(docs: pl.DataFrame, seed: int, id_col: str | None = None, extra: str | None = None) -> np.ndarray:
    """uint64 hash per row of ``docs`` from (seed, identity[, extra int column such as a chunk index]).

    Identity: ``id_col`` values if given, else the ``file`` and ``row`` columns.
    """
    if id_col is not None:
        h = np.fromiter((_blake(seed, s) for s in docs[id_col].to_list()), dtype=np.uint64, count=docs.height)
    else:
        files = docs["file"]
        uniq = files.unique().to_list()
        fkeys = {f: _blake(seed, f) for f in uniq}
        rows = docs["row"].cast(pl.UInt64).to_numpy()
        if files.null_count():
            fk = files.replace_strict(fkeys, return_dtype=pl.UInt64).to_numpy()
            h = splitmix64(fk ^ splitmix64(rows))
        else:  # each file's key by its index among the distinct names (an Enum cast: faster than a string map)
            h = file_row_hash(seed, uniq, files.cast(pl.Enum(uniq)).to_physical().to_numpy(), rows)
    if extra is not None:
        h = splitmix64(h ^ splitmix64(docs[extra].cast(pl.UInt64).to_numpy() + np.uint64(1)))
    return h


def file_row_hash(seed: int, names: list[str], index: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`doc_hash` of ``file:row`` identities given as (index into ``names``, row) arrays: no string per row."""
    fk = np.array([_blake(seed, n) for n in names], dtype=np.uint64)
    return splitmix64(fk[index] ^ splitmix64(np.asarray(rows).astype(np.uint64)))


def to_unit(h: np.ndarray) -> np.ndarray:
    """uint64 -> float64 uniform in [0, 1) (top 53 bits)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
