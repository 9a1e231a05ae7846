"""The tiktoken engine (`lcdata.tokenizer.tiktoken_engine`) gives exactly HF's ids, or refuses with the reason.

HF `tokenizers` is the reference throughout: ids from ``encode_batch_fast(..., add_special_tokens=False)``
on whole texts. Covered: every demo document, adversarial text (whitespace runs, CRLF, CJK / emoji /
combining marks / RTL, digit runs, 100K-char blobs without spaces, added tokens inside text, empty strings),
a sweep over Unicode code points in regex-sensitive contexts, random fragment mixes, a Split-regex
(Llama-3 style) tokenizer trained here, refusals (normalizer, Whitespace pre-tokenizer, ranks out of merge
order, tokens not self-consistent, orphans, unknown regex, ...), and stats / build outputs byte-identical
with engine hf vs tiktoken.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from lcdata.build import BuildConfig, build_identity, run_build
from lcdata.corpus import resolve_inputs
from lcdata.errors import ConfigError, MissingDependencyError
from lcdata.stats import StatsConfig, run_stats
from lcdata.tokenizer import count_tokens, encode_texts, engine_threads, get_engine, load_tokenizer, resolve_engine
from lcdata.tokenizer.tiktoken_engine import (
    BYTE_TO_CHAR,
    CHAR_TO_BYTE,
    GPT2_PATTERN,
    KNOWN_PATTERNS,
    check_equivalence,
    tiktoken_engine,
)

tiktoken = pytest.importorskip("tiktoken")


# ------------------------------------------------------------------------------------------- helpers


def _hf_ids(hf: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in hf.encode_batch_fast(texts, add_special_tokens=False)]


def _read_texts(paths) -> list[str]:
    texts = []
    for p in paths:
        with open(p, "rb") as fh:
            raw = zstandard.ZstdDecompressor().stream_reader(fh).read()
        texts += [json.loads(line)["text"] for line in raw.split(b"\n") if line.strip()]
    return texts


@pytest.fixture(scope="module")
def hf(tokenizer_path):
    return Tokenizer.from_file(tokenizer_path)


@pytest.fixture(scope="module")
def engine(tokenizer_path):
    eng, why = tiktoken_engine(tokenizer_path, threads=2)
    assert eng is not None, why
    return eng


@pytest.fixture(scope="module")
def demo_texts(demo_dir) -> list[str]:
    return _read_texts(sorted(demo_dir.glob("*/*.jsonl.zst")))


def _json(tokenizer_path) -> dict:
    return json.loads(Path(tokenizer_path).read_text())


def _save(tmp_path, d: dict, name="tok.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return str(p)


# -------------------------------------------------------------------------------------- equivalence


def test_demo_tokenizer_is_equivalent(tokenizer_path):
    ok, why = check_equivalence(tokenizer_path)
    assert ok, why
    assert "gpt2 regex" in why and "16123 merges in id order" in why and "self-consistent" in why
    assert resolve_engine(tokenizer_path, "auto")[0] == "tiktoken"
    assert resolve_engine(tokenizer_path, "hf") == ("hf", "requested")


def test_identical_ids_on_every_demo_document(hf, engine, demo_texts):
    assert len(demo_texts) == 9893
    want = _hf_ids(hf, demo_texts)
    got = engine.encode_lists(demo_texts)
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, f"{len(bad)} demo documents differ, first #{bad[:5]}"
    assert sum(map(len, want)) > 3_000_000


def test_hf_splits_added_tokens_out_of_text_even_without_special_tokens(hf, engine):
    """The reference behaviour the engine must copy: HF matches added tokens in raw text with
    add_special_tokens=False (that flag only controls the post-processor's BOS)."""
    text = "hi <|bos|> there<|im_start|>x"
    assert hf.encode(text, add_special_tokens=False).ids[2] == 0
    assert hf.encode(text, add_special_tokens=False).tokens[-2:] == ["<|im_start|>", "x"]
    assert engine.encode_lists([text]) == _hf_ids(hf, [text])


def _blob(rng, alphabet, n):
    return "".join(rng.choice(alphabet) for _ in range(n))


def _adversarial() -> list[str]:
    rng = random.Random(7)
    return [
        "", " ", "x", "\n", "\n\n\n   \t", "\n\n\n   \tword", "   \t\n  x  ",
        " " * 10_000, "\t" * 5_000 + "x", "\n" * 3_000 + "x" + " " * 7, "  \n \t\u00a0 \u3000" * 2_000,
        "a\r\nb\rc\n\r\n\r" * 500, "line one\r\nline two\r\n\r\n  indented\r\n" * 200,
        "日本語のテキストと中文和한국어 " * 300, "emoji 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷 x" * 300,
        "combining e\u0301\u0302 a\u0308\u0323 \u0915\u094d\u0937 Z\u0351\u0352\u0353 " * 300,
        "RTL مرحبا بالعالم שלום עולם \u200f\u200e mixed عربي123 " * 300,
        "zero width a\u200bb\u200cc\u200dd\ufeffe \u2028\u2029 \x1c\x1d\x1e\x85 " * 300,
        "1234567890" * 10_000, "digits 1234567890 3.14159 1,000,000 0x1F 42nd ١٢٣ ⅧⅫ ²³ " * 300,
        "a" * 100_000, _blob(rng, "abcdefghijklmnopqrstuvwxyz", 100_000),
        _blob(rng, "".join(chr(c) for c in range(33, 127)), 100_000),
        "日本語" * 33_334, "!@#$%^&*()" * 10_000, "Zürich" * 20_000, "\u00e9" * 100_000,
        "special <|bos|> tokens <|eos|> inside <|pad|> text <|im_start|>user\nhi<|im_end|> end " * 50,
        "<|bos|>", "<|bos|><|bos|><|eos|>", "x<|bos|>y", " <|bos|> ", "<|bos|", "<|bo", "<<|bos|>|>",
        "<|im_start|><|im_end|>" * 1_000, "<|bos|>" + "a" * 50_000 + "<|eos|>",
        "contractions: it's they're we've I'm you'll he'd don't 's 't 'S 'LL 'ſ " * 200,
        "def f(x):\n    return x  # comment\n\n\nclass A:\n\tpass\n" * 300,
        "".join(chr(c) for c in range(32, 0x2FF)) * 3,
    ]


ADVERSARIAL = _adversarial()


@pytest.mark.parametrize("split", [False, True])
def test_identical_ids_on_adversarial_text(tokenizer_path, hf, engine, split):
    tok = load_tokenizer(tokenizer_path)
    want = _hf_ids(hf, ADVERSARIAL)
    got = encode_texts(tok, ADVERSARIAL, split, piece_chars=4096, engine=engine)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.int64
        assert g.tolist() == w, f"adversarial text #{i} ({ADVERSARIAL[i][:40]!r}) differs"
    assert encode_texts(tok, ADVERSARIAL, split, piece_chars=4096)[5].tolist() == want[5]
    counts = count_tokens(tok, ADVERSARIAL, engine)
    assert counts.tolist() == [len(w) for w in want] == count_tokens(tok, ADVERSARIAL).tolist()


def test_unicode_code_point_sweep(hf, engine):
    """Oniguruma (HF) and fancy-regex (tiktoken) must classify every character alike (\\s, \\p{L}, \\p{N}) in
    the contexts the regex distinguishes. All of U+0000-U+2FFF and every 29th code point above (the full
    range was checked once when the engine was written)."""
    cps = [c for c in range(0x3000)] + [c for c in range(0x3000, 0x110000, 29) if not 0xD800 <= c <= 0xDFFF]
    texts = [f"a{c}b {c}1{c}234 {c}{c} \n{c} x'{c}s {c}'S\t{c}\r\n{c}  {c}" for c in map(chr, cps)]
    want = _hf_ids(hf, texts)
    got = engine.encode_lists(texts)
    bad = [hex(cps[i]) for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, f"code points tokenized differently: {bad[:20]}"


fragments = st.sampled_from(["word", " ", "  ", "\t", "\n", "\r\n", "\r", "é", "e\u0301", "日本", "👍🏽", "123",
                             "4.5", "<|bos|>", "<|eos|>", "<|im_start|>", "<|", "|>", "'s", "'t", "'", "!", "...",
                             "\u00a0", "\u2028", "\u3000", "\x1c", "a" * 30, " x", "x ", "١٢", "שלום"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(fragments, min_size=0, max_size=80))
def test_identical_ids_on_random_fragment_mixes(hf, engine, parts):
    text = "".join(parts)
    assert engine.encode_lists([text, "tail"]) == _hf_ids(hf, [text, "tail"])


def test_overlapping_and_normalized_added_tokens_follow_hf(tokenizer_path):
    """HF extracts non-normalized added tokens first, then normalized ones, each leftmost-longest."""
    t = Tokenizer.from_file(tokenizer_path)
    t.add_tokens(["foo", "foobar", AddedToken("barbaz", normalized=False), AddedToken("oba", normalized=True)])
    t.add_special_tokens([AddedToken("<|im|>", normalized=False), AddedToken("<|im|>x", normalized=False)])
    eng, why = tiktoken_engine(t, threads=2)
    assert eng is not None, why
    texts = ["foobarbaz foobar foo xfoobarbazfoo", "foobar", "fooba", "barbazfoobarbaz", "<|im|>x<|im|> <|im|>y",
             "ofoobaz", "foofoofoo", "nothing here"]
    assert eng.encode_lists(texts) == _hf_ids(t, texts)


def test_split_regex_tokenizer_trained_here(demo_texts):
    """Llama-3-style pre-tokenizer: Sequence[Split(cl100k regex, Isolated), ByteLevel(use_regex=false)]."""
    pattern = next(p for p, name in KNOWN_PATTERNS.items() if name == "cl100k/llama3")
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(demo_texts[::4], trainers.BpeTrainer(
        vocab_size=3000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    eng, why = tiktoken_engine(t, threads=2)
    assert eng is not None, why
    assert "cl100k/llama3 regex" in why
    texts = demo_texts[1::7] + ADVERSARIAL + ["<|endoftext|>x<|endoftext|>", "'S 'll ſ'ſ"]
    want = _hf_ids(t, texts)
    got = eng.encode_lists(texts)
    assert [i for i, (g, w) in enumerate(zip(got, want)) if g != w] == []


# ----------------------------------------------------------------------------------------- refusals


def _refused(t_or_path, *words):
    ok, why = check_equivalence(t_or_path)
    assert not ok
    eng, why2 = tiktoken_engine(t_or_path)
    assert eng is None and why2 == why
    for w in words:
        assert w in why, why
    return why


def test_refuses_whitespace_pretokenizer_and_normalizer_built_by_tokenizers(tmp_path, demo_texts):
    t = Tokenizer(models.BPE(unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(demo_texts[:500], trainers.BpeTrainer(vocab_size=800, special_tokens=["[UNK]"],
                                                                 show_progress=False))
    p = tmp_path / "whitespace.json"
    t.save(str(p))
    _refused(str(p), "Whitespace", "ByteLevel")
    assert resolve_engine(str(p), "auto")[0] == "hf"
    assert "not equivalent" in resolve_engine(str(p), "auto")[1]
    with pytest.raises(ConfigError, match="cannot reproduce"):
        resolve_engine(str(p), "tiktoken")
    assert get_engine(str(p), "auto") is None

    b = Tokenizer(models.BPE())
    b.normalizer = normalizers.NFC()
    b.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    b.decoder = decoders.ByteLevel()
    b.train_from_iterator(demo_texts[:500], trainers.BpeTrainer(
        vocab_size=800, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    q = tmp_path / "nfc.json"
    b.save(str(q))
    _refused(str(q), "normalizer", "NFC")
    b.normalizer = None
    b.save(str(tmp_path / "plain.json"))  # another name: load_tokenizer caches by path
    assert check_equivalence(str(tmp_path / "plain.json"))[0]  # the same tokenizer without the normalizer is fine


@pytest.mark.parametrize("change, words", [
    (lambda d: d["pre_tokenizer"].update(add_prefix_space=True), ["add_prefix_space"]),
    (lambda d: d["pre_tokenizer"].update(use_regex=False), ["use_regex=false"]),
    (lambda d: d.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\w+"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}),
     ["not one known to match every character"]),
    (lambda d: d.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": GPT2_PATTERN}, "behavior": "Removed", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}),
     ["Removed"]),
    (lambda d: d["model"].update(byte_fallback=True), ["byte_fallback"]),
    (lambda d: d["model"].update(dropout=0.1), ["dropout"]),
    (lambda d: d["added_tokens"][3].update(rstrip=True), ["rstrip", "<|im_start|>"]),
    (lambda d: d.update(decoder={"type": "WordPiece", "prefix": "##", "cleanup": True}), ["decoder"]),
    (lambda d: d["model"]["vocab"].update({"xyzq": 16384}), ["made by no merge", "xyzq"]),
    (lambda d: d["model"]["vocab"].pop("Ā"), ["byte symbols", "'Ā'"]),  # byte 0x00, in no merge
])
def test_refuses_with_reason(tmp_path, tokenizer_path, change, words):
    d = _json(tokenizer_path)
    change(d)
    p = _save(tmp_path, d)
    _refused(load_tokenizer(p), *words)


def test_refuses_ranks_out_of_merge_order_and_that_matters(tmp_path, tokenizer_path, demo_dir):
    """Swap the ids of 'Ġt' and 'th': HF still merges by merge priority, a naive tiktoken conversion by id,
    and the two then disagree on real text. The check refuses, naming the merge."""
    d = _json(tokenizer_path)
    v = d["model"]["vocab"]
    v["Ġt"], v["th"] = v["th"], v["Ġt"]
    t = Tokenizer.from_str(json.dumps(d))
    _refused(t, "merge priority differs from id")
    ranks = {bytes(CHAR_TO_BYTE[c] for c in s): i for s, i in v.items() if i > 4}
    naive = tiktoken.Encoding("naive", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    texts = _read_texts([demo_dir / "web" / "part-000.jsonl.zst"])[:3000]
    assert naive.encode_ordinary_batch(texts) != _hf_ids(t, texts)


def _tiny(merges: list[tuple[str, str]], extra: list[str]) -> dict:
    vocab = {BYTE_TO_CHAR[b]: i for i, b in enumerate(sorted(BYTE_TO_CHAR))}
    for s in extra:
        vocab[s] = len(vocab)
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                                "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": vocab, "merges": [list(m) for m in merges]}}


def test_refuses_tokens_hf_cannot_reach_from_their_bytes():
    """Merges b+c, a+b, ab+c: HF turns 'abc' into [a, bc] (b+c has priority and a+bc is no merge) while
    tiktoken's whole-piece lookup (and its any-pair merging) gives [abc]. Ranks are in merge order, so
    only the self-consistency check can catch it."""
    d = _tiny([("b", "c"), ("a", "b"), ("ab", "c")], ["bc", "ab", "abc"])
    t = Tokenizer.from_str(json.dumps(d))
    assert t.encode("abc", add_special_tokens=False).tokens == ["a", "bc"]
    why = _refused(t, "not reproduced by HF's own merges", "'abc'")
    assert "1 tokens" in why
    ranks = {bytes(CHAR_TO_BYTE[c] for c in s): i for s, i in d["model"]["vocab"].items()}
    naive = tiktoken.Encoding("naive", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    assert naive.encode_ordinary("abc") != t.encode("abc", add_special_tokens=False).ids
    ok = _tiny([("a", "b"), ("b", "c"), ("ab", "c")], ["ab", "bc", "abc"])  # a+b first: consistent
    assert check_equivalence(Tokenizer.from_str(json.dumps(ok)))[0]


def test_ignore_merges_true_is_accepted_and_identical(tokenizer_path, demo_texts):
    d = _json(tokenizer_path)
    d["model"]["ignore_merges"] = True
    t = Tokenizer.from_str(json.dumps(d))
    eng, why = tiktoken_engine(t, threads=2)
    assert eng is not None and "ignore_merges=true" in why
    texts = demo_texts[::9] + ADVERSARIAL[:20]
    assert eng.encode_lists(texts) == _hf_ids(t, texts)


def test_forced_tiktoken_without_it_names_the_extra(tmp_path, tokenizer_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import tiktoken -> ImportError
    with pytest.raises(MissingDependencyError, match=r"lcdata\[fast\]"):
        resolve_engine(tokenizer_path, "tiktoken")
    name, why = resolve_engine(tokenizer_path, "auto")
    assert name == "hf" and "not installed" in why
    assert tiktoken_engine(tokenizer_path)[0] is None
    with pytest.raises(MissingDependencyError, match=r"lcdata\[fast\]"):
        run_stats([tokenizer_path.replace("tokenizer.json", "web")], str(tmp_path / "s"),
                  StatsConfig(tokenizer=tokenizer_path, engine="tiktoken"))
    assert not (tmp_path / "s" / "stats.json").exists()


def test_engine_option_validation_and_threads(tokenizer_path, monkeypatch):
    with pytest.raises(ConfigError, match="engine"):
        BuildConfig(tokenizer=tokenizer_path, seq_len=64, engine="fast")
    with pytest.raises(ConfigError, match="engine"):
        StatsConfig(tokenizer=tokenizer_path, engine="tik")
    with pytest.raises(ConfigError, match="engine"):
        resolve_engine(tokenizer_path, "nope")
    files = resolve_inputs([str(Path(tokenizer_path).parent)])
    ids = {build_identity(files, BuildConfig(tokenizer=tokenizer_path, seq_len=64, engine=e), "sha", None)
           for e in ("auto", "hf", "tiktoken")}
    assert len(ids) == 1  # the engine is not part of a build's identity
    monkeypatch.setenv("RAYON_NUM_THREADS", "3")
    assert engine_threads() == 3
    assert get_engine(tokenizer_path, "tiktoken").threads == 3
    assert get_engine(tokenizer_path, "hf") is None


# ------------------------------------------------------------------------ outputs: hf == tiktoken


def _tree(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_stats_outputs_identical_with_either_engine(tmp_path, tokenizer_path, demo_dir):
    out = {}
    for e in ("hf", "tiktoken"):
        run_stats([str(demo_dir)], str(tmp_path / e), StatsConfig(tokenizer=tokenizer_path, engine=e),
                  workers=2, figure=False)
        out[e] = _tree(tmp_path / e)
    assert out["hf"].keys() == out["tiktoken"].keys()
    for name in out["hf"]:
        if name != "stats.json":
            assert out["hf"][name] == out["tiktoken"][name], f"{name} differs between engines"
    js = {e: json.loads(out[e]["stats.json"]) for e in out}
    assert js["hf"]["engine"]["name"] == "hf" and js["tiktoken"]["engine"]["name"] == "tiktoken"
    for j in js.values():
        for k in ("elapsed_s", "engine", "command"):
            j.pop(k)
        j["config"].pop("engine")
    assert js["hf"] == js["tiktoken"]
    assert js["hf"]["totals"]["n_tokens"] > 3_000_000


def test_build_outputs_identical_with_either_engine(tmp_path, tokenizer_path, demo_dir):
    out = {}
    for e in ("hf", "tiktoken"):
        r = run_build([str(demo_dir)], str(tmp_path / e), BuildConfig(tokenizer=tokenizer_path, seq_len=8192,
                                                                      engine=e), workers=2)
        assert r.manifest["engine"]["name"] == e
        out[e] = _tree(tmp_path / e)
    assert out["hf"].keys() == out["tiktoken"].keys()
    assert any(n.endswith(".bin") for n in out["hf"])
    for name in out["hf"]:
        if name not in ("manifest.json", "build.json"):
            assert out["hf"][name] == out["tiktoken"][name], f"{name} differs between engines"
    ms = {e: json.loads(out[e]["manifest.json"]) for e in out}
    for m in ms.values():
        for k in ("elapsed_s", "phase_s", "engine", "command", "manifest_sha256"):
            m.pop(k, None)
        m["config"].pop("engine")
    assert ms["hf"] == ms["tiktoken"]  # identity included: the engine is not part of it
