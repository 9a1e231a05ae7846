"""`lcdata stats`, `sample` and `build` as datatrove pipelines: datatrove schedules, lcdata computes.

A command is a few *stages* (`Stage`: a datatrove pipeline and its task count), run by any datatrove executor
(`lcdata.scaleout.executors`: local, Slurm, Ray). The work unit is an input file: task t of N takes the files
`assign_files` gives it (largest first to the least-loaded task, over the sorted file list: balanced by
size and deterministic) and runs lcdata's own per-file function on them, in Arrow batches with vectorised
Polars / batch tokenization (no per-document Python loop). Math that needs a global view runs once, in a
one-task stage:

- stats:  ``stats`` (N tasks: `stats_one_file` per file; partials in ``OUT/_scaleout/partials``) ->
  ``stats-merge`` (1: `merge_histograms`, reports and document lengths in file order -> the `run_stats` folder)
- sample: the stats stages (into ``OUT/stats``) -> ``sample`` (1: `run_sample` solves the plan once from the
  merged lengths). The plan is *applied* per task by the build: each tokenize task reads its files' rows only.
- build:  ``tokenize`` (N: `tokenize_file` -> ``WORK/tok-NNNNN.*``, the spill names of `run_build`) ->
  ``pack`` (1: `pack_layout` over the spill unit tables, saved to ``WORK/layout/``) -> ``shards`` (N: task t
  writes shards k with k % N == t, `write_shard`; the last task also documents.parquet) -> ``finish`` (1: a
  manifest listing every shard). Token data is written once, into its shard; nothing is rewritten globally.

Same bytes: every global decision (histogram merge, plan, instance order, packing, sequence permutation) is
a function of per-file results taken in file order, so any executor and any number of tasks writes the same
stats frames, plan and shard bytes as the single-process path (tests/scaleout/test_pipelines.py checks it).

Resume: datatrove skips tasks with a completion marker; inside a task, finished files (spills) and shards
(markers) are not redone, and partials are keyed by file index, so a rerun never duplicates a document. The
logging folder remembers what it was started for (``run.json``): another identity (inputs, options, task
counts) starts over in the default folder ``OUT/_scaleout/logs`` and is refused in a ``--logging-dir`` given.

This module holds the stats and sample stages and the public entry points; the build's stages are in
`lcdata.scaleout.build`, what all stages share (step base class, file assignment, test hook) in `lcdata.scaleout.steps`.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from dataclasses import dataclass

import fsspec
import polars as pl

from ..corpus.inputs import InputFile, resolve_inputs
from ..corpus.reader import FileReport
from ..errors import LcdataError
from ..sample.run import sample_protect
from ..stats.config import StatsConfig
from ..stats.lengths import merge_histograms
from ..stats.run import (
    DocWriter,
    StatsResult,
    fingerprint,
    load_stats,
    reports_to_frames,
    stats_one_file,
    stats_protect,
    stats_tokenizer,
    write_stats,
)
from ..util.io import (
    exists,
    join,
    make_dirs,
    read_json,
    read_parquet,
    read_text,
    write_json,
    write_parquet,
    write_text,
)
from ..util.outdir import claim_out, input_roots
from .build import build_pipeline, load_layout, run_build_distributed, save_layout
from .executors import EXECUTORS, ExecutorConfig, StageFailed, add_executor_args, executor_from_args, run_stages
from .steps import (
    FAIL_ENV,
    InjectedFailure,
    Stage,
    Step,
    as_executor,
    assign_files,
    check_done,
    identity_hash,
    prepare_logging_dir,
)

__all__ = ["Stage", "assign_files", "stats_pipeline", "sample_pipeline", "build_pipeline", "run_stats_distributed",
           "run_sample_distributed", "run_build_distributed", "save_layout", "load_layout", "ExecutorConfig",
           "EXECUTORS", "StageFailed", "InjectedFailure", "FAIL_ENV", "add_executor_args", "executor_from_args"]


# ------------------------------------------------------------------------------------------ stats


@dataclass(frozen=True)
class StatsJob:
    files: tuple[InputFile, ...]
    config: StatsConfig
    out_dir: str
    partials: str
    tokenizer: dict | None
    engine: dict | None  # {"name", "reason"}, resolved once by the driver (`stats_tokenizer`)
    figure: bool = True

    @property
    def fingerprint(self) -> str:
        return fingerprint(list(self.files), self.config, (self.tokenizer or {}).get("sha256"))

    @property
    def identity(self) -> str:
        return identity_hash({"fingerprint": self.fingerprint, "config": self.config.to_dict(), "figure": self.figure})


def _stats_job(inputs, out_dir: str, config: StatsConfig | None, figure: bool) -> StatsJob:
    config = config or StatsConfig()
    tok, engine = stats_tokenizer(config)  # fails here, before any task, if the engine cannot run
    return StatsJob(files=tuple(resolve_inputs(inputs)), config=config, out_dir=out_dir,
                    partials=join(out_dir, "_scaleout/partials"), tokenizer=tok, engine=engine, figure=figure)


class StatsTask(Step):
    """Per task: `stats_one_file` on its files -> per-file document lengths, one histogram and reports."""

    name = "stats"

    def work(self, rank, world_size):
        job = self.job
        mine = assign_files([f.size for f in job.files], world_size)[rank]
        t0 = time.perf_counter()
        make_dirs(job.partials)
        hists, reports = [], []
        for n, i in enumerate(mine):
            self._check_fail(rank, n)
            with self.track_time("file"):
                report, hist, docs = stats_one_file((job.files[i], job.config, job.engine and job.engine["name"]))
            if job.config.doc_lengths:
                write_parquet(pl.from_arrow(docs), join(job.partials, f"docs-{i:05d}.parquet"))
            hists.append(hist)
            reports.append({"index": i, **dataclasses.asdict(report)})
            self.stat_update("files")
            self.stat_update("documents", value=report.n_counted)
        base = join(job.partials, f"task-{rank:05d}-of-{world_size:05d}")
        write_parquet(merge_histograms(hists), base + ".hist.parquet")
        write_json({"elapsed_s": time.perf_counter() - t0, "reports": reports}, base + ".json")  # last


class StatsMerge(Step):
    """One task: the exact merge of the per-task partials into the stats folder of `run_stats`."""

    name = "stats-merge"

    def __init__(self, job: StatsJob, tasks: int):
        super().__init__(job)
        self.tasks = tasks

    def work(self, rank, world_size):
        job = self.job
        done = join(job.partials, "merged")
        if exists(done) and read_text(done) == job.identity:  # merged by an earlier run whose marker was lost
            return
        hists, reports, elapsed = [], {}, 0.0
        for t in range(self.tasks):
            base = join(job.partials, f"task-{t:05d}-of-{self.tasks:05d}")
            meta = read_json(base + ".json")
            hists.append(read_parquet(base + ".hist.parquet"))
            elapsed += meta["elapsed_s"]
            for r in meta["reports"]:
                i = r.pop("index")
                reports[i] = FileReport(**r)
        if sorted(reports) != list(range(len(job.files))):
            raise LcdataError(f"the stats partials in {job.partials} cover {len(reports)} of {len(job.files)} "
                              "files; rerun the same command")
        make_dirs(job.out_dir)
        if job.config.doc_lengths:  # streamed in file order, like run_stats
            sink, ok = DocWriter(join(job.out_dir, "doc_lengths.parquet")), False
            try:
                for i in range(len(job.files)):
                    sink(read_parquet(join(job.partials, f"docs-{i:05d}.parquet")))
                ok = True
            finally:
                sink.close(ok)
        files_df, skips_df = reports_to_frames([reports[i] for i in range(len(job.files))])
        result = StatsResult(config=job.config, inputs=list(job.files), histogram=merge_histograms(hists),
                             files=files_df, skips=skips_df, fingerprint=job.fingerprint, tokenizer=job.tokenizer,
                             elapsed_s=elapsed, engine=job.engine)
        write_stats(result, job.out_dir, figure=job.figure)
        write_text(job.identity, join(job.partials, "merged"))
        _rm_partials(job)


def _run_keeping_folder(stages: list[Stage], ex: ExecutorConfig, logs: str) -> StageFailed | None:
    """`run_stages`, returning its `StageFailed` instead of raising it inside `claim_out`: a failed task is
    not a user's error, so the folder (completion markers, logs, partials) stays for the rerun to continue."""
    try:
        run_stages(stages, ex, logs)
    except StageFailed as e:
        return e
    return None


def _rm_partials(job: StatsJob) -> None:
    fs, p = fsspec.core.url_to_fs(job.partials)
    for path in fs.ls(p, detail=False):
        if not path.endswith("/merged"):
            fs.rm(path)


def stats_pipeline(inputs, out_dir: str, config: StatsConfig | None = None, *, tasks: int,
                   figure: bool = True) -> list[Stage]:
    """The stages of `lcdata stats` for ``tasks`` tasks: ``stats`` (tasks) then ``stats-merge`` (1 task).

    >>> from datatrove.executor import LocalPipelineExecutor  # doctest: +SKIP
    >>> for st in stats_pipeline(["data/demo"], "out/stats", tasks=4):  # doctest: +SKIP
    ...     LocalPipelineExecutor(st.pipeline, tasks=st.tasks, logging_dir=f"logs/{st.name}").run()
    """
    job = _stats_job(inputs, out_dir, config, figure)
    return _stats_stages(job, tasks)


def _stats_stages(job: StatsJob, tasks: int) -> list[Stage]:
    return [Stage("stats", [StatsTask(job)], tasks), Stage("stats-merge", [StatsMerge(job, tasks)], 1)]


def run_stats_distributed(inputs, out_dir: str, config: StatsConfig | None = None,
                          executor: str | ExecutorConfig = "local", *, figure: bool = True, overwrite: bool = False,
                          **executor_opts) -> StatsResult | None:
    """`run_stats` on a datatrove executor; the same stats folder. Returns the result (None for Slurm: the
    jobs are submitted and the last one writes the folder).

    >>> run_stats_distributed(["data/demo"], "out/stats", executor="local", tasks=4, workers=2)  # doctest: +SKIP
    """
    ex = as_executor(executor, executor_opts)
    # A rerun of the same command continues (datatrove's completion markers); --overwrite starts afresh.
    with claim_out(out_dir, "stats", overwrite=overwrite, resume=not overwrite, resume_flag=None,
                   protect=stats_protect(inputs, config or StatsConfig()), inputs=input_roots(inputs)):
        job = _stats_job(inputs, out_dir, config, figure)
        stages = _stats_stages(job, ex.n_tasks(len(job.files)))
        logs = prepare_logging_dir(ex, out_dir, job.identity, stages, fresh=overwrite)
        failed = _run_keeping_folder(stages, ex, logs)
    if failed:
        raise failed
    if ex.kind == "slurm" and not ex.wait:
        return None
    check_done(join(out_dir, "stats.json"), logs)
    return load_stats(out_dir)


# ------------------------------------------------------------------------------------------ sample


class SampleSolve(Step):
    """One task: solve the plan once from the merged per-document lengths (`run_sample`)."""

    name = "sample"

    def work(self, rank, world_size):
        from ..sample.run import sample_into

        sample_into(None, self.job["out_dir"], self.job["config"], stats_dir=self.job["stats_dir"],
                    figure=self.job["figure"])  # the driver claimed out_dir


def sample_pipeline(inputs, out_dir: str, config, *, stats_config: StatsConfig | None = None, tasks: int,
                    stats_dir: str | None = None, figure: bool = True) -> list[Stage]:
    """The stages of `lcdata sample` without ``--stats``: the stats stages into ``stats_dir`` (default
    ``OUT/stats``), then ``sample`` (1 task)."""
    sjob = _stats_job(inputs, stats_dir or join(out_dir, "stats"), stats_config, figure)
    return _sample_stages(sjob, out_dir, config, tasks, figure)


def _sample_stages(sjob: StatsJob, out_dir: str, config, tasks: int, figure: bool) -> list[Stage]:
    solve = SampleSolve({"out_dir": out_dir, "config": config, "stats_dir": sjob.out_dir, "figure": figure})
    return _stats_stages(sjob, tasks) + [Stage("sample", [solve], 1)]


def run_sample_distributed(inputs, out_dir: str, config, executor: str | ExecutorConfig = "local", *,
                           stats_config: StatsConfig | None = None, stats_dir: str | None = None,
                           figure: bool = True, overwrite: bool = False, **executor_opts):
    """`run_sample` with the length statistics computed on a datatrove executor (into ``stats_dir``, default
    ``OUT/stats``); the plan is solved once from them, so it equals the single-process plan. Returns the
    `SampleResult` (None for Slurm)."""
    from ..sample.run import SampleResult, load_plan

    ex = as_executor(executor, executor_opts)
    protect = sample_protect(inputs, None, stats_config)
    with ExitStack() as claims:  # the plan folder and a separate stats folder, as in run_stats_distributed
        claims.enter_context(claim_out(out_dir, "plan", overwrite=overwrite, resume=not overwrite, resume_flag=None,
                                       protect=protect, inputs=input_roots(inputs)))
        if stats_dir is not None:
            claims.enter_context(claim_out(stats_dir, "stats", overwrite=overwrite, resume=not overwrite,
                                           resume_flag=None, protect=protect, inputs=input_roots(inputs)))
        sjob = _stats_job(inputs, stats_dir or join(out_dir, "stats"), stats_config, figure)
        stages = _sample_stages(sjob, out_dir, config, ex.n_tasks(len(sjob.files)), figure)
        ident = identity_hash({"stats": sjob.identity, "sample": config.to_dict(), "figure": figure})
        logs = prepare_logging_dir(ex, out_dir, ident, stages, fresh=overwrite)
        failed = _run_keeping_folder(stages, ex, logs)
    if failed:
        raise failed
    if ex.kind == "slurm" and not ex.wait:
        return None
    check_done(join(out_dir, "plan.json"), logs)
    plan, manifest = load_plan(out_dir)
    from ..sample.solver import Plan

    report = read_parquet(join(out_dir, "report.parquet"))
    groups = read_parquet(join(out_dir, "groups.parquet"))
    recipe = read_json(join(out_dir, "report.json")).get("recipe")  # the length-upsampling table, as solved
    return SampleResult(plan=Plan(plan=plan, groups=groups, report=report, capped=manifest["capped"], config=config,
                                  recipe=pl.DataFrame(recipe) if recipe else None),
                        manifest=manifest)
