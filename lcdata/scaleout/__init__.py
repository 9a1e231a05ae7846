"""Scale-out on datatrove executors (local, Slurm, Ray): the executors (`executors`), the step base (`steps`), the stats and sample stages (`pipelines`), the build stages (`build`); they use the stages' public names only."""

from __future__ import annotations

from ..util.lazy import lazy_exports

# public name -> the module defining it, imported on first use (PEP 562): importing one module of this
# package (e.g. the CLI importing a light one) does not import the others
_EXPORTS = {
    "Finish": "build",
    "Pack": "build",
    "Tokenize": "build",
    "WriteShards": "build",
    "build_pipeline": "build",
    "load_layout": "build",
    "run_build_distributed": "build",
    "save_layout": "build",
    "EXECUTORS": "executors",
    "ExecutorConfig": "executors",
    "StageFailed": "executors",
    "add_executor_args": "executors",
    "executor_from_args": "executors",
    "parse_time": "executors",
    "run_stages": "executors",
    "SampleSolve": "pipelines",
    "StatsJob": "pipelines",
    "StatsMerge": "pipelines",
    "StatsTask": "pipelines",
    "run_sample_distributed": "pipelines",
    "run_stats_distributed": "pipelines",
    "sample_pipeline": "pipelines",
    "stats_pipeline": "pipelines",
    "FAIL_ENV": "steps",
    "SLOW_ENV": "steps",
    "InjectedFailure": "steps",
    "Stage": "steps",
    "Step": "steps",
    "as_executor": "steps",
    "assign_files": "steps",
    "check_done": "steps",
    "identity_hash": "steps",
    "prepare_logging_dir": "steps",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
