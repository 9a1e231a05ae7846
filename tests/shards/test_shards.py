"""Packing (`lcdata.shards.packing`) and split-encoding (`lcdata.tokenizer.encode_texts`) unit tests.

Packing is checked with hypothesis on random length arrays against independent expectations: the token
stream expanded position by position for `concat`, and a naive O(n^2) best-fit-decreasing reference for
`best-fit`. Split encoding is checked against the whole-text encoding of the real demo tokenizer, on
adversarial text and on real demo documents.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from lcdata.shards.packing import pack_best_fit, pack_concat
from lcdata.tokenizer.hf import _safe_cuts, can_split, encode_texts, load_tokenizer

lengths_st = st.lists(st.integers(0, 200), min_size=0, max_size=60).map(lambda v: np.array(v, dtype=np.int64))
seq_len_st = st.integers(2, 64)


def _expand(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(instance, offset) of every token of the concatenated stream."""
    inst = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    offs = np.arange(int(lengths.sum())) - np.repeat(starts, lengths)
    return inst, offs


def _check_segments_basic(segs, n_seq: int, L: int) -> None:
    assert (segs["length"] > 0).all()
    assert (segs["start"].astype(np.int64) + segs["length"] <= L).all()
    assert (segs["seq"] < max(n_seq, 1)).all() or len(segs) == 0
    # sorted by (seq, start) and not overlapping inside a sequence
    key = segs["seq"].astype(np.int64) * (L + 1) + segs["start"]
    assert (np.diff(key) > 0).all()
    same = segs["seq"][1:] == segs["seq"][:-1]
    ends = segs["start"][:-1].astype(np.int64) + segs["length"][:-1]
    assert (segs["start"][1:][same].astype(np.int64) >= ends[same]).all()


# ------------------------------------------------------------------------------------------- concat


@settings(max_examples=300, deadline=None)
@given(lengths=lengths_st, L=seq_len_st)
def test_pack_concat_tiles_the_stream(lengths, L):
    segs, n_seq, dropped = pack_concat(lengths, L)
    total = int(lengths.sum())
    assert n_seq == total // L
    assert dropped == total % L == total - n_seq * L
    _check_segments_basic(segs, n_seq, L)
    # pieces, read in (seq, start) order, are exactly the first n_seq * L tokens of the instance stream:
    # every position of every sequence is covered once (no padding, each sequence exactly L tokens)
    inst, offs = _expand(lengths)
    n = segs["length"].astype(np.int64)
    first = np.repeat(np.cumsum(n) - n, n)
    within = np.arange(int(n.sum())) - first
    pos = np.repeat(segs["seq"].astype(np.int64) * L + segs["start"], n) + within
    assert np.array_equal(pos, np.arange(n_seq * L))
    assert np.array_equal(np.repeat(segs["inst"].astype(np.int64), n), inst[: n_seq * L])
    assert np.array_equal(np.repeat(segs["offset"].astype(np.int64), n) + within, offs[: n_seq * L])
    for q in range(min(n_seq, 5)):  # cu_seqlens of a sequence end at L
        s = segs[segs["seq"] == q]
        assert s["start"][0] == 0 and int(s["length"].sum()) == L


@settings(max_examples=200, deadline=None)
@given(lengths=lengths_st, L=seq_len_st, chunk=st.integers(1, 5))
def test_pack_concat_in_chunks_is_the_same(lengths, L, chunk):
    """Issue #19: `pack_concat` works `CONCAT_CHUNK` instances at a time (bounded temporaries); any chunk size
    gives the same segments as one step over everything."""
    from lcdata.shards import packing

    whole = pack_concat(lengths, L)
    old = packing.CONCAT_CHUNK
    packing.CONCAT_CHUNK = chunk
    try:
        parts = pack_concat(lengths, L)
    finally:
        packing.CONCAT_CHUNK = old
    assert whole[1:] == parts[1:] and whole[0].tobytes() == parts[0].tobytes()


# ----------------------------------------------------------------------------------------- best-fit


def _reference_best_fit(lengths: np.ndarray, L: int) -> list[tuple[int, int, int, int, int]]:
    """Naive best-fit-decreasing as documented: full pieces first (instance order), then remainders longest
    first (ties: instance order) into the open sequence with the least room that fits (ties: lowest index)."""
    segs, n_seq, rest = [], 0, []
    for i, n in enumerate(lengths.tolist()):
        if n <= 0:
            continue
        for f in range(n // L):
            segs.append((n_seq, 0, L, i, f * L))
            n_seq += 1
        if n % L:
            rest.append((n % L, i, (n // L) * L))
    rest.sort(key=lambda r: (-r[0], r[1]))
    used: dict[int, int] = {}
    for n, i, off in rest:
        fits = [(L - u, q) for q, u in used.items() if L - u >= n]
        if fits:
            _, q = min(fits)
        else:
            q, n_seq = n_seq, n_seq + 1
            used[q] = 0
        segs.append((q, used[q], n, i, off))
        used[q] += n
        if used[q] == L:
            del used[q]
    return sorted(segs)


@settings(max_examples=300, deadline=None)
@given(lengths=lengths_st, L=seq_len_st)
def test_pack_best_fit_properties(lengths, L):
    segs, n_seq, padding = pack_best_fit(lengths, L)
    _check_segments_basic(segs, n_seq, L)
    assert padding == n_seq * L - int(segs["length"].sum())
    assert int(segs["length"].sum()) == int(lengths.sum())  # nothing dropped
    assert (segs["length"] <= L).all()
    assert len(np.unique(segs["seq"])) == n_seq  # no empty sequence
    for i, n in enumerate(lengths.tolist()):
        mine = segs[segs["inst"] == i]
        mine = mine[np.argsort(mine["offset"])]
        if n == 0:
            assert len(mine) == 0
            continue
        # fully covered, in order, without overlap or gap
        assert mine["offset"][0] == 0
        assert (mine["offset"][1:] == mine["offset"][:-1] + mine["length"][:-1]).all()
        assert int(mine["length"].sum()) == n
        if n <= L:
            assert len(mine) == 1  # a document that fits is never split
        else:  # full pieces at the start of their own sequence + the remainder
            full = n // L
            assert len(mine) == full + (1 if n % L else 0)
            assert (mine["length"][:full] == L).all() and (mine["start"][:full] == 0).all()
            if n % L:
                assert mine["length"][-1] == n % L
    # the segment tree gives the same placements as the naive reference
    got = sorted(tuple(int(x) for x in g) for g in segs[["seq", "start", "length", "inst", "offset"]])
    assert got == _reference_best_fit(lengths, L)
    # deterministic
    segs2, n2, pad2 = pack_best_fit(lengths.copy(), L)
    assert n2 == n_seq and pad2 == padding and segs2.tobytes() == segs.tobytes()


def test_pack_best_fit_fills_tightest_sequence():
    # 6 and 5 open two sequences of 8; 2 must go where it fits exactly (seq of 6), then 3 into the seq of 5
    segs, n_seq, padding = pack_best_fit(np.array([6, 5, 2, 3]), 8)
    where = {int(g["inst"]): (int(g["seq"]), int(g["start"])) for g in segs}
    assert n_seq == 2 and padding == 0
    assert where == {0: (0, 0), 1: (1, 0), 2: (0, 6), 3: (1, 5)}


# ------------------------------------------------------------------------------------ split encoding


@pytest.fixture(scope="module")
def hf_tok(tokenizer_path):
    return Tokenizer.from_file(tokenizer_path)


@pytest.fixture(scope="module")
def tok(tokenizer_path):
    return load_tokenizer(tokenizer_path)


def _whole(hf_tok, texts):
    return [e.ids for e in hf_tok.encode_batch(texts, add_special_tokens=False)]


ADVERSARIAL = [
    "word " * 50,
    "a" * 5000,  # one blob, no safe cut
    "x " + " " * 300 + "y z " * 40,  # long whitespace run
    "tabs\tand\t\ttabs \t mixed  double  spaces   here " * 20,
    "line one\r\nline two\r\n\r\n  indented\r\n" * 30,
    "naïve café déjà vu — 日本語のテキスト 中文 한국어 emoji 👍🏽 👨‍👩‍👧 e\u0301 " * 20,
    "digits 1234567890 3.14159 1,000,000 0x1F 42nd " * 30,
    "special <|bos|> tokens <|eos|> inside <|pad|> text <|im_start|>user <|im_end|> end " * 20,
    "<|bos|> <|bos|><|eos|> x<|bos|>y " * 30,
    "contractions: it's they're we've I'm you'll he'd don't 's 't " * 30,
    "nbsp\u00a0between words\u00a0and\u2028line\u2029sep \x1cfs\x1d \u3000ideo " * 30,
    "punct!!! ??? ... ,,, ;;; ::: ((( ))) [[[ ]]] {{{ }}} --- ___ *** " * 30,
    "def f(x):\n    return x  # comment\n\n\nclass A:\n\tpass\n" * 30,
    " leading space and trailing space " * 30 + "   ",
    "".join(chr(c) for c in range(32, 0x2FF)) * 3,
]


@pytest.mark.parametrize("piece", [7, 16, 64, 300])
def test_encode_texts_split_equals_whole_adversarial(tok, hf_tok, piece):
    assert can_split(tok)
    got = encode_texts(tok, ADVERSARIAL, True, piece_chars=piece)
    want = _whole(hf_tok, ADVERSARIAL)
    assert [g.tolist() for g in got] == want
    # the texts were really split (else this tests nothing)
    assert sum(len(_safe_cuts(t, piece)) for t in ADVERSARIAL) > len(ADVERSARIAL)


fragments = st.sampled_from(["word", " ", "  ", "\t", "\n", "\r\n", "é", "日本", "👍🏽", "123", "4.5", "<|bos|>",
                             "<|eos|>", "'s", "'t", "!", "...", "\u00a0", "\u2028", "\x1c", "a" * 30, " x", "x "])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(fragments, min_size=1, max_size=120), piece=st.integers(2, 40))
def test_encode_texts_split_equals_whole_random(tok, hf_tok, parts, piece):
    text = "".join(parts)
    got = encode_texts(tok, [text, "short"], True, piece_chars=piece)
    assert [g.tolist() for g in got] == _whole(hf_tok, [text, "short"])


def _demo_texts(demo_dir, rels):
    texts = []
    for rel in rels:
        with open(demo_dir / rel, "rb") as fh:
            raw = zstandard.ZstdDecompressor().stream_reader(fh).read()
        texts += [json.loads(line)["text"] for line in raw.split(b"\n") if line.strip()]
    return texts


def test_encode_texts_split_equals_whole_demo(tok, hf_tok, demo_dir):
    texts = _demo_texts(demo_dir, ["books/part-002.jsonl.zst", "code/part-001.jsonl.zst"])
    texts = [t for t in texts if len(t) > 2000]
    assert len(texts) > 40
    got = encode_texts(tok, texts, True, piece_chars=2000)
    want = _whole(hf_tok, texts)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.tolist() == w, f"document {i} differs when split"
    assert sum(len(_safe_cuts(t, 2000)) for t in texts) > 500


def test_can_split_refuses_unsafe_tokenizers(tmp_path, tokenizer_path):
    d = json.loads(open(tokenizer_path).read())
    assert can_split(Tokenizer.from_str(json.dumps(d)))
    n = dict(d, normalizer={"type": "NFC"})
    assert not can_split(Tokenizer.from_str(json.dumps(n)))
    m = dict(d, pre_tokenizer={"type": "Whitespace"})
    assert not can_split(Tokenizer.from_str(json.dumps(m)))


@pytest.mark.parametrize("case", ["rstrip", "space_inside"])
def test_split_is_safe_with_unusual_added_tokens(tokenizer_path, case):
    """An added token with rstrip swallows the spaces after it, and one with a space inside ("foo bar") is
    matched across such a space: cutting there would change the ids, so either `can_split` says no or the
    split result still equals the whole encoding."""
    from tokenizers import AddedToken

    d = json.loads(open(tokenizer_path).read())
    hf = Tokenizer.from_str(json.dumps(d))
    if case == "rstrip":
        hf.add_special_tokens([AddedToken("<|im_end|>", rstrip=True, special=True, normalized=False)])
        text = "answer<|im_end|> next words here " * 200
    else:
        hf.add_tokens(["foo bar"])
        text = "the foo bar baz foo bar! " * 200
    want = hf.encode(text, add_special_tokens=False).ids
    assert encode_texts(hf, [text], False)[0].tolist() == want
    for piece in range(8, 24):  # cut positions vary with the piece size: some fall inside "foo bar"
        got = encode_texts(hf, [text], can_split(hf), piece_chars=piece)[0]
        assert got.tolist() == want, piece
