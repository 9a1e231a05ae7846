"""Order-preserving parallel map over input files, on all cores, with a serial fallback.

Work is distributed one file at a time to ``workers`` spawned processes (``spawn``, not ``fork``: the
parent may hold Polars/Rayon thread pools). Results come back in input order, so anything folded from
them is independent of the number of workers and of scheduling. Each worker's Polars pool and the
tokenizer's Rayon pool are sized so workers x threads ~= cores (no oversubscription).

Files on a process-local filesystem (``memory://``) cannot be seen from another process: those runs are
serial.

``threads=True`` runs the same map on a thread pool in this process instead: for work that spends its
time in native code that releases the GIL (Arrow's JSON parser, Polars), where starting interpreters and
importing Polars/Arrow in each worker (about 0.6 CPU-s per process) would cost more than the map itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

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


@contextmanager
def _spawnable_main():
    """Workers run only lcdata functions, so they never need the parent's ``__main__``: hide it while
    workers start, so spawn does not re-run a user's script (or `python -m lcdata`, or stdin) in them."""
    main = sys.modules.get("__main__")
    saved = {k: getattr(main, k) for k in ("__file__", "__spec__") if main is not None and hasattr(main, k)}
    for k in saved:
        if k == "__spec__":
            main.__spec__ = None
        else:
            delattr(main, k)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(main, k, v)


def ordered_map(fn: Callable[[T], R], items: list[T], workers: int, threads: bool = False) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order, using ``workers`` processes (1 = in this process), or
    ``workers`` threads of this process with ``threads``.

    A worker that dies (killed, out of memory) raises ``BrokenProcessPool`` instead of hanging; an exception
    raised by ``fn`` is re-raised here with its type (lcdata errors pickle with their fields).
    """
    if workers <= 1 or len(items) <= 1:
        for it in items:
            yield fn(it)
        return
    if threads:
        ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lcdata")
        futures = [ex.submit(fn, it) for it in items]
    else:
        with _child_env(workers), _spawnable_main():
            ex = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
            futures = [ex.submit(fn, it) for it in items]  # workers start here, inside the child env
    try:
        for fut in futures:
            yield fut.result()
    finally:
        for fut in futures:
            fut.cancel()
        ex.shutdown(wait=True, cancel_futures=True)
