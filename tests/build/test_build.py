"""`lcdata build` through the Python API on a real slice of the demo corpus, with the real tokenizer.

Expectations are computed independently of lcdata: the raw records are read with zstandard + json, token
ids come from `tokenizers.Tokenizer.encode(..., add_special_tokens=False)`, plans from `lcdata sample`
are read back from plan.parquet / report.parquet. Every build here is session-scoped and reused.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import fsspec
import numpy as np
import polars as pl
import pytest
import zstandard
from tokenizers import Tokenizer

from lcdata.build import BuildConfig, run_build
from lcdata.corpus import ReadConfig
from lcdata.errors import ConfigError, LcdataError
from lcdata.shards import open_shards, verify_shards

ROOT = Path(__file__).resolve().parents[2]
SLICE = {"web": "web/part-000.jsonl.zst", "books": "books/part-002.jsonl.zst", "code": "code/part-001.jsonl.zst"}
L = 4096
SHARD_TOKENS = 100_000  # 24 sequences per shard: several shards
BOS = 0
PAD = 2
VOLATILE = ("elapsed_s", "phase_s", "command", "manifest_sha256")  # the seal covers the run info too


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def slice_dir(tmp_path_factory, demo_dir) -> Path:
    d = tmp_path_factory.mktemp("slice")
    for rel in SLICE.values():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_dir / rel, d / rel)
    return d


def read_raw(path: Path) -> list[tuple[int, dict]]:
    with open(path, "rb") as fh:
        raw = zstandard.ZstdDecompressor().stream_reader(fh).read()
    return [(i, json.loads(line)) for i, line in enumerate(raw.split(b"\n")) if line.strip()]


@pytest.fixture(scope="session")
def hf_tok(tokenizer_path) -> Tokenizer:
    return Tokenizer.from_file(tokenizer_path)


@pytest.fixture(scope="session")
def raw(slice_dir, hf_tok) -> dict[tuple[str, int], dict]:
    """(file rel, row) -> {text, source, ids} from the raw files and a direct tokenizer call."""
    out = {}
    for rel in SLICE.values():
        recs = read_raw(slice_dir / rel)
        encs = hf_tok.encode_batch([r["text"] for _, r in recs], add_special_tokens=False)
        for (row, r), e in zip(recs, encs):
            out[(rel, row)] = {"text": r["text"], "source": r["meta"]["redpajama_set_name"], "ids": e.ids}
    return out


def _build(slice_dir, out, **kw) -> str:
    inputs = kw.pop("inputs", [str(slice_dir)])
    workers = kw.pop("workers", 1)
    memory_limit = kw.pop("memory_limit", None)
    cfg = BuildConfig(tokenizer=str(ROOT / "data/demo/tokenizer.json"), seq_len=kw.pop("seq_len", L),
                      shard_tokens=kw.pop("shard_tokens", SHARD_TOKENS), **kw)
    run_build(inputs, str(out), cfg, workers=workers, memory_limit=memory_limit)
    return str(out)


@pytest.fixture(scope="session")
def concat0(slice_dir, tmp_path_factory) -> str:
    return _build(slice_dir, tmp_path_factory.mktemp("b") / "concat0", packing="concat")


@pytest.fixture(scope="session")
def bestfit0(slice_dir, tmp_path_factory) -> str:
    return _build(slice_dir, tmp_path_factory.mktemp("b") / "bestfit0", packing="best-fit")


@pytest.fixture(scope="session")
def bestfit1(slice_dir, tmp_path_factory) -> str:
    return _build(slice_dir, tmp_path_factory.mktemp("b") / "bestfit1", packing="best-fit", seed=1)


def lcdata(*args, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LCDATA_DEBUG"}
    p = subprocess.run([sys.executable, "-m", "lcdata", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="session")
def stats_dir(slice_dir, tmp_path_factory, tokenizer_path) -> Path:
    out = tmp_path_factory.mktemp("plans") / "stats"
    lcdata("stats", slice_dir, "--tokenizer", tokenizer_path, "--workers", 1, "--out", out, "--quiet", "--no-figure")
    return out


def _sample(slice_dir, stats_dir, name, *args) -> Path:
    out = stats_dir.parent / name
    lcdata("sample", slice_dir, "--stats", stats_dir, "--out", out, "--quiet", "--no-figure", *args)
    return out


@pytest.fixture(scope="session")
def plan_per_source(slice_dir, stats_dir) -> Path:
    # budget above the slice's tokens: many documents get 2 copies
    return _sample(slice_dir, stats_dir, "per_source", "--strategy", "per-source", "--budget-tokens", "1.2M")


@pytest.fixture(scope="session")
def plan_chunk(slice_dir, stats_dir) -> Path:
    return _sample(slice_dir, stats_dir, "chunk", "--strategy", "cut", "--chunk", "--max-length", 3000,
                   "--budget-tokens", "400K")


# ------------------------------------------------------------------------------------------ helpers


def expected_instance(raw, d: dict, plan_ranges=None) -> list[int]:
    ids = raw[(d["file"], d["row"])]["ids"]
    if plan_ranges is not None:
        a, b = plan_ranges[(d["file"], d["row"], d["chunk"])]
        ids = ids[a:b]
    return [BOS] + ids


def check_sequences_and_pieces(s, packing: str) -> np.ndarray:
    """Structure of every sequence; returns all pieces with global sequence index."""
    m = s.manifest
    segs = s.all_segments()
    assert len(s) == m["n_sequences"] > 0 and len(m["shards"]) >= 3
    for i in range(len(s)):
        g = s.segments(i)
        row = np.asarray(s[i])
        assert row.shape == (L,) and row.dtype == np.uint16
        cu = s.cu_seqlens(i)
        covered = np.zeros(L, dtype=bool)
        for st, ln in zip(g["start"].astype(int), g["length"].astype(int)):
            assert not covered[st: st + ln].any()
            covered[st: st + ln] = True
        if packing == "concat":  # exactly L tokens, no padding, pieces tile the sequence
            assert covered.all()
            assert cu.tolist() == [0, *np.cumsum(g["length"].astype(int)).tolist()]
            assert cu[-1] == L
        else:
            assert (row[~covered] == PAD).all()
            assert cu[-1] == L
    n_tok = int(segs["length"].sum())
    assert m["n_tokens"] == n_tok
    if packing == "concat":
        assert m["padding_tokens"] == 0
    else:
        assert m["padding_tokens"] == L * m["n_sequences"] - n_tok
        assert m["dropped_tokens"] == 0
    # per-source counts in the manifest equal the pieces' sources
    per_src = Counter()
    for src, ln in zip(segs["source"], segs["length"]):
        per_src[s.sources[int(src)]] += int(ln)
    assert {k: v["tokens"] for k, v in m["per_source"].items()} == dict(per_src)
    return segs


def compare_builds(a: str, b: str) -> None:
    fa = sorted(p.relative_to(a).as_posix() for p in Path(a).rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b).as_posix() for p in Path(b).rglob("*") if p.is_file())
    assert fa == fb
    for name in fa:
        if name == "manifest.json":
            ma, mb = (json.loads((Path(x) / name).read_text()) for x in (a, b))
            for k in VOLATILE:
                ma.pop(k, None)
                mb.pop(k, None)
            assert ma == mb
        else:
            assert (Path(a) / name).read_bytes() == (Path(b) / name).read_bytes(), name


# ------------------------------------------------------------------------------------------ round trips


def test_concat_round_trip_and_dropped_tail(concat0, raw, hf_tok):
    s = open_shards(concat0)
    m = s.manifest
    assert m["packing"] == "concat" and m["dtype"] == "uint16" and m["special_tokens"]["bos_id"] == BOS
    check_sequences_and_pieces(s, "concat")
    docs = s.documents.sort("doc")
    assert docs.height == len(raw) == m["n_instances"]
    assert sorted(zip(docs["file"], docs["row"])) == sorted(raw)
    inst = s.instance_tokens()
    total = present = 0
    partial = []
    for d in docs.iter_rows(named=True):
        want = expected_instance(raw, d)
        assert d["length"] == len(raw[(d["file"], d["row"])]["ids"]) + 1 == len(want)
        assert d["doc_id"] == f"{d['file']}:{d['row']}" and d["source"] == raw[(d["file"], d["row"])]["source"]
        total += len(want)
        got = inst.get(d["doc"])
        if got is None:
            continue
        present += len(got)
        assert got.tolist() == want[: len(got)]
        if len(got) == len(want):
            assert got[0] == BOS
            assert hf_tok.decode(got[1:].tolist(), skip_special_tokens=False) == raw[(d["file"], d["row"])]["text"]
        else:
            partial.append(d["doc"])
    # the tail cut: the documents missing or cut are exactly the last ones of the packing order
    assert total == sum(docs["length"])
    assert m["dropped_tokens"] == total - present == total % L
    assert present == L * m["n_sequences"]
    assert len(partial) <= 1
    missing = sorted(set(docs["doc"]) - set(inst))
    assert missing == list(range(docs.height - len(missing), docs.height))
    if partial:
        assert partial[0] == docs.height - len(missing) - 1
    assert m["n_documents"] == len(inst)


def test_best_fit_round_trip_and_splits(bestfit0, raw, hf_tok):
    s = open_shards(bestfit0)
    m = s.manifest
    segs = check_sequences_and_pieces(s, "best-fit")
    docs = s.documents.sort("doc")
    inst = s.instance_tokens()
    assert len(inst) == docs.height == len(raw) == m["n_documents"]
    n_long = 0
    for d in docs.iter_rows(named=True):
        want = expected_instance(raw, d)
        got = inst[d["doc"]]
        assert got.tolist() == want
        assert hf_tok.decode(got[1:].tolist(), skip_special_tokens=False) == raw[(d["file"], d["row"])]["text"]
    lengths = dict(zip(docs["doc"], docs["length"]))
    by_doc = defaultdict(list)
    for g in segs:
        by_doc[int(g["doc"])].append((int(g["offset"]), int(g["length"]), int(g["start"])))
    for doc, pieces in by_doc.items():
        n = lengths[doc]
        pieces.sort()
        if n <= L:
            assert pieces == [(0, n, pieces[0][2])]  # never split
        else:
            n_long += 1
            full = n // L
            assert [p[:2] for p in pieces[:full]] == [(k * L, L) for k in range(full)]
            assert all(p[2] == 0 for p in pieces[:full])
            assert [p[:2] for p in pieces[full:]] == ([(full * L, n % L)] if n % L else [])
    assert n_long > 5  # books and code have documents longer than seq_len
    assert m["padding_tokens"] == L * m["n_sequences"] - sum(lengths.values())


def test_same_seed_identical(bestfit0, slice_dir, tmp_path):
    again = _build(slice_dir, tmp_path / "again", packing="best-fit")
    compare_builds(bestfit0, again)


def test_other_seed_reorders_same_documents(bestfit0, bestfit1):
    a, b = open_shards(bestfit0), open_shards(bestfit1)
    assert a.manifest["identity"] != b.manifest["identity"]
    seqs_a = [bytes(np.asarray(a[i])) for i in range(len(a))]
    seqs_b = [bytes(np.asarray(b[i])) for i in range(len(b))]
    assert seqs_a != seqs_b
    assert a.documents["doc_id"].to_list() != b.documents["doc_id"].to_list()

    def multiset(s):
        docs = s.documents
        ids = dict(zip(docs["doc"], zip(docs["doc_id"], docs["chunk"], docs["copy"])))
        return Counter((ids[d], t.tobytes()) for d, t in s.instance_tokens().items())

    assert multiset(a) == multiset(b)
    assert a.manifest["per_source"] == b.manifest["per_source"]


# ------------------------------------------------------------------------------------------ plans


def _plan_checks(out: str, plan_dir: Path, raw, hf_tok, packing: str) -> tuple[dict, pl.DataFrame]:
    s = open_shards(out)
    m = s.manifest
    plan = pl.read_parquet(plan_dir / "plan.parquet")
    plan_man = json.loads((plan_dir / "plan.json").read_text())
    assert m["plan_fingerprint"] == plan_man["plan_fingerprint"]
    check_sequences_and_pieces(s, packing)
    docs = s.documents
    # instance counts per unit equal the plan's copies, copy numbers 0..copies-1
    got = docs.group_by("file", "row", "chunk").agg(n=pl.len(), copies=pl.col("copy").sort())
    want = plan.select("file", "row", "chunk", "copies")
    j = want.join(got, on=["file", "row", "chunk"], how="full", coalesce=True)
    assert j.height == plan.height == got.height
    assert (j["n"] == j["copies"]).all()
    assert all(c == list(range(n)) for c, n in zip(j["copies_right"].to_list(), j["n"].to_list()))
    ranges = {(f, r, c): (a, b) for f, r, c, a, b in plan.select("file", "row", "chunk", "token_start",
                                                                 "token_end").iter_rows()}
    inst = s.instance_tokens()
    dropped_src = Counter()
    for d in docs.iter_rows(named=True):
        want_ids = expected_instance(raw, d, ranges)
        assert d["length"] == len(want_ids)
        tokens = inst.get(d["doc"], np.zeros(0, np.int64))
        assert tokens.tolist() == want_ids[: len(tokens)]
        dropped_src[d["source"]] += len(want_ids) - len(tokens)
        if len(tokens) == len(want_ids) and ranges[(d["file"], d["row"], d["chunk"])] == (0, None):
            assert hf_tok.decode(tokens[1:].tolist(), skip_special_tokens=False) == raw[(d["file"], d["row"])]["text"]
    assert sum(dropped_src.values()) == m["dropped_tokens"]
    # per-source tokens: the plan's achieved tokens + one BOS per instance - the dropped tail
    report = pl.read_parquet(plan_dir / "report.parquet").filter(pl.col("level") == "source")
    achieved = dict(zip(report["source"], report["achieved_tokens"]))
    plan_src = plan.group_by("source").agg(t=(pl.col("length") * pl.col("copies")).sum(), n=pl.col("copies").sum())
    for src, t, n in plan_src.iter_rows():
        assert achieved[src] == t
        assert m["per_source"][src]["tokens"] == t + n - dropped_src[src]
    return m, plan


@pytest.fixture(scope="session")
def per_source_build(plan_per_source, slice_dir, tmp_path_factory) -> str:
    return _build(slice_dir, tmp_path_factory.mktemp("b") / "ps", packing="concat", plan=str(plan_per_source))


def test_build_with_per_source_plan(per_source_build, plan_per_source, raw, hf_tok):
    m, plan = _plan_checks(per_source_build, plan_per_source, raw, hf_tok, "concat")
    assert plan["copies"].max() >= 2  # repeated documents are really exercised
    assert m["n_instances"] == plan["copies"].sum()


def test_megatron_export_one_sequence_per_document(per_source_build, plan_per_source, tmp_path, raw):
    """Issue 17: Megatron's convention is one sequence per document (GPTDataset packs and shuffles itself). The
    default export, read back with megatron-core's own `IndexedDataset`, holds one sequence (and one Megatron
    document) per document instance of the plan, each equal to the document's tokens, independently tokenized;
    instances cut across shuffled sequences and shard files are joined back. `pieces` keeps one per piece."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from megatron.core.datasets.indexed_dataset import IndexedDataset
    except ImportError as e:  # pragma: no cover
        pytest.skip(f"megatron-core's IndexedDataset cannot be imported: {e}")
    from lcdata.shards.export import export_shards

    s = open_shards(per_source_build)
    docs = s.documents
    plan = pl.read_parquet(plan_per_source / "plan.parquet")
    assert docs.height == plan["copies"].sum()  # a row per instance of the plan
    segs = s.all_segments()
    n_pieces = np.bincount(segs["doc"].astype(np.int64), minlength=docs.height)
    assert n_pieces.max() >= 2  # instances really were cut across sequences
    ranges = {(f, r, c): (a, b) for f, r, c, a, b in plan.select("file", "row", "chunk", "token_start",
                                                                 "token_end").iter_rows()}
    man = export_shards(per_source_build, "megatron", str(tmp_path / "mg"))
    assert man["layout"] == "document" and man["documents"] == s.manifest["n_documents"]
    got = []  # (tokens) of every Megatron sequence, file by file
    for f in sorted(x for x in man["files"] if x.endswith(".bin")):
        ds = IndexedDataset(str(tmp_path / "mg" / f.removesuffix(".bin")))
        assert np.array_equal(np.array(ds.document_indices), np.arange(len(ds) + 1))  # a document per sequence
        got += [np.array(ds[i]) for i in range(len(ds))]  # copies: the map goes with ds
    # the order: instances by their first piece in the shards (the shards' shuffled order)
    _, first = np.unique(segs["doc"], return_index=True)
    order = segs["doc"][np.sort(first)].astype(np.int64)
    assert len(got) == len(order) == s.manifest["n_documents"]
    # every instance of the plan is a sequence but those wholly in the concat's dropped tail (none, or a few)
    assert docs.height - len(got) == int((n_pieces == 0).sum()) < 5
    cut = 0
    for tokens, doc in zip(got, order.tolist()):
        d = docs.row(doc, named=True)
        want = expected_instance(raw, d, ranges)
        assert len(want) == d["length"]
        if len(tokens) < len(want):  # the one instance the dropped tail cuts
            cut += 1
        assert tokens.tolist() == want[: len(tokens)], doc
    assert cut <= 1 and sum(len(t) for t in got) == s.manifest["n_tokens"]
    # `pieces`: the pre-issue-17 layout, a Megatron sequence per piece, an instance's pieces one Megatron document
    man = export_shards(per_source_build, "megatron", str(tmp_path / "pieces"), megatron_layout="pieces")
    n_seq = n_doc = 0
    for f in (x for x in man["files"] if x.endswith(".bin")):
        ds = IndexedDataset(str(tmp_path / "pieces" / f.removesuffix(".bin")))
        n_seq += len(ds)
        n_doc += len(ds.document_indices) - 1
    assert n_seq == len(segs) > n_doc == len(got)
    with pytest.raises(ConfigError, match="megatron only"):
        export_shards(per_source_build, "datatrove", str(tmp_path / "dt"), megatron_layout="pieces")


def test_build_with_cut_chunk_plan(plan_chunk, slice_dir, tmp_path, raw, hf_tok):
    out = _build(slice_dir, tmp_path / "chunk", packing="best-fit", plan=str(plan_chunk))
    m, plan = _plan_checks(out, plan_chunk, raw, hf_tok, "best-fit")
    assert plan["chunk"].max() >= 1  # long documents really were chunked
    assert m["dropped_tokens"] == 0
    ends = plan["token_end"].fill_null(plan["n_tokens"])
    assert ((ends - plan["token_start"]) <= 3000).all()
    # every chunk instance fits in a sequence: best-fit never splits it
    segs = open_shards(out).all_segments()
    assert len(np.unique(segs["doc"])) == len(segs)


# ------------------------------------------------------------------------------------------ fsspec, errors


def test_build_to_memory_url(slice_dir, raw, hf_tok):
    url = "memory://lcdata-test-build/shards"
    fs = fsspec.filesystem("memory")
    if fs.exists("/lcdata-test-build"):
        fs.rm("/lcdata-test-build", recursive=True)
    try:
        cfg = BuildConfig(tokenizer=str(ROOT / "data/demo/tokenizer.json"), seq_len=2048, shard_tokens=20_000,
                          packing="best-fit")
        r = run_build([str(slice_dir / SLICE["code"])], url, cfg, workers=1)
        assert r.manifest["n_sequences"] > 0
        assert fs.exists("/lcdata-test-build/shards/manifest.json")
        s = open_shards(url)
        assert len(s.manifest["shards"]) > 3
        assert verify_shards(url) == []
        inst = s.instance_tokens()
        docs = s.documents
        assert len(inst) == docs.height == sum(1 for k in raw if k[0] == SLICE["code"])
        for d in docs.iter_rows(named=True):
            assert d["file"] == "part-001.jsonl.zst"
            text = raw[(SLICE["code"], d["row"])]["text"]
            assert hf_tok.decode(inst[d["doc"]][1:].tolist(), skip_special_tokens=False) == text
    finally:
        if fs.exists("/lcdata-test-build"):
            fs.rm("/lcdata-test-build", recursive=True)


def _tiny_corpus(d: Path, slice_dir: Path, n: int = 30) -> Path:
    d.mkdir()
    recs = read_raw(slice_dir / SLICE["web"])[:n]
    (d / "part-0.jsonl").write_text("".join(json.dumps(r) + "\n" for _, r in recs))
    return d


def test_api_errors(slice_dir, tmp_path, tokenizer_path, concat0):
    with pytest.raises(ConfigError, match="seq_len=1"):
        BuildConfig(tokenizer=tokenizer_path, seq_len=1)
    with pytest.raises(ConfigError, match="packing="):
        BuildConfig(tokenizer=tokenizer_path, seq_len=L, packing="first-fit")
    # an output folder holding a build is never mixed with another one
    before = {p.name: p.read_bytes() for p in Path(concat0).iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="not empty"):
        _build(slice_dir, concat0, packing="concat")
    with pytest.raises(ConfigError, match="--resume needs the same"):
        run_build([str(slice_dir)], concat0, BuildConfig(tokenizer=tokenizer_path, seq_len=L, seed=5), resume=True)
    assert {p.name: p.read_bytes() for p in Path(concat0).iterdir() if p.is_file()} == before
    tiny = _tiny_corpus(tmp_path / "tiny", slice_dir)
    with pytest.raises(LcdataError, match="less than one sequence"):
        _build(slice_dir, tmp_path / "o2", inputs=[str(tiny)], seq_len=1 << 20)


def test_large_vocabulary_uses_uint32(slice_dir, tmp_path, tokenizer_path):
    big = Tokenizer.from_file(tokenizer_path)
    big.add_tokens([f"tok{i}" for i in range(60000)])
    assert big.get_vocab_size() > 65536
    big.save(str(tmp_path / "big.json"))
    tiny = _tiny_corpus(tmp_path / "tiny", slice_dir)
    with pytest.raises(ConfigError, match="uint16"):
        run_build([str(tiny)], str(tmp_path / "o1"), BuildConfig(tokenizer=str(tmp_path / "big.json"), seq_len=64,
                                                                 dtype="uint16"))
    assert not (tmp_path / "o1" / "manifest.json").exists()
    cfg = BuildConfig(tokenizer=str(tmp_path / "big.json"), seq_len=64, packing="best-fit")
    run_build([str(tiny)], str(tmp_path / "o2"), cfg, workers=1)
    s = open_shards(str(tmp_path / "o2"))
    assert s.manifest["dtype"] == "uint32" and s[0].dtype == np.uint32
    assert (tmp_path / "o2" / "shard-00000.bin").stat().st_size == 4 * 64 * len(s)
    assert verify_shards(str(tmp_path / "o2")) == []
    recs = [json.loads(x) for x in (tiny / "part-0.jsonl").read_text().split("\n") if x]
    inst = s.instance_tokens()
    for d in s.documents.iter_rows(named=True):
        assert inst[d["doc"]].tolist() == [BOS] + big.encode(recs[d["row"]]["text"], add_special_tokens=False).ids


def test_skipped_records_are_summed_over_files(tmp_path, slice_dir):
    """--on-error skip: the read report counts skipped records of every file (same reason in two files)."""
    recs = read_raw(slice_dir / SLICE["web"])
    d = tmp_path / "corpus"
    d.mkdir()
    for k in range(2):
        lines = [json.dumps(r) for _, r in recs[k * 40: (k + 1) * 40]]
        lines.insert(5, '{"text": "broken record')  # not JSON
        (d / f"part-{k}.jsonl").write_text("\n".join(lines) + "\n")
    out = _build(d, tmp_path / "out", seq_len=64, read=ReadConfig(on_error="skip"))
    rep = json.loads((Path(out) / "manifest.json").read_text())["read_report"]
    assert rep["n_read"] == 82 and rep["n_counted"] == 80
    assert sum(rep["skipped"].values()) == 2


def _units(rng, n):
    from lcdata.build import Units

    cells = rng.choice(3 * 50 * 3, size=n, replace=False)  # distinct (file, row, chunk), as in a build
    return Units(file_index=(cells // 150).astype(np.int32), row=(cells // 3 % 50).astype(np.int64),
                 chunk=(cells % 3).astype(np.int32), length=rng.integers(1, 100, n).astype(np.int64),
                 offset=np.zeros(n, np.int64), copies=rng.integers(0, 4, n).astype(np.int64),
                 src=np.zeros(n, np.uint16), sources=["web"])


def _reference_order(u, rels, seed, key_fn):
    """The instance order as documented: (key, file name, row, chunk, copy), computed with Polars."""
    from lcdata.util.hashing import doc_hash

    inst = pl.DataFrame({"unit": np.arange(len(u.copies)), "file": [rels[i] for i in u.file_index], "row": u.row,
                         "chunk": u.chunk, "copies": u.copies})
    inst = inst.with_columns(copy=pl.int_ranges(0, pl.col("copies"))).explode("copy").drop_nulls("copy")
    h = doc_hash(inst, seed)
    mix = key_fn((inst["chunk"].cast(pl.UInt64).to_numpy() << np.uint64(32)) | inst["copy"].cast(pl.UInt64).to_numpy())
    inst = inst.with_columns(key=pl.Series(key_fn(h ^ mix), dtype=pl.UInt64))
    out = inst.sort("key", "file", "row", "chunk", "copy")
    return out["unit"].to_numpy(), out["copy"].to_numpy()


def test_instance_order_is_the_documented_hash_order():
    from lcdata.build.layout import _instance_order
    from lcdata.util.hashing import splitmix64

    rng = np.random.default_rng(0)
    rels = ["b/x.jsonl", "a/y.jsonl.zst", "c.parquet"]  # file index order != name order
    u = _units(rng, 300)
    for seed in (0, 7):
        unit, copy = _instance_order(u, rels, seed)
        ref_unit, ref_copy = _reference_order(u, rels, seed, splitmix64)
        assert np.array_equal(unit, ref_unit) and np.array_equal(copy, ref_copy)
        assert len(unit) == u.copies.sum()


def test_instance_order_ties_follow_file_name_row_chunk_copy(monkeypatch):
    """With every hash equal (forced), instances fall back to the documented tie order."""
    import lcdata.build.layout as B

    monkeypatch.setattr(B, "splitmix64", lambda x: np.zeros_like(np.asarray(x, dtype=np.uint64)))
    rng = np.random.default_rng(1)
    rels = ["b/x.jsonl", "a/y.jsonl.zst", "c.parquet"]
    u = _units(rng, 200)
    unit, copy = B._instance_order(u, rels, 0)
    order = sorted((rels[u.file_index[i]], u.row[i], u.chunk[i], c, i) for i in range(len(u.copies))
                    for c in range(u.copies[i]))
    assert [(t[4], t[3]) for t in order] == list(zip(unit.tolist(), copy.tolist()))


# ------------------------------------------------------------------------------------------ shard writers


@pytest.mark.parametrize("packing,how", [("concat", "reads"), ("best-fit", "gathers"), ("best-fit", "no-preadv"),
                                         ("concat", "processes")])
def test_every_shard_writer_writes_the_same_bytes(packing, how, concat0, bestfit0, slice_dir, tmp_path,
                                                  monkeypatch):
    """Issue #19: the writer's copy paths (every piece one read; every piece in the vectorised gather; slice
    copies from the maps where there is no preadv) and its schedules (writer threads, writer processes over
    the saved layout) give the bytes of the default."""
    from lcdata.build import layout

    if how == "reads":
        monkeypatch.setattr(layout, "RUN_MIN_TOKENS", 1)
    elif how == "gathers":
        monkeypatch.setattr(layout, "RUN_MIN_TOKENS", 1 << 40)
    elif how == "no-preadv":
        monkeypatch.delattr(os, "preadv")
    else:
        monkeypatch.setattr(layout, "PROCESS_WRITE_MIN_BYTES", 0)
    out = _build(slice_dir, tmp_path / how, packing=packing, workers=1 if how != "processes" else 2)
    compare_builds(concat0 if packing == "concat" else bestfit0, out)


def test_phase_times_in_the_manifest(concat0):
    """Issue #19: the wall seconds of each phase are recorded (run information: not in the identity)."""
    from lcdata.shards.format import PHASES

    ph = json.loads((Path(concat0) / "manifest.json").read_text())["phase_s"]
    assert list(ph) == list(PHASES) and all(isinstance(v, float) and v >= 0 for v in ph.values())
    assert sum(ph.values()) <= json.loads((Path(concat0) / "manifest.json").read_text())["elapsed_s"] + 0.01


def test_a_short_spill_is_a_clear_error(slice_dir, tmp_path):
    """A spill shorter than the layout says (a damaged work folder) is an error naming it, not a short shard."""
    from lcdata.build import load_units, pack_layout, write_shard
    from lcdata.tokenizer import resolve_specials

    work = tmp_path / "work"
    cfg = BuildConfig(tokenizer=str(ROOT / "data/demo/tokenizer.json"), seq_len=L, shard_tokens=SHARD_TOKENS)
    r = run_build([str(slice_dir)], str(tmp_path / "out"), cfg, workers=1, work_dir=str(work), keep_work=True)
    rels = [f["rel"] for f in r.manifest["inputs"]]
    lay = pack_layout(load_units(str(work), range(len(rels))), rels, cfg)
    spill = work / "tok-00001.bin"
    spill.write_bytes(spill.read_bytes()[:10])  # 5 tokens left
    specials = resolve_specials(Tokenizer.from_file(cfg.tokenizer), cfg.bos, cfg.eos)
    k = next(k for k in range(lay.n_shards)
             if (lay.inst_file[lay.segs["inst"][lay.bounds[k]:lay.bounds[k + 1]].astype(np.int64)] == 1).any())
    for p in work.glob("shard-*.done.json"):
        p.unlink()
    with pytest.raises(LcdataError, match=r"tok-00001\.bin ends before token"):
        write_shard(lay, k, cfg, str(tmp_path / "out"), str(work), specials, np.dtype("uint16"))


@pytest.mark.parametrize("packing", ["concat", "best-fit"])
def test_layout_segments_in_output_order(packing, slice_dir, tmp_path):
    """The layout's segments are those of the packer, each at its sequence's output position (the seed's
    permutation), ordered by (position, start): checked here against an independent permutation and sort."""
    from lcdata.build import load_units, pack_layout
    from lcdata.shards.packing import pack_best_fit, pack_concat

    work = tmp_path / "work"
    cfg = BuildConfig(tokenizer=str(ROOT / "data/demo/tokenizer.json"), seq_len=1024, packing=packing, seed=3)
    r = run_build([str(slice_dir)], str(tmp_path / "out"), cfg, workers=1, work_dir=str(work), keep_work=True)
    rels = [f["rel"] for f in r.manifest["inputs"]]
    units = load_units(str(work), range(len(rels)))
    lay = pack_layout(units, rels, cfg)
    lengths = units.length[lay.inst_unit]
    segs, n_seq, _ = (pack_concat if packing == "concat" else pack_best_fit)(lengths, cfg.seq_len)
    perm = np.random.default_rng(cfg.seed).permutation(n_seq)
    pos_of = np.empty(n_seq, dtype=np.int64)
    pos_of[perm] = np.arange(n_seq)
    pos = pos_of[segs["seq"].astype(np.int64)]
    order = np.lexsort((segs["start"], pos))
    assert lay.segs.tobytes() == segs[order].tobytes() and np.array_equal(lay.out_pos, pos[order])


# ------------------------------------------------------------------------------------------ memory limit


@pytest.mark.parametrize("packing,how", [("concat", "threads"), ("best-fit", "threads"), ("concat", "processes")])
def test_memory_limit_spills_the_layout_same_bytes(packing, how, concat0, bestfit0, slice_dir, tmp_path,
                                                   monkeypatch):
    """Issue #19: under a memory limit the layout is computed through files in the work folder (here in
    chunks of 1,024 instances: 16 buckets); every shard, documents.parquet and the manifest (but run
    information) are those of the in-memory build, and the work folder is gone after."""
    from lcdata.build import layout, spilled

    calls = []
    real = spilled.spilled_layout
    monkeypatch.setattr(spilled, "spilled_layout", lambda *a, **k: calls.append(1) or real(*a, **k))
    if how == "processes":  # writer processes read the spilled layout's own folder
        monkeypatch.setattr(layout, "PROCESS_WRITE_MIN_BYTES", 0)
    out = _build(slice_dir, tmp_path / how, packing=packing, workers=2 if how == "processes" else 1,
                 memory_limit=1)
    assert calls == [1]
    compare_builds(concat0 if packing == "concat" else bestfit0, out)


@pytest.mark.parametrize("packing,ties", [("concat", False), ("best-fit", False), ("concat", True)])
def test_spilled_layout_equals_the_in_memory_one(packing, ties, slice_dir, tmp_path, monkeypatch):
    """`spilled_layout` gives `pack_layout`'s arrays, with several buckets and chunks, and with every hash
    forced equal (the tie order, sorted inside one bucket)."""
    import dataclasses

    import lcdata.build.layout as B
    import lcdata.build.spilled as S

    work = tmp_path / "work"
    cfg = BuildConfig(tokenizer=str(ROOT / "data/demo/tokenizer.json"), seq_len=1024, packing=packing, seed=3,
                      shard_tokens=1 << 14)
    r = run_build([str(slice_dir)], str(tmp_path / "out"), cfg, workers=1, work_dir=str(work), keep_work=True)
    rels = [f["rel"] for f in r.manifest["inputs"]]
    if ties:
        zero = lambda x: np.zeros_like(np.asarray(x, dtype=np.uint64))  # noqa: E731
        monkeypatch.setattr(B, "splitmix64", zero)
        monkeypatch.setattr(S, "splitmix64", zero)
    mem = B.pack_layout(B.load_units(str(work), range(len(rels))), rels, cfg)
    for limit in (1, 4 << 20):
        sp = S.spilled_layout(str(work), range(len(rels)), rels, cfg, limit)
        assert sp.dir == str(work / S.SPILL_DIR) and mem.n_shards > 2
        for f in dataclasses.fields(B.PackLayout):
            a, b = getattr(mem, f.name), getattr(sp, f.name)
            if f.name in ("maps", "dir"):
                continue
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == np.asarray(b).tobytes(), f.name
            else:
                assert a == b, f.name
        saved = B.load_layout(sp.dir)  # writer processes and scale-out tasks read it as a saved layout
        assert saved.segs.tobytes() == mem.segs.tobytes() and saved.stats == mem.stats


@pytest.mark.parametrize("packing", ["concat", "best-fit"])
def test_spilled_layout_with_plan_copies(packing, tmp_path):
    """Synthetic unit tables with plan copies (0 to 4 per unit, so a chunk of 1,024 units holds up to 4,096
    instances and is cut) and several sources per table: the spilled layout is the in-memory one."""
    import dataclasses

    import polars as pl

    import lcdata.build.layout as B
    import lcdata.build.spilled as S
    from lcdata.build import UNIT_SCHEMA

    rng = np.random.default_rng(5)
    rels = ["b/x.jsonl", "a/y.jsonl", "c.jsonl"]
    for i, n in enumerate((3000, 10, 2500)):
        length = rng.integers(1, 2000, n)
        pl.DataFrame({"file_index": np.full(n, i, np.int32), "file": rels[i], "row": np.arange(n, dtype=np.int64),
                      "chunk": rng.integers(0, 2, n).astype(np.int32), "doc_id": None,
                      "source": rng.choice(["web", "code", f"s{i}"], n), "doc_tokens": length, "length": length,
                      "offset": np.cumsum(length) - length, "copies": rng.integers(0, 5, n)},
                     schema=UNIT_SCHEMA).write_parquet(tmp_path / f"tok-{i:05d}.units.parquet")
    cfg = BuildConfig(tokenizer=str(ROOT / "data/demo/tokenizer.json"), seq_len=512, packing=packing, seed=9,
                      shard_tokens=1 << 15)
    mem = B.pack_layout(B.load_units(str(tmp_path), range(3)), rels, cfg)
    sp = S.spilled_layout(str(tmp_path), range(3), rels, cfg, 1)
    assert len(mem.inst_unit) > 4 * 1024 and mem.sources == ["code", "s0", "s1", "s2", "web"]
    for f in dataclasses.fields(B.PackLayout):
        a, b = getattr(mem, f.name), getattr(sp, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and a.tobytes() == np.asarray(b).tobytes(), f.name
        elif f.name not in ("maps", "dir"):
            assert a == b, f.name
    assert S._spans(np.array([3, 0, 5, 1, 1]), 4) == [(0, 2), (2, 3), (3, 5)]
