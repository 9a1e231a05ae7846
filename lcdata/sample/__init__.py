"""`lcdata sample`: `SampleConfig` and target specs (`config`), the pure plan solver (`solver`), and the run with the plan folder (`run`: write, load, check against inputs)."""

from __future__ import annotations

# public name -> the module defining it, imported on first use (PEP 562): importing one module of this
# package (e.g. the CLI importing a light one) does not import the others
_EXPORTS = {
    "SHARE_TOL": "config",
    "STRATEGIES": "config",
    "SampleConfig": "config",
    "TargetSpec": "config",
    "parse_source_shares": "config",
    "SampleResult": "run",
    "check_requested": "run",
    "load_plan": "run",
    "plan_fingerprint": "run",
    "run_sample": "run",
    "sample_into": "run",
    "sample_protect": "run",
    "sample_table": "run",
    "write_plan": "run",
    "BEAM": "solver",
    "CANDIDATE_KEY": "solver",
    "CARRY_SHARE": "solver",
    "CARRY_STEPS": "solver",
    "TOTAL_SLACK": "solver",
    "UNIT_COLUMNS": "solver",
    "Plan": "solver",
    "build_report": "solver",
    "copies_stats": "solver",
    "group_targets": "solver",
    "make_units": "solver",
    "solve_lambda": "solver",
    "solve_plan": "solver",
    "recipe_table": "solver",
    "recipe_warnings": "solver",
    "UPSAMPLING": "solver",
    "base_shares": "solver",
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
