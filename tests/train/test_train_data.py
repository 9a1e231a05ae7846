"""lcdata_train.data: items match the shards, masks and positions, windows, rank split, exact resume."""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lcdata.errors import ConfigError  # noqa: E402
from lcdata.shards.reader import open_shards  # noqa: E402
from lcdata_train.data import IGNORE, ShardDataset, ShardLoader, StepSampler, collate  # noqa: E402


def _multi_piece(ds, k=3):
    return next(i for i in range(len(ds.shards)) if len(ds.shards.segments(i)) >= k)


def test_item_matches_shards(train_shards):
    s = open_shards(train_shards)
    ds = ShardDataset(s)
    assert len(ds) == len(s) and ds.seq_len == s.seq_len == 256
    i = _multi_piece(ds)
    it = ds[i]
    row = np.asarray(s[i], dtype=np.int64)
    assert it["input_ids"].tolist() == row.tolist()
    assert it["cu_seqlens"].tolist() == s.cu_seqlens(i).tolist()
    lab = it["labels"].numpy()
    assert lab[-1] == IGNORE
    covered = np.zeros(256, bool)
    for p in s.segments(i):
        covered[int(p["start"]): int(p["start"]) + int(p["length"])] = True
    for t in range(255):
        assert lab[t] == (row[t + 1] if covered[t] and covered[t + 1] else IGNORE)
    assert it["position_ids"].tolist() == list(range(256))


def test_doc_mask_positions_and_labels(train_shards):
    ds = ShardDataset(train_shards, doc_mask=True)
    i = _multi_piece(ds)
    it = ds[i]
    cu = it["cu_seqlens"].tolist()
    pos, lab = it["position_ids"].tolist(), it["labels"].tolist()
    for a, b in zip(cu[:-1], cu[1:]):
        assert pos[a:b] == list(range(b - a))
        assert lab[b - 1] == IGNORE  # never predict across a document boundary
    plain = ShardDataset(train_shards)[i]["labels"].tolist()
    assert sum(x != IGNORE for x in lab) == sum(x != IGNORE for x in plain) - (len(cu) - 2)


def test_sequence_windowing_cuts_each_sequence_and_counts_the_rest(train_shards):
    s = open_shards(train_shards)
    ds = ShardDataset(s, seq_len=100)
    assert ds.windows == 2 and len(ds) == 2 * len(s)
    i = _multi_piece(ds)
    w1 = ds[2 * i + 1]
    assert w1["input_ids"].tolist() == np.asarray(s[i][100:200]).tolist()
    full = s.cu_seqlens(i)
    inner = [int(b) - 100 for b in full if 100 < b < 200]
    assert w1["cu_seqlens"].tolist() == [0] + inner + [100]
    cov = ds.coverage()  # positions 200..255 of every sequence are in no window
    assert cov["tokens_unused"] == len(s) * 56 and cov["tokens_used"] == len(s) * 200


def _stream(s):
    """Independent of lcdata_train.data: the shards as one token stream, its document-token mask, its piece
    boundaries (each sequence's `cu_seqlens`, shifted to the stream) and each position's sequence."""
    S, n = s.seq_len, len(s)
    tokens = np.concatenate([np.asarray(s[i], dtype=np.int64) for i in range(n)])
    doc = np.zeros(n * S, bool)
    for g in s.all_segments():
        a = int(g["gseq"]) * S + int(g["start"])
        doc[a: a + int(g["length"])] = True
    bounds = sorted({i * S + int(b) for i in range(n) for b in s.cu_seqlens(i)})
    return tokens, doc, bounds, np.arange(n * S) // S


@pytest.fixture(scope="module")
def best_fit_shards(train_shards, tmp_path_factory):
    """The fixture's corpus built with best-fit packing: sequences end in padding."""
    from lcdata.build import BuildConfig, run_build

    out = str(tmp_path_factory.mktemp("bestfit") / "shards")
    s = open_shards(train_shards)
    run_build([os.path.join(os.path.dirname(train_shards), "corpus")], out,
              BuildConfig(tokenizer=s.manifest["tokenizer"]["path"], seq_len=256, packing="best-fit"), workers=1)
    return out


@pytest.mark.parametrize("L,packing", [(96, "concat"), (100, "concat"), (200, "concat"), (256, "concat"),
                                       (96, "best-fit")])
def test_stream_windows_cover_every_shard_token_once(train_shards, best_fit_shards, L, packing):
    """seq_len 96 does not divide 256: the windows read the shards as one stream, every token in exactly one
    window per epoch, the last window padded; boundaries, labels, positions and counts against `_stream`."""
    s = open_shards(train_shards if packing == "concat" else best_fit_shards)
    tokens, doc, bounds, seq = _stream(s)
    N = len(tokens)
    ds = ShardDataset(s, seq_len=L, doc_mask=True, windowing="stream")
    assert len(ds) == -(-N // L)
    pad_id = s.manifest["special_tokens"]["pad_id"]
    got = np.concatenate([ds[j]["input_ids"].numpy() for j in range(len(ds))])
    assert got[:N].tolist() == tokens.tolist() and (got[N:] == pad_id).all()  # each token once, in order
    scored = 0
    for j in range(len(ds)):
        it = ds[j]
        a = j * L
        want = sorted({0, L, min(N - a, L)} | {b - a for b in bounds if a < b < a + L})
        assert it["cu_seqlens"].tolist() == want
        lab, pos = it["labels"].numpy(), it["position_ids"].numpy()
        for t in range(L):
            g = a + t
            ok = (t < L - 1 and g + 1 < N and doc[g] and doc[g + 1] and seq[g] == seq[g + 1]
                  and g + 1 - a not in want)
            assert lab[t] == (tokens[g + 1] if ok else IGNORE), (L, j, t)
            scored += ok
            assert pos[t] == t - max(b for b in want if b <= t)
    if packing == "best-fit":
        assert not doc.all()  # the case of shard padding inside windows is exercised
    cov = ds.coverage()
    assert cov == {"windowing": "stream", "seq_len": L, "shards_seq_len": 256, "windows": len(ds),
                   "shard_tokens": N, "document_tokens": int(doc.sum()), "tokens_used": N, "tokens_unused": 0,
                   "window_padding": len(ds) * L - N}
    if L == 256:  # a divisor: the same windows as "sequence"
        seqwise = ShardDataset(s, doc_mask=True)
        for j in (0, 7, len(ds) - 1):
            assert all(torch.equal(ds[j][k], seqwise[j][k]) for k in ("input_ids", "labels", "cu_seqlens"))


def test_stream_windows_without_doc_mask_score_across_documents_not_sequences(train_shards):
    s = open_shards(train_shards)
    tokens, doc, bounds, seq = _stream(s)
    ds = ShardDataset(s, seq_len=96, windowing="stream")
    j = next(j for j in range(len(ds)) if (j * 96) // 256 != (j * 96 + 95) // 256)  # spans two sequences
    lab = ds[j]["labels"].numpy()
    for t in range(95):
        g = j * 96 + t
        assert lab[t] == (tokens[g + 1] if doc[g] and doc[g + 1] and seq[g] == seq[g + 1] else IGNORE)
    assert ds[j]["position_ids"].tolist() == list(range(96))


def test_collate_flattens_cu_seqlens(train_shards):
    ds = ShardDataset(train_shards, doc_mask=True)
    items = [ds[0], ds[1], ds[2]]
    b = collate(items)
    assert b["input_ids"].shape == (3, 256)
    cu = b["cu_seqlens"].tolist()
    assert cu[0] == 0 and cu[-1] == 3 * 256 and cu == sorted(set(cu))
    assert 256 in cu and 512 in cu
    assert b["max_seqlen"] == max(np.diff(cu))


def test_seq_len_larger_than_shards_is_refused(train_shards):
    with pytest.raises(ConfigError, match=r"seq_len 512 is larger than the shards' sequences \(256"):
        ShardDataset(train_shards, seq_len=512)


def test_sampler_epochs_and_rank_split():
    n, G = 10, 4
    one = StepSampler(n, G, seed=3)
    it = iter(one)
    first = [next(it) for _ in range(20)]  # two epochs
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:]) == list(range(10))
    assert first[:10] != first[10:]
    for step in range(4):
        want = first[step * G: (step + 1) * G] if (step + 1) * G <= 20 else None
        parts = []
        for r in range(2):
            s = StepSampler(n, G, rank=r, world=2, seed=3, start_step=step)
            itr = iter(s)
            parts.append([next(itr) for _ in range(G // 2)])
        if want is not None:
            assert parts[0] + parts[1] == want  # the step's set does not depend on the world size


def test_loader_resume_is_exact(train_shards):
    ds = ShardDataset(train_shards, doc_mask=True)
    a = ShardLoader(ds, per_step=6, micro_batch=2, seed=1)
    steps = [next(a) for _ in range(5)]
    assert len(steps[0]) == 3 and a.state_dict()["step"] == 5
    b = ShardLoader(ds, per_step=6, micro_batch=2, seed=1, start_step=3)
    b.check_state(ShardLoader(ds, per_step=6, micro_batch=2, seed=1, start_step=3).state_dict())
    nxt = next(b)
    for x, y in zip(nxt, steps[3]):
        for k in ("input_ids", "labels", "position_ids", "cu_seqlens"):
            assert torch.equal(x[k], y[k])
    with pytest.raises(ConfigError, match="per_step: 6 .checkpoint. != 8 .now."):
        ShardLoader(ds, per_step=8, micro_batch=2, seed=1).check_state(a.state_dict())


def test_loader_with_workers_matches(train_shards):
    ds = ShardDataset(train_shards)
    a = ShardLoader(ds, per_step=4, micro_batch=2, seed=0, start_step=2)
    b = ShardLoader(ds, per_step=4, micro_batch=2, seed=0, start_step=2, num_workers=1)
    for x, y in zip(next(a) + next(a), next(b) + next(b)):
        assert torch.equal(x["input_ids"], y["input_ids"])
