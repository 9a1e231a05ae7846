"""`lcdata build`: tokenize a corpus (optionally through a sample plan) into packed token shards.

Phase 1, tokenize (parallel over input files): each file is streamed, its planned documents (all of them
without a plan) are encoded with `encode_batch_fast` (long texts cut at safe points, `tokenizer.can_split`),
cut to the plan's token ranges, wrapped with BOS/EOS per policy and spilled to ``WORK/tok-NNNNN.bin``, its
read report ``tok-NNNNN.report.json``, ``tok-NNNNN.units.parquet`` and ``tok-NNNNN.done.json`` (written last,
atomically, with the size and SHA-256 of the other three: on resume a finished spill whose files still match
is not redone, and its read report still counts in the manifest; one that does not match is redone).

Phase 2, layout (`lcdata.build.layout`; one process): units are repeated by their plan copies into
*instances*, ordered by a stable hash of (seed, identity, chunk, copy), packed (`shards.packing`) and the
sequences permuted by the seed: the *layout*, NumPy arrays only. Phase 3, write: every worker writes whole
shards from the layout (`write_shards`: long pieces read straight into the write buffer, short ones gathered
vectorised from the memory-mapped spills, the checksums by each shard's writer; atomic; a shard already written with the same config is skipped on resume), while this
process writes documents.parquet. Output bytes depend only on inputs, plan, tokenizer, config and seed, never
on ``workers``, on which worker writes which shard, or on an interruption. The wall time of each phase is
printed and recorded in the manifest (``phase_s``: tokenize, layout, write, documents, verify).

Memory: phase 1 holds one chunk of one file per worker. The parent holds NumPy arrays only (`Units`,
`PackLayout`: a peak growth of about 105 bytes per instance measured from 100K to 10M synthetic documents
(`benchmarks/bench_build.py --scaling`); no per-document strings, which stay in the spill tables; with an
``--id-field`` the ids are also held, as one Polars string column) and documents.parquet's row group of 1M
rows; each writer an 8 MiB buffer and one shard's mapped spill pages. Above ``memory_limit`` the layout is
computed out of core (`spilled`: chunks bounded by the limit, about 40 bytes per output sequence, the arrays
in files under the work folder read through memory maps; 22 bytes per instance of peak growth measured
from 100K to 10M documents at a 256 MiB limit).
Serial (does not scale with workers): the layout, what documents.parquet takes beyond the shards, and the seal.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from ..corpus.reader import FileReport, read_summary
from ..errors import LcdataError
from ..shards.format import (
    DOCUMENTS_FILE,
    FORMAT,
    FORMAT_VERSION,
    PHASES,
    seal_copy,
    validate_manifest,
    write_manifest,
)
from ..util.config import check_workers
from ..util.faults import fault_point
from ..util.io import command_line
from ..util.parallel import ordered_map, resolve_workers
from ..util.progress import Stage
from ..version import VERSION
from .config import BuildConfig
from .layout import PackLayout, unit_doc_ids, write_documents, write_shards
from .spilled import SPILL_DIR, build_layout
from .start import BuildResult, PreparedBuild, prepare_build
from .tokenize import tokenize_file


def run_build(inputs, out_dir: str, cfg: BuildConfig, *, workers: int | None = None, overwrite: bool = False,
              resume: bool = False, progress: bool = False, work_dir: str | None = None,
              keep_work: bool = False, memory_limit: int | None = None) -> BuildResult:
    """Tokenize and pack ``inputs`` into ``out_dir`` (local path or fsspec URL).

    ``memory_limit`` (bytes; default a quarter of the memory this process may use, `spilled.default_memory_limit`): above
    it, the layout is computed in chunks through files in the work folder (`spilled.build_layout`) instead of
    in memory. A run setting like ``workers``: the same output bytes either way, not in the build's identity.

    >>> run_build(["data/demo"], "out/shards", BuildConfig(tokenizer="data/demo/tokenizer.json",
    ...           seq_len=8192))  # doctest: +SKIP
    """
    check_workers(workers)
    with prepare_build(inputs, out_dir, cfg, overwrite=overwrite, resume=resume, work_dir=work_dir,
                       keep_work=keep_work) as job:
        return _build_into(job, workers=workers, progress=progress, memory_limit=memory_limit)


def _build_into(job: PreparedBuild, *, workers, progress, memory_limit=None) -> BuildResult:
    """Phases 1 and 2 of `run_build` into its claimed output folder."""
    clock = PhaseClock()
    # phase 1: tokenize each file to a spill
    per_file = []
    for i in job.active:
        rows = job.plan_rows(job.plan, job.files[i].rel) if job.plan is not None else None
        per_file.append(job.tokenize_args(i, rows))
    n_workers = resolve_workers(workers, len(per_file), (f.protocol for f in job.files))
    prog = Stage("tokenize", sum(a[1].size for a in per_file), enabled=progress, items=len(per_file))
    reports = []
    n_resumed = 0
    with prog:
        for k, (args, res) in enumerate(zip(per_file, ordered_map(tokenize_file, per_file, n_workers,
                                                                  describe=lambda a: a[1].url, meter=prog.meter))):
            reports.append(res["report"])
            n_resumed += res["resumed"]
            prog.item_done(k, args[1].size, res["report"].n_counted)
    clock.lap("tokenize")

    # phase 2: order, pack, permute (one process), then write the shards (all workers)
    doc_ids = unit_doc_ids(job.work_dir, job.active) if job.cfg.read.id_field else None
    lay = build_layout(job.work_dir, job.active, [f.rel for f in job.files], job.cfg, memory_limit)
    clock.lap("layout")
    out_proto = job.out_dir.split("://", 1)[0] if "://" in job.out_dir else "file"
    w_workers = resolve_workers(workers, lay.n_shards, [out_proto])  # a memory:// folder: this process only
    written = done = 0
    # documents.parquet is written by this process while the writers write the shards (its own file, from the
    # layout): the "documents" phase is only the time it runs past them
    with Stage("pack", lay.n_seq, enabled=progress, unit="seq", items=0) as prog, \
            ThreadPoolExecutor(1, thread_name_prefix="lcdata-documents") as pool:
        def on_shard(entry: dict) -> None:
            nonlocal written, done
            written += sum(f["bytes"] for f in entry["files"].values())
            done += 1
            prog.update(entry["n_sequences"], note=f"{done}/{lay.n_shards} shards, {written / 1e6:,.1f} MB written")

        documents = pool.submit(write_documents, lay, job.out_dir, doc_ids)
        try:
            shards = write_shards(lay, job.cfg, job.out_dir, job.work_dir, job.specials, np.dtype(job.dtype),
                                  w_workers, on_shard=on_shard)
        except BaseException:
            documents.cancel()
            raise
        clock.lap("write")
        manifest = pack_manifest(job, lay, shards, doc_ids, documents=documents.result())
    clock.lap("documents")
    return finish_build(job, manifest, reports, n_resumed, clock)


# what a build writes in its work folder
WORK_FILES = ("tok-*", "shard-*.done.json", "documents.done.json", "layout*", "*.tmp-*")


def remove_work(job: PreparedBuild) -> None:
    """Remove the work folder: whole when it is lcdata's own (``OUT/_work``, a temp folder), else only the files
    a build writes there (`WORK_FILES`): a folder the caller named may hold anything else."""
    if job.own_work:
        shutil.rmtree(job.work_dir, ignore_errors=True)
        return
    import glob

    for pat in WORK_FILES:
        for p in glob.glob(os.path.join(glob.escape(job.work_dir), pat)):
            if os.path.isfile(p):
                os.remove(p)
            elif os.path.basename(p) in ("layout", SPILL_DIR):  # layout folders (`scaleout.build`, `spilled`)
                shutil.rmtree(p, ignore_errors=True)


class PhaseClock:
    """Wall seconds of a build's phases (`PHASES`), as ``manifest["phase_s"]`` records them: ``lap(name)``
    ends phase ``name`` now. A phase this process did not run (a scale-out stage's tasks) stays None."""

    def __init__(self):
        self.t = time.perf_counter()
        self.phases: dict[str, float | None] = dict.fromkeys(PHASES)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self.t, 3)
        self.t = now


def finish_build(job: PreparedBuild, manifest: dict, reports: list[FileReport], n_resumed: int,
                 clock: PhaseClock | None = None) -> BuildResult:
    """Seal a build: the read report, engine, time and phase times go into ``manifest``, which is checked
    (`validate_manifest`, the ``verify`` phase: an invalid one is a bug, never written) and written last (it
    marks a complete build); the work folder is removed unless ``keep_work``."""
    clock = clock or PhaseClock()
    manifest["read_report"] = {**read_summary(reports), "files_resumed": n_resumed}
    manifest["engine"] = {"name": job.engine[0], "reason": job.engine[1]}
    manifest["elapsed_s"] = round(time.time() - job.t0, 3)
    manifest["phase_s"] = clock.phases
    problems = validate_manifest(seal_copy(manifest))
    if problems:
        raise LcdataError(f"bug: the build's own manifest fails its checks ({'; '.join(problems[:3])}); nothing "
                          "was sealed: please report it")
    clock.lap("verify")
    fault_point("build.manifest")
    manifest = write_manifest(manifest, job.out_dir)  # last: marks a complete build
    if not job.keep_work:
        remove_work(job)
    return BuildResult(out_dir=job.out_dir, manifest=manifest)


def pack_manifest(job: PreparedBuild, lay: PackLayout, shards: list[dict], doc_ids: pl.Series | None = None,
                  documents: dict | None = None) -> dict:
    """Write documents.parquet (unless ``documents``, its entry, says it is written); return the manifest (`lcdata.shards.format.MANIFEST_SCHEMA`: every shard and
    documents.parquet listed with size and SHA-256) without the read report, engine, time and seal. Both
    `run_build` and the distributed ``finish`` step call this, so their manifests and documents.parquet are
    byte-identical."""
    cfg, info, specials = job.cfg, job.tokenizer, job.specials
    sources, st = lay.sources, lay.stats
    if documents is None:
        documents = write_documents(lay, job.out_dir, doc_ids)
    tok_per_src, docs_per_src = st["tokens_per_source"], st["documents_per_source"]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "lcdata_version": VERSION, "identity": job.ident,
        "dtype": np.dtype(job.dtype).name, "seq_len": cfg.seq_len, "packing": cfg.packing, "n_sequences": int(lay.n_seq),
        "n_documents": st["n_documents"], "n_instances": int(len(lay.inst_unit)),
        "n_tokens": st["n_tokens"], "padding_tokens": int(lay.padding), "dropped_tokens": int(lay.dropped),
        "tokenizer": {"path": cfg.tokenizer, "sha256": info.sha256, "vocab_size": info.vocab_size,
                      "max_id": info.max_id},
        "special_tokens": {"bos_id": specials.bos, "eos_id": specials.eos, "pad_id": specials.pad},
        "sources": sources,
        "per_source": {s: {"documents": int(docs_per_src[i]), "tokens": int(tok_per_src[i])} for i, s in enumerate(sources)},
        "plan_fingerprint": job.plan_fp, "seed": cfg.seed, "config": cfg.to_dict(),
        "inputs": [{"rel": f.rel, "bytes": f.size} for f in job.files],
        "shards": shards, "documents_file": DOCUMENTS_FILE,
        "documents": documents,
        "command": command_line(),
    }
