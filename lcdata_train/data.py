"""Training batches from an lcdata shard folder: shards -> `ShardDataset` (windows) -> `StepSampler`
(global order, split by rank) -> `DataLoader` (collate) -> `ShardLoader` (steps, resume state).

Windows of ``L = seq_len`` tokens over shards of ``S`` tokens per sequence (``L <= S``), two ways:
- ``windowing="stream"`` (training): the ``n`` sequences read as one stream of ``N = n * S`` tokens; window
  ``j`` is stream tokens ``[j * L, (j + 1) * L)``. ``ceil(N / L)`` windows cover every shard token exactly
  once per epoch; the last window is completed with ``pad_id`` (not scored). A window may span two shard
  sequences: the sequence boundary is a piece boundary and no target crosses it. When ``L`` divides ``S``
  these are exactly the windows of ``"sequence"``.
- ``windowing="sequence"``: ``S // L`` windows inside each sequence; the last ``S mod L`` tokens of every
  sequence are in no window (`coverage` counts them).
`coverage` reports the tokens in windows and the tokens in none, per epoch (`lcdata train` prints it and writes
it to ``run.json``). Cost of ``"stream"``: one window reads at most two sequences' rows and piece tables.

Tokens are read from the memory map (no file is loaded whole) and copied once, into int64 for the
embedding. An item holds:
- ``input_ids`` (L,): the window's tokens;
- ``labels`` (L,): the next token, ``-100`` (not scored) at the last position, wherever the input or the
  target is padding or the target is in another shard sequence, and, with ``doc_mask``, where the target
  starts another document piece;
- ``position_ids`` (L,): ``0..L-1``, or with ``doc_mask`` restarting at 0 in each piece (each document is
  then computed exactly as if it were alone);
- ``cu_seqlens`` (int32): piece boundaries inside the window (padding is one more piece; a shard-sequence
  boundary is one), from the shards' ``.seg.npy``.
A batch stacks ``micro_batch`` items; its ``cu_seqlens`` cover the flattened ``B * L`` tokens
(flash-attn's varlen convention) and ``max_seqlen`` is the longest piece.

Order: the sample at global position ``p`` is ``perm(seed, p // n)[p % n]``: one seeded permutation of the
``n`` windows per epoch. Optimizer step ``s`` consumes positions ``[s * G, (s + 1) * G)`` (G sequences per
step), rank ``r`` of ``W`` the contiguous ``G / W`` of them, in micro-batches. The set of sequences in a
step therefore does not depend on the world size, and the only resume state is the step number: the
step-N batch after a resume is the uninterrupted run's, whatever the prefetching or the workers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lcdata.errors import ConfigError
from lcdata.shards.reader import ShardSet, open_shards

IGNORE = -100


WINDOWINGS = ("stream", "sequence")


class ShardDataset(Dataset):
    """Windows of a shard folder; ``open_shards`` validates the folder first (a damaged or altered folder is one
    `LcdataError` line). ``vocab_size``: the embedding rows the ids need (largest id + 1). ``windows``: windows per
    shard sequence with ``windowing="sequence"``, None with ``"stream"`` (windows are not per sequence)."""

    def __init__(self, shards: str | ShardSet, seq_len: int | None = None, doc_mask: bool = False,
                 windowing: str = "sequence"):
        self.shards = open_shards(shards) if isinstance(shards, str) else shards
        S = self.shards.seq_len
        if seq_len is not None and seq_len < 2:
            raise ConfigError(f"seq_len={seq_len} must be >= 2 (tokens per window)")
        if windowing not in WINDOWINGS:
            raise ConfigError(f"windowing={windowing!r} is not one of {WINDOWINGS}")
        self.seq_len = L = seq_len or S
        if L > S:
            raise ConfigError(
                f"seq_len {L:,} is larger than the shards' sequences ({S:,} tokens in {self.shards.folder}); "
                f"rebuild them with `lcdata build --seq-len {L}` or train with --seq-len <= {S:,}")
        self.windowing = windowing
        self.stream_tokens = len(self.shards) * S
        if windowing == "stream":
            self.windows = None
            self._n = -(-self.stream_tokens // L)
        else:
            self.windows = S // L
            self._n = len(self.shards) * self.windows
        self.doc_mask = doc_mask
        m = self.shards.manifest
        tok = m["tokenizer"]  # validated by open_shards (lcdata.shards.check_folder)
        self.vocab_size = max(int(tok["vocab_size"]), int(tok["max_id"]) + 1)  # ids are < this, contiguous or not
        self.pad_id = int((m.get("special_tokens") or {}).get("pad_id") or 0)

    def __len__(self) -> int:
        return self._n

    def spans(self, j: int) -> list[tuple[int, int, int, int]]:
        """The parts of window ``j``: ``(sequence, start in the sequence, start in the window, length)``, in
        order; window positions after the last part are padding."""
        L, S = self.seq_len, self.shards.seq_len
        if not 0 <= j < self._n:
            raise IndexError(f"window {j} out of range for {self._n} windows")
        if self.windowing == "sequence":
            i, w = divmod(j, self.windows)
            return [(i, w * L, 0, L)]
        a, b = j * L, min((j + 1) * L, self.stream_tokens)
        out = []
        for i in range(a // S, (b - 1) // S + 1):
            lo, hi = max(a, i * S), min(b, (i + 1) * S)
            out.append((i, lo - i * S, lo - a, hi - lo))
        return out

    def coverage(self) -> dict:
        """Tokens per epoch: ``windows``, ``shard_tokens`` (n x S, shard padding included), ``document_tokens``
        (the manifest's ``n_tokens``), ``tokens_used`` (shard tokens in a window), ``tokens_unused`` (in none),
        ``window_padding`` (positions of the last window past the shards, ``"stream"`` only)."""
        L, S, n = self.seq_len, self.shards.seq_len, len(self.shards)
        used = min(self._n * L, self.stream_tokens) if self.windowing == "stream" else n * self.windows * L
        m = self.shards.manifest
        return {"windowing": self.windowing, "seq_len": L, "shards_seq_len": S, "windows": self._n,
                "shard_tokens": self.stream_tokens, "document_tokens": int(m.get("n_tokens", 0)),
                "tokens_used": used, "tokens_unused": self.stream_tokens - used,
                "window_padding": self._n * L - used}

    def __getitem__(self, j: int) -> dict[str, torch.Tensor]:
        L = self.seq_len
        tokens = np.full(L, self.pad_id, dtype=np.int64)
        diff = np.zeros(L + 1, dtype=np.int64)  # +1 at a piece's start, -1 at its end: > 0 on document tokens
        cross = np.zeros(L, dtype=bool)  # target t + 1 is in another shard sequence than t
        cuts = [0, L]
        for i, a, o, n in self.spans(int(j)):
            tokens[o: o + n] = np.asarray(self.shards[i][a: a + n], dtype=np.int64)
            seg = self.shards.segments(i)
            starts = seg["start"].astype(np.int64) - a
            ends = starts + seg["length"]
            keep = (ends > 0) & (starts < n)
            starts, ends = np.clip(starts[keep], 0, n) + o, np.clip(ends[keep], 0, n) + o
            np.add.at(diff, starts, 1)
            np.add.at(diff, ends, -1)
            cuts += [o, o + n, *starts.tolist(), *ends.tolist()]
            if o > 0:
                cross[o - 1] = True
        covered = np.cumsum(diff)[:L] > 0
        bounds = np.unique(np.asarray(cuts, dtype=np.int64))
        labels = np.full(L, IGNORE, dtype=np.int64)
        labels[:-1] = tokens[1:]
        labels[:-1][~(covered[:-1] & covered[1:]) | cross[:-1]] = IGNORE
        if self.doc_mask:
            new_piece = np.zeros(L + 1, dtype=bool)
            new_piece[bounds] = True
            labels[:-1][new_piece[1:L]] = IGNORE
            idx = np.searchsorted(bounds, np.arange(L), side="right") - 1
            pos = np.arange(L) - bounds[idx]
        else:
            pos = np.arange(L)
        return {"input_ids": torch.from_numpy(tokens), "labels": torch.from_numpy(labels),
                "position_ids": torch.from_numpy(pos), "cu_seqlens": torch.from_numpy(bounds.astype(np.int32))}


def collate(items: list[dict]) -> dict:
    L = items[0]["input_ids"].shape[0]
    cu = [items[0]["cu_seqlens"]] + [it["cu_seqlens"][1:] + b * L for b, it in enumerate(items) if b]
    cu = torch.cat(cu)
    return {"input_ids": torch.stack([it["input_ids"] for it in items]),
            "labels": torch.stack([it["labels"] for it in items]),
            "position_ids": torch.stack([it["position_ids"] for it in items]),
            "cu_seqlens": cu, "max_seqlen": int((cu[1:] - cu[:-1]).max())}


class StepSampler(Sampler):
    """Dataset indices for one rank, from optimizer step ``start_step`` on, forever (epochs reshuffle)."""

    def __init__(self, n: int, per_step: int, rank: int = 0, world: int = 1, seed: int = 0, start_step: int = 0):
        if per_step % world:
            raise ConfigError(f"sequences per step ({per_step}) must be a multiple of the world size ({world})")
        self.n, self.per_step, self.rank, self.world, self.seed = n, per_step, rank, world, seed
        self.start_step = start_step
        self._perm: tuple[int, np.ndarray] | None = None

    def index(self, p: int) -> int:
        epoch, k = divmod(p, self.n)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n))
        return int(self._perm[1][k])

    def __iter__(self):
        per_rank = self.per_step // self.world
        s = self.start_step
        while True:
            base = s * self.per_step + self.rank * per_rank
            for k in range(per_rank):
                yield self.index(base + k)
            s += 1


class ShardLoader:
    """Iterates optimizer steps: each item is the list of this rank's micro-batches for one step.

    ``state_dict()`` is ``{"step": ...}`` plus what must match on resume (windows, sequences per step, seed);
    ``ShardLoader(..., start_step=state["step"])`` continues exactly.
    """

    def __init__(self, dataset: ShardDataset, *, per_step: int, micro_batch: int = 1, rank: int = 0,
                 world: int = 1, seed: int = 0, start_step: int = 0, num_workers: int = 0,
                 pin_memory: bool = False):
        per_rank = per_step // world
        if per_step % world or per_rank % micro_batch:
            raise ConfigError(f"sequences per step ({per_step}) must split into world size ({world}) x "
                              f"micro-batches of {micro_batch}")
        self.dataset, self.per_step, self.micro_batch, self.seed = dataset, per_step, micro_batch, seed
        self.accum = per_rank // micro_batch
        self.step = start_step
        sampler = StepSampler(len(dataset), per_step, rank, world, seed, start_step)
        self._loader = DataLoader(dataset, batch_size=micro_batch, sampler=sampler, collate_fn=collate,
                                  num_workers=num_workers, pin_memory=pin_memory,
                                  persistent_workers=False, prefetch_factor=4 if num_workers else None)
        self._it = None

    def __iter__(self):
        return self

    def __next__(self) -> list[dict]:
        if self._it is None:
            self._it = iter(self._loader)
        batches = [next(self._it) for _ in range(self.accum)]
        self.step += 1
        return batches

    def state_dict(self) -> dict:
        return {"step": self.step, "n_samples": len(self.dataset), "per_step": self.per_step,
                "seq_len": self.dataset.seq_len, "seed": self.seed}

    def check_state(self, state: dict) -> None:
        """Raise if a saved loader state cannot continue on this dataset/config."""
        mine = self.state_dict()
        bad = [f"{k}: {state.get(k)} (checkpoint) != {mine[k]} (now)" for k in ("n_samples", "per_step", "seq_len",
                                                                                 "seed") if state.get(k) != mine[k]]
        if bad:
            raise ConfigError("the data order cannot resume: " + "; ".join(bad))
