"""Order-preserving parallel map over input files, on all cores, with a serial fallback.

Work is distributed one file at a time to ``workers`` spawned processes (``spawn``, not ``fork``: the
parent may hold Polars/Rayon thread pools). Results come back in input order, so anything folded from
them is independent of the number of workers and of scheduling. Each worker's Polars pool and the
tokenizer's Rayon pool are sized so workers x threads ~= cores (no oversubscription).

Files on a process-local filesystem (``memory://``) cannot be seen from another process: those runs are
serial.

A worker that dies (the out-of-memory killer, ``kill -9``, a crash in native code) is reported as a
`WorkerDiedError` naming the item it was processing and how it died, not as concurrent.futures'
``BrokenProcessPool``: each worker records the index of the item it is running in a shared array (one
int64 per item, set at the start, cleared at the end), and the pool's process exit codes tell the killed
worker from the others the pool then stops (SIGTERM).

``threads=True`` runs the same map on a thread pool in this process instead: for work that spends its
time in native code that releases the GIL (Arrow's JSON parser, Polars), where starting interpreters and
importing Polars/Arrow in each worker (about 0.6 CPU-s per process) would cost more than the map itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import TypeVar

from ..errors import ConfigError, LcdataError
from .config import default_workers
from .progress import Meter, bind

T = TypeVar("T")
R = TypeVar("R")

PROCESS_LOCAL = ("memory",)


@contextmanager
def child_env(workers: int):
    """Environment of worker processes (set while they start): each gets cores // workers threads for
    Polars, Rayon and HF tokenizers."""
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
        raise ConfigError(f"workers={workers} must be >= 1 (or 0 / unset for all cores)")
    if any(p in PROCESS_LOCAL for p in protocols):
        return 1
    return max(1, min(w, n_items))


@contextmanager
def spawnable_main():
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


class WorkerDiedError(LcdataError):
    """A worker process of `ordered_map` died while it processed an item (``item`` names it)."""

    def __init__(self, item: str, how: str):
        self.item, self.how = item, how
        super().__init__(
            f"a worker process {how} while it processed {item}; nothing it did for that item is kept. If it ran "
            "out of memory, use fewer --workers (each holds one file at a time) or more memory; then run the "
            "command again (a build continues with --resume)"
        )


_RUNNING = None  # in a worker: the shared array of `ordered_map`, pid of the worker running item i (0: none)
_COUNTERS = None  # in a worker: the `progress.Meter` array its items report into, or None


def _init_worker(running, counters=None) -> None:
    global _RUNNING, _COUNTERS
    _RUNNING, _COUNTERS = running, counters


def _tracked(fn, i, item):
    _RUNNING[i] = os.getpid()
    try:
        return _metered(fn, _COUNTERS, i, item)
    finally:
        _RUNNING[i] = 0


def _metered(fn, counters, i, item):
    """``fn(item)`` with this thread's progress counters bound to item ``i`` (`progress.bind`)."""
    if counters is None:
        return fn(item)
    bind(counters, i)
    try:
        return fn(item)
    finally:
        bind(None, 0)


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        why = " (the out-of-memory killer, or kill -9)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{why}"
    return f"exited with code {exitcode}" if exitcode is not None else "died"


def _worker_died(running, procs, items, describe) -> WorkerDiedError:
    """The error for a broken pool: the item(s) whose worker died abnormally, after the pool has shut down."""
    codes = {p.pid: p.exitcode for p in procs}
    busy = [(i, running[i]) for i in range(len(items)) if running[i]]
    dead = [(i, pid) for i, pid in busy if codes.get(pid) not in (0, -signal.SIGTERM)] or busy
    if not dead:
        return WorkerDiedError("no item yet (it died while starting)", _how(next(
            (c for c in codes.values() if c not in (0, -signal.SIGTERM)), None)))
    return WorkerDiedError(", ".join(describe(items[i]) for i, _ in dead), _how(codes.get(dead[0][1])))


def ordered_map(fn: Callable[[T], R], items: list[T], workers: int, threads: bool = False,
                describe: Callable[[T], str] = str, meter: Meter | None = None) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order, using ``workers`` processes (1 = in this process), or
    ``workers`` threads of this process with ``threads``.

    A worker process that dies (killed, out of memory) raises `WorkerDiedError` naming ``describe(item)`` of
    the item it was running, instead of hanging; an exception raised by ``fn`` is re-raised here with its type
    (lcdata errors pickle with their fields). ``meter``: a `progress.Meter` of ``len(items)`` items that
    ``fn`` reports into while it runs (`progress.chunk_read`, `progress.partial`).
    """
    counters = meter.array if meter is not None else None
    if workers <= 1 or len(items) <= 1:
        for i, it in enumerate(items):
            yield _metered(fn, counters, i, it)
        return
    running = procs = None
    if threads:
        ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lcdata")
        futures = [ex.submit(_metered, fn, counters, i, it) for i, it in enumerate(items)]
    else:
        ctx = mp.get_context("spawn")
        running = ctx.Array("q", len(items), lock=False)
        with child_env(workers), spawnable_main():
            ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                     initargs=(running, counters))
            # workers start here, inside the child env
            futures = [ex.submit(_tracked, fn, i, it) for i, it in enumerate(items)]
        procs = list((getattr(ex, "_processes", None) or {}).values())  # their exit codes name the dead one
    try:
        for fut in futures:
            try:
                res = fut.result()
            except BrokenProcessPool:
                ex.shutdown(wait=True, cancel_futures=True)
                raise _worker_died(running, procs, items, describe) from None
            yield res
    finally:
        for fut in futures:
            fut.cancel()
        ex.shutdown(wait=True, cancel_futures=True)
