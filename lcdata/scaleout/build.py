"""`lcdata build` as datatrove stages: tokenize (N tasks) -> pack (1) -> shards (N) -> finish (1).

``tokenize`` runs `run_build`'s phase 1 (`tokenize_file`) on each task's files, into the spill names of
`run_build` (``WORK/tok-NNNNN.*``), reading only those files' plan rows. ``pack`` computes the global packing
once from the spill unit tables (`build_layout`: in memory, or out of core above the memory limit) and saves
it (`save_layout`, or the out-of-core layout's own folder moved there: NumPy arrays, memory-mapped by the
writers). ``shards``: task t writes the shards k with k % N == t (`write_shard`: vectorised gathers from
the memory-mapped spills, its own checksums), each token copied once from its spill into its shard; the last
task (the fewest shards) also writes documents.parquet (`write_documents_once`, its entry kept in
``WORK/documents.done.json``). ``finish`` writes the manifest listing every shard, then removes the work
folder. The bytes are those of `run_build`: same spills, same layout, same shard writer.

The work folder must be one every task sees (``OUT/_work`` by default): the shard writers read the spills.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import fsspec
import numpy as np
import polars as pl

from ..build import (
    BuildConfig,
    BuildResult,
    PhaseClock,
    PreparedBuild,
    finish_build,
    pack_manifest,
    prepare_build,
    tokenize_file,
)
from ..build.layout import (
    Spills,
    load_layout,
    save_layout,
    unit_doc_ids,
    write_documents,
    write_shard,
)
from ..build.spilled import build_layout
from ..corpus.reader import FileReport
from ..errors import LcdataError
from ..util.io import exists, is_local, join, read_json, write_text
from .executors import ExecutorConfig, StageFailed, run_stages
from .steps import Stage, Step, as_executor, assign_files, check_done, prepare_logging_dir


def _job(inputs, out_dir, cfg, *, overwrite, resume, work_dir, keep_work, remote_work) -> PreparedBuild:
    """`prepare_build` done once by the driver; the job the tasks get is its result without the plan frame
    (each tokenize task reads its own files' plan rows from the plan folder). The driver holds the claim (refusals, --overwrite, --resume
    identity) and its lock while it prepares; the tasks, which may run on other machines, write only their
    own files."""
    with prepare_build(inputs, out_dir, cfg, overwrite=overwrite, resume=resume, work_dir=work_dir,
                       keep_work=keep_work, remote_work=remote_work) as job:
        return dataclasses.replace(job, plan=None)


class Tokenize(Step):
    """Per task: phase 1 of `run_build` (`tokenize_file`) on its files, reading only their plan rows."""

    name = "tokenize"

    def work(self, rank, world_size):
        job = self.job
        mine = [job.active[j] for j in assign_files([job.files[i].size for i in job.active], world_size)[rank]]
        rows = _plan_rows(job, [job.files[i].rel for i in mine]) if job.cfg.plan else None
        for n, i in enumerate(mine):
            self._check_fail(rank, n)
            r = job.plan_rows(rows, job.files[i].rel) if rows is not None else None
            with self.track_time("file"):
                res = tokenize_file(job.tokenize_args(i, r))
            if res["resumed"]:  # counted in the manifest's read report, as run_build does
                write_text("", os.path.join(job.work_dir, f"tok-{i:05d}.resumed"))
            self.stat_update("resumed" if res["resumed"] else "files")


def _plan_rows(job: PreparedBuild, rels: list[str]) -> pl.DataFrame:
    path = join(job.cfg.plan, "plan.parquet")
    want = pl.col("file").is_in(rels)
    if is_local(path):
        return pl.scan_parquet(path.removeprefix("file://")).filter(want).collect()
    with fsspec.open(path, "rb") as fh:
        return pl.read_parquet(fh).filter(want)


class Pack(Step):
    """One task: the global packing (instance order, sequences, permutation), computed once and saved."""

    name = "pack"

    def __init__(self, job, memory_limit: int | None = None):
        super().__init__(job)
        self.memory_limit = memory_limit

    def work(self, rank, world_size):
        job = self.job
        d = os.path.join(job.work_dir, "layout")
        if os.path.exists(os.path.join(d, "layout.json")):
            return
        lay = build_layout(job.work_dir, job.active, [f.rel for f in job.files], job.cfg, self.memory_limit)
        if lay.dir is None:
            save_layout(lay, d)
        else:  # computed under the memory limit: its folder is a saved layout already (layout.json last)
            src = lay.dir
            del lay  # its memory maps closed before the folder moves
            shutil.rmtree(d, ignore_errors=True)
            os.replace(src, d)


class WriteShards(Step):
    """Per task: shards k with k % tasks == rank, from the saved layout and the spills."""

    name = "shards"

    def work(self, rank, world_size):
        job = self.job
        lay = load_layout(os.path.join(job.work_dir, "layout"))
        spills = Spills(job.work_dir, job.dtype)  # the spills this task has mapped, kept across its shards
        try:
            for n, k in enumerate(range(rank, lay.n_shards, world_size)):
                self._check_fail(rank, n)
                with self.track_time("shard"):
                    write_shard(lay, k, job.cfg, job.out_dir, job.work_dir, job.specials, np.dtype(job.dtype),
                                spills)
                self.stat_update("shards")
        finally:
            spills.close()
        if rank == world_size - 1:  # the task with the fewest shards also writes documents.parquet
            with self.track_time("documents"):
                write_documents_once(job, lay)


DOCUMENTS_MARKER = "documents.done.json"  # in the work folder: documents.parquet's manifest entry, once written


def write_documents_once(job: PreparedBuild, lay) -> dict:
    """documents.parquet of the build, unless its marker says it is written (and the file has that size);
    returns its manifest entry."""
    marker = os.path.join(job.work_dir, DOCUMENTS_MARKER)
    if os.path.exists(marker):
        entry = read_json(marker)
        path = join(job.out_dir, entry["path"])
        if exists(path) and fsspec.core.url_to_fs(path)[0].size(path) == entry["bytes"]:
            return entry
    entry = write_documents(lay, job.out_dir,
                            unit_doc_ids(job.work_dir, job.active) if job.cfg.read.id_field else None)
    write_text(json.dumps(entry), marker)
    return entry


class Finish(Step):
    """One task: documents.parquet and manifest.json (every shard listed); then the work folder is removed."""

    name = "finish"

    def work(self, rank, world_size):
        job = self.job
        man_path = join(job.out_dir, "manifest.json")
        if exists(man_path) and read_json(man_path).get("identity") == job.ident:
            return
        clock = PhaseClock()  # tokenize, layout and write ran in other stages' tasks: not measured here
        lay = load_layout(os.path.join(job.work_dir, "layout"))
        shards = []
        for k in range(lay.n_shards):
            marker = os.path.join(job.work_dir, f"shard-{k:05d}.done.json")
            if not os.path.exists(marker):
                raise LcdataError(f"shard {k} of {lay.n_shards} was not written ({marker} is missing); rerun the "
                                  "same command")
            with open(marker) as fh:
                shards.append(json.load(fh))
        manifest = pack_manifest(job, lay, shards, documents=write_documents_once(job, lay))
        clock.lap("documents")
        reports = []
        for i in job.active:  # read reports that tokenize_file keeps beside each spill
            p = os.path.join(job.work_dir, f"tok-{i:05d}.report.json")
            if not os.path.exists(p):  # every active file was tokenized: its report must be there
                raise LcdataError(f"the read report of {job.files[i].rel} ({p}) is missing; rerun the same command")
            with open(p) as fh:
                reports.append(FileReport(**json.load(fh)))
        resumed = sum(os.path.exists(os.path.join(job.work_dir, f"tok-{i:05d}.resumed")) for i in job.active)
        finish_build(job, manifest, reports, resumed, clock)


def build_pipeline(inputs, out_dir: str, cfg: BuildConfig, *, tasks: int, overwrite: bool = False,
                   resume: bool = False, work_dir: str | None = None, keep_work: bool = False) -> list[Stage]:
    """The stages of `lcdata build`: ``tokenize`` (tasks), ``pack`` (1), ``shards`` (tasks), ``finish`` (1).

    Building them does what `run_build` does before its work: resolves the inputs, checks the plan against
    them and the tokenizer, and prepares ``out_dir`` (``overwrite`` / ``resume`` as in `run_build`). The work
    folder must be shared by every task (default ``OUT/_work``).
    """
    job = _job(inputs, out_dir, cfg, overwrite=overwrite, resume=resume, work_dir=work_dir, keep_work=keep_work,
               remote_work=work_dir is not None)
    return _build_stages(job, tasks)


def _build_stages(job: PreparedBuild, tasks: int, memory_limit: int | None = None) -> list[Stage]:
    return [Stage("tokenize", [Tokenize(job)], tasks), Stage("pack", [Pack(job, memory_limit)], 1),
            Stage("shards", [WriteShards(job)], tasks), Stage("finish", [Finish(job)], 1)]


def run_build_distributed(inputs, out_dir: str, cfg: BuildConfig, executor: str | ExecutorConfig = "local", *,
                          overwrite: bool = False, resume: bool = False, work_dir: str | None = None,
                          keep_work: bool = False, memory_limit: int | None = None,
                          **executor_opts) -> BuildResult | None:
    """`run_build` on a datatrove executor: the same shard bytes, documents.parquet and manifest counts.
    ``memory_limit``: the pack task's, as `run_build`'s (bytes; default a quarter of the memory the task may use).
    A rerun after a failure needs ``resume=True`` (as `run_build`); finished tasks, files and shards are
    skipped. Returns the result (None for Slurm: the jobs are submitted; the last writes manifest.json).

    >>> run_build_distributed(["data/demo"], "out/shards", BuildConfig(tokenizer="data/demo/tokenizer.json",
    ...                       seq_len=8192), "local", tasks=4, workers=2)  # doctest: +SKIP
    """
    ex = as_executor(executor, executor_opts)
    job = _job(inputs, out_dir, cfg, overwrite=overwrite, resume=resume, work_dir=work_dir, keep_work=keep_work,
               remote_work=ex.kind == "local")
    stages = _build_stages(job, ex.n_tasks(len(job.active)), memory_limit)
    logs = prepare_logging_dir(ex, out_dir, job.ident, stages, fresh=overwrite)
    try:
        run_stages(stages, ex, logs)
    except StageFailed as e:  # as run_build, the rerun must say that it continues
        raise StageFailed(e.stage, e.what, "rerun the same command with --resume") from None
    if ex.kind == "slurm" and not ex.wait:
        return None
    check_done(join(out_dir, "manifest.json"), logs)
    return BuildResult(out_dir=out_dir, manifest=read_json(join(out_dir, "manifest.json")))


