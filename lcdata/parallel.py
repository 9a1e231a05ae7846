"""Order-preserving parallel map over input files, on all cores, with a serial fallback.

Work is distributed one file at a time to ``workers`` spawned processes (``spawn``, not ``fork``: the
parent may hold Polars/Rayon thread pools). Results come back in input order, so anything folded from
them is independent of the number of workers and of scheduling. Each worker's Polars pool and the
tokenizer's Rayon pool are sized so workers x threads ~= cores (no oversubscription).

Files on a process-local filesystem (``memory://``) cannot be seen from another process: those runs are
serial.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

from .config import default_workers

T = TypeVar("T")
R = TypeVar("R")

PROCESS_LOCAL = ("memory",)


@contextmanager
def _child_env(workers: int):
    per = max(1, default_workers() // workers)
    env = {"POLARS_MAX_THREADS": str(per), "RAYON_NUM_THREADS": str(per),
           "TOKENIZERS_PARALLELISM": "true" if per > 1 else "false"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve_workers(workers: int | None, n_items: int, protocols: Iterable[str] = ()) -> int:
    w = default_workers() if workers in (None, 0) else int(workers)
    if w < 0:
        from .errors import ConfigError

        raise ConfigError(f"workers={workers} must be >= 1 (or 0 / unset for all cores)")
    if any(p in PROCESS_LOCAL for p in protocols):
        return 1
    return max(1, min(w, n_items))


def ordered_map(fn: Callable[[T], R], items: list[T], workers: int) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order, using ``workers`` processes (1 = in this process)."""
    if workers <= 1 or len(items) <= 1:
        for it in items:
            yield fn(it)
        return
    ctx = mp.get_context("spawn")
    with _child_env(workers):
        pool = ctx.Pool(workers)
    try:
        yield from pool.imap(fn, items, chunksize=1)
        pool.close()
    finally:
        pool.terminate()
        pool.join()
