"""A unigram model of a shard folder: the baseline that says how much of a loss difference is token frequency.

Two mixtures of the same corpus differ first in how often each token occurs. A model trained briefly on
either learns those frequencies before anything else, so a per-source loss difference between two runs can be
a frequency shift and not the use of a long context. The unigram model of a mixture's training shards is that
shift alone: ``p(t) = (count(t) + 1) / (N + V)`` (add-one smoothing over the vocabulary ``V``, so a held-out
token never seen in training has a finite loss), and the loss of predicting token ``t`` is ``-log p(t)``
whatever precedes it. `lcdata eval-loss --model unigram:SHARDS` scores it exactly where a real model is
scored (same windows, sources, position buckets), and ``make paper-ablation`` puts its differences beside
the models' (docs/eval.md, "Results with their noise").

Counts cover the document tokens of every shard sequence (the pieces of the shards' piece table: BOS/EOS the
build added included, padding excluded), i.e. what the trainer reads. Cost: one pass over the shards,
``np.bincount`` per shard file; memory O(V) plus one shard sequence batch. No torch.
"""

from __future__ import annotations

import numpy as np

from lcdata.errors import ConfigError

PREFIX = "unigram:"


def is_unigram(spec: str) -> bool:
    """``unigram:DIR`` names the unigram model of the shard folder ``DIR`` (an eval-loss ``--model``)."""
    return spec.startswith(PREFIX)


def token_counts(shards) -> np.ndarray:
    """Occurrences of every token id in the document pieces of a shard folder (`ShardSet` or path), int64."""
    from lcdata.shards.reader import open_shards

    s = open_shards(shards) if isinstance(shards, str) else shards
    tok = s.manifest["tokenizer"]
    counts = np.zeros(max(int(tok["vocab_size"]), int(tok["max_id"]) + 1), dtype=np.int64)
    S = s.seq_len
    for i in range(len(s)):
        seg = s.segments(i)
        if not len(seg):
            continue
        diff = np.zeros(S + 1, dtype=np.int64)  # > 0 inside a piece: padding is never counted
        np.add.at(diff, seg["start"].astype(np.int64), 1)
        np.add.at(diff, seg["start"].astype(np.int64) + seg["length"].astype(np.int64), -1)
        inside = np.cumsum(diff[:S]) > 0
        ids = np.asarray(s[i])[inside].astype(np.int64)
        if len(ids) and ids.max() >= len(counts):
            counts = np.concatenate([counts, np.zeros(int(ids.max()) + 1 - len(counts), dtype=np.int64)])
        counts += np.bincount(ids, minlength=len(counts))
    return counts


class UnigramModel:
    """``-log p(t)`` per token id from a shard folder's counts, add-one smoothed over ``vocab_size`` ids."""

    def __init__(self, counts: np.ndarray, vocab_size: int | None = None):
        V = max(int(vocab_size or 0), len(counts))
        c = np.zeros(V, dtype=np.float64)
        c[: len(counts)] = counts
        if c.sum() == 0:
            raise ConfigError("the unigram model's shard folder holds no document tokens; pass a built shard folder")
        self.vocab_size = V
        self.n_tokens = int(c.sum())
        self.nll = -(np.log(c + 1.0) - np.log(c.sum() + V))

    @classmethod
    def from_shards(cls, folder: str, vocab_size: int | None = None) -> UnigramModel:
        return cls(token_counts(folder), vocab_size)

    def token_losses(self, labels: np.ndarray) -> np.ndarray:
        """Loss of predicting each label (float64; 0 where the label is negative, i.e. ignored)."""
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) and labels.max() >= self.vocab_size:
            raise ConfigError(f"token id {int(labels.max())} is outside the unigram model's vocabulary "
                              f"({self.vocab_size:,}); evaluate on shards built with the same tokenizer")
        return np.where(labels >= 0, self.nll[np.clip(labels, 0, None)], 0.0)
