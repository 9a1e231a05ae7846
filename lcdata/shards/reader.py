"""Reading, verifying and inspecting a shard folder (format in `lcdata.shards.format`, docs/format.md).

`open_shards(dir)` gives random access to sequence i as a NumPy view of a memory map (zero copy; remote
folders are read into memory), its document pieces (boundaries, source, document id) and, for tests and
round trips, every document instance re-assembled from its pieces.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import fsspec
import numpy as np
import polars as pl

from ..errors import LcdataError
from .format import FORMAT, FORMAT_VERSION, SEG_FILE_DTYPE, sha256_bytes


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _path(d: str, name: str) -> str:
    return d.rstrip("/") + "/" + name


def _read_bytes(url: str) -> bytes:
    with fsspec.open(url, "rb") as fh:
        return fh.read()


@dataclass
class _Shard:
    tokens: np.ndarray  # (n, seq_len)
    segs: np.ndarray
    seg_index: np.ndarray  # n + 1 offsets into segs


class ShardSet:
    """A built shard folder. ``len(s)``, ``s[i]`` (tokens of sequence i), ``s.pieces(i)``,
    ``s.cu_seqlens(i)``, ``s.documents`` (Polars frame), ``s.manifest``.

    >>> s = open_shards("out/demo/shards")  # doctest: +SKIP
    >>> s[0].shape, s.pieces(0)[0]["source"]  # doctest: +SKIP
    """

    def __init__(self, folder: str):
        self.folder = folder.rstrip("/")
        try:
            self.manifest = json.loads(_read_bytes(_path(self.folder, "manifest.json")))
        except FileNotFoundError:
            raise LcdataError(f"{folder!r} holds no manifest.json: not a complete lcdata build "
                              "(an interrupted build resumes with `lcdata build ... --resume`)") from None
        m = self.manifest
        if m.get("format") != FORMAT or m.get("format_version") != FORMAT_VERSION:
            raise LcdataError(f"{folder!r}: format {m.get('format')} v{m.get('format_version')} is not "
                              f"{FORMAT} v{FORMAT_VERSION}; rebuild it with this lcdata")
        self.seq_len = int(m["seq_len"])
        self.dtype = np.dtype(m["dtype"]).newbyteorder("<")
        self.sources: list[str] = m["sources"]
        self._shards: list[_Shard | None] = [None] * len(m["shards"])
        self._starts = np.array([s["first_sequence"] for s in m["shards"]] + [m["n_sequences"]], dtype=np.int64)
        self._docs: pl.DataFrame | None = None

    def __len__(self) -> int:
        return int(self.manifest["n_sequences"])

    def _shard(self, k: int) -> _Shard:
        sh = self._shards[k]
        if sh is None:
            e = self.manifest["shards"][k]
            bin_url = _path(self.folder, e["files"]["bin"]["path"])
            seg_url = _path(self.folder, e["files"]["seg"]["path"])
            if _is_local(bin_url):
                p = bin_url.removeprefix("file://")
                tokens = np.memmap(p, dtype=self.dtype, mode="r") if e["n_sequences"] else np.zeros(0, self.dtype)
                segs = np.load(seg_url.removeprefix("file://"), mmap_mode="r", allow_pickle=False)
            else:
                tokens = np.frombuffer(_read_bytes(bin_url), dtype=self.dtype)
                import io

                segs = np.load(io.BytesIO(_read_bytes(seg_url)), allow_pickle=False)
            tokens = tokens.reshape(-1, self.seq_len)
            idx = np.searchsorted(segs["seq"], np.arange(e["n_sequences"] + 1), side="left")
            sh = self._shards[k] = _Shard(tokens=tokens, segs=segs, seg_index=idx)
        return sh

    def _locate(self, i: int) -> tuple[int, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} out of range for {len(self)} sequences")
        i %= len(self)
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return k, i - int(self._starts[k])

    def __getitem__(self, i: int) -> np.ndarray:
        k, j = self._locate(i)
        return self._shard(k).tokens[j]

    def segments(self, i: int) -> np.ndarray:
        """Structured array of the document pieces in sequence i (fields of SEG_FILE_DTYPE)."""
        k, j = self._locate(i)
        sh = self._shard(k)
        return sh.segs[sh.seg_index[j]: sh.seg_index[j + 1]]

    def cu_seqlens(self, i: int) -> np.ndarray:
        """Cumulative boundaries (int32) of the pieces of sequence i, padding as one trailing piece."""
        s = self.segments(i)
        b = [0]
        pos = 0
        for st, ln in zip(s["start"], s["length"]):
            if st > pos:
                b.append(int(st))
            b.append(int(st) + int(ln))
            pos = int(st) + int(ln)
        if pos < self.seq_len:
            b.append(self.seq_len)
        return np.array(b, dtype=np.int32)

    @property
    def documents(self) -> pl.DataFrame:
        if self._docs is None:
            name = self.manifest["documents_file"]
            try:
                with fsspec.open(_path(self.folder, name), "rb") as fh:
                    self._docs = pl.read_parquet(fh)
            except FileNotFoundError:
                raise LcdataError(f"{self.folder!r}: {name} is missing; rebuild the folder") from None
            except pl.exceptions.PolarsError as e:  # truncated or altered: say so rather than show Polars' trace
                raise LcdataError(f"{self.folder!r}: {name} cannot be read ({type(e).__name__}); the file is "
                                  "damaged: run `lcdata verify` on the folder and rebuild it") from None
        return self._docs

    def pieces(self, i: int) -> list[dict]:
        docs = self.documents
        out = []
        for s in self.segments(i):
            d = docs.row(int(s["doc"]), named=True)
            out.append({"start": int(s["start"]), "length": int(s["length"]), "doc": int(s["doc"]),
                        "offset": int(s["offset"]), "source": self.sources[int(s["source"])],
                        "doc_id": d["doc_id"], "chunk": d["chunk"], "copy": d["copy"], "doc_length": d["length"]})
        return out

    def all_segments(self) -> np.ndarray:
        """Every piece, with ``seq`` made global. O(total pieces) memory."""
        parts = []
        for k in range(len(self._shards)):
            s = np.array(self._shard(k).segs)
            g = np.empty(len(s), dtype=[("gseq", "<u8")] + [(n, SEG_FILE_DTYPE[n]) for n in SEG_FILE_DTYPE.names])
            g["gseq"] = s["seq"].astype(np.uint64) + np.uint64(self._starts[k])
            for n in SEG_FILE_DTYPE.names:
                g[n] = s[n]
            parts.append(g)
        return np.concatenate(parts) if parts else np.empty(0, SEG_FILE_DTYPE)

    def instance_tokens(self) -> dict[int, np.ndarray]:
        """Re-assemble every document instance present in the shards: {doc: tokens}."""
        segs = self.all_segments()
        segs = segs[np.lexsort((segs["offset"], segs["doc"]))]
        out: dict[int, list] = {}
        for s in segs:
            row = self[int(s["gseq"])]
            out.setdefault(int(s["doc"]), []).append(row[int(s["start"]): int(s["start"]) + int(s["length"])])
        return {d: np.concatenate(p) for d, p in out.items()}


def open_shards(folder: str) -> ShardSet:
    """Open a shard folder written by `lcdata build` (local path or fsspec URL)."""
    return ShardSet(folder)


def verify_shards(folder: str) -> list[str]:
    """Check every file against the manifest (size, SHA-256: shards and documents.parquet) and the structure
    (documents.parquet readable with ``n_instances`` rows, token ids < vocab size, pieces inside sequences and
    non-overlapping, each piece's document a row of documents.parquet, per-source token counts). Returns the
    problems found (empty = valid); each names the file and the failed check."""
    problems: list[str] = []
    try:
        s = open_shards(folder)
    except LcdataError as e:
        return [str(e)]
    m = s.manifest
    vocab = m["tokenizer"]["vocab_size"]
    per_src = np.zeros(len(s.sources), dtype=np.int64)
    files = [(e["files"][k]["path"], e["files"][k]) for e in m["shards"] for k in ("bin", "seg")]
    if "documents" in m:  # absent from manifests written before lcdata recorded it: the checks below still run
        files.append((m["documents"]["path"], m["documents"]))
    for path, meta in files:
        url = _path(s.folder, path)
        try:
            data = _read_bytes(url)
        except FileNotFoundError:
            problems.append(f"{path}: missing (listed in manifest.json)")
            continue
        if len(data) != meta["bytes"]:
            problems.append(f"{path}: size {len(data)} != {meta['bytes']} bytes in manifest.json (truncated or altered)")
        elif sha256_bytes(data) != meta["sha256"]:
            problems.append(f"{path}: SHA-256 mismatch with manifest.json (file altered)")
    if problems:
        return problems
    docs_name = m["documents_file"]
    try:
        n_docs = pl.read_parquet(_read_bytes(_path(s.folder, docs_name))).height
    except FileNotFoundError:
        return [f"{docs_name}: missing (named in manifest.json)"]
    except pl.exceptions.PolarsError:
        return [f"{docs_name}: not a readable Parquet file (truncated or altered)"]
    if n_docs != m["n_instances"]:
        problems.append(f"{docs_name}: {n_docs} rows != n_instances {m['n_instances']} in manifest.json")
    for k, e in enumerate(m["shards"]):
        sh = s._shard(k)
        name = e["files"]["bin"]["path"]
        if sh.tokens.size and int(sh.tokens.max()) >= vocab:
            problems.append(f"{name}: token id {int(sh.tokens.max())} >= vocab size {vocab}")
        g = sh.segs
        if len(g):
            end = g["start"].astype(np.int64) + g["length"]
            if (end > s.seq_len).any() or (g["seq"] >= e["n_sequences"]).any():
                problems.append(f"{e['files']['seg']['path']}: a piece lies outside its sequence")
            same = g["seq"][1:] == g["seq"][:-1]
            if (same & (g["start"][1:].astype(np.int64) < end[:-1])).any():
                problems.append(f"{e['files']['seg']['path']}: overlapping pieces")
            if int(g["doc"].max()) >= n_docs:
                problems.append(f"{e['files']['seg']['path']}: piece of document {int(g['doc'].max())}, but "
                                f"{docs_name} has {n_docs} rows")
            per_src += np.bincount(g["source"], weights=g["length"], minlength=len(s.sources)).astype(np.int64)
    for i, src in enumerate(s.sources):
        want = m["per_source"][src]["tokens"]
        if int(per_src[i]) != want:
            problems.append(f"manifest.json: source {src!r} has {int(per_src[i])} tokens in the pieces, manifest says {want}")
    return problems


def inspect_sequence(folder: str, i: int, tokenizer: str | None = None, max_chars: int = 400) -> str:
    """Decoded text of sequence i with document boundaries, sources and ids marked."""
    from ..tokenizer import load_tokenizer

    s = open_shards(folder)
    tok = load_tokenizer(tokenizer or s.manifest["tokenizer"]["path"])
    row = s[i]
    lines = [f"sequence {i} of {len(s)} ({s.seq_len} tokens, packing {s.manifest['packing']})"]
    pos = 0
    for p in s.pieces(i):
        if p["start"] > pos:
            lines.append(f"[padding x {p['start'] - pos}]")
        text = tok.decode(row[p["start"]: p["start"] + p["length"]].tolist(), skip_special_tokens=False)
        more = "" if len(text) <= max_chars else f" ... [{len(text) - max_chars:,} more chars]"
        lines.append(f"=== [{p['source']}] {p['doc_id']} chunk {p['chunk']} copy {p['copy']} | seq {p['start']}-"
                     f"{p['start'] + p['length']} | doc tokens {p['offset']}-{p['offset'] + p['length']} of "
                     f"{p['doc_length']} ===")
        lines.append(text[:max_chars] + more)
        pos = p["start"] + p["length"]
    if pos < s.seq_len:
        lines.append(f"[padding x {s.seq_len - pos}]")
    return "\n".join(lines)
