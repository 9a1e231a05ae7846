"""`lcdata verify`: every claim of a shard folder's manifest checked against its data.

Three passes, each run only if the one before found nothing (a later pass would read data the earlier one
already found untrustworthy; pass 2 still hashes the files whose size was right):
1. structure (`reader.check_folder`): the manifest's schema, names, internal consistency and seal, and
   every listed file present with its listed size. No data read.
2. checksums: the SHA-256 of every file (shards and documents.parquet), streamed.
3. data: documents.parquet (its schema, ``n_instances`` rows in ``doc`` order, sources among ``sources``,
   files among ``inputs``); per shard, the pieces (sorted, inside their sequences, non-overlapping, their
   document and source those of documents.parquet, inside their document), the token ids (<=
   ``tokenizer.max_id``), padding positions holding ``pad_id``, BOS/EOS where the manifest says; across
   shards, each document's pieces contiguous from offset 0; then the totals (``n_tokens``,
   ``padding_tokens``, ``dropped_tokens``, ``n_documents``, ``per_source``) recomputed from the pieces. When
   the tokenizer file named in the manifest is present with the recorded SHA-256, its vocabulary size,
   largest id and special tokens (from ``config.bos``/``eos``) are checked too.

`verify_shards` never raises: an unexpected error inside becomes one more problem line (naming it a bug).
Cost: one read of every byte (pass 2) and one more of the shards through a memory map (pass 3); memory
of one shard's coverage mask (1 byte per token) and a few arrays per document instance.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass

import fsspec
import numpy as np
import polars as pl

from ..util.io import is_local, join, read_bytes
from .format import DOCS_SCHEMA, MANIFEST_FILE, SEG_FILE_DTYPE
from .reader import check_folder, listed_files

HASH_BLOCK = 8 << 20


def verify_shards(folder: str) -> list[str]:
    """Check every claim of ``folder``'s manifest against its data (module docstring). Returns the problems
    found, one line each naming the file or the manifest key and the failed check; [] = valid.

    >>> verify_shards("out/demo/shards")  # doctest: +SKIP
    []
    """
    folder = str(folder).rstrip("/")
    try:
        m, problems = check_folder(folder)
        if m is not None and not any(p.startswith(MANIFEST_FILE) for p in problems):  # the files' own problems:
            problems += _checksums(folder, m, skip={p.split(": ", 1)[0] for p in problems})  # hash the others
        if not problems:
            problems = _data(folder, m) + _tokenizer(m)
        return problems
    except Exception as e:  # a bug (or an unforeseen damage): a FAIL line, never a traceback
        return [f"{folder}: verify stopped on an unexpected {type(e).__name__} ({str(e)[:300]}); the folder is not "
                "verified; this is a bug in lcdata: please report it"]


def _checksums(folder: str, m: dict, skip=()) -> list[str]:
    out = []
    for _, meta in listed_files(m):
        if meta["path"] in skip:
            continue
        digest = hashlib.sha256()
        with fsspec.open(join(folder, meta["path"]), "rb") as fh:
            while block := fh.read(HASH_BLOCK):
                digest.update(block)
        if digest.hexdigest() != meta["sha256"]:
            out.append(f"{meta['path']}: SHA-256 mismatch with {MANIFEST_FILE} (file altered)")
    return out


def _key(p: list[str], key: str, what: str) -> None:
    p.append(f"{MANIFEST_FILE}: {key}: {what}")


def _documents(folder: str, m: dict, p: list[str]) -> pl.DataFrame | None:
    name = m["documents"]["path"]
    try:
        docs = pl.read_parquet(read_bytes(join(folder, name)))
    except pl.exceptions.PolarsError as e:
        p.append(f"{name}: not a readable Parquet file ({type(e).__name__}); rebuild the folder")
        return None
    if dict(docs.schema) != DOCS_SCHEMA:
        p.append(f"{name}: columns {dict(docs.schema)} are not the format's {DOCS_SCHEMA}")
        return None
    if docs.height != m["n_instances"]:
        _key(p, "n_instances", f"{m['n_instances']:,} but {name} has {docs.height:,} rows")
        return None
    if docs.null_count().sum_horizontal().item():
        p.append(f"{name}: null values")
        return None
    if not (docs["doc"] == np.arange(docs.height)).all():
        p.append(f"{name}: column doc is not the row number 0..{docs.height - 1}")
    if docs.height and (docs["length"].min() < 0 or docs["copy"].min() < 0 or docs["chunk"].min() < 0):
        p.append(f"{name}: a negative length, copy or chunk")
    extra = set(docs["source"].unique().to_list()) - set(m["sources"])
    if extra:
        _key(p, "sources", f"lacks {sorted(extra)[:5]}, sources of rows of {name}")
    files = set(docs["file"].unique().to_list()) - {f["rel"] for f in m["inputs"]}
    if files:
        _key(p, "inputs", f"lacks {sorted(files)[:5]}, files of rows of {name}")
    return docs


@dataclass
class _Docs:
    """What the shard checks need of documents.parquet: per instance, its source index and its length."""

    src: np.ndarray
    length: np.ndarray


def _tokens(folder: str, name: str, dtype: np.dtype) -> np.ndarray:
    url = join(folder, name)
    if is_local(url):
        return np.memmap(url.removeprefix("file://"), dtype=dtype, mode="r")
    return np.frombuffer(read_bytes(url), dtype=dtype)


def _pieces(folder: str, name: str, p: list[str]) -> np.ndarray | None:
    url = join(folder, name)
    try:
        segs = np.load(url.removeprefix("file://") if is_local(url) else io.BytesIO(read_bytes(url)),
                       allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        p.append(f"{name}: not a readable .npy piece table ({type(err).__name__}: {err})")
        return None
    if segs.dtype != SEG_FILE_DTYPE or segs.ndim != 1:
        p.append(f"{name}: {segs.dtype} {segs.shape} is not the format's piece table {SEG_FILE_DTYPE}")
        return None
    return segs


def _shard(folder: str, m: dict, e: dict, docs: _Docs, p: list[str]) -> tuple[np.ndarray, int] | None:
    """Check one shard's pieces and tokens; returns (its pieces, its padding positions) or None."""
    L, sp, n_src = m["seq_len"], m["special_tokens"], len(m["sources"])
    bin_name, seg_name = e["files"]["bin"]["path"], e["files"]["seg"]["path"]
    segs = _pieces(folder, seg_name, p)
    if segs is None:
        return None
    tokens = _tokens(folder, bin_name, np.dtype(m["dtype"]).newbyteorder("<"))
    n, n_inst = e["n_sequences"], len(docs.length)
    seq, start, length = (segs[c].astype(np.int64) for c in ("seq", "start", "length"))
    pos, end = seq * L + start, seq * L + start + length
    # the piece table's own structure: each failure makes the next checks meaningless
    for bad, what in (((length < 1) | (seq >= n) | (start + length > L), "a piece is empty or lies outside its "
                       f"sequence (shard of {n} x {L} tokens)"),
                      (pos[1:] < end[:-1], "pieces not sorted by (seq, start), or overlapping"),
                      (segs["doc"] >= n_inst, f"a piece of a document beyond the {n_inst} rows of documents.parquet"),
                      (segs["source"] >= n_src, f"a source index beyond the {n_src} sources of {MANIFEST_FILE}")):
        if bad.any():
            p.append(f"{seg_name}: {what}")
            return None
    doc, offset = segs["doc"].astype(np.int64), segs["offset"]
    dlen = docs.length[doc].astype(np.uint64)
    if (segs["source"] != docs.src[doc]).any():
        p.append(f"{seg_name}: a piece's source differs from its document's in documents.parquet")
    last = offset + length.astype(np.uint64) == dlen
    if ((offset > dlen) | (offset + length.astype(np.uint64) > dlen)).any():
        p.append(f"{seg_name}: a piece reaches past the end of its document (documents.parquet length)")
    if int(tokens.max()) > m["tokenizer"]["max_id"]:
        p.append(f"{bin_name}: token id {int(tokens.max()):,} > tokenizer.max_id {m['tokenizer']['max_id']:,} "
                 f"in {MANIFEST_FILE}")
    cover = np.zeros(n * L + 1, dtype=np.int8)  # pieces do not overlap: the running sum is 0 or 1
    np.add.at(cover, pos, 1)
    np.add.at(cover, end, -1)
    pad = np.cumsum(cover[:-1], dtype=np.int8) == 0
    if (tokens[pad] != sp["pad_id"]).any():
        p.append(f"{bin_name}: a padding position does not hold special_tokens.pad_id {sp['pad_id']}")
    for key, at, word in (("bos_id", pos[offset == 0], "start"), ("eos_id", end[last] - 1, "end")):
        if sp[key] is not None and (tokens[at] != sp[key]).any():
            p.append(f"{bin_name}: a document does not {word} with special_tokens.{key} {sp[key]}")
    return segs, int(pad.sum())


def _data(folder: str, m: dict) -> list[str]:
    p: list[str] = []
    frame = _documents(folder, m, p)
    if frame is None or p:
        return p
    sources = m["sources"]
    index = {s: i for i, s in enumerate(sources)}
    docs = _Docs(src=np.array([index[s] for s in frame["source"].to_list()], dtype=np.int64),
                 length=frame["length"].to_numpy().astype(np.int64))
    shards = [_shard(folder, m, e, docs, p) for e in m["shards"]]
    if p:
        return p
    segs = np.concatenate([s for s, _ in shards])
    padding = sum(n for _, n in shards)
    # each document's pieces: contiguous from its first token
    doc, off, length = segs["doc"].astype(np.int64), segs["offset"], segs["length"].astype(np.int64)
    order = np.lexsort((off, doc))
    doc, off, length = doc[order], off[order], length[order]
    new = np.r_[True, doc[1:] != doc[:-1]]
    expect = np.r_[np.uint64(0), off[:-1] + length[:-1].astype(np.uint64)]
    if ((new & (off != 0)) | (~new & (off != expect))).any():
        p.append("the pieces of a document are not contiguous from its first token (seg.npy offsets)")
    # the totals
    n_tokens, used = int(length.sum()), np.unique(doc)
    for key, got in (("n_tokens", n_tokens), ("padding_tokens", padding),
                     ("dropped_tokens", int(docs.length.sum()) - n_tokens), ("n_documents", len(used))):
        if m[key] != got:
            _key(p, key, f"{m[key]:,} but the data has {got:,}")
    tok_per_src = np.bincount(segs["source"], weights=segs["length"], minlength=len(sources)).astype(np.int64)
    docs_per_src = np.bincount(docs.src[used], minlength=len(sources))
    for i, s in enumerate(sources):
        for key, got in (("tokens", int(tok_per_src[i])), ("documents", int(docs_per_src[i]))):
            if m["per_source"][s][key] != got:
                _key(p, f"per_source.{s}.{key}", f"{m['per_source'][s][key]:,} but the pieces have {got:,}")
    return p


def _tokenizer(m: dict) -> list[str]:
    """The tokenizer's facts in the manifest against the tokenizer file, when it is there unchanged."""
    from ..errors import LcdataError
    from ..tokenizer.hf import load_tokenizer, resolve_specials, tokenizer_info

    t = m["tokenizer"]
    path = t["path"]
    if "://" not in path and not os.path.isfile(path):
        return []
    try:
        info = tokenizer_info(path)
    except LcdataError:
        return []
    if info.sha256 != t["sha256"]:
        return []  # another tokenizer now lives at that path: nothing to compare with
    p: list[str] = []
    for key, got in (("vocab_size", info.vocab_size), ("max_id", info.max_id)):
        if t[key] != got:
            _key(p, f"tokenizer.{key}", f"{t[key]:,} but the tokenizer {path} has {got:,}")
    c = m["config"]
    try:
        sp = resolve_specials(load_tokenizer(path), c["bos"], c["eos"])
    except LcdataError as e:
        _key(p, "config.bos/eos", f"{e}")
        return p
    for key, got in (("bos_id", sp.bos), ("eos_id", sp.eos), ("pad_id", sp.pad)):
        if m["special_tokens"][key] != got:
            _key(p, f"special_tokens.{key}", f"{m['special_tokens'][key]} but config.bos/eos "
                                            f"({c['bos']!r}, {c['eos']!r}) with the tokenizer give {got}")
    return p
