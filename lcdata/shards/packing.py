"""Packing document instances into fixed-length sequences: pure NumPy, no I/O.

Input: instance lengths in their (seeded) order. Output: *segments*, one per piece of an instance that
lands in a sequence: ``seq`` (sequence index), ``start`` (token position in the sequence), ``length``,
``inst`` (instance index) and ``offset`` (token position inside the instance).

- ``concat`` (the paper's): instances are concatenated in order and the stream is cut every ``seq_len``
  tokens regardless of document boundaries. Every sequence is exactly ``seq_len`` tokens; the tail that
  does not fill a sequence is dropped (counted). O(segments), vectorised.
- ``best-fit``: best-fit-decreasing bin packing (Ding et al. 2024). An instance longer than ``seq_len`` is
  split into full ``seq_len`` pieces plus a remainder; only those are ever split. The remainders and the
  short instances are placed, longest first, into the open sequence with the least room that fits them
  (ties: lowest sequence index), else into a new one. The free space is padding (counted). O(n log L) with
  a segment tree over free-space values; Python loop, about 1 us x log2(seq_len) per instance.

Both are deterministic functions of (lengths, order, seq_len); the caller shuffles sequences by seed.
"""

from __future__ import annotations

import heapq

import numpy as np

SEG_DTYPE = np.dtype([("seq", "<u8"), ("start", "<u4"), ("length", "<u4"), ("inst", "<u8"), ("offset", "<u8")])


CONCAT_CHUNK = 1 << 20  # instances per vectorised step of `pack_concat` (bounds its temporaries)


def pack_concat(lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, int, int]:
    """Returns (segments sorted by seq/start, n_sequences, dropped_tokens). Memory: the output (32 bytes per
    segment), the running ends (8 bytes per instance) and temporaries of `CONCAT_CHUNK` instances."""
    lengths = np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    n_seq = total // seq_len
    # pieces per instance: the sequences its token range [end - length, end) meets, those below n_seq kept
    kept = int(_concat_counts(ends - lengths, ends, lengths, seq_len, n_seq).sum()) if len(ends) else 0
    out = np.empty(kept, dtype=SEG_DTYPE)
    at = 0
    for a in range(0, len(lengths), CONCAT_CHUNK):
        e = ends[a: a + CONCAT_CHUNK]
        ln = lengths[a: a + CONCAT_CHUNK]
        nz = np.flatnonzero(ln > 0)
        e = e[nz]
        s = e - ln[nz]
        first = s // seq_len
        count = (e - 1) // seq_len - first + 1
        inst = np.repeat(nz + a, count)
        k = np.repeat(first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
        s_rep = np.repeat(s, count)
        seg_lo = np.maximum(s_rep, k * seq_len)
        seg_hi = np.minimum(np.repeat(e, count), (k + 1) * seq_len)
        keep = k < n_seq
        b = at + int(keep.sum())
        o = out[at:b]
        o["seq"] = k[keep]
        o["start"] = (seg_lo - k * seq_len)[keep]
        o["length"] = (seg_hi - seg_lo)[keep]
        o["inst"] = inst[keep]
        o["offset"] = (seg_lo - s_rep)[keep]
        at = b
    return out, n_seq, total - n_seq * seq_len


def _concat_counts(starts, ends, lengths, seq_len, n_seq) -> np.ndarray:
    """Kept pieces per instance of `pack_concat`: sequences [start // L, (end - 1) // L] below n_seq, 0 when empty."""
    first = starts // seq_len
    last = np.minimum((ends - 1) // seq_len, n_seq - 1)
    return np.where(lengths > 0, np.maximum(last - first + 1, 0), 0)


class _FreeTree:
    """Counts of open sequences per free-space value 0..L; finds the smallest value >= x in O(log L)."""

    def __init__(self, cap: int):
        self.size = 1
        while self.size < cap + 1:
            self.size *= 2
        self.t = [0] * (2 * self.size)
        self.bins: dict[int, list[int]] = {}

    def add(self, free: int, seq: int) -> None:
        heapq.heappush(self.bins.setdefault(free, []), seq)
        i = free + self.size
        while i:
            self.t[i] += 1
            i //= 2

    def pop_at_least(self, x: int) -> tuple[int, int] | None:
        t, size = self.t, self.size
        if x >= size:
            return None
        # walk up from leaf x to find a right-side subtree with a count, then descend leftmost
        i = x + size
        if t[i] == 0:
            while i > 1:
                if i % 2 == 0 and t[i + 1] > 0:
                    i += 1
                    break
                i //= 2
            else:
                return None
            if t[i] == 0:
                return None
            while i < size:
                i = 2 * i if t[2 * i] > 0 else 2 * i + 1
        free = i - size
        seq = heapq.heappop(self.bins[free])  # lowest index among equals: deterministic
        j = i
        while j:
            t[j] -= 1
            j //= 2
        return free, seq


def pack_best_fit(lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, int, int]:
    """Returns (segments sorted by seq/start, n_sequences, padding_tokens)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    segs: list[tuple[int, int, int, int, int]] = []
    n_seq = 0
    rest = []  # (length, inst, offset) pieces that do not fill a whole sequence
    for i in np.flatnonzero(lengths > 0):
        n = int(lengths[i])
        full = n // seq_len
        for f in range(full):
            segs.append((n_seq, 0, seq_len, int(i), f * seq_len))
            n_seq += 1
        if n - full * seq_len:
            rest.append((n - full * seq_len, int(i), full * seq_len))
    rest.sort(key=lambda r: (-r[0], r[1]))  # decreasing length; stable by instance order
    tree = _FreeTree(seq_len)
    fill: dict[int, int] = {}
    for length, inst, off in rest:
        hit = tree.pop_at_least(length)
        if hit is None:
            seq, used = n_seq, 0
            n_seq += 1
        else:
            free, seq = hit
            used = seq_len - free
        segs.append((seq, used, length, inst, off))
        used += length
        fill[seq] = used
        if used < seq_len:
            tree.add(seq_len - used, seq)
    out = np.array(segs, dtype=SEG_DTYPE) if segs else np.empty(0, SEG_DTYPE)
    out = out[np.lexsort((out["start"], out["seq"]))]
    padding = n_seq * seq_len - int(out["length"].sum())
    return out, n_seq, padding
