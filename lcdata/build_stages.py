"""`lcdata build` as datatrove stages: tokenize (N tasks) -> pack (1) -> shards (N) -> finish (1).

``tokenize`` runs `run_build`'s phase 1 (`_tokenize_file`) on each task's files, into the spill names of
`run_build` (``WORK/tok-NNNNN.*``), reading only those files' plan rows. ``pack`` computes the global packing
once from the spill unit tables (`_pack_layout`) and saves it (`save_layout`: NumPy arrays, memory-mapped by
the writers). ``shards``: task t writes the shards k with k % N == t (`_write_shard`), each token copied once
from its spill into its shard. ``finish`` writes documents.parquet and the manifest listing every shard, then
removes the work folder. The bytes are those of `run_build`: same spills, same layout, same shard writer.

The work folder must be one every task sees (``OUT/_work`` by default): the shard writers read the spills.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import fsspec
import numpy as np
import polars as pl

from .build import (
    BuildConfig,
    BuildResult,
    Specials,
    _load_plan_for,
    _pack_manifest,
    _tokenize_file,
    build_identity,
    build_protect,
    prepare_out,
    resolve_specials,
)
from .build_pack import PackLayout, _pack_layout, _write_shard, load_units, unit_doc_ids
from .corpus import FileReport, read_summary
from .errors import ConfigError, LcdataError
from .executors import ExecutorConfig, run_stages
from .inputs import InputFile, resolve_inputs
from .outdir import claim_out, input_roots
from .outputs import join, read_json, write_json
from .shards.format import choose_token_dtype, write_manifest
from .stages import Stage, _check_done, _executor, _exists, _logging_dir, _Step, _write_text, assign_files
from .tokenizer import TokenizerInfo, load_tokenizer, resolve_engine, tokenizer_info


@dataclass(frozen=True)
class BuildJob:
    files: tuple[InputFile, ...]
    active: tuple[int, ...]  # indices of the files with work (rows in the plan, or all)
    cfg: BuildConfig
    out_dir: str
    work_dir: str
    specials: Specials
    dtype: str
    tokenizer: TokenizerInfo
    plan_fp: str | None
    plan_tokens: bool  # the plan's lengths are in this tokenizer's tokens (checked per document)
    ident: str
    keep_work: bool
    t0: float


def _build_job(inputs, out_dir, cfg: BuildConfig, *, overwrite, resume, work_dir, keep_work, remote_ok) -> BuildJob:
    """The start of `run_build` (checks, plan, identity, output folder), done once by the driver."""
    t0 = time.time()
    files = resolve_inputs(inputs)
    info = tokenizer_info(cfg.tokenizer)
    dtype = choose_token_dtype(info.max_id, cfg.dtype)
    specials = resolve_specials(load_tokenizer(cfg.tokenizer), cfg)
    resolve_engine(cfg.tokenizer, cfg.engine)  # fails here, before any task, if a forced engine is impossible
    plan_files, plan_tokens, plan_fp = None, False, None
    if cfg.plan:
        plan, man, read = _load_plan_for(files, cfg, info.sha256)
        if read != cfg.read:
            object.__setattr__(cfg, "read", read)  # the plan's ids depend on how it read the corpus
        plan_files = set(plan["file"].unique().to_list())
        missing = plan_files - {f.rel for f in files}
        if missing:
            raise ConfigError(f"the plan names files not among the inputs: {sorted(missing)[:5]}")
        plan_tokens, plan_fp = bool(man.get("tokenizer")), man["plan_fingerprint"]
    ident = build_identity(files, cfg, info.sha256, plan_fp)
    # The driver claims the folder (refusals, --overwrite, --resume identity) and holds its lock while it
    # prepares; the tasks, which may run on other machines, write only their own files.
    with claim_out(out_dir, "shards", overwrite=overwrite, resume=resume, protect=build_protect(inputs, files, cfg),
                   inputs=input_roots(inputs)) as claim:
        prepare_out(claim, ident)
    write_json({"identity": ident, "config": cfg.to_dict()}, join(out_dir, "build.json"))
    if work_dir is None:
        if "://" not in out_dir or out_dir.startswith("file://"):
            work_dir = join(out_dir.removeprefix("file://"), "_work")
        elif remote_ok:
            work_dir = tempfile.mkdtemp(prefix="lcdata-work-")
        else:
            raise ConfigError(f"--out {out_dir!r} is remote: give a work folder on a filesystem every task "
                              "shares (work_dir=..., e.g. on the cluster's shared disk)")
    os.makedirs(work_dir, exist_ok=True)
    active = tuple(i for i, f in enumerate(files) if plan_files is None or f.rel in plan_files)
    return BuildJob(files=tuple(files), active=active, cfg=cfg, out_dir=out_dir, work_dir=work_dir,
                    specials=specials, dtype=dtype.str, tokenizer=info, plan_fp=plan_fp, plan_tokens=plan_tokens,
                    ident=ident, keep_work=keep_work, t0=t0)


class Tokenize(_Step):
    """Per task: phase 1 of `run_build` (`_tokenize_file`) on its files, reading only their plan rows."""

    name = "tokenize"

    def work(self, rank, world_size):
        job = self.job
        mine = [job.active[j] for j in assign_files([job.files[i].size for i in job.active], world_size)[rank]]
        rows = _plan_rows(job, [job.files[i].rel for i in mine]) if job.cfg.plan else None
        for n, i in enumerate(mine):
            self._check_fail(rank, n)
            f = job.files[i]
            r = None
            if rows is not None:
                r = rows.filter(pl.col("file") == f.rel).select(
                    "row", "chunk", "token_start", "token_end", "copies",
                    plan_tokens=pl.col("n_tokens") if job.plan_tokens else pl.lit(None, pl.Int64))
            with self.track_time("file"):
                res = _tokenize_file((i, f, job.cfg, r, job.work_dir, job.specials, job.dtype))
            if res["resumed"]:  # counted in the manifest's read report, as run_build does
                _write_text(os.path.join(job.work_dir, f"tok-{i:05d}.resumed"), "")
            self.stat_update("resumed" if res["resumed"] else "files")


def _plan_rows(job: BuildJob, rels: list[str]) -> pl.DataFrame:
    path = join(job.cfg.plan, "plan.parquet")
    want = pl.col("file").is_in(rels)
    if "://" not in path or path.startswith("file://"):
        return pl.scan_parquet(path.removeprefix("file://")).filter(want).collect()
    with fsspec.open(path, "rb") as fh:
        return pl.read_parquet(fh).filter(want)


class Pack(_Step):
    """One task: the global packing (instance order, sequences, permutation), computed once and saved."""

    name = "pack"

    def work(self, rank, world_size):
        job = self.job
        d = os.path.join(job.work_dir, "layout")
        if os.path.exists(os.path.join(d, "layout.json")):
            return
        units = load_units(job.work_dir, job.active)
        save_layout(_pack_layout(units, [f.rel for f in job.files], job.cfg), d)


class WriteShards(_Step):
    """Per task: shards k with k % tasks == rank, from the saved layout and the spills."""

    name = "shards"

    def work(self, rank, world_size):
        job = self.job
        lay = load_layout(os.path.join(job.work_dir, "layout"))
        spills: dict = {}  # the spill files this task has opened, kept open across its shards
        try:
            for n, k in enumerate(range(rank, lay.n_shards, world_size)):
                self._check_fail(rank, n)
                with self.track_time("shard"):
                    _write_shard(lay, k, job.cfg, job.out_dir, job.work_dir, job.specials, np.dtype(job.dtype),
                                 spills)
                self.stat_update("shards")
        finally:
            for fh in spills.values():
                fh.close()


class Finish(_Step):
    """One task: documents.parquet and manifest.json (every shard listed); then the work folder is removed."""

    name = "finish"

    def work(self, rank, world_size):
        job = self.job
        man_path = join(job.out_dir, "manifest.json")
        if _exists(man_path) and read_json(man_path).get("identity") == job.ident:
            return
        lay = load_layout(os.path.join(job.work_dir, "layout"))
        shards = []
        for k in range(lay.n_shards):
            marker = os.path.join(job.work_dir, f"shard-{k:05d}.done.json")
            if not os.path.exists(marker):
                raise LcdataError(f"shard {k} of {lay.n_shards} was not written ({marker} is missing); rerun the "
                                  "same command")
            with open(marker) as fh:
                shards.append(json.load(fh))
        manifest = _pack_manifest(lay, shards, list(job.files), job.cfg, job.out_dir, job.tokenizer, job.specials,
                                  np.dtype(job.dtype), job.plan_fp, job.ident,
                                  unit_doc_ids(job.work_dir, job.active) if job.cfg.read.id_field else None)
        reports = []
        for i in job.active:  # read reports that _tokenize_file keeps beside each spill
            p = os.path.join(job.work_dir, f"tok-{i:05d}.report.json")
            if not os.path.exists(p):  # every active file was tokenized: its report must be there
                raise LcdataError(f"the read report of {job.files[i].rel} ({p}) is missing; rerun the same command")
            with open(p) as fh:
                reports.append(FileReport(**json.load(fh)))
        resumed = sum(os.path.exists(os.path.join(job.work_dir, f"tok-{i:05d}.resumed")) for i in job.active)
        manifest["read_report"] = {**read_summary(reports), "files_resumed": resumed}
        name, why = resolve_engine(job.cfg.tokenizer, job.cfg.engine)  # as run_build records it
        manifest["engine"] = {"name": name, "reason": why}
        manifest["elapsed_s"] = round(time.time() - job.t0, 3)
        write_manifest(manifest, job.out_dir)  # last: marks a complete build
        if not job.keep_work:
            shutil.rmtree(job.work_dir, ignore_errors=True)


_LAYOUT_ARRAYS = ("segs", "out_pos", "bounds", "inst_file", "inst_off", "inst_src", "inst_unit", "inst_copy",
                  "unit_row", "unit_chunk", "unit_length")


def save_layout(lay: PackLayout, d: str) -> None:
    """Write a `PackLayout` to folder ``d`` (NumPy arrays, ``layout.json`` last)."""
    os.makedirs(d, exist_ok=True)
    for name in _LAYOUT_ARRAYS:
        tmp = os.path.join(d, f"{name}.npy.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(getattr(lay, name)), allow_pickle=False)
        os.replace(tmp, os.path.join(d, f"{name}.npy"))
    meta = {"sources": lay.sources, "files": lay.files, "n_seq": lay.n_seq, "per_shard": lay.per_shard,
            "padding": lay.padding, "dropped": lay.dropped}
    _write_text(os.path.join(d, "layout.json"), json.dumps(meta))


def load_layout(d: str) -> PackLayout:
    """Read a layout saved by `save_layout`; arrays are memory-mapped (each task reads only its shards' part)."""
    with open(os.path.join(d, "layout.json")) as fh:
        meta = json.load(fh)
    arrays = {name: np.load(os.path.join(d, f"{name}.npy"), mmap_mode="r") for name in _LAYOUT_ARRAYS}
    return PackLayout(**arrays, **meta)


def build_pipeline(inputs, out_dir: str, cfg: BuildConfig, *, tasks: int, overwrite: bool = False,
                   resume: bool = False, work_dir: str | None = None, keep_work: bool = False) -> list[Stage]:
    """The stages of `lcdata build`: ``tokenize`` (tasks), ``pack`` (1), ``shards`` (tasks), ``finish`` (1).

    Building them does what `run_build` does before its work: resolves the inputs, checks the plan against
    them and the tokenizer, and prepares ``out_dir`` (``overwrite`` / ``resume`` as in `run_build`). The work
    folder must be shared by every task (default ``OUT/_work``).
    """
    job = _build_job(inputs, out_dir, cfg, overwrite=overwrite, resume=resume, work_dir=work_dir,
                     keep_work=keep_work, remote_ok=work_dir is not None)
    return _build_stages(job, tasks)


def _build_stages(job: BuildJob, tasks: int) -> list[Stage]:
    return [Stage("tokenize", [Tokenize(job)], tasks), Stage("pack", [Pack(job)], 1),
            Stage("shards", [WriteShards(job)], tasks), Stage("finish", [Finish(job)], 1)]


def run_build_distributed(inputs, out_dir: str, cfg: BuildConfig, executor: str | ExecutorConfig = "local", *,
                          overwrite: bool = False, resume: bool = False, work_dir: str | None = None,
                          keep_work: bool = False, **executor_opts) -> BuildResult | None:
    """`run_build` on a datatrove executor: the same shard bytes, documents.parquet and manifest counts.
    A rerun after a failure needs ``resume=True`` (as `run_build`); finished tasks, files and shards are
    skipped. Returns the result (None for Slurm: the jobs are submitted; the last writes manifest.json).

    >>> run_build_distributed(["data/demo"], "out/shards", BuildConfig(tokenizer="data/demo/tokenizer.json",
    ...                       seq_len=8192), "local", tasks=4, workers=2)  # doctest: +SKIP
    """
    ex = _executor(executor, executor_opts)
    job = _build_job(inputs, out_dir, cfg, overwrite=overwrite, resume=resume, work_dir=work_dir,
                     keep_work=keep_work, remote_ok=ex.kind == "local")
    stages = _build_stages(job, ex.n_tasks(len(job.active)))
    logs = _logging_dir(ex, out_dir, job.ident, stages, fresh=overwrite)
    run_stages(stages, ex, logs)
    if ex.kind == "slurm":
        return None
    _check_done(join(out_dir, "manifest.json"), logs)
    return BuildResult(out_dir=out_dir, manifest=read_json(join(out_dir, "manifest.json")))


