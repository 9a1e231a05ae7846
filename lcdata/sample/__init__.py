"""`lcdata sample`: `SampleConfig` and target specs (`config`), the pure plan solver (`solver`), and the run with the plan folder (`run`: write, load, check against inputs)."""

from __future__ import annotations

from ..util.lazy import lazy_exports

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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
