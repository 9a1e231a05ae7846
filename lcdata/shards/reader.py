"""Reading and inspecting a shard folder (format in `lcdata.shards.format`, docs/format.md).

`check_folder(dir)` is the cheap structural validation every reader runs before it trusts a folder: the
manifest parses and passes `validate_manifest` (schema, names, counts against each other, seal), and every
file it lists is there with its listed size (one directory listing; no data read). `open_shards(dir)` (the
training loader's and `inspect`'s entry) and `lcdata export` call it and refuse a folder with a problem in
one line; `lcdata verify` (`lcdata.shards.verify`) adds the checks against the data.

`open_shards` gives random access to sequence i as a NumPy view of a memory map (zero copy; remote folders
are read into memory), its document pieces (boundaries, source, document id) and, for tests and round
trips, every document instance re-assembled from its pieces.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import fsspec
import numpy as np
import polars as pl

from ..errors import LcdataError
from ..util.io import is_local, join, read_bytes
from .format import MANIFEST_FILE, SEG_FILE_DTYPE, parse_manifest, validate_manifest

_SHARD_FILE = re.compile(r"shard-\d+\.(bin|seg\.npy)")


def listed_files(m: dict) -> list[tuple[str, dict]]:
    """(key path, {path, bytes, sha256}) of every data file a valid manifest lists."""
    out = [(f"shards[{k}].files.{t}", e["files"][t]) for k, e in enumerate(m["shards"]) for t in ("bin", "seg")]
    return out + [("documents", m["documents"])]


def check_folder(folder: str) -> tuple[dict | None, list[str]]:
    """(manifest, problems) of the cheap structural validation (module docstring); [] problems = trusted."""
    folder = folder.rstrip("/")
    try:
        fs, root = fsspec.core.url_to_fs(folder)
        listing = {e["name"].rstrip("/").rsplit("/", 1)[-1]: e for e in fs.ls(root, detail=True)}
    except (FileNotFoundError, NotADirectoryError):
        return None, [f"{folder}: no such folder"]
    if MANIFEST_FILE not in listing:
        return None, [f"{folder!r} holds no {MANIFEST_FILE}: not a complete lcdata build (an interrupted build "
                      "resumes with `lcdata build ... --resume`)"]
    try:
        data = read_bytes(join(folder, MANIFEST_FILE))
    except OSError as e:  # a folder of that name, no permission, ...
        return None, [f"{MANIFEST_FILE}: cannot be read ({type(e).__name__}: {e})"]
    m, problems = parse_manifest(data)
    if m is None:
        return None, problems
    problems = validate_manifest(m)
    if problems:
        return m, problems
    listed = set()
    for key, meta in listed_files(m):
        name = meta["path"]
        listed.add(name)
        e = listing.get(name)
        if e is None or e.get("type") not in ("file", None):
            problems.append(f"{name}: missing (listed in {MANIFEST_FILE} as {key})")
        elif e.get("size") != meta["bytes"]:
            problems.append(f"{name}: size {e.get('size')} != {meta['bytes']} bytes in {MANIFEST_FILE} "
                            "(truncated or altered)")
    for name in sorted(listing):
        if _SHARD_FILE.fullmatch(name) and name not in listed:
            problems.append(f"{name}: a shard file not listed in {MANIFEST_FILE} (left by another build?); "
                            "rebuild the folder or remove it")
    return m, problems


def validate_folder(folder: str) -> dict:
    """The manifest of ``folder`` after `check_folder`; a folder with a problem raises one `LcdataError` line."""
    m, problems = check_folder(folder)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise LcdataError(f"{folder}: {problems[0]}{more}; run `lcdata verify {folder}` for the full report and "
                          "rebuild the folder")
    return m


@dataclass
class _Shard:
    tokens: np.ndarray  # (n, seq_len)
    segs: np.ndarray
    seg_index: np.ndarray  # n + 1 offsets into segs


class ShardSet:
    """A built shard folder, validated by `check_folder`. ``len(s)``, ``s[i]`` (tokens of sequence i),
    ``s.pieces(i)``, ``s.cu_seqlens(i)``, ``s.documents`` (Polars frame), ``s.manifest``.

    >>> s = open_shards("out/demo/shards")  # doctest: +SKIP
    >>> s[0].shape, s.pieces(0)[0]["source"]  # doctest: +SKIP
    """

    def __init__(self, folder: str):
        self.folder = folder.rstrip("/")
        self.manifest = m = validate_folder(self.folder)
        self.seq_len = int(m["seq_len"])
        self.dtype = np.dtype(m["dtype"]).newbyteorder("<")
        self.sources: list[str] = m["sources"]
        self.max_id = int(m["tokenizer"]["max_id"])
        self._shards: list[_Shard | None] = [None] * len(m["shards"])
        self._starts = np.array([s["first_sequence"] for s in m["shards"]] + [m["n_sequences"]], dtype=np.int64)
        self._docs: pl.DataFrame | None = None

    def __len__(self) -> int:
        return int(self.manifest["n_sequences"])

    def _shard(self, k: int) -> _Shard:
        sh = self._shards[k]
        if sh is None:
            e = self.manifest["shards"][k]
            bin_url = join(self.folder, e["files"]["bin"]["path"])
            seg_url = join(self.folder, e["files"]["seg"]["path"])
            try:
                if is_local(bin_url):
                    tokens = np.memmap(bin_url.removeprefix("file://"), dtype=self.dtype, mode="r")
                    segs = np.load(seg_url.removeprefix("file://"), mmap_mode="r", allow_pickle=False)
                else:
                    tokens = np.frombuffer(read_bytes(bin_url), dtype=self.dtype)
                    segs = np.load(io.BytesIO(read_bytes(seg_url)), allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:
                raise LcdataError(f"{self.folder}: shard {k} cannot be read ({type(err).__name__}: {err}); run "
                                  f"`lcdata verify {self.folder}` and rebuild the folder") from None
            if segs.dtype != SEG_FILE_DTYPE or segs.ndim != 1:
                raise LcdataError(f"{seg_url}: holds {segs.dtype} {segs.shape}, not the format's piece table; run "
                                  f"`lcdata verify {self.folder}` and rebuild the folder")
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
                with fsspec.open(join(self.folder, name), "rb") as fh:
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


def inspect_sequence(folder: str, i: int, tokenizer: str | None = None, max_chars: int = 400) -> str:
    """Decoded text of sequence i with document boundaries, sources and ids marked."""
    from ..tokenizer.hf import load_tokenizer

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
