"""Which datatrove executor runs lcdata's stages, with which options: one config for the CLI and Python.

lcdata does not schedule distributed work itself. A scale-out run (`lcdata.scaleout.pipelines`) is a short list of
*stages*, each a datatrove pipeline run by ``tasks`` tasks (a per-file stage with N tasks, or a one-task
merge stage); `ExecutorConfig.make` builds the datatrove executor of one stage and `run_stages` runs them:

- ``local``: `LocalPipelineExecutor`, stage after stage in this process; ``workers`` tasks at a time.
- ``ray``: `RayPipelineExecutor` on the cluster of ``ray.init()`` (``RAY_ADDRESS``, else a local one).
- ``slurm``: `SlurmPipelineExecutor`, one job array per stage chained with ``afterok`` dependencies;
  `run_stages` submits them and returns at once (the last stage writes the final folder), or with ``wait``
  (``--wait``) blocks until they end and raises `StageFailed` naming each failed task's Slurm state
  (FAILED, TIMEOUT, CANCELLED...) and logs (`lcdata.scaleout.slurm`).

Every stage keeps datatrove's logging folder (``LOGS/<stage>/``: completions, stats, logs, sbatch script):
a task with a completion marker is skipped by the next run of the same command.

This module imports datatrove only when an executor is built, so the CLI parser does not pay for it.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from ..errors import ConfigError, LcdataError, MissingDependencyError
from ..util.config import default_workers
from ..util.flags import size_type

EXECUTORS = ("local", "slurm", "ray")


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        raise MissingDependencyError(f"this executor needs {top!r}: pip install 'lcdata[{extra}]' (or pip install {top})") from None


def parse_time(spec: str | None) -> int | None:
    """Slurm-style time ('D-HH:MM:SS', 'HH:MM:SS', 'MM:SS' or minutes) in seconds (None stays None)."""
    if spec is None:
        return None
    s = str(spec).strip()
    days, _, rest = s.rpartition("-") if "-" in s else ("0", "", s)
    parts = rest.split(":")
    try:
        nums = [int(p) for p in parts]
        d = int(days)
    except ValueError:
        raise ConfigError(f"time={spec!r} is not a duration; use HH:MM:SS, D-HH:MM:SS or minutes") from None
    if len(nums) == 1:
        h, m, sec = 0, nums[0], 0
    elif len(nums) == 2:
        h, m, sec = 0, nums[0], nums[1]
    elif len(nums) == 3:
        h, m, sec = nums
    else:
        raise ConfigError(f"time={spec!r} has too many ':' fields; use HH:MM:SS")
    return ((d * 24 + h) * 60 + m) * 60 + sec


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutorConfig:
    """The executor kind and its own options. ``tasks``: tasks of the per-file stages (None: one per input
    file, at most the cores for ``local`` and 1000 otherwise); ``workers``: tasks running at once (None: the
    cores for ``local``, no limit for ``slurm``/``ray``); ``logging_dir``: datatrove's logging folder (default
    under the output folder, ``OUT/_scaleout/logs``). ``partition``/``time`` are required for ``slurm``;
    ``time`` is also the per-task limit for ``ray``. ``venv_path`` (Slurm): the ``activate`` script sourced
    by each job, by default the running virtual environment's. ``wait`` (Slurm): block until the jobs end and
    report failed tasks (default: return once submitted)."""

    kind: str = "local"
    tasks: int | None = None
    workers: int | None = None
    logging_dir: str | None = None
    partition: str | None = None
    time: str | None = None
    cpus_per_task: int = 1
    mem_per_cpu_gb: float = 2.0
    job_name: str = "lcdata"
    qos: str | None = None
    env_command: str | None = None
    venv_path: str | None = None
    sbatch_args: dict = field(default_factory=dict)
    wait: bool = False

    def __post_init__(self):
        if self.kind not in EXECUTORS:
            raise ConfigError(f"executor={self.kind!r} is not one of {EXECUTORS}")
        if self.tasks is not None and self.tasks < 1:
            raise ConfigError(f"tasks={self.tasks} must be >= 1")
        if self.workers is not None and self.workers < 1 and self.workers != -1:
            raise ConfigError(f"workers={self.workers} must be >= 1 (or -1: no limit)")
        if self.kind == "slurm" and not (self.partition and self.time):
            raise ConfigError("the slurm executor needs --partition and --time (e.g. --partition cpu --time 04:00:00)")
        if self.cpus_per_task < 1:
            raise ConfigError(f"cpus_per_task={self.cpus_per_task} must be >= 1")
        parse_time(self.time)

    def n_tasks(self, n_files: int) -> int:
        if self.tasks is not None:
            return self.tasks
        return max(1, min(n_files, default_workers() if self.kind == "local" else 1000))

    def make(self, pipeline: list, tasks: int, logging_dir: str, name: str, depends=None):
        """The datatrove executor of one stage (``tasks`` tasks, logs in ``logging_dir``)."""
        if self.kind == "local":
            ex = _require("datatrove.executor.local", "datatrove")
            workers = self.workers if self.workers not in (None, -1) else default_workers()
            return ex.LocalPipelineExecutor(pipeline, tasks=tasks, workers=max(1, min(workers, tasks)),
                                            logging_dir=logging_dir, depends=depends)
        if self.kind == "ray":
            _require("ray", "datatrove")
            ex = _require("datatrove.executor.ray", "datatrove")
            return ex.RayPipelineExecutor(pipeline, tasks=tasks, workers=self.workers or -1, logging_dir=logging_dir,
                                          cpus_per_task=self.cpus_per_task, mem_per_cpu_gb=self.mem_per_cpu_gb,
                                          time=parse_time(self.time), depends=depends)
        ex = _require("datatrove.executor.slurm", "datatrove")
        venv = self.venv_path
        if venv is None and self.env_command is None and sys.prefix != sys.base_prefix:
            venv = os.path.join(sys.prefix, "bin", "activate")
        # sbatch takes whole units only (--mem-per-cpu=2.0G is refused): whole GB as "2G", else megabytes
        gb = self.mem_per_cpu_gb
        mem = {} if float(gb).is_integer() else {"mem-per-cpu": f"{max(1, round(gb * 1024))}M"}
        return ex.SlurmPipelineExecutor(
            pipeline, tasks=tasks, time=self.time, partition=self.partition, workers=self.workers or -1,
            cpus_per_task=self.cpus_per_task, mem_per_cpu_gb=int(gb) if float(gb).is_integer() else gb,
            job_name=f"{self.job_name}-{name}", qos=self.qos or "", env_command=self.env_command, venv_path=venv,
            sbatch_args={**mem, **self.sbatch_args}, logging_dir=logging_dir, depends=depends,
        )


def run_stages(stages: list, ex: ExecutorConfig, logging_dir: str) -> list:
    """Run ``stages`` (`lcdata.scaleout.pipelines.Stage`) in order; returns their executors.

    ``local``/``ray``: each stage runs to its end before the next starts; a stage with a task that did not
    complete raises an `LcdataError` naming the tasks (rerun the same command: finished tasks are skipped).
    ``slurm``: the stages are submitted as job arrays chained by dependencies and this returns at once, or
    with ``ex.wait`` when they have ended (`StageFailed` if a task did not complete).
    """
    from ..util.io import join
    from ..util.parallel import child_env, spawnable_main

    executors = []
    prev = None
    for st in stages:
        e = ex.make(st.pipeline, st.tasks, join(logging_dir, st.name), st.name, depends=prev if ex.kind == "slurm" else None)
        executors.append(e)
        prev = e
    if ex.kind == "slurm":
        import subprocess

        try:
            executors[-1].run()  # launches the dependencies first
        except subprocess.CalledProcessError as err:
            done = [f"{st.name}: job {e.job_id}" for st, e in zip(stages, executors) if e.job_id not in (None, -1)]
            raise LcdataError(f"sbatch refused a job (exit status {err.returncode}; its message is above)"
                              + (f"; already submitted: {', '.join(done)} (scancel them)" if done else "")) from None
        except FileNotFoundError as err:
            raise LcdataError(f"{err.filename or 'sbatch'} is not on PATH: --executor slurm submits with sbatch; "
                              "run on a login node of the cluster") from None
        if ex.wait:
            from .slurm import wait_for_stages

            failed = wait_for_stages(stages, executors, time_limit=ex.time)
            if failed:
                raise StageFailed(*failed)
        return executors
    if ex.kind == "ray":
        import ray

        if not ray.is_initialized():
            ray.init()
    if ex.kind == "local":
        # pool workers fork from datatrove's forkserver: import lcdata there once, not in every worker of
        # every stage (~1 s each); it starts no thread pool on import, so forking it is safe
        import multiprocess

        multiprocess.get_context("forkserver").set_forkserver_preload(["lcdata.scaleout.pipelines"])
    for st, e in zip(stages, executors):
        try:
            if ex.kind == "local" and e.workers > 1:
                with child_env(e.workers), spawnable_main():
                    e.run()
            else:
                e.run()
        except LcdataError:
            raise
        except Exception as err:
            raise StageFailed(st.name, f"a task failed: {type(err).__name__}: {err}") from err
        left = e.get_incomplete_ranks(skip_completed=True)
        if left:
            raise StageFailed(st.name, f"tasks {left[:10]}{' ...' if len(left) > 10 else ''} did not complete")
    return executors


class StageFailed(LcdataError):
    """A stage ended with tasks not completed; a rerun of the same command runs only those."""

    def __init__(self, stage: str, what: str, rerun: str = "rerun the same command"):
        self.stage, self.what, self.rerun = stage, what, rerun
        super().__init__(f"stage {stage!r}: {what}; fix the cause and {rerun}: completed tasks are skipped "
                         "(datatrove completion markers)")

    def __reduce__(self):
        return (StageFailed, (self.stage, self.what, self.rerun))


# ------------------------------------------------------------------------------------------- CLI


SCALE_OUT_GROUP = "scale-out (Slurm, Ray or local datatrove executors; docs/scale-out.md)"


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    """Add the scale-out flags (``--executor`` and the executor's own options) to a subcommand."""
    g = parser.add_argument_group(SCALE_OUT_GROUP, "run the per-file work as datatrove tasks, here or on a cluster; "
                                  "without --executor these flags are ignored")
    g.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="run the per-file work as datatrove tasks: local, slurm or ray (default: lcdata's own "
                        "process pool, --workers)")
    g.add_argument("--tasks", type=size_type("tasks"), default=None, metavar="N",
                   help="datatrove tasks of the per-file stages (default: one per input file, at most the cores "
                        "for local, 1000 otherwise)")
    g.add_argument("--executor-workers", type=size_type("tasks"), default=None, metavar="N",
                   help="tasks running at once (default: the cores for local, no limit for slurm/ray)")
    g.add_argument("--partition", default=None, help="slurm: partition (required with slurm)")
    g.add_argument("--time", default=None, metavar="HH:MM:SS",
                   help="slurm: time limit per job, e.g. 04:00:00 (required with slurm); ray: per task")
    g.add_argument("--logging-dir", default=None,
                   help="datatrove logging folder: completions, stats, logs (default: OUT/_scaleout/logs)")
    g.add_argument("--cpus-per-task", type=size_type("CPUs"), default=1, metavar="N", help="slurm/ray: CPUs per task")
    g.add_argument("--mem-per-cpu-gb", type=float, default=2.0, metavar="GiB",
                   help="slurm/ray: memory per CPU in GiB (Slurm's G = 1024^3 bytes)")
    g.add_argument("--job-name", default="lcdata", help="slurm: job name prefix")
    g.add_argument("--qos", default=None, help="slurm: QOS (default: the partition's)")
    g.add_argument("--wait", action="store_true",
                   help="slurm: wait until the jobs end, print the result as the local run does, and fail naming "
                        "each task that did not complete (state, logs) (default: return once submitted)")
    g.add_argument("--env-command", default=None,
                   help="slurm: shell command run before each job (default: source the running venv)")


def executor_from_args(args: argparse.Namespace, logging_dir: str | None = None) -> ExecutorConfig | None:
    """The `ExecutorConfig` of parsed flags, or None without ``--executor`` (lcdata's own pool)."""
    if getattr(args, "executor", None) is None:
        return None
    return ExecutorConfig(kind=args.executor, tasks=args.tasks, workers=args.executor_workers,
                          logging_dir=args.logging_dir or logging_dir, partition=args.partition, time=args.time,
                          cpus_per_task=args.cpus_per_task, mem_per_cpu_gb=args.mem_per_cpu_gb,
                          job_name=args.job_name, qos=args.qos, env_command=args.env_command,
                          wait=getattr(args, "wait", False))
