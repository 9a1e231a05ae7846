"""Export a shard folder to the formats our users' trainers already read.

- ``datatrove``: per shard ``shard-NNNNN.ds`` (the same token stream: every sequence, padding included,
  little-endian uint16/uint32) and ``shard-NNNNN.ds.index`` (uint64 cumulative end offsets of every piece
  and padding run). `DatatroveFolderDataset(folder, seq_len=SEQ_LEN - 1, token_size=2|4)` then yields
  exactly our sequences (it reads windows of seq_len + 1 tokens), with positions reset at document starts.
- ``megatron``: per shard ``shard-NNNNN.bin`` + ``.idx`` (Megatron-Core ``MMIDIDX`` v1): one Megatron
  sequence per document piece, in shard order, without padding; dtype by Megatron's rule (uint16 when the
  vocabulary is < 65,500, else int32); every sequence is its own document.

Both are written atomically per file; cost is one pass over the tokens.
"""

from __future__ import annotations

import struct

import numpy as np

from ..errors import ConfigError
from ..outputs import join, make_dirs, write_bytes, write_json
from .reader import open_shards

FORMATS = ("datatrove", "megatron")
MEGATRON_CODES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}


def megatron_idx(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    lengths = np.asarray(lengths, dtype=np.int32)
    pointers = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths):
        pointers[1:] = np.cumsum(lengths[:-1].astype(np.int64)) * dtype.itemsize
    doc_idx = np.arange(len(lengths) + 1, dtype=np.int64)
    return b"".join([b"MMIDIDX\x00\x00", struct.pack("<Q", 1), struct.pack("<B", MEGATRON_CODES[dtype]),
                     struct.pack("<Q", len(lengths)), struct.pack("<Q", len(doc_idx)),
                     lengths.tobytes(), pointers.tobytes(), doc_idx.tobytes()])


def export_shards(folder: str, fmt: str, out_dir: str) -> dict:
    """Write ``folder``'s shards in format ``fmt`` to ``out_dir``; returns a small manifest."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is not one of {FORMATS}")
    s = open_shards(folder)
    make_dirs(out_dir)
    L = s.seq_len
    vocab = s.manifest["tokenizer"]["vocab_size"]
    files = []
    for k, e in enumerate(s.manifest["shards"]):
        sh = s._shard(k)
        tokens = np.asarray(sh.tokens).reshape(-1)
        segs = np.asarray(sh.segs)
        name = e["name"]
        if fmt == "datatrove":
            starts = segs["seq"].astype(np.int64) * L + segs["start"]
            ends = starts + segs["length"]
            bounds = np.union1d(np.concatenate([starts, ends]), np.arange(1, e["n_sequences"] + 1) * L)
            bounds = bounds[bounds > 0]
            write_bytes(tokens.astype(s.dtype).tobytes(), join(out_dir, f"{name}.ds"))
            write_bytes(bounds.astype("<u8").tobytes(), join(out_dir, f"{name}.ds.index"))
            files += [f"{name}.ds", f"{name}.ds.index"]
        else:
            dt = np.dtype(np.uint16) if vocab < 65500 else np.dtype(np.int32)
            flat_starts = segs["seq"].astype(np.int64) * L + segs["start"]
            pieces = [tokens[a: a + n] for a, n in zip(flat_starts, segs["length"].astype(np.int64))]
            data = np.concatenate(pieces).astype(dt) if pieces else np.zeros(0, dt)
            write_bytes(data.tobytes(), join(out_dir, f"{name}.bin"))
            write_bytes(megatron_idx(segs["length"], dt), join(out_dir, f"{name}.idx"))
            files += [f"{name}.bin", f"{name}.idx"]
    man = {"format": fmt, "source": folder, "seq_len": L, "dtype": str(s.dtype), "files": files,
           "read_with": f"DatatroveFolderDataset(folder, seq_len={L - 1}, token_size={s.dtype.itemsize})"
           if fmt == "datatrove" else "megatron.core.datasets.indexed_dataset.IndexedDataset(prefix)"}
    write_json(man, join(out_dir, f"export-{fmt}.json"))
    return man
