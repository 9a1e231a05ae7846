"""What every scale-out stage shares: `Stage`, the file assignment, the step base class and run folders.

A stage step (`Step`) is a datatrove `PipelineStep` that reads files, not documents: it drains whatever comes
before it, does its work for (rank, world_size) and yields nothing. Its task's files come from
`assign_files`, a pure function of the sorted input list, so which task does what never depends on timing.

Test hook (tests only): ``LCDATA_TEST_FAIL_TASK=STAGE:RANK:N``, read when a step is built, makes task RANK of
stage STAGE raise `InjectedFailure` after N files (or shards); ``LCDATA_TEST_SLOW_TASK=STAGE:RANK:SECONDS`` makes
it sleep that long before its work (a task to cancel, or to run past its time limit, on a real scheduler).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import os
import time
from collections import deque
from typing import NamedTuple

import fsspec

from ..errors import ConfigError, MissingDependencyError
from ..util.io import exists, join, make_dirs, read_json, write_json
from .executors import ExecutorConfig

try:
    from datatrove.pipeline.base import PipelineStep
except ImportError:  # pragma: no cover - the extra is missing
    raise MissingDependencyError("lcdata.scaleout.pipelines needs datatrove: pip install 'lcdata[datatrove]'") from None

FAIL_ENV = "LCDATA_TEST_FAIL_TASK"
SLOW_ENV = "LCDATA_TEST_SLOW_TASK"


class Stage(NamedTuple):
    """One datatrove pipeline and the number of tasks that run it; stages run in order."""

    name: str
    pipeline: list
    tasks: int


def assign_files(sizes: list[int], n_tasks: int) -> list[list[int]]:
    """Indices (into ``sizes``) each task takes: largest first to the least-loaded task, ties to the lowest rank.

    >>> assign_files([5, 1, 1, 3], 2)
    [[0], [1, 2, 3]]
    """
    heap = [(0, t) for t in range(n_tasks)]
    out: list[list[int]] = [[] for _ in range(n_tasks)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        load, t = heapq.heappop(heap)
        out[t].append(i)
        heapq.heappush(heap, (load + max(1, sizes[i]), t))
    return [sorted(o) for o in out]


def _fail_hook(stage: str, env: str = FAIL_ENV) -> tuple[int, int] | None:
    spec = os.environ.get(env)
    if not spec or spec.split(":")[0] != stage:
        return None
    _, rank, n = spec.split(":")
    return int(rank), int(n)


class InjectedFailure(RuntimeError):
    """Raised by the ``LCDATA_TEST_FAIL_TASK`` test hook."""


class Step(PipelineStep):
    """An lcdata stage step: reads files, not documents (drains what comes before it, yields nothing)."""

    type = "lcdata"

    def __init__(self, job):
        super().__init__()
        self.job = job
        self.fail = _fail_hook(self.name)
        self.slow = _fail_hook(self.name, SLOW_ENV)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            deque(data, maxlen=0)
        cpus = int(os.environ.get("DATATROVE_CPUS_PER_TASK", "-1") or -1)
        if cpus > 0:  # a Slurm/Ray task's share of the node for the tokenizer's thread pool
            os.environ.setdefault("RAYON_NUM_THREADS", str(cpus))
        if self.slow is not None and self.slow[0] == rank:
            time.sleep(self.slow[1])
        self.work(rank, world_size)
        return
        yield  # a generator, as datatrove steps are

    def work(self, rank: int, world_size: int) -> None:
        raise NotImplementedError

    def _check_fail(self, rank: int, done: int) -> None:
        if self.fail is not None and self.fail == (rank, done):
            raise InjectedFailure(f"{FAIL_ENV}: task {rank} of {self.name} fails after {done} units (test hook)")


def as_executor(executor, opts: dict) -> ExecutorConfig:
    """An `ExecutorConfig` from a name (``"local"``, ``"slurm"``, ``"ray"``) or a config, with ``opts`` applied."""
    if isinstance(executor, ExecutorConfig):
        if opts:
            return dataclasses.replace(executor, **opts)
        return executor
    return ExecutorConfig(kind=executor, **opts)


def prepare_logging_dir(ex: ExecutorConfig, out_dir: str, identity: str, stages: list[Stage],
                        fresh: bool = False) -> str:
    """The logging folder of this run; completion markers of another run there are cleared (default folder)
    or refused (a folder given), so they never skip a task of this one. ``fresh`` (an overwritten output):
    this run's stage folders are cleared too."""
    base = ex.logging_dir or join(out_dir, "_scaleout/logs")
    want = {"identity": identity_hash({"job": identity, "stages": [(s.name, s.tasks) for s in stages]})}
    path = join(base, "run.json")
    if fresh:
        fs, p = fsspec.core.url_to_fs(base)
        for st in stages:
            if fs.exists(f"{p}/{st.name}"):
                fs.rm(f"{p}/{st.name}", recursive=True)
    elif exists(path) and read_json(path) != want:
        if ex.logging_dir is not None:
            raise ConfigError(f"the logging folder {base!r} holds the completion markers of another run (other "
                              "inputs, options or task counts); pass another --logging-dir or delete it")
        fs, p = fsspec.core.url_to_fs(base)
        fs.rm(p, recursive=True)
    make_dirs(base)
    write_json(want, path)
    return base


def check_done(final: str, logs: str) -> None:
    """Refuse a run whose tasks are all marked complete in ``logs`` but whose final file is missing."""
    if not exists(final):
        raise ConfigError(f"every task is marked complete in {logs!r} but {final!r} is missing (was the output "
                          "deleted?); delete that logging folder or pass another --logging-dir, then rerun")


def identity_hash(obj) -> str:
    """32 hex characters of the SHA-256 of ``obj`` as sorted JSON: what a run folder was started for."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:32]

