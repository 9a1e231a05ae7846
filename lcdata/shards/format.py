"""The lcdata shard format, version 1 (byte-level spec in docs/format.md).

A shard folder holds:
- ``manifest.json``: self-description (format version, dtype, seq_len, packing, tokenizer hash and vocab
  size, special token ids, sources, counts per source, padding, dropped tokens, plan fingerprint, config,
  command line, and the size + SHA-256 of every data file, documents.parquet included). Written last: its
  presence marks a complete build.
- ``shard-NNNNN.bin``: ``n_sequences x seq_len`` token ids, little-endian ``uint16`` (vocab <= 65,536) or
  ``uint32``, row-major, no header: ``np.memmap(path, dtype, mode="r").reshape(-1, seq_len)``.
- ``shard-NNNNN.seg.npy``: NumPy ``.npy`` structured array, one row per document piece in a sequence,
  sorted by (seq, start): ``seq`` u4 (sequence index inside the shard), ``start`` u4 (first position in the
  sequence), ``length`` u4, ``doc`` u8 (row of documents.parquet), ``offset`` u8 (position of the piece in
  the document instance), ``source`` u2 (index into manifest ``sources``). Positions not covered by a
  piece are padding (``pad_id``). Document boundaries give ``cu_seqlens`` for intra-document masking.
- ``documents.parquet``: one row per document instance (a copy of a document, or of a chunk of one):
  ``doc, doc_id, file, row, chunk, copy, source, length`` (``length`` includes BOS/EOS).
"""

from __future__ import annotations

import hashlib

import numpy as np

FORMAT = "lcdata.shards"
FORMAT_VERSION = 1
DOCUMENTS_FILE = "documents.parquet"
SEG_FILE_DTYPE = np.dtype([("seq", "<u4"), ("start", "<u4"), ("length", "<u4"), ("doc", "<u8"),
                           ("offset", "<u8"), ("source", "<u2")])


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def sha256_bytes(data) -> str:
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()


def npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
