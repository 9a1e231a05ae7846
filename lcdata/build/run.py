"""`lcdata build`: tokenize a corpus (optionally through a sample plan) into packed token shards.

Phase 1, tokenize (parallel over input files): each file is streamed, its planned documents (all of them
without a plan) are encoded with `encode_batch_fast` (long texts cut at safe points, `tokenizer.can_split`),
cut to the plan's token ranges, wrapped with BOS/EOS per policy and spilled to ``WORK/tok-NNNNN.bin``, its
read report ``tok-NNNNN.report.json``, ``tok-NNNNN.units.parquet`` and ``tok-NNNNN.done.json`` (written last,
atomically, with the size and SHA-256 of the other three: on resume a finished spill whose files still match
is not redone, and its read report still counts in the manifest; one that does not match is redone).

Phase 2, pack (`lcdata.build.layout`; one process, streaming shard by shard): units are repeated by their plan copies into
*instances*, ordered by a stable hash of (seed, identity, chunk, copy), packed (`shards.packing`), the
sequences permuted by the seed, and written shard by shard (atomic; a shard already written with the same
config is skipped on resume). Output bytes depend only on inputs, plan, tokenizer, config and seed, never
on ``workers`` or on an interruption.

Memory: phase 1 holds one chunk of one file per worker. Phase 2 holds NumPy arrays only (`Units`,
`PackLayout`: about 150 bytes per document instance at its peak, while sorting; no per-document strings,
which stay in the spill tables; with an ``--id-field`` the ids are also held, as one Polars string column)
and a write buffer of 8 MiB: shards are streamed sequence group by sequence group, each piece read from its
spill into the buffer, and documents.parquet is streamed in row groups of 1M rows.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import polars as pl

from ..corpus.reader import FileReport, read_summary
from ..shards.format import DOCUMENTS_FILE, FORMAT, FORMAT_VERSION, write_manifest
from ..util.config import check_workers
from ..util.faults import fault_point
from ..util.io import command_line
from ..util.parallel import ordered_map, resolve_workers
from ..util.progress import Stage
from ..version import VERSION
from .config import BuildConfig
from .layout import PackLayout, load_units, pack_layout, unit_doc_ids, write_documents, write_shard
from .start import BuildResult, PreparedBuild, prepare_build
from .tokenize import tokenize_file


def run_build(inputs, out_dir: str, cfg: BuildConfig, *, workers: int | None = None, overwrite: bool = False,
              resume: bool = False, progress: bool = False, work_dir: str | None = None,
              keep_work: bool = False) -> BuildResult:
    """Tokenize and pack ``inputs`` into ``out_dir`` (local path or fsspec URL).

    >>> run_build(["data/demo"], "out/shards", BuildConfig(tokenizer="data/demo/tokenizer.json",
    ...           seq_len=8192))  # doctest: +SKIP
    """
    check_workers(workers)
    with prepare_build(inputs, out_dir, cfg, overwrite=overwrite, resume=resume, work_dir=work_dir,
                       keep_work=keep_work) as job:
        return _build_into(job, workers=workers, progress=progress)


def _build_into(job: PreparedBuild, *, workers, progress) -> BuildResult:
    """Phases 1 and 2 of `run_build` into its claimed output folder."""
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
    units = load_units(job.work_dir, job.active)
    doc_ids = unit_doc_ids(job.work_dir, job.active) if job.cfg.read.id_field else None

    # phase 2: order, pack, permute, write
    lay = pack_layout(units, [f.rel for f in job.files], job.cfg)
    shards = []
    written = 0
    with Stage("pack", lay.n_seq, enabled=progress, unit="seq", items=0) as prog:
        for k in range(lay.n_shards):
            shards.append(write_shard(lay, k, job.cfg, job.out_dir, job.work_dir, job.specials, np.dtype(job.dtype)))
            written += sum(f["bytes"] for f in shards[-1]["files"].values())
            prog.update(shards[-1]["n_sequences"], note=f"{k + 1}/{lay.n_shards} shards, {written / 1e6:,.1f} MB written")
    manifest = pack_manifest(job, lay, shards, doc_ids)
    return finish_build(job, manifest, reports, n_resumed)


WORK_FILES = ("tok-*", "shard-*.done.json", "layout*", "*.tmp-*")  # what a build writes in its work folder


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
            elif os.path.basename(p) == "layout":  # the scale-out layout folder (`scaleout.build`)
                shutil.rmtree(p, ignore_errors=True)


def finish_build(job: PreparedBuild, manifest: dict, reports: list[FileReport], n_resumed: int) -> BuildResult:
    """Seal a build: the read report, engine and time go into ``manifest``, which is written last (it marks a
    complete build); the work folder is removed unless ``keep_work``."""
    manifest["read_report"] = {**read_summary(reports), "files_resumed": n_resumed}
    manifest["engine"] = {"name": job.engine[0], "reason": job.engine[1]}
    manifest["elapsed_s"] = round(time.time() - job.t0, 3)
    fault_point("build.manifest")
    manifest = write_manifest(manifest, job.out_dir)  # last: marks a complete build
    if not job.keep_work:
        remove_work(job)
    return BuildResult(out_dir=job.out_dir, manifest=manifest)


def pack_manifest(job: PreparedBuild, lay: PackLayout, shards: list[dict], doc_ids: pl.Series | None = None) -> dict:
    """Write documents.parquet; return the manifest (`lcdata.shards.format.MANIFEST_SCHEMA`: every shard and
    documents.parquet listed with size and SHA-256) without the read report, engine, time and seal. Both
    `run_build` and the distributed ``finish`` step call this, so their manifests and documents.parquet are
    byte-identical."""
    cfg, info, specials = job.cfg, job.tokenizer, job.specials
    segs, inst_src, sources = lay.segs, lay.inst_src, lay.sources
    documents = write_documents(lay, job.out_dir, doc_ids)
    seg_src = inst_src[segs["inst"].astype(np.int64)]
    tok_per_src = np.bincount(seg_src, weights=segs["length"], minlength=len(sources)).astype(np.int64)
    used = np.unique(segs["inst"]).astype(np.int64)
    docs_per_src = np.bincount(inst_src[used], minlength=len(sources))
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "lcdata_version": VERSION, "identity": job.ident,
        "dtype": np.dtype(job.dtype).name, "seq_len": cfg.seq_len, "packing": cfg.packing, "n_sequences": int(lay.n_seq),
        "n_documents": int(len(used)), "n_instances": int(len(lay.inst_unit)),
        "n_tokens": int(segs["length"].sum()), "padding_tokens": int(lay.padding), "dropped_tokens": int(lay.dropped),
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
