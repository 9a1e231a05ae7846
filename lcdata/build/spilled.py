"""Phase 2's layout under a memory limit: the same `PackLayout` as `layout.pack_layout`, its per-instance and
per-segment arrays computed in chunks through files under ``WORK/layout-spill`` and memory-mapped read-only.

`build_layout` picks the path: in memory (`load_units` + `pack_layout`) when the build's instances times
`IN_MEMORY_BYTES_PER_INSTANCE` fit in ``memory_limit``, else `spilled_layout`:

1. Partition (one pass over the spill unit tables, a chunk of instances at a time): each unit repeated by
   its copies into instance records (hash key, unit, copy and the unit's numeric columns), appended to one of
   B bucket files (B a power of two, enough for a chunk each, at most `MAX_BUCKETS`) by the top bits of the
   key. The key is uniform, so the buckets hold about n / B records.
2. Sort: bucket by bucket (ascending key ranges), a stable argsort by key (with equal keys the documented tie
   order, `layout._instance_order`'s lexsort, which only compares records of one bucket): the instances in
   their global order, appended to the per-instance ``.npy`` files; concat packing (`pack_concat`'s
   arithmetic, with a running token position) emits the segments of each sorted chunk as it goes.
   Best-fit reads all instance lengths and runs `pack_best_fit` in memory (its Python packer holds a tuple
   per piece anyway: not bounded by the limit).
3. Permute: output position p takes sequence perm[p] (``default_rng(seed).permutation``, as in memory);
   each segment's destination is computed from per-sequence arrays and the segments are scattered through
   range buckets (one sequential pass to write them, one to place each range in memory).

The files are written with plain writes (no memory map), so this process's RSS holds only the chunk at hand:
the fixed-size chunks, the per-*sequence* arrays (about 40 bytes per output sequence: the permutation, the
segment counts and firsts) and the bucket files' write buffers; the resulting arrays are read through memory
maps whose pages the readers drop (`PackLayout.release`). Same arrays, hence the same bytes, as in memory.
Chunks: ``memory_limit`` / `CHUNK_BYTES_PER_ROW` instances (1K to 4M). Cost: the instance records written and
read once (60 bytes each), the segments twice (32-40 bytes each); disk at most about 150 bytes per instance.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import polars as pl

from ..errors import LcdataError
from ..shards.packing import SEG_DTYPE, pack_best_fit
from ..util.hashing import file_row_hash, splitmix64
from .layout import (
    UNIT_NUMERIC,
    PackLayout,
    PackOptions,
    layout_stats,
    load_units,
    map_npy,
    pack_layout,
    write_layout_meta,
)

SPILL_DIR = "layout-spill"  # under the work folder (removed with it)
IN_MEMORY_BYTES_PER_INSTANCE = 160  # `pack_layout`'s peak, about 115 measured at 10M (bench_build --scaling), + margin
MIN_CHUNK_ROWS = 1 << 10
MAX_CHUNK_ROWS = 1 << 22
CHUNK_BYTES_PER_ROW = 512  # a chunk of instances and its temporaries (records, sort order, gathers) at most
MAX_BUCKETS = 256  # bucket files open at once (beyond 256 chunks of instances, the buckets grow instead)

INST_REC = np.dtype([("key", "<u8"), ("unit", "<i8"), ("copy", "<i8"), ("row", "<i8"), ("length", "<i8"),
                     ("offset", "<i8"), ("file", "<i4"), ("chunk", "<i4"), ("src", "<u4")])
# the per-instance arrays of a `PackLayout` and their dtypes (those of `pack_layout`'s)
INST_ARRAYS = {"inst_file": ("file", np.int32), "inst_off": ("offset", np.int64), "inst_unit": ("unit", np.int64),
               "inst_copy": ("copy", np.int64), "inst_row": ("row", np.int64), "inst_chunk": ("chunk", np.int32),
               "inst_length": ("length", np.int64)}
PERM_REC = np.dtype([("dest", "<i8"), *((n, SEG_DTYPE.fields[n][0]) for n in SEG_DTYPE.names)])


def default_memory_limit() -> int:
    """A quarter of the memory this process may use: the machine's physical memory, or its cgroup's limit
    where lower (a container, a Slurm task); 4 GiB where neither can be read."""
    total = None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                v = fh.read().strip()
        except OSError:
            continue
        if v.isdigit() and (total is None or int(v) < total):
            total = int(v)
    return total // 4 if total else 4 << 30


def count_instances(work_dir: str, indices) -> int:
    """Instances of a build (the sum of the units' copies), one column of one table at a time."""
    import pyarrow.parquet as pq

    n = 0
    for i in indices:
        col = pq.read_table(os.path.join(work_dir, f"tok-{i:05d}.units.parquet"), columns=["copies"])["copies"]
        n += int(col.to_numpy().sum()) if len(col) else 0
    return n


def build_layout(work_dir: str, indices, rels: list[str], cfg: PackOptions, memory_limit: int | None = None
                 ) -> PackLayout:
    """The build's `PackLayout`: in memory when it fits ``memory_limit`` bytes (default
    `default_memory_limit`), else `spilled_layout` under ``work_dir``. Same arrays either way."""
    indices = list(indices)
    limit = default_memory_limit() if memory_limit is None else int(memory_limit)
    n = count_instances(work_dir, indices)
    if n * IN_MEMORY_BYTES_PER_INSTANCE <= limit:
        return pack_layout(load_units(work_dir, indices), rels, cfg, consume=True)
    return spilled_layout(work_dir, indices, rels, cfg, limit, n_instances=n)


class _NpyWriter:
    """A 1-d ``.npy`` file of a known length written in order with plain writes (no memory map)."""

    def __init__(self, path: str, dtype, n: int):
        self.path, self.dtype, self.n, self.at = path, np.dtype(dtype), n, 0
        self.fh = open(path, "wb")
        np.lib.format.write_array_header_2_0(self.fh, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                       "fortran_order": False, "shape": (n,)})

    def write(self, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        self.fh.write(memoryview(arr).cast("B"))
        self.at += len(arr)

    def close(self) -> None:
        self.fh.close()
        if self.at != self.n:
            raise LcdataError(f"bug: {self.path} got {self.at} rows of {self.n}; please report it")


class _Buckets:
    """``n`` append-only files of ``dtype`` records: ``add(ids, recs)`` appends record j to file ``ids[j]``
    (records of one file keep their order of arrival); ``read(b)`` returns file b's records and deletes it."""

    def __init__(self, d: str, prefix: str, n: int, dtype):
        self.paths = [os.path.join(d, f"{prefix}-{b:05d}") for b in range(n)]
        self.dtype = dtype
        self.fhs = [open(p, "wb", buffering=1 << 16) for p in self.paths]

    def add(self, ids: np.ndarray, recs: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        ids, recs = ids[order], recs[order]
        cuts = np.searchsorted(ids, np.arange(len(self.fhs) + 1))
        for b in np.flatnonzero(np.diff(cuts)).tolist():
            self.fhs[b].write(memoryview(np.ascontiguousarray(recs[cuts[b]: cuts[b + 1]])).cast("B"))

    def finish(self) -> None:
        for fh in self.fhs:
            fh.close()

    def read(self, b: int) -> np.ndarray:
        recs = np.fromfile(self.paths[b], dtype=self.dtype)
        os.remove(self.paths[b])
        return recs


def _chunk_rows(limit: int) -> int:
    return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, limit // CHUNK_BYTES_PER_ROW)))


def spilled_layout(work_dir: str, indices, rels: list[str], cfg: PackOptions, memory_limit: int,
                   n_instances: int | None = None) -> PackLayout:
    """`pack_layout`'s layout of the spill unit tables ``indices``, computed in chunks of about
    ``memory_limit`` / `CHUNK_BYTES_PER_ROW` instances through files under ``WORK/layout-spill`` (replaced if
    there). The arrays are memory maps of ``.npy`` files in that folder, which `load_layout` can read too."""
    indices = list(indices)
    n = count_instances(work_dir, indices) if n_instances is None else n_instances
    rows = _chunk_rows(memory_limit)
    d = os.path.join(work_dir, SPILL_DIR)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    n_b = 1
    while n_b < MAX_BUCKETS and n_b * rows < n:
        n_b *= 2
    names, total = _partition(work_dir, indices, rels, cfg.seed, n_b, rows, d)
    sources = sorted(set(names))
    sid = {nm: k for k, nm in enumerate(sources)}
    lut = np.array([sid[nm] for nm in names], dtype=np.uint16)
    L = cfg.seq_len
    n_seq = total // L if cfg.packing == "concat" else None
    if n_seq == 0:
        raise LcdataError(_too_short(total, cfg))
    seg_fh = open(os.path.join(d, "segs-in"), "wb", buffering=1 << 20)
    packer = _ConcatPacker(L, n_seq, seg_fh, len(sources)) if cfg.packing == "concat" else None
    writers = {name: _NpyWriter(os.path.join(d, f"{name}.npy"), t, n) for name, (_, t) in INST_ARRAYS.items()}
    writers["inst_src"] = _NpyWriter(os.path.join(d, "inst_src.npy"), np.uint16, n)
    lengths = np.empty(n, np.int64) if packer is None else None
    rank = np.argsort(np.argsort(np.array(rels, dtype=object), kind="stable"))
    at = 0
    for b in range(n_b):
        recs = _sorted_bucket(d, b, rank)
        for a in range(0, len(recs), rows):  # bounded temporaries for the packer
            part = recs[a: a + rows]
            src = lut[part["src"]]
            for name, (col, _) in INST_ARRAYS.items():
                writers[name].write(part[col])
            writers["inst_src"].write(src)
            if packer is not None:
                packer.add(at, part["length"], src)
            else:
                lengths[at: at + len(part)] = part["length"]
            at += len(part)
        del recs
    for w in writers.values():
        w.close()
    if packer is not None:
        counts, padding, dropped, stats = packer.counts, 0, total - n_seq * L, packer.stats()
        seg_fh.close()
    else:
        segs, n_seq, padding = pack_best_fit(lengths, L)
        del lengths
        if n_seq == 0:
            seg_fh.close()
            raise LcdataError(_too_short(total, cfg))
        dropped = 0
        inst_src, m = map_npy(os.path.join(d, "inst_src.npy"))
        stats = layout_stats(segs, inst_src, len(sources))
        del inst_src, m
        counts = np.bincount(segs["seq"].astype(np.int64), minlength=n_seq)
        seg_fh.write(memoryview(segs).cast("B"))
        seg_fh.close()
        del segs
    per_shard = max(1, cfg.shard_tokens // L)
    new_first = _permute(d, counts, np.random.default_rng(cfg.seed), rows)
    n_shards = (n_seq + per_shard - 1) // per_shard
    bounds = new_first[np.minimum(np.arange(n_shards + 1, dtype=np.int64) * per_shard, n_seq)]
    np.save(os.path.join(d, "bounds.npy"), bounds)
    lay_arrays, maps = {}, []
    for name in ("segs", "out_pos", "inst_src", *INST_ARRAYS):
        lay_arrays[name], m = map_npy(os.path.join(d, f"{name}.npy"))
        if m is not None:
            maps.append(m)
    lay = PackLayout(**lay_arrays, bounds=bounds, sources=sources, files=list(rels), n_seq=int(n_seq),
                     per_shard=per_shard, padding=int(padding), dropped=int(dropped), stats=stats, maps=maps, dir=d)
    write_layout_meta(lay, d)
    return lay


def _too_short(total: int, cfg: PackOptions) -> str:
    return (f"the corpus{' (as planned)' if cfg.plan else ''} has {total} tokens, less than one sequence of "
            f"seq_len={cfg.seq_len}; lower --seq-len or add data")


def _partition(work_dir: str, indices, rels: list[str], seed: int, n_b: int, rows: int, d: str
               ) -> tuple[list[str], int]:
    """Pass 1: every instance's record into its key bucket. Returns the source name of each provisional
    source code (``src`` of the records) and the total tokens of the instances."""
    import pyarrow.parquet as pq

    buckets = _Buckets(d, "inst", n_b, INST_REC)
    shift = np.uint64(64 - (n_b.bit_length() - 1))
    names: list[str] = []
    unit_base = total = 0
    try:
        for i in indices:
            pf = pq.ParquetFile(os.path.join(work_dir, f"tok-{i:05d}.units.parquet"))
            for batch in pf.iter_batches(batch_size=rows, columns=[*UNIT_NUMERIC, "source"]):
                t = pl.from_arrow(batch)
                n_u = t.height
                if not n_u:
                    continue
                col = {c: t[c].to_numpy() for c in UNIT_NUMERIC}
                nm = t["source"].unique(maintain_order=True).to_list()
                local = t["source"].cast(pl.Enum(nm)).to_physical().to_numpy().astype(np.uint32) + len(names)
                names.extend(nm)
                del t
                copies = col["copies"].astype(np.int64)
                for lo, hi in _spans(copies, rows):  # at most `rows` instances at a time (plan copies)
                    c = copies[lo:hi]
                    unit = np.repeat(np.arange(lo, hi, dtype=np.int64), c)
                    first = np.cumsum(c) - c
                    copy = np.arange(len(unit), dtype=np.int64) - np.repeat(first, c)
                    h = file_row_hash(seed, rels, col["file_index"][lo:hi], col["row"][lo:hi])
                    mix = col["chunk"].astype(np.uint64)[unit]
                    mix <<= np.uint64(32)
                    mix |= copy.astype(np.uint64)
                    key = splitmix64(h[unit - lo] ^ splitmix64(mix))
                    del h, mix
                    rec = np.empty(len(unit), INST_REC)
                    rec["key"], rec["unit"], rec["copy"] = key, unit + unit_base, copy
                    rec["row"], rec["length"] = col["row"][unit], col["length"][unit]
                    rec["offset"], rec["file"] = col["offset"][unit], col["file_index"][unit]
                    rec["chunk"], rec["src"] = col["chunk"][unit], local[unit]
                    total += int(rec["length"].sum())
                    ids = (key >> shift).astype(np.int64) if n_b > 1 else np.zeros(len(key), np.int64)
                    buckets.add(ids, rec)
                    del rec, key, unit, copy, ids
                unit_base += n_u
    finally:
        buckets.finish()
    return names, total


def _spans(copies: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Consecutive unit ranges [lo, hi) of at most ``rows`` instances each (one unit at least)."""
    ends = np.cumsum(copies)
    spans, lo, done = [], 0, 0
    while lo < len(copies):
        hi = max(lo + 1, int(np.searchsorted(ends, done + rows, side="right")))
        spans.append((lo, hi))
        done, lo = int(ends[hi - 1]), hi
    return spans


def _sorted_bucket(d: str, b: int, rank: np.ndarray) -> np.ndarray:
    """Bucket b's records in instance order: by key, equal keys by (file name, row, chunk, copy)."""
    recs = np.fromfile(os.path.join(d, f"inst-{b:05d}"), dtype=INST_REC)
    os.remove(os.path.join(d, f"inst-{b:05d}"))
    order = np.argsort(recs["key"], kind="stable")
    key = recs["key"][order]
    if len(key) > 1 and bool((key[1:] == key[:-1]).any()):
        order = np.lexsort((recs["copy"], recs["chunk"], recs["row"], rank[recs["file"]], recs["key"]))
    return recs[order]


class _ConcatPacker:
    """`pack_concat` fed in instance order, chunk by chunk, with a running token position: appends the
    segments to ``fh`` (sequence order) and counts the pieces per sequence and the manifest's stats."""

    def __init__(self, L: int, n_seq: int, fh, n_sources: int):
        self.L, self.n_seq, self.fh, self.pos = L, n_seq, fh, 0
        self.counts = np.zeros(n_seq, np.int64)
        self.tok = np.zeros(n_sources, np.int64)
        self.docs = np.zeros(n_sources, np.int64)
        self.n_tokens = self.n_docs = 0

    def add(self, a: int, lengths: np.ndarray, src: np.ndarray) -> None:
        L, n_seq = self.L, self.n_seq
        ln = lengths.astype(np.int64)
        ends = self.pos + np.cumsum(ln)
        self.pos = int(ends[-1]) if len(ends) else self.pos
        nz = np.flatnonzero(ln > 0)
        e = ends[nz]
        s = e - ln[nz]
        first = s // L
        count = (e - 1) // L - first + 1
        rel = np.repeat(nz, count)
        k = np.repeat(first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
        s_rep = np.repeat(s, count)
        seg_lo = np.maximum(s_rep, k * L)
        seg_hi = np.minimum(np.repeat(e, count), (k + 1) * L)
        keep = k < n_seq
        o = np.empty(int(keep.sum()), SEG_DTYPE)
        o["seq"] = k[keep]
        o["start"] = (seg_lo - k * L)[keep]
        o["length"] = (seg_hi - seg_lo)[keep]
        o["inst"] = rel[keep] + a
        o["offset"] = (seg_lo - s_rep)[keep]
        self.fh.write(memoryview(o).cast("B"))
        if len(o):
            kk = o["seq"].astype(np.int64)
            lo = int(kk[0])
            self.counts[lo: int(kk[-1]) + 1] += np.bincount(kk - lo)
            ssrc = src[rel[keep]]
            self.tok += np.bincount(ssrc, weights=o["length"], minlength=len(self.tok)).astype(np.int64)
            self.n_tokens += int(o["length"].sum())
            used = np.unique(rel[keep])
            self.docs += np.bincount(src[used], minlength=len(self.docs))
            self.n_docs += len(used)

    def stats(self) -> dict:
        return {"n_tokens": self.n_tokens, "n_documents": self.n_docs,
                "tokens_per_source": [int(x) for x in self.tok], "documents_per_source": [int(x) for x in self.docs]}


def _permute(d: str, counts: np.ndarray, rng: np.random.Generator, rows: int) -> np.ndarray:
    """Pass 3: the segments of ``d/segs-in`` (sequence order; ``counts`` per sequence) to ``segs.npy`` and
    ``out_pos.npy`` in output order (position p = sequence perm[p], its run kept in order). Returns the first
    segment of each output position (n_seq + 1 entries)."""
    n_seq = len(counts)
    perm = rng.permutation(n_seq)  # output position -> packed sequence
    new_first = np.zeros(n_seq + 1, np.int64)
    np.cumsum(counts[perm], out=new_first[1:])
    seq_first = np.zeros(n_seq + 1, np.int64)
    np.cumsum(counts, out=seq_first[1:])
    base = np.empty(n_seq, np.int64)  # destination of a segment = its input index + base[its sequence]
    base[perm] = new_first[:-1] - seq_first[perm]
    del perm, seq_first
    n = int(new_first[-1])
    n_r = max(1, min(MAX_BUCKETS, -(-n // rows)))
    span = max(1, -(-n // n_r))
    buckets = _Buckets(d, "perm", n_r, PERM_REC)
    path = os.path.join(d, "segs-in")
    try:
        with open(path, "rb") as fh:
            at = 0
            while True:
                s = np.fromfile(fh, dtype=SEG_DTYPE, count=rows)
                if not len(s):
                    break
                rec = np.empty(len(s), PERM_REC)
                rec["dest"] = np.arange(at, at + len(s), dtype=np.int64) + base[s["seq"].astype(np.int64)]
                for name in SEG_DTYPE.names:
                    rec[name] = s[name]
                buckets.add(rec["dest"] // span, rec)
                at += len(s)
    finally:
        buckets.finish()
    os.remove(path)
    del base
    segs_w = _NpyWriter(os.path.join(d, "segs.npy"), SEG_DTYPE, n)
    pos_w = _NpyWriter(os.path.join(d, "out_pos.npy"), np.int64, n)
    for r in range(n_r):
        lo, hi = r * span, min(n, (r + 1) * span)
        if lo >= hi:
            continue
        rec = buckets.read(r)
        out = np.empty(hi - lo, SEG_DTYPE)
        idx = rec["dest"] - lo
        for name in SEG_DTYPE.names:
            out[name][idx] = rec[name]
        del rec, idx
        segs_w.write(out)
        pos_w.write(np.searchsorted(new_first, np.arange(lo, hi, dtype=np.int64), side="right") - 1)
    segs_w.close()
    pos_w.close()
    return new_first

