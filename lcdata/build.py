"""`lcdata build`: tokenize a corpus (optionally through a sample plan) into packed token shards.

Phase 1, tokenize (parallel over input files): each file is streamed, its planned documents (all of them
without a plan) are encoded with `encode_batch_fast` (long texts cut at safe points, `tokenizer.can_split`),
cut to the plan's token ranges, wrapped with BOS/EOS per policy and spilled to ``WORK/tok-NNNNN.bin``, its
read report ``tok-NNNNN.report.json``, ``tok-NNNNN.units.parquet`` and ``tok-NNNNN.done.json`` (written last,
atomically, with the size and SHA-256 of the other three: on resume a finished spill whose files still match
is not redone, and its read report still counts in the manifest; one that does not match is redone).

Phase 2, pack (`lcdata.build_pack`; one process, streaming shard by shard): units are repeated by their plan copies into
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

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import fsspec
import numpy as np
import polars as pl

from .build_pack import PackLayout, load_units, pack_layout, unit_doc_ids, write_documents, write_shard
from .config import ReadConfig, StatsConfig, as_dict, check_engine, check_seed, check_workers
from .corpus import FileReport, iter_batches, read_summary
from .errors import ConfigError, LcdataError
from .faults import fault_point
from .inputs import InputFile, resolve_inputs
from .outdir import Claim, claim_out, input_roots
from .outputs import atomic_open, command_line, exists, is_local, join, read_json, write_bytes, write_json
from .parallel import ordered_map, resolve_workers
from .progress import Progress
from .sample_run import load_plan
from .shards.format import (
    DOCUMENTS_FILE,
    FORMAT,
    FORMAT_VERSION,
    PACKINGS,
    choose_token_dtype,
    write_manifest,
)
from .stats_run import fingerprint as stats_fingerprint
from .tokenizer import (
    Specials,
    TokenizerInfo,
    can_split_file,
    encode_texts,
    get_engine,
    load_tokenizer,
    resolve_engine,
    resolve_specials,
    tokenizer_info,
)
from .version import VERSION

UNIT_SCHEMA = {"file_index": pl.Int32, "file": pl.String, "row": pl.Int64, "chunk": pl.Int32, "doc_id": pl.String,
               "source": pl.String, "doc_tokens": pl.Int64, "length": pl.Int64, "offset": pl.Int64,
               "copies": pl.Int64}


@dataclass(frozen=True, kw_only=True, slots=True)
class BuildConfig:
    """``bos`` / ``eos``: 'auto' (the tokenizer's BOS at each document start if it has one, else its EOS
    after each document), 'none', or a token string. ``shard_tokens``: tokens per shard file (rounded to
    whole sequences)."""

    tokenizer: str
    seq_len: int
    packing: str = "concat"
    bos: str = "auto"
    eos: str = "auto"
    shard_tokens: int = 1 << 26
    seed: int = 0
    plan: str | None = None
    split_long: bool = True
    dtype: str = "auto"  # auto = uint16 when the tokenizer's largest id fits, else uint32
    read: ReadConfig = field(default_factory=ReadConfig)
    engine: str = "auto"  # tokenizer engine, auto | hf | tiktoken: speed only (same ids), not in the identity

    def __post_init__(self):
        if self.dtype not in ("auto", "uint16", "uint32"):
            raise ConfigError(f"dtype={self.dtype!r} must be auto, uint16 or uint32")
        if self.seq_len < 2:
            raise ConfigError(f"seq_len={self.seq_len} must be >= 2 (inputs and labels need two tokens)")
        if self.packing not in PACKINGS:
            raise ConfigError(f"packing={self.packing!r} must be one of {PACKINGS}")
        if self.shard_tokens < 1:
            raise ConfigError(f"shard_tokens={self.shard_tokens} must be >= 1")
        check_engine(self.engine)
        check_seed(self.seed)

    def to_dict(self) -> dict:
        d = as_dict(self)
        d["read"] = self.read.to_dict()
        return d


# ------------------------------------------------------------------------------------------ phase 1


def tokenize_file(args) -> dict:
    """Phase 1 for one input file: its spill ``WORK/tok-NNNNN.*`` (module docstring); a spill left intact by an
    earlier run is reused. ``args``: (file index, `InputFile`, `BuildConfig`, its plan rows or None, work
    folder, `Specials`, dtype string, engine name resolved once per build). Returns {"i", "resumed", "report"}."""
    i, f, cfg, plan_rows, work, specials, dtype_str, engine_name = args
    units_path = os.path.join(work, f"tok-{i:05d}.units.parquet")
    report_path = os.path.join(work, f"tok-{i:05d}.report.json")
    done_path = os.path.join(work, f"tok-{i:05d}.done.json")
    if spill_intact(work, i):  # finished by an earlier (interrupted) run, its files as they were written
        with open(report_path) as fh:
            return {"i": i, "resumed": True, "report": FileReport(**json.load(fh))}
    if os.path.exists(done_path):  # a spill altered since: it is redone, never trusted
        os.remove(done_path)
    spill_digest = hashlib.sha256()
    tok = load_tokenizer(cfg.tokenizer)
    engine = get_engine(cfg.tokenizer, engine_name)  # None = HF; the same ids either way
    split = cfg.split_long and can_split_file(cfg.tokenizer)
    dtype = np.dtype(dtype_str)
    report = FileReport(file=f.rel, bytes=f.size)
    for stale in glob.glob(os.path.join(glob.escape(work), f"tok-{i:05d}.*.tmp-*")):  # a killed run's
        os.remove(stale)
    unit_parts: list[pl.DataFrame] = []
    offset = 0
    found = 0
    bos = np.array([specials.bos], dtype=np.int64) if specials.bos is not None else None
    eos = np.array([specials.eos], dtype=np.int64) if specials.eos is not None else None
    extra = (bos is not None) + (eos is not None)
    with atomic_open(os.path.join(work, f"tok-{i:05d}.bin")) as out:  # a failed write leaves no temp file
        for batch in iter_batches(f, cfg.read, report):
            if plan_rows is not None:
                batch = batch.join(plan_rows, on="row", how="inner")
                found += batch.height
            else:
                batch = batch.with_columns(chunk=pl.lit(0, pl.Int32), token_start=pl.lit(0, pl.Int64),
                                           token_end=pl.lit(None, pl.Int64), copies=pl.lit(1, pl.Int64),
                                           plan_tokens=pl.lit(None, pl.Int64))
            if not batch.height:
                continue
            # encode each distinct document once, even if the plan takes several chunks of it
            docs = batch.unique("row", keep="first", maintain_order=True)
            enc = encode_texts(tok, docs["text"].to_list(), split, engine=engine)
            at = dict(zip(docs["row"].to_list(), range(len(enc))))
            rows, starts, ends, plan_n = (batch[c].to_list() for c in ("row", "token_start", "token_end", "plan_tokens"))
            pieces: list[np.ndarray] = []  # the batch's units, each [BOS] body [EOS], written at once
            doc_tokens = np.empty(len(rows), dtype=np.int64)
            lengths = np.empty(len(rows), dtype=np.int64)
            for k, row in enumerate(rows):
                full = enc[at[row]]
                if plan_n[k] is not None and plan_n[k] != len(full):
                    raise LcdataError(
                        f"{f.url}, line {row + 1}: the plan says {plan_n[k]} tokens but the tokenizer "
                        f"gives {len(full)}; the plan was made with another tokenizer or corpus: rerun "
                        "`lcdata stats` and `lcdata sample` with this tokenizer"
                    )
                body = full[starts[k]: ends[k]]
                if bos is not None:
                    pieces.append(bos)
                pieces.append(body)
                if eos is not None:
                    pieces.append(eos)
                doc_tokens[k] = len(full)
                lengths[k] = len(body) + extra
            buf = _fit(np.concatenate(pieces), dtype, f).data
            out.write(buf)
            spill_digest.update(buf)
            fault_point(f"build.tokenize:{f.rel}")
            offsets = offset + np.cumsum(lengths) - lengths
            offset += int(lengths.sum())
            unit_parts.append(batch.select(
                file_index=pl.lit(i, pl.Int32), file=pl.lit(f.rel, pl.String), row="row", chunk="chunk",
                doc_id="doc_id", source="source", doc_tokens=pl.Series(doc_tokens), length=pl.Series(lengths),
                offset=pl.Series(offsets), copies="copies"))
        if plan_rows is not None and found != plan_rows.height:
            raise LcdataError(
                f"{f.url}: the plan lists {plan_rows.height} units of this file but only {found} were found; "
                "the plan does not match this input: rerun `lcdata sample` on these inputs"
            )
    units = pl.concat(unit_parts).cast(UNIT_SCHEMA) if unit_parts else pl.DataFrame(schema=UNIT_SCHEMA)
    # the report and the units file, then the done file with the three files' checksums: it marks the spill done
    write_bytes(json.dumps(dataclasses.asdict(report)).encode(), report_path)
    with atomic_open(units_path) as fh:
        units.write_parquet(fh)
    done = {"bin": {"bytes": offset * dtype.itemsize, "sha256": spill_digest.hexdigest()},
            **{k: _file_digest(pth) for k, pth in (("units", units_path), ("report", report_path))}}
    write_bytes(json.dumps(done).encode(), done_path)
    fault_point("build.spill")
    return {"i": i, "resumed": False, "report": report}


def _file_digest(path: str) -> dict:
    with open(path, "rb") as fh:
        data = fh.read()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def spill_intact(work: str, i: int) -> bool:
    """Whether spill ``i`` in ``work`` was finished (its ``tok-NNNNN.done.json``, written last) and its files
    still have the sizes and SHA-256 recorded there: only such a spill is reused on resume. Cost: one read of
    the spill."""
    try:
        with open(os.path.join(work, f"tok-{i:05d}.done.json")) as fh:
            done = json.load(fh)
        for k, suffix in (("bin", "bin"), ("units", "units.parquet"), ("report", "report.json")):
            path = os.path.join(work, f"tok-{i:05d}.{suffix}")
            if os.path.getsize(path) != done[k]["bytes"]:
                return False
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                while block := fh.read(8 << 20):
                    h.update(block)
            if h.hexdigest() != done[k]["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _fit(ids: np.ndarray, dtype: np.dtype, f: InputFile) -> np.ndarray:
    """``ids`` as ``dtype``, or an error if an id does not fit (a cast never wraps)."""
    if ids.size and (int(ids.max()) > np.iinfo(dtype).max or int(ids.min()) < 0):
        bad = int(ids.max()) if int(ids.max()) > np.iinfo(dtype).max else int(ids.min())
        raise LcdataError(f"{f.url}: the tokenizer emitted id {bad:,}, which dtype {dtype.name} cannot hold "
                          "(larger than the tokenizer's largest id?); rebuild with --dtype uint32")
    return ids.astype(dtype)


# ------------------------------------------------------------------------------------------ phase 2


def build_identity(files: list[InputFile], cfg: BuildConfig, tok_sha: str, plan_fp: str | None) -> str:
    ident = {"format": FORMAT_VERSION, "files": sorted((f.rel, f.size, f.version) for f in files), "tokenizer": tok_sha,
             "plan": plan_fp, **{k: v for k, v in cfg.to_dict().items() if k not in ("tokenizer", "plan", "engine")}}
    ident["read"].pop("on_error", None)
    ident["read"].pop("chunk_bytes", None)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class BuildResult:
    out_dir: str
    manifest: dict


def load_plan_for(files: list[InputFile], cfg: BuildConfig, tok_sha: str) -> tuple[pl.DataFrame, dict, ReadConfig]:
    """(plan frame, plan manifest, the plan's read config) of ``cfg.plan``, checked against the inputs (the
    stats fingerprint) and the tokenizer (its SHA-256, when the plan was measured in tokens)."""
    plan, man = load_plan(cfg.plan)
    read = ReadConfig(**man["read"])
    ident = man.get("stats_identity", {})
    scfg = StatsConfig(chars_per_token=ident.get("chars_per_token", 3.68), read=read)
    plan_tok = (man.get("tokenizer") or {}).get("sha256")
    if stats_fingerprint(files, scfg, plan_tok) != man["stats_fingerprint"]:
        raise ConfigError(
            f"the plan in {cfg.plan!r} was made for other inputs (fingerprint {man['stats_fingerprint']}); "
            "pass the inputs the plan was sampled from, or rerun `lcdata sample` on these"
        )
    if plan_tok is not None and plan_tok != tok_sha:
        raise ConfigError(
            f"the plan in {cfg.plan!r} was made with tokenizer {man['tokenizer'].get('path')} (sha {plan_tok[:12]}), "
            f"not {cfg.tokenizer!r}; its lengths and cuts are in other tokens: rerun stats and sample with this tokenizer"
        )
    return plan, man, read


def build_protect(inputs, files: list[InputFile], cfg: BuildConfig) -> dict:
    """What a build reads, which its ``--out`` may never be or contain (`outdir.claim_out`)."""
    return {"an input": [*map(str, inputs), *(f.url for f in files)], "the tokenizer": [cfg.tokenizer],
            "the plan folder": [cfg.plan] if cfg.plan else []}


def prepare_out(claim: Claim, ident: str) -> None:
    """A claimed build folder that keeps an earlier run's files (``--resume``) must hold the same build;
    the temp files of writes the interrupted run never finished are removed."""
    if claim.fresh:
        return
    out_dir = claim.out
    state = join(out_dir, "build.json")
    old = read_json(state)["identity"] if exists(state) else None
    if old != ident:
        raise ConfigError(
            f"{out_dir!r} holds {'a build with another configuration' if old else 'a build that never started'} "
            f"(identity {old} != {ident}); --resume needs the same inputs (names, sizes and modification times), "
            "plan, tokenizer and options; pass --overwrite to replace it"
        )
    fs, p = fsspec.core.url_to_fs(out_dir)
    for q in fs.ls(p, detail=False):  # temp files of writes the interrupted run never finished
        if ".tmp-" in q.rsplit("/", 1)[-1]:
            fs.rm(q)


@dataclass(frozen=True)
class PreparedBuild:
    """Everything a build decides before its work, once (`prepare_build`); the local run (`run_build`) and
    the scale-out stages (`lcdata.build_stages`) both start from it. Pickled to scale-out tasks without
    ``plan`` (each task reads its own files' plan rows)."""

    files: tuple[InputFile, ...]
    active: tuple[int, ...]  # indices of the files with work (rows in the plan, or all)
    cfg: BuildConfig  # with the plan's read config
    out_dir: str
    work_dir: str
    tokenizer: TokenizerInfo
    specials: Specials
    dtype: str  # NumPy dtype string of the tokens
    engine: tuple[str, str]  # (engine name, why): resolved once, recorded in the manifest
    plan: pl.DataFrame | None  # the plan's rows (None without a plan, or in a scale-out task)
    plan_fp: str | None
    plan_tokens: bool  # the plan's lengths are in this tokenizer's tokens (checked per document)
    ident: str
    keep_work: bool
    t0: float  # time.time() at the start

    def plan_rows(self, plan: pl.DataFrame, rel: str) -> pl.DataFrame:
        """The rows of ``plan`` for input file ``rel``, as `tokenize_file` takes them."""
        return plan.filter(pl.col("file") == rel).select(
            "row", "chunk", "token_start", "token_end", "copies",
            plan_tokens=pl.col("n_tokens") if self.plan_tokens else pl.lit(None, pl.Int64))

    def tokenize_args(self, i: int, plan_rows: pl.DataFrame | None) -> tuple:
        """The argument of `tokenize_file` for input file ``i``."""
        return (i, self.files[i], self.cfg, plan_rows, self.work_dir, self.specials, self.dtype, self.engine[0])


@contextmanager
def prepare_build(inputs, out_dir: str, cfg: BuildConfig, *, overwrite: bool = False, resume: bool = False,
                  work_dir: str | None = None, keep_work: bool = False,
                  remote_work: bool = True) -> Iterator[PreparedBuild]:
    """The start of every build, in one place: resolve the inputs, the tokenizer (dtype, special tokens,
    engine: resolved once), load and check the plan, compute the identity, then claim ``out_dir``
    (`outdir.claim_out`: refusals, ``overwrite`` / ``resume`` with the same identity), write ``build.json``
    and make the work folder. The claim (and its lock) is held while the block runs.

    ``work_dir``: default ``OUT/_work`` for a local ``out_dir``; for a remote one a local temp folder if
    ``remote_work``, else a `ConfigError` (scale-out tasks on other machines need a shared work folder).

    >>> with prepare_build(["data/demo"], "out/shards", BuildConfig(tokenizer="data/demo/tokenizer.json",
    ...                    seq_len=8192)) as job:  # doctest: +SKIP
    ...     print(job.ident, len(job.active))
    """
    t0 = time.time()
    files = resolve_inputs(inputs)
    info = tokenizer_info(cfg.tokenizer)
    dtype = choose_token_dtype(info.max_id, cfg.dtype)
    specials = resolve_specials(load_tokenizer(cfg.tokenizer), cfg.bos, cfg.eos)
    engine = resolve_engine(cfg.tokenizer, cfg.engine)  # fails here, before any work, if forced and impossible
    plan = plan_fp = None
    plan_tokens = False
    if cfg.plan:
        plan, plan_man, read = load_plan_for(files, cfg, info.sha256)
        if read != cfg.read:
            object.__setattr__(cfg, "read", read)  # the plan's ids depend on how it read the corpus
        missing = set(plan["file"].unique().to_list()) - {f.rel for f in files}
        if missing:
            raise ConfigError(f"the plan names files not among the inputs: {sorted(missing)[:5]}")
        plan_tokens, plan_fp = bool(plan_man.get("tokenizer")), plan_man["plan_fingerprint"]
        if plan_tokens and cfg.packing == "concat":  # exact lengths: check now
            extra = (specials.bos is not None) + (specials.eos is not None)
            planned = int((plan["length"] * plan["copies"]).sum()) + extra * int(plan["copies"].sum())
            if planned < cfg.seq_len:
                raise ConfigError(f"the corpus (as planned) has {planned} tokens, less than one sequence of "
                                  f"seq_len={cfg.seq_len}; lower --seq-len or sample a larger --budget-tokens")
    if work_dir is None and not is_local(out_dir) and not remote_work:
        raise ConfigError(f"--out {out_dir!r} is remote: give a work folder on a filesystem every task "
                          "shares (work_dir=..., e.g. on the cluster's shared disk)")
    ident = build_identity(files, cfg, info.sha256, plan_fp)
    planned_files = set(plan["file"].unique().to_list()) if plan is not None else None
    active = tuple(i for i, f in enumerate(files) if planned_files is None or f.rel in planned_files)
    with claim_out(out_dir, "shards", overwrite=overwrite, resume=resume, protect=build_protect(inputs, files, cfg),
                   inputs=input_roots(inputs)) as claim:
        prepare_out(claim, ident)
        write_json({"identity": ident, "config": cfg.to_dict()}, join(out_dir, "build.json"))
        if work_dir is None:
            work_dir = (join(out_dir.removeprefix("file://"), "_work") if is_local(out_dir)
                        else tempfile.mkdtemp(prefix="lcdata-work-"))
        os.makedirs(work_dir, exist_ok=True)
        yield PreparedBuild(files=tuple(files), active=active, cfg=cfg, out_dir=out_dir, work_dir=work_dir,
                            tokenizer=info, specials=specials, dtype=dtype.str, engine=engine, plan=plan,
                            plan_fp=plan_fp, plan_tokens=plan_tokens, ident=ident, keep_work=keep_work, t0=t0)


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
    prog = Progress(len(per_file), sum(a[1].size for a in per_file), progress, label="tokenize")
    reports = []
    n_resumed = 0
    for args, res in zip(per_file, ordered_map(tokenize_file, per_file, n_workers, describe=lambda a: a[1].url)):
        reports.append(res["report"])
        n_resumed += res["resumed"]
        prog.update(args[1].size)
    units = load_units(job.work_dir, job.active)
    doc_ids = unit_doc_ids(job.work_dir, job.active) if job.cfg.read.id_field else None

    # phase 2: order, pack, permute, write
    lay = pack_layout(units, [f.rel for f in job.files], job.cfg)
    shards = []
    prog = Progress(lay.n_shards, lay.n_shards, progress, label="pack")
    for k in range(lay.n_shards):
        shards.append(write_shard(lay, k, job.cfg, job.out_dir, job.work_dir, job.specials, np.dtype(job.dtype)))
        prog.update(1)
    manifest = pack_manifest(job, lay, shards, doc_ids)
    return finish_build(job, manifest, reports, n_resumed)


def finish_build(job: PreparedBuild, manifest: dict, reports: list[FileReport], n_resumed: int) -> BuildResult:
    """Seal a build: the read report, engine and time go into ``manifest``, which is written last (it marks a
    complete build); the work folder is removed unless ``keep_work``."""
    manifest["read_report"] = {**read_summary(reports), "files_resumed": n_resumed}
    manifest["engine"] = {"name": job.engine[0], "reason": job.engine[1]}
    manifest["elapsed_s"] = round(time.time() - job.t0, 3)
    fault_point("build.manifest")
    manifest = write_manifest(manifest, job.out_dir)  # last: marks a complete build
    if not job.keep_work:
        shutil.rmtree(job.work_dir, ignore_errors=True)
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
