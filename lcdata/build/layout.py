"""`lcdata build` phase 2: the global packing of the spilled units, and the shard and documents writers.

`load_units` reads the numeric columns of the spill unit tables (`Units`); `_instance_order` repeats units by
their plan copies into instances ordered by a stable hash of (seed, file:row, chunk, copy); `pack_layout`
packs them (`shards.packing`) and permutes the sequences by the seed (`PackLayout`, an O(n) gather of each
sequence's run of segments, no sort); `write_shards` has every worker write whole shards (`write_shard`) and
`write_documents` streams documents.parquet. Shard k is a pure function of (layout, spills), so `run_build`,
its workers in any order, and the distributed stages (`build_stages`) write the same bytes.

`write_shard` gathers a shard's tokens from the spills (`Spills`): a piece of at least `RUN_MIN_TOKENS`
tokens is one `os.preadv` straight into the write buffer, the shorter ones one fancy-indexed gather per spill
file over its read-only memory map; it hashes what it writes. Cost: O(tokens) copies plus O(long pieces) Python steps per shard.

Memory: NumPy arrays only (no per-document strings; with an ``--id-field``, the ids as one Polars string
column): `Units` about 42 bytes per unit, `PackLayout` about 110 bytes per instance, temporaries bounded by
chunks (`shards.packing.CONCAT_CHUNK`) except the instance sort (16 bytes per instance) and best-fit's packer
(a Python loop holding a tuple per piece while it runs); each writer an 8 MiB buffer. `lcdata.build.spilled`
computes the same `PackLayout` out of core (its arrays memory-mapped, `PackLayout.release` drops what was
read: documents.parquet and the writers call it after each row group and shard).
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import polars as pl

from ..errors import LcdataError
from ..shards.format import DOCS_SCHEMA, DOCUMENTS_FILE, SEG_FILE_DTYPE, npy_bytes, sha256_bytes, shard_name
from ..shards.packing import pack_best_fit, pack_concat
from ..tokenizer.hf import Specials
from ..util.faults import fault_point
from ..util.hashing import file_row_hash, splitmix64
from ..util.io import atomic_open, join, write_bytes


class PackOptions(Protocol):
    """What phase 2 reads of a build's config (`lcdata.build.BuildConfig` has these fields)."""

    seq_len: int
    packing: str
    seed: int
    shard_tokens: int
    plan: str | None

UNIT_NUMERIC = ("file_index", "row", "chunk", "length", "offset", "copies")


@dataclass
class Units:
    """The spill unit tables of a build as NumPy arrays, one entry per unit in (file, row, chunk) order:
    what phase 2 keeps in memory (about 40 bytes per unit; the strings stay in the spill tables)."""

    file_index: np.ndarray  # int32: index into the build's input files
    row: np.ndarray  # int64
    chunk: np.ndarray  # int32
    length: np.ndarray  # int64: tokens of the unit in its spill, BOS/EOS included
    offset: np.ndarray  # int64: first token of the unit in its spill
    copies: np.ndarray  # int64: instances of the unit (plan copies)
    src: np.ndarray  # uint16: index into sources
    sources: list[str]  # sorted


def load_units(work_dir: str, indices) -> Units:
    """Read the numeric columns of the spill unit tables ``tok-NNNNN.units.parquet`` of ``indices`` (in that
    order) and the source of each unit as an index into the sorted source names. Memory: the `Units` arrays
    (filled in place, their sizes read from the tables' metadata first) and one table at a time."""
    indices = list(indices)
    paths = [os.path.join(work_dir, f"tok-{i:05d}.units.parquet") for i in indices]
    sizes = [pl.scan_parquet(p).select(pl.len()).collect().item() for p in paths]  # from the metadata
    types = {"file_index": np.int32, "row": np.int64, "chunk": np.int32, "length": np.int64, "offset": np.int64,
             "copies": np.int64}
    n = sum(sizes)
    arr = {c: np.empty(n, t) for c, t in types.items()}
    local = np.empty(n, np.uint16)  # per file: source codes into that file's names, made global below
    names_of: list[list[str]] = []
    at = 0
    for path, size in zip(paths, sizes):
        t = pl.read_parquet(path, columns=[*UNIT_NUMERIC, "source"])
        for c in UNIT_NUMERIC:
            arr[c][at: at + size] = t[c].to_numpy()
        names = t["source"].unique(maintain_order=True).to_list()
        names_of.append(names)
        if names:
            local[at: at + size] = t["source"].cast(pl.Enum(names)).to_physical().to_numpy()
        at += size
        del t
    sources = sorted({nm for names in names_of for nm in names})
    sid = {nm: k for k, nm in enumerate(sources)}
    at = 0
    for names, size in zip(names_of, sizes):
        if names:
            local[at: at + size] = np.array([sid[nm] for nm in names], dtype=np.uint16)[local[at: at + size]]
        at += size
    return Units(**arr, src=local, sources=sources)


def _instance_order(u: Units, rels: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each unit repeated by its copies into instances, ordered by a stable hash of (seed, file:row, chunk,
    copy), ties broken by (file name, row, chunk, copy). Returns (unit index, copy) per instance, in
    instance (= documents.parquet ``doc``) order. The hash is `lcdata.util.hashing.doc_hash`'s, vectorised."""
    unit = np.repeat(np.arange(len(u.copies), dtype=np.int64), u.copies)
    first = np.cumsum(u.copies) - u.copies
    copy = np.arange(len(unit), dtype=np.int64)
    copy -= np.repeat(first, u.copies)
    del first
    h = file_row_hash(seed, rels, u.file_index, u.row)  # doc_hash of file:row, per unit
    mix = u.chunk.astype(np.uint64)[unit]
    mix <<= np.uint64(32)
    mix |= copy.astype(np.uint64)
    key = h[unit]
    del h
    key ^= splitmix64(mix)
    del mix
    key = splitmix64(key)
    order = np.argsort(key, kind="stable")
    key = key[order]
    if len(key) > 1 and bool((key[1:] == key[:-1]).any()):  # equal 64-bit keys: the documented tie order
        key = splitmix64(file_row_hash(seed, rels, u.file_index, u.row)[unit] ^ splitmix64(
            (u.chunk.astype(np.uint64)[unit] << np.uint64(32)) | copy.astype(np.uint64)))
        rank = np.argsort(np.argsort(np.array(rels, dtype=object), kind="stable"))
        order = np.lexsort((copy, u.chunk[unit], u.row[unit], rank[u.file_index[unit]], key))
    del key
    return unit[order], copy[order]


@dataclass
class PackLayout:
    """Phase 2's global decisions, computed once from the spill unit tables: where each piece of each
    instance goes. Shard k is a pure function of (layout, spills), so shards can be written by any process,
    in any order (`lcdata.scaleout.pipelines` writes them per task), with the same bytes. Everything here is NumPy
    (no per-document strings): about 110 bytes per instance, in memory or memory-mapped (a saved or spilled
    layout)."""

    segs: np.ndarray  # packing segments, sorted by (output sequence, start)
    out_pos: np.ndarray  # output sequence of each segment
    bounds: np.ndarray  # shard k holds segments bounds[k]:bounds[k + 1]
    inst_file: np.ndarray  # per instance: file index of its spill, offset in it, source id
    inst_off: np.ndarray
    inst_src: np.ndarray
    inst_unit: np.ndarray  # per instance: its unit (index into the Units arrays) and copy number
    inst_copy: np.ndarray
    inst_row: np.ndarray  # per instance: row, chunk and length of its unit (documents.parquet columns)
    inst_chunk: np.ndarray
    inst_length: np.ndarray
    sources: list[str]
    files: list[str]  # input file names (rel) by file index
    n_seq: int
    per_shard: int
    padding: int
    dropped: int
    stats: dict  # n_tokens, n_documents (instances with a piece), tokens_per_source, documents_per_source
    maps: list = field(default_factory=list)  # the memory maps under the arrays (`release`), if any
    dir: str | None = None  # a folder `load_layout` reads this layout from, if it is saved already

    def release(self) -> None:
        """Drop the pages of the memory-mapped arrays from this process (they stay in the page cache): a
        reader of a saved or spilled layout holds only what it read since the last call."""
        _madvise_dontneed(self.maps)

    @property
    def n_shards(self) -> int:
        return len(self.bounds) - 1


def pack_layout(units: Units, rels: list[str], cfg: PackOptions, *, consume: bool = False) -> PackLayout:
    """The global packing of a build (`PackLayout`): instances in their stable order, packed into sequences
    (concat or best-fit), the sequences permuted by the seed and cut into shards of ``shard_tokens``.
    ``consume``: each ``units`` array is dropped (set to None) once gathered per instance, so the unit and
    the instance copies of a column are not both held (``units`` is unusable after)."""
    L = cfg.seq_len
    inst_unit, inst_copy = _instance_order(units, rels, cfg.seed)
    if consume:
        units.copies = None

    def take(name: str) -> np.ndarray:
        arr = getattr(units, name)[inst_unit]
        if consume:
            setattr(units, name, None)
        return arr

    lengths = take("length")  # the layout's inst_length
    if cfg.packing == "concat":
        segs, n_seq, dropped = pack_concat(lengths, L)
        padding = 0
    else:
        segs, n_seq, padding = pack_best_fit(lengths, L)
        dropped = 0
    if n_seq == 0:
        raise LcdataError(
            f"the corpus{' (as planned)' if cfg.plan else ''} has {int(lengths.sum())} tokens, less than one "
            f"sequence of seq_len={L}; lower --seq-len or add data"
        )
    perm = np.random.default_rng(cfg.seed).permutation(n_seq)  # output position -> packed sequence
    # segments by (output position, start): the packers give them by (seq, start), so output position p takes
    # the run of its sequence perm[p] as it is (what a stable sort by (position, start) gives), in O(segments)
    seq_first = np.searchsorted(segs["seq"], np.arange(n_seq + 1))
    count = seq_first[perm + 1] - seq_first[perm]
    order = np.arange(len(segs), dtype=np.int64)
    order += np.repeat(seq_first[perm] - (np.cumsum(count) - count), count)
    del seq_first
    for name in segs.dtype.names:  # in place, one field at a time: no second copy of the segments
        segs[name] = segs[name][order]
    del order
    out_pos = np.repeat(np.arange(n_seq, dtype=np.int64), count)
    del count, perm
    per_shard = max(1, cfg.shard_tokens // L)
    n_shards = (n_seq + per_shard - 1) // per_shard
    bounds = np.searchsorted(out_pos, np.arange(n_shards + 1) * per_shard)
    inst = {name: take(col) for name, col in (("inst_file", "file_index"), ("inst_off", "offset"),
                                              ("inst_src", "src"), ("inst_row", "row"), ("inst_chunk", "chunk"))}
    return PackLayout(segs=segs, out_pos=out_pos, bounds=bounds, **inst, inst_unit=inst_unit,
                      inst_copy=inst_copy, inst_length=lengths, sources=units.sources, files=list(rels),
                      n_seq=int(n_seq), per_shard=per_shard, padding=int(padding), dropped=int(dropped),
                      stats=layout_stats(segs, inst["inst_src"], len(units.sources)))


def layout_stats(segs: np.ndarray, inst_src: np.ndarray, n_sources: int) -> dict:
    """The manifest's counts of a layout: tokens packed, instances with at least one piece, both per source.
    Memory: one byte per instance and temporaries of `STATS_CHUNK` segments."""
    used = np.zeros(len(inst_src), dtype=bool)
    tok = np.zeros(n_sources, dtype=np.int64)
    for a in range(0, len(segs), STATS_CHUNK):
        part = segs[a: a + STATS_CHUNK]
        inst = part["inst"].astype(np.int64)
        used[inst] = True
        tok += np.bincount(inst_src[inst], weights=part["length"], minlength=n_sources).astype(np.int64)
    docs = np.zeros(n_sources, dtype=np.int64)
    for a in range(0, len(used), STATS_CHUNK):
        docs += np.bincount(inst_src[a: a + STATS_CHUNK][used[a: a + STATS_CHUNK]], minlength=n_sources)
    return {"n_tokens": int(tok.sum()), "n_documents": int(used.sum()),
            "tokens_per_source": [int(x) for x in tok], "documents_per_source": [int(x) for x in docs]}


STATS_CHUNK = 1 << 20


_LAYOUT_ARRAYS = ("segs", "out_pos", "bounds", "inst_file", "inst_off", "inst_src", "inst_unit", "inst_copy",
                  "inst_row", "inst_chunk", "inst_length")
LAYOUT_META = ("sources", "files", "n_seq", "per_shard", "padding", "dropped", "stats")


def save_layout(lay: PackLayout, d: str) -> None:
    """Write a `PackLayout` to folder ``d`` (NumPy arrays, ``layout.json`` last)."""
    os.makedirs(d, exist_ok=True)
    for name in _LAYOUT_ARRAYS:
        with atomic_open(os.path.join(d, f"{name}.npy")) as fh:
            np.save(fh, np.ascontiguousarray(getattr(lay, name)), allow_pickle=False)
    write_layout_meta(lay, d)


def write_layout_meta(lay: PackLayout, d: str) -> None:
    """``layout.json`` (the scalars of ``lay``), written last: it marks a saved layout complete."""
    write_bytes(json.dumps({k: getattr(lay, k) for k in LAYOUT_META}).encode(), os.path.join(d, "layout.json"))


def load_layout(d: str) -> PackLayout:
    """Read a layout saved by `save_layout`; arrays are memory-mapped (each task reads only its shards' part;
    `PackLayout.release` drops what it read)."""
    with open(os.path.join(d, "layout.json")) as fh:
        meta = json.load(fh)
    arrays, maps = {}, []
    for name in _LAYOUT_ARRAYS:
        arrays[name], m = map_npy(os.path.join(d, f"{name}.npy"))
        if m is not None:
            maps.append(m)
    return PackLayout(**arrays, **meta, maps=maps, dir=d)


def map_npy(path: str) -> tuple[np.ndarray, mmap.mmap | None]:
    """A 1-d ``.npy`` file as a read-only array over its own memory map (returned too, for `_madvise_dontneed`;
    None for an empty array, which is read)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(fh)
        at = fh.tell()
        n = int(np.prod(shape))
        if n == 0 or dtype.itemsize == 0:
            return np.empty(shape, dtype), None
        m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(m, dtype=dtype, count=n, offset=at).reshape(shape), m


def _madvise_dontneed(maps) -> None:
    if not hasattr(mmap, "MADV_DONTNEED"):  # not on this platform: the kernel reclaims the pages itself
        return
    for m in list(maps):
        with suppress(ValueError, OSError):  # closed meanwhile
            m.madvise(mmap.MADV_DONTNEED)


WRITE_BUFFER_BYTES = 8 << 20  # shard bytes assembled before each write (at least one sequence)
RUN_MIN_TOKENS = 64  # pieces at least this long are read one system call each; shorter ones by one gather per spill


class Spills:
    """The spill files ``WORK/tok-NNNNN.bin`` of a build, opened on first use and kept across shards: as
    read-only memory maps (plain NumPy arrays over `mmap`, for the gathers of short pieces) and as descriptors
    (``fd``, for `os.preadv` of long ones). ``release()`` (after each shard) drops the mapped pages from this
    process (``MADV_DONTNEED``: they stay in the page cache, a later read maps them again), so a writer's RSS
    holds one shard's mapped pages, not every spill it has read. ``close()`` closes the descriptors and drops
    the maps (they close when the last array over them is gone)."""

    def __init__(self, work_dir: str, dtype):
        self.work_dir, self.dtype, self._maps, self._mmaps, self._fds = work_dir, np.dtype(dtype), {}, [], {}

    def release(self) -> None:
        _madvise_dontneed(self._mmaps)

    def __getitem__(self, i: int) -> np.ndarray:
        arr = self._maps.get(i)
        if arr is None:
            path = os.path.join(self.work_dir, f"tok-{i:05d}.bin")
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
            if size:
                self._mmaps.append(m)
            arr = np.frombuffer(m, dtype=self.dtype, count=size // self.dtype.itemsize)
            self._maps[i] = arr
        return arr

    def fd(self, i: int) -> int:
        """An open descriptor of spill ``i`` (for `os.preadv`), kept until ``close()``."""
        fd = self._fds.get(i)
        if fd is None:  # two threads may open it at once: one descriptor is kept, the other closed
            new = os.open(os.path.join(self.work_dir, f"tok-{i:05d}.bin"), os.O_RDONLY)
            fd = self._fds.setdefault(i, new)
            if fd != new:
                os.close(new)
        return fd

    def close(self) -> None:
        self._maps.clear()
        self._mmaps.clear()
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)


def _gather(flat: np.ndarray, spills: Spills, fidx: np.ndarray, src: np.ndarray, dst: np.ndarray,
            lens: np.ndarray) -> None:
    """Copy piece j (``lens[j]`` tokens of spill ``fidx[j]`` from token ``src[j]``) to ``flat[dst[j]:]``: pieces
    of at least `RUN_MIN_TOKENS` one `os.preadv` each straight into the buffer (one system call, no page
    mapped into this process), the shorter ones with one fancy-indexed gather and scatter per spill file
    over its memory map (no Python work per piece)."""
    long = lens >= RUN_MIN_TOKENS
    if hasattr(os, "preadv"):
        size = flat.itemsize
        view = memoryview(flat).cast("B")
        fds = {f: spills.fd(f) for f in np.unique(fidx[long]).tolist()}
        for f, a, p, n in zip(*(x[long].tolist() for x in (fidx, src, dst, lens))):
            got = os.preadv(fds[f], [view[p * size: (p + n) * size]], a * size)
            if got != n * size:  # a regular file reads whole unless it ends (checked before): read the rest
                _read_rest(fds[f], view[(p * size + got): (p + n) * size], a * size + got, spills, f)
    else:  # no preadv (Windows): slice copies from the maps
        maps = {f: spills[f] for f in np.unique(fidx[long]).tolist()}
        for f, a, p, n in zip(*(x[long].tolist() for x in (fidx, src, dst, lens))):
            flat[p: p + n] = maps[f][a: a + n]
    short = ~long
    if not short.any():
        return
    maps = {f: spills[f] for f in np.unique(fidx[short]).tolist()}
    fidx, src, dst, lens = fidx[short], src[short], dst[short], lens[short]
    order = np.argsort(fidx, kind="stable")
    fidx, src, dst, lens = fidx[order], src[order], dst[order], lens[order]
    cuts = np.flatnonzero(np.diff(fidx)) + 1
    for lo, hi in zip([0, *cuts.tolist()], [*cuts.tolist(), len(fidx)]):
        ln = lens[lo:hi]
        total = int(ln.sum())
        rel = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(ln) - ln, ln)  # position inside its piece
        flat[np.repeat(dst[lo:hi], ln) + rel] = maps[int(fidx[lo])][np.repeat(src[lo:hi], ln) + rel]


def _read_rest(fd: int, dst: memoryview, at: int, spills: Spills, f: int) -> None:
    while len(dst):
        got = os.preadv(fd, [dst], at)
        if not got:
            raise LcdataError(f"spill {os.path.join(spills.work_dir, f'tok-{f:05d}.bin')} ends before byte {at + len(dst)}: "
                              "the work folder is incomplete; rerun the build with --overwrite")
        dst, at = dst[got:], at + got


def write_shard(lay: PackLayout, k: int, cfg: PackOptions, out_dir: str, work_dir: str, specials: Specials,
                dtype, spills: Spills | None = None) -> dict:
    """Write shard k (``.bin`` + ``.seg.npy``) and its marker in ``work_dir``; returns its manifest entry.
    A shard whose marker exists (written by an interrupted run with the same identity) is not rewritten.

    The ``.bin`` is streamed: sequences are assembled `WRITE_BUFFER_BYTES` at a time, gathered from the
    spills (`_gather`: long pieces one read each, short ones vectorised), then written and hashed, so
    memory does not depend on the shard size or seq-len beyond one sequence. The bytes depend only on the
    layout and the spills (not on which process writes which shard, or in which order)."""
    L = cfg.seq_len
    name = shard_name(k)
    marker = os.path.join(work_dir, f"{name}.done.json")
    if os.path.exists(marker):
        with open(marker) as fh:
            return json.load(fh)
    own = spills is None
    spills = Spills(work_dir, dtype) if own else spills

    first = k * lay.per_shard
    n = min(lay.per_shard, lay.n_seq - first)
    s = np.asarray(lay.segs[lay.bounds[k]: lay.bounds[k + 1]])
    lseq = np.asarray(lay.out_pos[lay.bounds[k]: lay.bounds[k + 1]]) - first
    size = np.dtype(dtype).itemsize
    group = max(1, WRITE_BUFFER_BYTES // (L * size))  # sequences per write
    buf = np.empty(min(group, n) * L, dtype=dtype)
    digest = hashlib.sha256()
    inst = s["inst"].astype(np.int64)
    fidx = np.asarray(lay.inst_file[inst]).astype(np.int64)
    src = np.asarray(lay.inst_off[inst]).astype(np.int64) + s["offset"].astype(np.int64)
    lens = s["length"].astype(np.int64)
    dst = lseq * L + s["start"].astype(np.int64)
    _check_spills(spills, fidx, src + lens)
    cut = np.searchsorted(lseq, np.arange(0, n + group, group))  # pieces of group g: cut[g]:cut[g + 1]
    try:
        with atomic_open(join(out_dir, f"{name}.bin")) as out:
            for gi, g0 in enumerate(range(0, n, group)):
                g = min(group, n - g0)
                flat = buf[: g * L]
                flat.fill(specials.pad)
                lo, hi = cut[gi], cut[gi + 1]
                _gather(flat, spills, fidx[lo:hi], src[lo:hi], dst[lo:hi] - g0 * L, lens[lo:hi])
                chunk = memoryview(flat).cast("B")
                out.write(chunk)
                digest.update(chunk)
    finally:
        if own:
            spills.close()
        else:
            spills.release()
        lay.release()
    seg_out = np.empty(len(s), dtype=SEG_FILE_DTYPE)
    seg_out["seq"], seg_out["start"], seg_out["length"] = lseq, s["start"], s["length"]
    seg_out["doc"], seg_out["offset"] = s["inst"], s["offset"]
    seg_out["source"] = lay.inst_src[inst] if len(s) else []
    seg_bytes = npy_bytes(seg_out)
    write_bytes(seg_bytes, join(out_dir, f"{name}.seg.npy"))
    entry = {"name": name, "first_sequence": first, "n_sequences": n,
             "files": {"bin": {"path": f"{name}.bin", "bytes": n * L * size, "sha256": digest.hexdigest()},
                       "seg": {"path": f"{name}.seg.npy", "bytes": len(seg_bytes), "sha256": sha256_bytes(seg_bytes)}}}
    write_bytes(json.dumps(entry).encode(), marker)
    fault_point("build.shard")
    return entry


PROCESS_WRITE_MIN_BYTES = 256 << 20  # below this many shard bytes, writer threads (no process start-up)


def write_shards(lay: PackLayout, cfg: PackOptions, out_dir: str, work_dir: str, specials: Specials, dtype,
                 workers: int, on_shard=None) -> list[dict]:
    """Write every shard of ``lay`` with ``workers`` writers; returns the manifest entries in shard order.

    Each writer writes whole shards (`write_shard`: its gathers, its file, its checksums), taken one at a time
    in shard order, so the bytes are those of one writer. Writers are processes (each maps the layout, saved
    once to ``WORK/layout``, and opens the spills) when the shards hold at least `PROCESS_WRITE_MIN_BYTES`,
    else threads of this process (the reads, gathers, hashing and writes release the GIL, the loop over long
    pieces does not; a process costs about 0.5 CPU-s to start). ``on_shard(entry)`` is called after each
    shard, in shard order (progress)."""
    from ..util.parallel import ordered_map

    ks = list(range(lay.n_shards))
    workers = max(1, min(workers, len(ks)))
    dtype = np.dtype(dtype)
    threads = lay.n_seq * cfg.seq_len * dtype.itemsize < PROCESS_WRITE_MIN_BYTES
    spills = None
    if workers > 1 and not threads:
        d = lay.dir
        if d is None:
            d = os.path.join(work_dir, "layout")
            save_layout(lay, d)
        items = [(d, k, cfg, out_dir, work_dir, specials, dtype.str, None) for k in ks]
    else:  # this process's writers share the maps (mapping a spill twice would be harmless)
        spills = Spills(work_dir, dtype)
        items = [(lay, k, cfg, out_dir, work_dir, specials, dtype.str, spills) for k in ks]
    entries = []
    try:
        for e in ordered_map(_write_one, items, workers, threads=threads, describe=lambda a: shard_name(a[1])):
            entries.append(e)
            if on_shard is not None:
                on_shard(e)
    finally:
        if spills is not None:
            spills.close()
    return entries


_MAPPED: dict = {}  # in a writer process: the saved layout and the spills it has mapped, kept across its shards


def _write_one(args) -> dict:
    lay, k, cfg, out_dir, work_dir, specials, dtype, spills = args
    if isinstance(lay, str):  # a writer process: the saved layout and the spills, mapped once per process
        if _MAPPED.get("key") != (lay, work_dir):
            if "spills" in _MAPPED:
                _MAPPED["spills"].close()
            _MAPPED.clear()
            _MAPPED.update(key=(lay, work_dir), layout=load_layout(lay), spills=Spills(work_dir, dtype))
        lay, spills = _MAPPED["layout"], _MAPPED["spills"]
    return write_shard(lay, k, cfg, out_dir, work_dir, specials, np.dtype(dtype), spills)


def _check_spills(spills: Spills, fidx: np.ndarray, ends: np.ndarray) -> None:
    """Every piece inside its spill, or an error naming the short spill (a damaged work folder)."""
    files, inv = np.unique(fidx, return_inverse=True)
    most = np.zeros(len(files), dtype=np.int64)
    np.maximum.at(most, inv, ends)
    for f, need in zip(files.tolist(), most.tolist()):
        if len(spills[f]) < need:
            raise LcdataError(f"spill {os.path.join(spills.work_dir, f'tok-{f:05d}.bin')} ends before token "
                              f"{need}: the work folder is incomplete; rerun the build with --overwrite")


DOCS_ROWS_PER_GROUP = 1 << 20


def unit_doc_ids(work_dir: str, indices) -> pl.Series:
    """The ``doc_id`` of every unit, in `load_units` order (read back from the spill unit tables; only
    builds with an ``--id-field`` need them: other ids are ``file:row``)."""
    parts = [pl.read_parquet(os.path.join(work_dir, f"tok-{i:05d}.units.parquet"), columns=["doc_id"])["doc_id"]
             for i in indices]
    return pl.concat(parts) if parts else pl.Series("doc_id", [], dtype=pl.String)


def write_documents(lay: PackLayout, out_dir: str, doc_ids: pl.Series | None) -> dict:
    """Write documents.parquet: stream it (one row per instance, in ``doc`` order; ``DOCS_SCHEMA``) in row groups of
    ``DOCS_ROWS_PER_GROUP``, building the strings of one group at a time. ``doc_ids``: per unit, or None
    for ``file:row`` ids. Returns its manifest entry (path, bytes, SHA-256 of the written file)."""
    import fsspec
    import pyarrow.parquet as pq

    path = join(out_dir, DOCUMENTS_FILE)
    files = pl.Series(lay.files, dtype=pl.String)
    sources = pl.Series(lay.sources, dtype=pl.String)
    schema = pl.DataFrame(schema=DOCS_SCHEMA).to_arrow().schema
    n = len(lay.inst_unit)
    with atomic_open(path) as fh:
        w = pq.ParquetWriter(fh, schema, compression="zstd")
        try:
            _write_document_groups(w, lay, n, files, sources, doc_ids)
        except BaseException:
            with suppress(Exception):  # a half-written file: closing it fails too; atomic_open removes it
                w.close()
            raise
        w.close()
    digest, size = hashlib.sha256(), 0
    with fsspec.open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
            size += len(block)
    return {"path": DOCUMENTS_FILE, "bytes": size, "sha256": digest.hexdigest()}


def _write_document_groups(w, lay: PackLayout, n: int, files: pl.Series, sources: pl.Series,
                           doc_ids: pl.Series | None) -> None:
    """The row groups of documents.parquet, built as Arrow arrays straight from the layout's slices (the
    ``file:row`` ids joined by Arrow: no Polars frame and no conversion copy of the strings)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = pl.DataFrame(schema=DOCS_SCHEMA).to_arrow().schema
    files_a, sources_a = files.to_arrow().cast(pa.large_string()), sources.to_arrow().cast(pa.large_string())
    for a in range(0, max(n, 1), DOCS_ROWS_PER_GROUP):
        b = min(n, a + DOCS_ROWS_PER_GROUP)
        f = files_a.take(pa.array(np.asarray(lay.inst_file[a:b])))
        row = pa.array(np.asarray(lay.inst_row[a:b], dtype=np.int64))
        if doc_ids is not None:
            ids = doc_ids.gather(np.asarray(lay.inst_unit[a:b])).to_arrow().cast(pa.large_string())
        else:
            ids = pc.binary_join_element_wise(f, pc.cast(row, pa.large_string()), pa.scalar(":", pa.large_string()))
        cols = [pa.array(np.arange(a, b, dtype=np.int64)), ids, f, row,
                pa.array(np.asarray(lay.inst_chunk[a:b], dtype=np.int32)),
                pa.array(np.asarray(lay.inst_copy[a:b], dtype=np.int64)),
                sources_a.take(pa.array(np.asarray(lay.inst_src[a:b]))),
                pa.array(np.asarray(lay.inst_length[a:b], dtype=np.int64))]
        table = pa.Table.from_arrays(cols, schema=schema)
        del cols, f, row, ids
        w.write_table(table)
        del table
        lay.release()
