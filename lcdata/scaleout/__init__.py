"""Scale-out on datatrove executors (local, Slurm, Ray): the executors (`executors`), the step base (`steps`), the stats and sample stages (`pipelines`), the build stages (`build`); they use the stages' public names only."""

from __future__ import annotations

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


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
