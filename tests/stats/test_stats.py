"""Length statistics (lcdata.stats, lcdata.stats.run, lcdata.tokenizer) on the demo corpus.

Every expected number is recomputed here from the raw records (zstandard + json), the `tokenizers` library
and numpy; lcdata's own tables are only compared against those.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from lcdata import (
    DEFAULT_BUCKETS,
    ConfigError,
    LcdataError,
    ReadConfig,
    StatsConfig,
    TokenizerError,
    compute_stats,
    merge_stats,
)
from lcdata.stats import histogram, merge_histograms, summarize_buckets, summarize_sources
from lcdata.tokenizer import load_tokenizer, tokenizer_info
from lcdata.util.config import parse_buckets

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
TOK = str(DEMO / "tokenizer.json")
PAPER_CPT = 3.68


@functools.cache
def demo_docs() -> tuple[tuple[str, str, str], ...]:
    """(doc_id, source, text) of every demo document, read with zstandard + json only."""
    out = []
    for src in sorted(os.listdir(DEMO)):
        if not (DEMO / src).is_dir():
            continue
        for part in sorted(os.listdir(DEMO / src)):
            with open(DEMO / src / part, "rb") as fh:
                data = zstandard.ZstdDecompressor().stream_reader(fh).read()
            for i, line in enumerate(data.decode().splitlines()):
                rec = json.loads(line)
                out.append((f"{src}/{part}:{i}", rec["meta"]["redpajama_set_name"], rec["text"]))
    return tuple(out)


@pytest.fixture(scope="module")
def exact():
    """Stats of the whole demo corpus with the demo tokenizer (serial)."""
    return compute_stats([str(DEMO)], StatsConfig(tokenizer=TOK, calibrate=True), workers=1)


@pytest.fixture(scope="module")
def estimated():
    return compute_stats([str(DEMO)], StatsConfig(), workers=1)


def lengths_by_source(doc_lengths: pl.DataFrame) -> dict[str, np.ndarray]:
    return {s: g["n_tokens"].to_numpy() for (s,), g in doc_lengths.sort("doc_id").group_by("source")}


# --------------------------------------------------------------------------------------- per document


def test_exact_token_counts_match_tokenizers_library(exact):
    tok = Tokenizer.from_file(TOK)
    docs = demo_docs()
    longest = sorted(range(len(docs)), key=lambda i: len(docs[i][2]))[-1:]
    sample = sorted(set(range(0, len(docs), 23)) | set(longest))
    got = dict(zip(exact.doc_lengths["doc_id"], exact.doc_lengths.select("source", "n_chars", "n_tokens").rows()))
    assert len(got) == len(docs) == exact.doc_lengths.height
    for i in sample:
        doc_id, src, text = docs[i]
        n = len(tok.encode(text, add_special_tokens=False).ids)
        assert got[doc_id] == (src, len(text), n), doc_id
    # a doc with special tokens would be one longer: the counts really are without them
    assert len(tok.encode(docs[0][2]).ids) == got[docs[0][0]][2] + 1


def test_exact_totals_agree_with_the_documented_corpus(exact):
    # data/demo/README.md, "Token statistics (with tokenizer.json, no special tokens)"
    documented = {"books": (26, 920_596), "code": (170, 740_049), "docs": (166, 851_868), "web": (9531, 632_130)}
    assert {r["source"]: (r["n_docs"], r["n_tokens"]) for r in exact.sources.iter_rows(named=True)} == documented
    info = tokenizer_info(TOK)
    assert info.vocab_size == Tokenizer.from_file(TOK).get_vocab_size() == 16384
    assert exact.tokenizer["sha256"] == info.sha256 and len(info.sha256) == 64


def test_char_estimate_is_ceil_chars_over_3_68(estimated):
    want = {doc_id: math.ceil(len(text) / PAPER_CPT) for doc_id, _, text in demo_docs()}
    got = dict(zip(estimated.doc_lengths["doc_id"], estimated.doc_lengths["n_tokens"]))
    assert got == want
    assert (estimated.doc_lengths["n_est_tokens"] == estimated.doc_lengths["n_tokens"]).all()
    assert estimated.tokenizer is None and "3.68" in estimated.to_json()["length_unit"]


def test_custom_chars_per_token(demo_dir):
    cfg = StatsConfig(chars_per_token=2.5, read=ReadConfig(source="all"))
    r = compute_stats([f"{demo_dir}/code"], cfg, workers=1)
    want = {d: math.ceil(len(t) / 2.5) for d, s, t in demo_docs() if s == "code"}
    assert dict(zip("code/" + r.doc_lengths["doc_id"], r.doc_lengths["n_tokens"])) == want
    assert r.sources["source"].to_list() == ["all"] and r.sources["n_tokens"][0] == sum(want.values())


# ------------------------------------------------------------------------------------ summary tables


def check_sources_table(sources: pl.DataFrame, doc_lengths: pl.DataFrame, long_threshold: int = 4096):
    chars = {d: len(t) for d, _, t in demo_docs()}
    lens = lengths_by_source(doc_lengths)
    total = sum(int(x.sum()) for x in lens.values())
    n_all = sum(len(x) for x in lens.values())
    assert sources["source"].to_list() == sorted(lens)
    for row in sources.iter_rows(named=True):
        x = lens[row["source"]]
        ids = doc_lengths.filter(pl.col("source") == row["source"])["doc_id"]
        p50, p90, p99 = np.percentile(x, [50, 90, 99], method="inverted_cdf")
        assert row["n_docs"] == len(x)
        assert row["n_chars"] == sum(chars[d] for d in ids)
        assert row["n_empty"] == sum(chars[d] == 0 for d in ids)
        assert row["n_tokens"] == int(x.sum())
        assert row["token_share"] == pytest.approx(x.sum() / total, rel=1e-12)
        assert row["doc_share"] == pytest.approx(len(x) / n_all, rel=1e-12)
        assert row["mean_tokens"] == pytest.approx(x.mean(), rel=1e-12)
        assert (row["p50_tokens"], row["p90_tokens"], row["p99_tokens"]) == (p50, p90, p99)
        assert row["max_tokens"] == x.max()
        assert row["long_token_share"] == pytest.approx(x[x >= long_threshold].sum() / x.sum(), rel=1e-12)
    assert sources["token_share"].sum() == pytest.approx(1.0)


def check_buckets_table(buckets: pl.DataFrame, doc_lengths: pl.DataFrame, edges):
    lens = lengths_by_source(doc_lengths)
    total = sum(int(x.sum()) for x in lens.values())
    edges = list(edges)
    maxes = edges[1:] + [None]
    want = []
    for src in sorted(lens):
        x = lens[src]
        idx = np.searchsorted(np.asarray(edges), x, side="right") - 1
        for b, (lo, hi) in enumerate(zip(edges, maxes)):
            sel = x[idx == b]
            assert ((sel >= lo) & ((sel < hi) if hi is not None else True)).all()
            want.append((src, b, lo, hi, len(sel), int(sel.sum())))
    got = buckets.select("source", "bucket", "bucket_min", "bucket_max", "n_docs", "n_tokens").rows()
    assert got == want
    for row in buckets.iter_rows(named=True):
        src_total = lens[row["source"]].sum()
        assert row["token_share_in_source"] == pytest.approx(row["n_tokens"] / src_total if src_total else 0.0)
        assert row["token_share"] == pytest.approx(row["n_tokens"] / total)


def test_sources_table_exact(exact):
    check_sources_table(exact.sources, exact.doc_lengths)


def test_sources_table_estimated(estimated):
    check_sources_table(estimated.sources, estimated.doc_lengths)


def test_long_threshold_is_inclusive(demo_dir):
    r = compute_stats([str(demo_dir)], StatsConfig(long_threshold=2042), workers=1)
    check_sources_table(r.sources, r.doc_lengths, long_threshold=2042)


def test_default_buckets_table(exact):
    assert DEFAULT_BUCKETS == (0, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
    b = exact.buckets
    assert b.filter(pl.col("bucket") == 8)["bucket_max"].is_null().all()
    assert b.filter(pl.col("bucket") < 8)["bucket_max"].is_not_null().all()
    assert b.height == 4 * 9  # every bucket of every source is listed, zeros included
    check_buckets_table(b, exact.doc_lengths, DEFAULT_BUCKETS)
    # the two Austen novels above 128K tokens (README) are in the open bucket
    assert b.filter((pl.col("source") == "books") & (pl.col("bucket") == 8))["n_docs"].to_list() == [2]


@pytest.mark.parametrize("edges", [(0, 100, 5000, 50_000), (0,), (0, 1, 2, 3, 1_000_000)])
def test_custom_buckets(exact, edges):
    check_buckets_table(summarize_buckets(exact.histogram, edges), exact.doc_lengths, edges)


def test_custom_buckets_through_config(demo_dir):
    edges = parse_buckets("0, 256, 1ki, 8KiB")
    assert edges == (0, 256, 1024, 8192)
    r = compute_stats([f"{demo_dir}/*/part-001.jsonl.zst"], StatsConfig(buckets=edges), workers=1)
    check_buckets_table(r.buckets, r.doc_lengths, edges)
    assert r.to_json()["config"]["buckets"] == [0, 256, 1024, 8192]


def test_calibration_columns(exact):
    est = {}
    tokens = {}
    chars = {}
    exact_len = dict(zip(exact.doc_lengths["doc_id"], exact.doc_lengths["n_tokens"]))
    for doc_id, src, text in demo_docs():
        est[src] = est.get(src, 0) + math.ceil(len(text) / PAPER_CPT)
        tokens[src] = tokens.get(src, 0) + exact_len[doc_id]
        chars[src] = chars.get(src, 0) + len(text)
    for row in exact.sources.iter_rows(named=True):
        s = row["source"]
        assert row["est_tokens"] == est[s]
        assert row["est_error"] == pytest.approx(est[s] / tokens[s] - 1, rel=1e-12)
        assert row["chars_per_token"] == pytest.approx(chars[s] / tokens[s], rel=1e-12)
    assert "est_error" not in compute_stats([f"{DEMO}/web/part-000.jsonl.zst"], StatsConfig(), workers=1).sources.columns


def test_source_of_empty_documents_has_no_nan(tmp_path):
    lines = [{"text": "", "meta": {"redpajama_set_name": "empty"}}] * 3
    lines += [{"text": "some real words", "meta": {"redpajama_set_name": "full"}}]
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    r = compute_stats([str(tmp_path)], StatsConfig(tokenizer=TOK, calibrate=True), workers=1)
    row = r.sources.row(0, named=True)
    assert (row["source"], row["n_docs"], row["n_empty"], row["n_tokens"]) == ("empty", 3, 3, 0)
    assert row["est_error"] is None and row["chars_per_token"] is None and row["token_share"] == 0.0
    json.dumps(r.to_json(), allow_nan=False)  # stats.json stays strict JSON


# --------------------------------------------------------------------------- merging and parallelism


def test_merged_halves_equal_the_whole(estimated, demo_dir):
    # the merge does not depend on the length unit; the char estimate keeps this test fast
    exact = estimated
    cfg = exact.config
    half_a = compute_stats([f"{demo_dir}/*/part-00[02].jsonl.zst"], cfg, workers=1)
    half_b = compute_stats([f"{demo_dir}/*/part-001.jsonl.zst"], cfg, workers=1)
    assert half_a.doc_lengths.height and half_b.doc_lengths.height
    assert set(half_a.doc_lengths["doc_id"]).isdisjoint(half_b.doc_lengths["doc_id"])
    for parts in ([half_a, half_b], [half_b, half_a]):
        m = merge_stats(parts)
        assert m.sources.equals(exact.sources)
        assert m.buckets.equals(exact.buckets)
        assert m.histogram.equals(exact.histogram)
        assert m.doc_lengths.equals(exact.doc_lengths)
        assert m.files.equals(exact.files) and m.skips.equals(exact.skips)
        assert [f.rel for f in m.inputs] == [f.rel for f in exact.inputs]
        assert m.fingerprint == exact.fingerprint
        assert m.totals == exact.totals
    with pytest.raises(LcdataError, match="overlap"):
        merge_stats([half_a, half_a])
    other = compute_stats([f"{demo_dir}/*/part-001.jsonl.zst"], StatsConfig(chars_per_token=4.0), workers=1)
    with pytest.raises(LcdataError, match="different configs"):
        merge_stats([half_a, other])
    with pytest.raises(LcdataError):
        merge_stats([])


def test_parallel_equals_serial(estimated, demo_dir):
    # whole corpus, char estimate (fast); exact counts in workers are covered by the next test
    par = compute_stats([str(demo_dir)], estimated.config, workers=2)
    for name in ("sources", "buckets", "histogram", "files", "skips", "doc_lengths"):
        assert getattr(par, name).equals(getattr(estimated, name)), name
    assert par.fingerprint == estimated.fingerprint


def test_parallel_equals_serial_in_skip_mode(tmp_path):
    good = b'{"text": "some words here", "meta": {"redpajama_set_name": "s"}}\n'
    for i in range(4):
        (tmp_path / f"f{i}.jsonl").write_bytes(good * (i + 2) + b"not json\n" * i + good)
    (tmp_path / "z.jsonl.zst").write_bytes(b"")
    cfg = StatsConfig(tokenizer=TOK, read=ReadConfig(on_error="skip"))
    ser = compute_stats([str(tmp_path)], cfg, workers=1)
    par = compute_stats([str(tmp_path)], cfg, workers=2)
    for name in ("sources", "histogram", "files", "skips", "doc_lengths"):
        assert getattr(par, name).equals(getattr(ser, name)), name
    tok = Tokenizer.from_file(TOK)
    assert set(ser.doc_lengths["n_tokens"]) == {len(tok.encode("some words here", add_special_tokens=False).ids)}
    assert ser.skips.rows() == [(f"f{i}.jsonl", "malformed_json", i) for i in range(1, 4)]
    assert ser.totals["n_read"] == ser.totals["n_counted"] + ser.totals["n_skipped"]
    assert ser.files.filter(pl.col("file") == "z.jsonl.zst")["error"].to_list() == ["empty_file"]


# ------------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("kw", [
    {"buckets": (1, 2, 3)}, {"buckets": (0, 5, 5)}, {"buckets": (0, 10, 5)}, {"buckets": ()},
    {"calibrate": True}, {"chars_per_token": 0}, {"chars_per_token": -1.0}, {"chars_per_token": float("nan")},
    {"long_threshold": 0},
])
def test_stats_config_errors(kw):
    with pytest.raises(ConfigError):
        StatsConfig(**kw)


@pytest.mark.parametrize("kw", [
    {"on_error": "ignore"}, {"text_field": ""}, {"text_field": "a..b"}, {"source_field": ".x"},
    {"chunk_bytes": 100}, {"source": "x", "source_from_path": True}, {"source": ""}, {"id_field": ""},
])
def test_read_config_errors(kw):
    with pytest.raises(ConfigError):
        ReadConfig(**kw)


def test_parse_buckets():
    assert parse_buckets("0,1Ki,2ki,4KiB,1Mi") == (0, 1024, 2048, 4096, 1 << 20)
    assert parse_buckets("0, 1.5Ki,") == (0, 1536)
    with pytest.warns(FutureWarning) as w:  # the old spelling: K = 1024 in bucket edges, for one release
        assert parse_buckets("0,1K,2k,4K,1M") == (0, 1024, 2048, 4096, 1 << 20)
    assert [str(x.message).rsplit(": write ", 1)[1] for x in w] == ["1Ki", "2Ki", "4Ki", "1Mi"]
    with pytest.raises(ConfigError, match="not a number"):
        parse_buckets("0,1Ki,lots")


@pytest.mark.parametrize("kind", ["missing", "readme", "json_not_tokenizer", "corpus_file", "directory"])
def test_bad_tokenizer_file(tmp_path, kind, demo_dir):
    path = {
        "missing": tmp_path / "nope" / "tokenizer.json",
        "readme": demo_dir / "README.md",
        "json_not_tokenizer": tmp_path / "tokenizer.json",
        "corpus_file": demo_dir / "web" / "part-000.jsonl.zst",
        "directory": tmp_path,
    }[kind]
    if kind == "json_not_tokenizer":
        path.write_text(json.dumps({"version": "1.0", "model": {"type": "Nope"}}))
    with pytest.raises(TokenizerError) as e:
        compute_stats([f"{demo_dir}/web/part-000.jsonl.zst"], StatsConfig(tokenizer=str(path)), workers=1)
    assert str(path) in str(e.value)
    with pytest.raises(TokenizerError):
        load_tokenizer(str(path))


# ------------------------------------------------------------------------- histogram property tests

SOURCES = st.sampled_from(["a", "b", "c", "web"])
DOC = st.tuples(SOURCES, st.one_of(st.integers(0, 50), st.integers(0, 300_000)), st.integers(0, 10**6))


def docs_frame(docs) -> pl.DataFrame:
    n = len(docs)
    return pl.DataFrame(
        {"doc_id": [f"f:{i}" for i in range(n)], "file": ["f"] * n, "row": list(range(n)),
         "source": [d[0] for d in docs], "n_chars": [d[2] for d in docs], "n_tokens": [d[1] for d in docs],
         "n_est_tokens": [math.ceil(d[2] / PAPER_CPT) for d in docs]},
        schema={"doc_id": pl.String, "file": pl.String, "row": pl.Int64, "source": pl.String,
                "n_chars": pl.Int64, "n_tokens": pl.Int64, "n_est_tokens": pl.Int64},
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(DOC, min_size=1, max_size=120), data=st.data())
def test_property_histograms_merge_exactly_and_percentiles_are_inverted_cdf(docs, data):
    whole = histogram(docs_frame(docs))
    # any split into any number of parts (empty parts included) merges back to the same histogram
    labels = data.draw(st.lists(st.integers(0, 4), min_size=len(docs), max_size=len(docs)))
    parts = [histogram(docs_frame([d for d, k in zip(docs, labels) if k == j])) for j in range(5)]
    merged = merge_histograms(parts)
    assert merged.equals(whole)
    assert merge_histograms([merged, None, parts[0].clear()]).equals(whole)
    s = summarize_sources(merged, calibrated=True)
    assert s.equals(summarize_sources(whole, calibrated=True))
    # independent computation per source
    total = sum(d[1] for d in docs)
    for row in s.iter_rows(named=True):
        x = np.array([d[1] for d in docs if d[0] == row["source"]], dtype=np.int64)
        chars = [d[2] for d in docs if d[0] == row["source"]]
        q = np.percentile(x, [50, 90, 99], method="inverted_cdf")
        assert (row["p50_tokens"], row["p90_tokens"], row["p99_tokens"]) == tuple(int(v) for v in q)
        assert (row["n_docs"], row["n_tokens"], row["max_tokens"]) == (len(x), int(x.sum()), int(x.max()))
        assert (row["n_chars"], row["n_empty"]) == (sum(chars), sum(c == 0 for c in chars))
        assert row["est_tokens"] == sum(math.ceil(c / PAPER_CPT) for c in chars)
        assert row["token_share"] == pytest.approx(x.sum() / total if total else 0.0)
        long = x[x >= 4096].sum()
        assert row["long_token_share"] == pytest.approx(long / x.sum() if x.sum() else 0.0)
        if x.sum():
            assert row["est_error"] == pytest.approx(row["est_tokens"] / x.sum() - 1)
            assert row["chars_per_token"] == pytest.approx(sum(chars) / x.sum())
        else:  # no tokens: no ratio (null, never NaN)
            assert row["est_error"] is None and row["chars_per_token"] is None
    edges = data.draw(st.lists(st.integers(1, 400_000), max_size=6, unique=True).map(lambda e: [0, *sorted(e)]))
    assert summarize_buckets(merged, edges).equals(summarize_buckets(whole, edges))
    bt = summarize_buckets(whole, edges)
    assert bt["n_docs"].sum() == len(docs) and bt["n_tokens"].sum() == total


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["web", "code", "books", "Bücher", "web2", None]), st.integers(0, 40),
                          st.integers(0, 200)), min_size=1, max_size=80))
def test_histogram_equals_a_polars_group_by(rows):
    """`histogram` (NumPy: dictionary-encoded sources, lexsort, reduceat) equals a Polars group-by, with several
    sources and with one, from a Polars frame and from an Arrow table."""
    from lcdata.stats import HIST_SCHEMA

    docs = pl.DataFrame({"source": [r[0] for r in rows], "n_tokens": [r[1] for r in rows],
                         "n_chars": [r[2] for r in rows], "n_est_tokens": [r[2] // 4 for r in rows]})
    for d in (docs, docs.with_columns(source=pl.lit("web"))):  # several sources (nulls, non-ASCII) and one
        ref = (d.group_by("source", "n_tokens")
               .agg(n_docs=pl.len().cast(pl.Int64), n_chars=pl.col("n_chars").sum(),
                    n_est_tokens=pl.col("n_est_tokens").sum(), n_empty=(pl.col("n_chars") == 0).sum().cast(pl.Int64))
               .select(list(HIST_SCHEMA)).cast(HIST_SCHEMA).sort("source", "n_tokens"))
        assert histogram(d).equals(ref)
        t = d.to_arrow()
        assert histogram(t).equals(ref)
        assert histogram(pa.concat_tables([t.slice(0, len(rows) // 2), t.slice(len(rows) // 2)])).equals(ref)  # 2 chunks


def test_estimate_beyond_int64_is_a_config_error(demo_dir):
    """An absurd chars_per_token cannot wrap the estimate around to negative token counts."""
    with pytest.raises(ConfigError, match="chars_per_token=1e-16"):
        compute_stats([str(demo_dir / "web")], StatsConfig(chars_per_token=1e-16))
