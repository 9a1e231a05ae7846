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
import types

import fsspec
import numpy as np
import polars as pl

from .format import DOCS_SCHEMA, MANIFEST_FILE, SEG_FILE_DTYPE
from .reader import _is_local, _path, _read_bytes, check_folder, listed_files

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
        with fsspec.open(_path(folder, meta["path"]), "rb") as fh:
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
        docs = pl.read_parquet(_read_bytes(_path(folder, name)))
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


def _data(folder: str, m: dict) -> list[str]:
    p: list[str] = []
    docs = _documents(folder, m, p)
    if docs is None or p:
        return p
    n_inst, L = docs.height, m["seq_len"]
    sources = m["sources"]
    src_index = {s: i for i, s in enumerate(sources)}
    doc_src = np.array([src_index[s] for s in docs["source"].to_list()], dtype=np.int64)
    doc_len = docs["length"].to_numpy().astype(np.int64)
    sp = m["special_tokens"]
    dtype = np.dtype(m["dtype"]).newbyteorder("<")
    all_doc, all_off, all_len = [], [], []
    tok_per_src = np.zeros(len(sources), dtype=np.int64)
    padding = 0
    for e in m["shards"]:
        bin_name, seg_name = e["files"]["bin"]["path"], e["files"]["seg"]["path"]
        seg_url = _path(folder, seg_name)
        try:
            segs = np.load(seg_url.removeprefix("file://") if _is_local(seg_url) else
                           io.BytesIO(_read_bytes(seg_url)), allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            p.append(f"{seg_name}: not a readable .npy piece table ({type(err).__name__}: {err})")
            continue
        if segs.dtype != SEG_FILE_DTYPE or segs.ndim != 1:
            p.append(f"{seg_name}: {segs.dtype} {segs.shape} is not the format's piece table {SEG_FILE_DTYPE}")
            continue
        bin_url = _path(folder, bin_name)
        tokens = (np.memmap(bin_url.removeprefix("file://"), dtype=dtype, mode="r") if _is_local(bin_url) else
                  np.frombuffer(_read_bytes(bin_url), dtype=dtype))
        n = e["n_sequences"]
        seq, start = segs["seq"].astype(np.int64), segs["start"].astype(np.int64)
        length, doc = segs["length"].astype(np.int64), segs["doc"]
        offset, src = segs["offset"].astype(np.uint64), segs["source"].astype(np.int64)
        end = start + length
        pos = seq * L + start
        if (length < 1).any():
            p.append(f"{seg_name}: a piece of length 0")
        if len(segs) and ((seq >= n).any() or (end > L).any()):
            p.append(f"{seg_name}: a piece lies outside its sequence (shard of {n} x {L} tokens)")
            continue
        if len(segs) > 1 and ((np.diff(pos) < 0).any() or (pos[1:] < (seq * L + end)[:-1]).any()):
            p.append(f"{seg_name}: pieces not sorted by (seq, start), or overlapping")
            continue
        if len(segs) and int(doc.max()) >= n_inst:
            p.append(f"{seg_name}: a piece of document {int(doc.max())}, but {m['documents']['path']} has {n_inst} rows")
            continue
        doc = doc.astype(np.int64)
        if len(segs) and int(src.max()) >= len(sources):
            p.append(f"{seg_name}: source index {int(src.max())} but {MANIFEST_FILE} lists {len(sources)} sources")
            continue
        if (src != doc_src[doc]).any():
            p.append(f"{seg_name}: a piece's source differs from its document's in {m['documents']['path']}")
        if (offset + length.astype(np.uint64) > doc_len[doc].astype(np.uint64)).any():
            p.append(f"{seg_name}: a piece reaches past the end of its document (documents.parquet length)")
        if tokens.size and int(tokens.max()) > m["tokenizer"]["max_id"]:
            p.append(f"{bin_name}: token id {int(tokens.max()):,} > tokenizer.max_id {m['tokenizer']['max_id']:,} "
                     f"in {MANIFEST_FILE}")
        cover = np.zeros(n * L + 1, dtype=np.int8)
        np.add.at(cover, pos, 1)
        np.add.at(cover, pos + length, -1)
        pad = np.cumsum(cover[:-1], dtype=np.int8) == 0
        padding += int(pad.sum())
        if (tokens[pad] != sp["pad_id"]).any():
            p.append(f"{bin_name}: a padding position does not hold special_tokens.pad_id {sp['pad_id']}")
        del cover, pad
        for key, at, want in (("bos_id", offset == 0, pos), ("eos_id", offset + length.astype(np.uint64) ==
                                                             doc_len[doc].astype(np.uint64), pos + length - 1)):
            if sp[key] is not None and (tokens[want[at]] != sp[key]).any():
                p.append(f"{bin_name}: a document does not {'start' if key == 'bos_id' else 'end'} with "
                         f"special_tokens.{key} {sp[key]}")
        tok_per_src += np.bincount(src, weights=length, minlength=len(sources)).astype(np.int64)
        all_doc.append(doc)
        all_off.append(offset)
        all_len.append(length)
    if p:
        return p
    doc, off, length = (np.concatenate(a) for a in (all_doc, all_off, all_len))
    order = np.lexsort((off, doc))
    doc, off, length = doc[order], off[order], length[order]
    new = np.r_[True, doc[1:] != doc[:-1]]
    expect = np.r_[np.uint64(0), (off[:-1] + length[:-1].astype(np.uint64))]
    if ((new & (off != 0)) | (~new & (off != expect))).any():
        p.append("the pieces of a document are not contiguous from its first token (seg.npy offsets)")
    n_tokens = int(length.sum())
    used = np.unique(doc)
    totals = (("n_tokens", n_tokens), ("padding_tokens", padding),
              ("dropped_tokens", int(doc_len.sum()) - n_tokens), ("n_documents", len(used)))
    for key, got in totals:
        if m[key] != got:
            _key(p, key, f"{m[key]:,} but the data has {got:,}")
    docs_per_src = np.bincount(doc_src[used], minlength=len(sources))
    for i, s in enumerate(sources):
        for key, got in (("tokens", int(tok_per_src[i])), ("documents", int(docs_per_src[i]))):
            if m["per_source"][s][key] != got:
                _key(p, f"per_source.{s}.{key}", f"{m['per_source'][s][key]:,} but the pieces have {got:,}")
    return p


def _tokenizer(m: dict) -> list[str]:
    """The tokenizer's facts in the manifest against the tokenizer file, when it is there unchanged."""
    from ..errors import LcdataError
    from ..tokenizer import load_tokenizer, tokenizer_info

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
    from ..build import resolve_specials

    c = m["config"]
    try:
        sp = resolve_specials(load_tokenizer(path), types.SimpleNamespace(bos=c["bos"], eos=c["eos"]))
    except LcdataError as e:
        _key(p, "config.bos/eos", f"{e}")
        return p
    for key, got in (("bos_id", sp.bos), ("eos_id", sp.eos), ("pad_id", sp.pad)):
        if m["special_tokens"][key] != got:
            _key(p, f"special_tokens.{key}", f"{m['special_tokens'][key]} but config.bos/eos "
                                            f"({c['bos']!r}, {c['eos']!r}) with the tokenizer give {got}")
    return p
