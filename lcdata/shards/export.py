"""Export a shard folder to the formats our users' trainers already read.

- ``datatrove``: per shard ``shard-NNNNN.ds`` (the same token stream: every sequence, padding included,
  little-endian uint16/uint32) and ``shard-NNNNN.ds.index`` (uint64 cumulative end offsets of every piece
  and padding run). `DatatroveFolderDataset(folder, seq_len=SEQ_LEN - 1, token_size=2|4)` then yields
  exactly our sequences (it reads windows of seq_len + 1 tokens), with positions reset at document starts.
- ``megatron``: per shard ``shard-NNNNN.bin`` + ``.idx`` (Megatron-Core ``MMIDIDX`` v1), without padding; dtype
  by Megatron's rule (uint16 when the vocabulary is < 65,500, else int32). Two layouts (``megatron_layout``):
  ``document`` (default, Megatron's convention: it packs and shuffles itself): one Megatron sequence, and one
  Megatron document, per lcdata document instance, its pieces joined back in document order; ``pieces``
  (the layout before issue 17): one Megatron sequence per piece as lcdata's packing cut it, the pieces of an
  instance consecutive and forming one Megatron document (``document_indices``). Invariant of both: a
  Megatron document is exactly one instance. The shards cut documents across sequences and shuffle the
  sequences, so a document's pieces are rarely adjacent (nor always in one shard): each document goes whole
  to the file of the shard holding its first piece, at that piece's place. Documents keep the shards' order
  (of their first pieces). A shard left with no document writes no files (Megatron cannot map an empty
  ``.bin``).

Safety: the output may not be, contain or lie inside the input folder (`lcdata.util.io.path_relation`), and
the input is verified in full first (`verify_shards`: every claim of its manifest, every checksum), so a
damaged or altered folder is refused, not copied; output names come from the format (``shard-NNNNN``),
never from the manifest. No token is cast to a dtype that cannot hold it.

Both are written atomically per file; cost is the verify pass plus one pass over the tokens.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import ConfigError, LcdataError
from ..util.io import join, path_relation, write_bytes, write_json
from ..util.outdir import claim_out
from .format import shard_name
from .reader import open_shards
from .verify import verify_shards

FORMATS = ("datatrove", "megatron")
MEGATRON_LAYOUTS = ("document", "pieces")
MEGATRON_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}


def megatron_idx(lengths: np.ndarray, dtype: np.dtype, doc_starts=None) -> bytes:
    """The ``.idx`` of sequences of ``lengths``; ``doc_starts``: the sequences that begin a document (default:
    every one). Megatron's ``document_indices`` are [0, end of document 0, end of document 1, ...] in sequences."""
    lengths = np.asarray(lengths, dtype=np.int32)
    pointers = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths):
        pointers[1:] = np.cumsum(lengths[:-1].astype(np.int64)) * dtype.itemsize
    starts = np.arange(len(lengths)) if doc_starts is None else np.asarray(doc_starts, dtype=np.int64)
    doc_idx = np.r_[starts, len(lengths)].astype(np.int64) if len(lengths) else np.zeros(1, dtype=np.int64)
    return b"".join([b"MMIDIDX\x00\x00", struct.pack("<Q", 1), struct.pack("<B", MEGATRON_CODES[dtype]),
                     struct.pack("<Q", len(lengths)), struct.pack("<Q", len(doc_idx)),
                     lengths.tobytes(), pointers.tobytes(), doc_idx.tobytes()])


def megatron_layout(s) -> tuple[np.ndarray, np.ndarray]:
    """Every piece of shard set ``s`` (`ShardSet.all_segments`, with ``gseq``) in Megatron export order, and
    the output file (shard index) of each: pieces grouped by document instance, instances in the order of
    their first piece in the shards, pieces by offset; an instance goes to the file of its first piece."""
    segs = s.all_segments()  # shard order: (global sequence, start)
    if not len(segs):
        return segs, np.zeros(0, dtype=np.int64)
    _, first, inv = np.unique(segs["doc"], return_index=True, return_inverse=True)
    first_pos = first[inv]  # per piece: position of its instance's first piece
    file_of = np.searchsorted(s._starts, segs["gseq"][first_pos].astype(np.int64), side="right") - 1
    order = np.lexsort((segs["offset"], first_pos))
    return segs[order], file_of[order]


def megatron_dtype(max_id: int) -> np.dtype:
    """Megatron's rule (``DType.optimal_dtype``): uint16 below 65,500 ids, else int32; ids are 0..max_id."""
    if max_id + 1 < 65500:
        return np.dtype(np.uint16)
    if max_id > np.iinfo(np.int32).max:
        raise LcdataError(f"the tokenizer's largest id {max_id:,} does not fit Megatron's int32 tokens")
    return np.dtype(np.int32)


def check_export(folder: str, out_dir: str) -> None:
    """Refuse an ``out_dir`` that is, contains or lies inside ``folder``, then verify ``folder`` in full."""
    rel = path_relation(out_dir, folder)
    if rel is not None:
        where = {"same": "is", "inside": "lies inside", "contains": "contains"}[rel]
        raise ConfigError(f"--out {out_dir!r} {where} the input folder {folder!r}: an export never writes into or "
                          "over its input; choose another --out")
    problems = verify_shards(folder)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise LcdataError(f"{folder}: {problems[0]}{more}; the folder fails `lcdata verify` and is not exported: "
                          "rebuild it")


def export_shards(folder: str, fmt: str, out_dir: str, *, overwrite: bool = False,
                  megatron_layout: str = "document") -> dict:
    """Write ``folder``'s shards in format ``fmt`` to ``out_dir`` (after `check_export`); returns a small manifest.
    A folder that is not empty is refused unless it is an export folder and ``overwrite`` (`outdir.claim_out`).
    ``megatron_layout`` (``megatron`` only): ``document`` (one sequence per document instance) or ``pieces``.

    >>> export_shards("out/shards", "megatron", "out/megatron")  # doctest: +SKIP
    """
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {FORMATS}")
    if megatron_layout not in MEGATRON_LAYOUTS:
        raise ConfigError(f"megatron layout {megatron_layout!r} is not one of {MEGATRON_LAYOUTS}")
    if fmt != "megatron" and megatron_layout != "document":
        raise ConfigError(f"--megatron-layout {megatron_layout} applies to --format megatron only, not {fmt}")
    check_export(folder, out_dir)
    s = open_shards(folder)
    with claim_out(out_dir, "export", overwrite=overwrite, resume_flag=None, protect={"the shard folder": [folder]}):
        return _export(s, folder, fmt, out_dir, megatron_layout)


def _export(s, folder: str, fmt: str, out_dir: str, layout: str) -> dict:
    L = s.seq_len
    files = []
    n_docs = 0
    if fmt == "megatron":
        mg_segs, mg_file = megatron_layout(s)
    for k, e in enumerate(s.manifest["shards"]):
        name = shard_name(k)
        if fmt == "datatrove":
            sh = s._shard(k)
            tokens = np.asarray(sh.tokens).reshape(-1)
            segs = np.asarray(sh.segs)
            starts = segs["seq"].astype(np.int64) * L + segs["start"]
            ends = starts + segs["length"]
            bounds = np.union1d(np.concatenate([starts, ends]), np.arange(1, e["n_sequences"] + 1) * L)
            bounds = bounds[bounds > 0]
            write_bytes(tokens.astype(s.dtype).tobytes(), join(out_dir, f"{name}.ds"))
            write_bytes(bounds.astype("<u8").tobytes(), join(out_dir, f"{name}.ds.index"))
            files += [f"{name}.ds", f"{name}.ds.index"]
        else:
            dt = megatron_dtype(s.max_id)
            mine = mg_segs[mg_file == k]
            if not len(mine):  # every piece belongs to documents begun in earlier shards: Megatron cannot map
                continue  # an empty .bin, so no file
            pieces = [s[int(g)][a: a + n] for g, a, n in zip(mine["gseq"], mine["start"].astype(np.int64),
                                                            mine["length"].astype(np.int64))]
            data = np.concatenate(pieces).astype(dt) if pieces else np.zeros(0, dt)  # verified: ids <= max_id
            starts = np.flatnonzero(np.r_[True, mine["doc"][1:] != mine["doc"][:-1]]) if len(mine) else []
            write_bytes(data.tobytes(), join(out_dir, f"{name}.bin"))
            if layout == "document":  # each instance's pieces joined: one sequence (and one document) each
                lengths = np.add.reduceat(mine["length"].astype(np.int64), starts)
                if lengths.max() > np.iinfo(np.int32).max:
                    raise LcdataError(f"a document of {int(lengths.max()):,} tokens exceeds Megatron's int32 "
                                      "sequence length; export with --megatron-layout pieces")
                idx = megatron_idx(lengths, dt)
            else:
                idx = megatron_idx(mine["length"], dt, starts)
            write_bytes(idx, join(out_dir, f"{name}.idx"))
            files += [f"{name}.bin", f"{name}.idx"]
            n_docs += len(starts)
    man = {"format": fmt, "source": folder, "seq_len": L, "dtype": str(s.dtype), "files": files,
           **({"documents": n_docs, "layout": layout} if fmt == "megatron" else {}),
           "read_with": f"DatatroveFolderDataset(folder, seq_len={L - 1}, token_size={s.dtype.itemsize})"
           if fmt == "datatrove" else "megatron.core.datasets.indexed_dataset.IndexedDataset(prefix)"}
    write_json(man, join(out_dir, f"export-{fmt}.json"))  # last: marks a complete export folder
    return man
