"""Phase 1 of `lcdata build`: tokenize one input file into a spill (parallel over files, one file per task).

Each file is streamed, its planned documents (all of them without a plan) are encoded with
`encode_batch_fast` (long texts cut at safe points, `tokenizer.can_split`), cut to the plan's token ranges,
wrapped with BOS/EOS per policy and spilled to ``WORK/tok-NNNNN.bin``, its read report
``tok-NNNNN.report.json``, ``tok-NNNNN.units.parquet`` and ``tok-NNNNN.done.json`` (written last, atomically,
with the size and SHA-256 of the other three: on resume a finished spill whose files still match is not
redone, and its read report still counts in the manifest; one that does not match is redone). No id is ever
cast into a dtype that cannot hold it. Memory: one chunk of one file (``ReadConfig.chunk_bytes``).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os

import numpy as np
import polars as pl

from ..corpus.inputs import InputFile
from ..corpus.reader import FileReport, iter_batches
from ..errors import LcdataError
from ..tokenizer.hf import (
    can_split_file,
    encode_texts,
    get_engine,
    load_tokenizer,
)
from ..util.faults import fault_point
from ..util.io import atomic_open, write_bytes

UNIT_SCHEMA = {"file_index": pl.Int32, "file": pl.String, "row": pl.Int64, "chunk": pl.Int32, "doc_id": pl.String,
               "source": pl.String, "doc_tokens": pl.Int64, "length": pl.Int64, "offset": pl.Int64,
               "copies": pl.Int64}


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
                          "(larger than the tokenizer's largest id?); rebuild with --token-dtype uint32")
    return ids.astype(dtype)
