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


def pack_concat(lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, int, int]:
    """Returns (segments sorted by seq/start, n_sequences, dropped_tokens)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    n_seq = total // seq_len
    ends = np.cumsum(lengths)
    starts = ends - lengths
    nz = np.flatnonzero(lengths > 0)
    s, e = starts[nz], ends[nz]
    first = s // seq_len
    last = (e - 1) // seq_len
    count = last - first + 1
    inst = np.repeat(nz, count)
    k = np.repeat(first, count) + (np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count))
    seg_lo = np.maximum(np.repeat(s, count), k * seq_len)
    seg_hi = np.minimum(np.repeat(e, count), (k + 1) * seq_len)
    keep = k < n_seq
    out = np.empty(int(keep.sum()), dtype=SEG_DTYPE)
    out["seq"] = k[keep]
    out["start"] = (seg_lo - k * seq_len)[keep]
    out["length"] = (seg_hi - seg_lo)[keep]
    out["inst"] = inst[keep]
    out["offset"] = (seg_lo - np.repeat(s, count))[keep]
    return out, n_seq, total - n_seq * seq_len


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
