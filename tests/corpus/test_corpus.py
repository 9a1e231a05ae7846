"""Corpus reading (lcdata.corpus.inputs + lcdata.corpus) on real files written from the demo corpus.

Expected documents are always computed here with json / zstandard / gzip directly, never with lcdata.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import shutil
import tempfile
import uuid
from collections import Counter
from pathlib import Path

import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcdata import FileReport, InputError, ReadConfig, StatsConfig, compute_stats, read_corpus, resolve_inputs
from lcdata.corpus import Lengths, iter_batches, iter_lengths

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"
SOURCES = ("books", "code", "docs", "web")


# ------------------------------------------------------------------------------------------ helpers


@functools.cache
def demo_lines(rel: str) -> tuple[bytes, ...]:
    """The JSONL lines of one demo file, decompressed with zstandard directly."""
    with open(DEMO / rel, "rb") as fh:
        data = zstandard.ZstdDecompressor().stream_reader(fh).read()
    lines = data.split(b"\n")
    assert lines[-1] == b""  # every line, the last included, ends with a newline
    return tuple(lines[:-1])


@functools.cache
def sample_records() -> tuple[dict, ...]:
    """A mixed sample of real demo records: a few long books, some code/docs pages, many web docs."""
    take = {"books": 3, "code": 15, "docs": 15, "web": 300}
    out = []
    for src, n in take.items():
        out += [json.loads(line) for line in demo_lines(f"{src}/part-001.jsonl.zst")[:n]]
    return tuple(out)


def jsonl_bytes(records, trailing_newline: bool = True) -> bytes:
    data = b"\n".join(json.dumps(r, ensure_ascii=False).encode() for r in records)
    return data + (b"\n" if trailing_newline else b"")


def zstd_frames(data: bytes, cuts=()) -> bytes:
    """Compress ``data`` as one zstd frame per piece between the byte offsets ``cuts``."""
    bounds = [0, *sorted(cuts), len(data)]
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    return b"".join(cctx.compress(data[a:b]) for a, b in zip(bounds, bounds[1:]))


def gzip_members(data: bytes, cuts=()) -> bytes:
    bounds = [0, *sorted(cuts), len(data)]
    return b"".join(gzip.compress(data[a:b], mtime=0) for a, b in zip(bounds, bounds[1:]))


def encode(data: bytes, name: str) -> bytes:
    if name.endswith((".zst", ".zstd")):
        return zstd_frames(data)
    if name.endswith(".gz"):
        return gzip_members(data)
    return data


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def expected_docs(records, rel: str, source_key=lambda r: r["meta"]["redpajama_set_name"], rows=None):
    rows = range(len(records)) if rows is None else rows
    return [(f"{rel}:{i}", rel, i, source_key(r), r["text"]) for i, r in zip(rows, records)]


def as_tuples(df: pl.DataFrame):
    assert df.columns == ["doc_id", "file", "row", "source", "text"]
    return list(df.iter_rows())


def read_one(path, **cfg) -> tuple[pl.DataFrame, FileReport]:
    """Read a single file with a fresh FileReport (not through read_corpus, to see the report)."""
    (f,) = resolve_inputs([str(path)])
    report = FileReport(file=f.rel, bytes=f.size)
    batches = list(iter_batches(f, ReadConfig(**cfg), report))
    df = pl.concat(batches) if batches else pl.DataFrame(schema=["doc_id", "file", "row", "source", "text"])
    assert report.n_read == report.n_counted + report.n_skipped
    assert report.n_counted == df.height
    return df, report


# ------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("ext", [".jsonl", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst", ".jsonl.zstd"])
def test_every_jsonl_format_and_compression(tmp_path, ext):
    recs = sample_records()
    name = f"part{ext}"
    write(tmp_path / name, encode(jsonl_bytes(recs), name))
    df, report = read_one(tmp_path / name)
    assert as_tuples(df) == expected_docs(recs, name)
    assert (report.n_read, report.n_counted, report.skipped, report.error) == (len(recs), len(recs), {}, None)


def test_last_line_without_newline_is_read(tmp_path):
    recs = sample_records()[:40]
    write(tmp_path / "a.jsonl", jsonl_bytes(recs, trailing_newline=False))
    assert as_tuples(read_one(tmp_path / "a.jsonl")[0]) == expected_docs(recs, "a.jsonl")


def test_parquet_nested_struct_source(tmp_path):
    recs = sample_records()
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "p.parquet", row_group_size=100)
    assert pq.read_schema(tmp_path / "p.parquet").field("meta").type.num_fields == 4  # a real struct column
    df, report = read_one(tmp_path / "p.parquet")
    assert as_tuples(df) == expected_docs(recs, "p.parquet")
    assert report.n_read == len(recs) and report.skipped == {}


def test_parquet_flat_columns_and_rows_across_batches(tmp_path):
    # > 4096 rows so the reader needs several record batches: rows must stay 0-based row numbers
    recs = [json.loads(line) for line in demo_lines("web/part-000.jsonl.zst")]
    assert len(recs) > 4096
    flat = {"body": [r["text"] for r in recs], "src": [r["meta"]["redpajama_set_name"] for r in recs],
            "n": list(range(len(recs)))}
    pq.write_table(pa.table(flat), tmp_path / "flat.parquet", row_group_size=1000)
    df, _ = read_one(tmp_path / "flat.parquet", text_field="body", source_field="src")
    assert as_tuples(df) == expected_docs(recs, "flat.parquet")


def test_parquet_id_field_any_scalar_type(tmp_path):
    recs = sample_records()[:50]
    ids = [1000 + 7 * i for i in range(len(recs))]
    pq.write_table(pa.table({"text": [r["text"] for r in recs], "uid": ids}), tmp_path / "i.parquet")
    df, _ = read_one(tmp_path / "i.parquet", id_field="uid", source="S")
    assert df["doc_id"].to_list() == [str(i) for i in ids]
    assert df["row"].to_list() == list(range(len(recs)))
    assert set(df["source"]) == {"S"}


# ----------------------------------------------------------------------------- inputs and identity


def copy_demo(dst: Path, sources=SOURCES) -> Path:
    for s in sources:
        shutil.copytree(DEMO / s, dst / s)
    return dst


def demo_expected(sources=SOURCES, parts=None):
    out = []
    for s in sources:
        for p in sorted(os.listdir(DEMO / s)):
            if parts is not None and p not in parts:
                continue
            rel = f"{s}/{p}"
            recs = [json.loads(line) for line in demo_lines(rel)]
            out += expected_docs(recs, rel)
    return sorted(out, key=lambda t: (t[1], t[2]))


def test_demo_corpus_doc_ids_are_rel_and_line(demo_dir):
    df = read_corpus([str(demo_dir)])
    assert as_tuples(df) == demo_expected()
    assert df.height == 9893  # data/demo/README.md


def test_directory_recursive_ignores_non_corpus_files(tmp_path):
    root = tmp_path / "corpus"
    recs = sample_records()
    write(root / "README.md", b"# not a corpus file\n")
    shutil.copy(DEMO / "tokenizer.json", root / "tokenizer.json")
    write(root / "notes.txt", b"hello\n")
    write(root / "deep" / "er" / "x.jsonl.zst", zstd_frames(jsonl_bytes(recs[:20])))
    write(root / "deep" / "er" / "stats.json", b"{}")
    write(root / "a.jsonl", jsonl_bytes(recs[20:30]))
    files = resolve_inputs([str(root)])
    assert [f.rel for f in files] == ["a.jsonl", "deep/er/x.jsonl.zst"]
    assert as_tuples(read_corpus([str(root)])) == (
        expected_docs(recs[20:30], "a.jsonl") + expected_docs(recs[:20], "deep/er/x.jsonl.zst"))
    # a trailing slash names the same root
    assert [f.rel for f in resolve_inputs([str(root) + "/"])] == ["a.jsonl", "deep/er/x.jsonl.zst"]


def test_globs_and_explicit_files(tmp_path, demo_dir):
    got = read_corpus([f"{demo_dir}/*/part-001.jsonl.zst"])
    assert as_tuples(got) == demo_expected(parts={"part-001.jsonl.zst"})  # rel is relative to the glob root
    recursive = resolve_inputs([f"{demo_dir}/**/*.zst"])
    assert [f.rel for f in recursive] == [f"{s}/{p}" for s in SOURCES for p in sorted(os.listdir(demo_dir / s))]
    # an explicit file is named by its base name
    got = read_corpus([str(demo_dir / "code" / "part-002.jsonl.zst")])
    recs = [json.loads(line) for line in demo_lines("code/part-002.jsonl.zst")]
    assert as_tuples(got) == expected_docs(recs, "part-002.jsonl.zst")


def test_identity_independent_of_input_order_and_mount_point(tmp_path):
    a = copy_demo(tmp_path / "mnt" / "a", ("code", "web"))
    b = copy_demo(tmp_path / "elsewhere" / "deeper" / "b", ("code", "web"))
    ref = read_corpus([f"{a}/*/part-000.jsonl.zst", f"{a}/*/part-001.jsonl.zst"])
    assert as_tuples(ref) == demo_expected(("code", "web"), parts={"part-000.jsonl.zst", "part-001.jsonl.zst"})
    for inputs in ([f"{b}/*/part-001.jsonl.zst", f"{b}/*/part-000.jsonl.zst"],
                   [f"{a}/*/part-001.jsonl.zst", f"{a}/*/part-000.jsonl.zst"]):
        assert read_corpus(inputs).equals(ref)
    whole = read_corpus([str(b)])
    assert read_corpus([str(a)]).equals(whole)
    assert whole.filter(pl.col("file").str.ends_with("part-002.jsonl.zst")).height > 0


def test_fsspec_memory_and_file_urls(tmp_path):
    recs = sample_records()
    base = f"/lcdata-test-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        with fs.open(f"{base}/web/x.jsonl.zst", "wb") as fh:
            fh.write(zstd_frames(jsonl_bytes(recs[:100])))
        with fs.open(f"{base}/code/y.jsonl.gz", "wb") as fh:
            fh.write(gzip_members(jsonl_bytes(recs[100:])))
        with fs.open(f"{base}/README.md", "wb") as fh:
            fh.write(b"ignored")
        pq.write_table(pa.Table.from_pylist(recs[:10]), f"{base}/z.parquet", filesystem=fs)
        want = (expected_docs(recs[100:], "code/y.jsonl.gz") + expected_docs(recs[:100], "web/x.jsonl.zst")
                + expected_docs(recs[:10], "z.parquet"))
        files = resolve_inputs([f"memory://{base}"])
        assert all(f.url.startswith("memory://") for f in files)
        assert as_tuples(read_corpus([f"memory://{base}"])) == want
        got = read_corpus([f"memory://{base}/*/*.json*"])
        assert as_tuples(got) == want[:-10]
        # source from path works on URLs too
        by_path = read_corpus([f"memory://{base}/web/x.jsonl.zst"], ReadConfig(source_from_path=True))
        assert set(by_path["source"]) == {"web"}
    finally:
        fs.rm(base, recursive=True)
    # file:// URLs give the same documents as plain paths
    write(tmp_path / "c" / "web" / "x.jsonl.zst", zstd_frames(jsonl_bytes(recs[:100])))
    assert read_corpus([f"file://{tmp_path}/c"]).equals(read_corpus([str(tmp_path / "c")]))
    assert as_tuples(read_corpus([f"file://{tmp_path}/c"])) == expected_docs(recs[:100], "web/x.jsonl.zst")


# ------------------------------------------------------------------------------------ field options


def test_dotted_text_and_source_fields(tmp_path):
    recs = sample_records()[:60]
    reshaped = [{"content": {"body": r["text"], "lang": "en"}, "info": {"src": {"name": r["meta"]["redpajama_set_name"]}},
                "text": 123} for r in recs]
    write(tmp_path / "d.jsonl.zst", zstd_frames(jsonl_bytes(reshaped)))
    df, report = read_one(tmp_path / "d.jsonl.zst", text_field="content.body", source_field="info.src.name")
    assert as_tuples(df) == expected_docs(recs, "d.jsonl.zst")
    pq.write_table(pa.Table.from_pylist(reshaped), tmp_path / "d.parquet")
    df, _ = read_one(tmp_path / "d.parquet", text_field="content.body", source_field="info.src.name")
    assert as_tuples(df) == expected_docs(recs, "d.parquet")


def test_source_from_path_and_constant_source(tmp_path):
    recs = [{"text": r["text"]} for r in sample_records()[:30]]  # no source field at all
    write(tmp_path / "c" / "alpha" / "a.jsonl", jsonl_bytes(recs[:10]))
    write(tmp_path / "c" / "beta" / "sub" / "b.jsonl.gz", gzip_members(jsonl_bytes(recs[10:])))
    got = read_corpus([str(tmp_path / "c")], ReadConfig(source_from_path=True))
    assert as_tuples(got) == (expected_docs(recs[:10], "alpha/a.jsonl", lambda r: "alpha")
                              + expected_docs(recs[10:], "beta/sub/b.jsonl.gz", lambda r: "sub"))
    got = read_corpus([str(tmp_path / "c")], ReadConfig(source="mine"))
    assert set(got["source"]) == {"mine"} and got.height == 30
    with pytest.raises(InputError) as e:
        read_corpus([str(tmp_path / "c")])
    assert e.value.reason == "missing_source" and e.value.line == 1


def test_id_field(tmp_path):
    recs = [dict(r, id=f"doc-{i}") for i, r in enumerate(sample_records()[:40])]
    recs[3]["id"] = 77  # a scalar of another type is turned into a string
    write(tmp_path / "ids.jsonl", jsonl_bytes(recs))
    df, _ = read_one(tmp_path / "ids.jsonl", id_field="id")
    assert df["doc_id"].to_list() == [str(r["id"]) for r in recs]
    assert df["row"].to_list() == list(range(40))
    del recs[5]["id"]
    write(tmp_path / "ids.jsonl", jsonl_bytes(recs))
    with pytest.raises(InputError) as e:
        read_one(tmp_path / "ids.jsonl", id_field="id")
    assert (e.value.reason, e.value.line) == ("missing_id", 6)
    df, report = read_one(tmp_path / "ids.jsonl", id_field="id", on_error="skip")
    assert report.skipped == {"missing_id": 1} and 5 not in df["row"].to_list()


# ------------------------------------------------------------------ chunking, frames and blank lines


def test_multi_frame_zstd_with_frames_cut_mid_line(tmp_path):
    recs = sample_records()
    data = jsonl_bytes(recs)
    cuts = [1, 7, len(data) // 3, len(data) // 2 + 5, len(data) - 2]
    blob = zstd_frames(data, cuts)
    assert blob.count(b"\x28\xb5\x2f\xfd") >= len(cuts) + 1  # several frames (magic numbers)
    write(tmp_path / "m.jsonl.zst", blob)
    for cb in (1024, 4096, 32 << 20):
        assert as_tuples(read_one(tmp_path / "m.jsonl.zst", chunk_bytes=cb)[0]) == expected_docs(recs, "m.jsonl.zst")
    write(tmp_path / "m.jsonl.gz", gzip_members(data, cuts))
    assert as_tuples(read_one(tmp_path / "m.jsonl.gz")[0]) == expected_docs(recs, "m.jsonl.gz")


def test_blank_lines_keep_row_equal_to_line_number(tmp_path):
    recs = sample_records()[:50]
    lines, rows = [b"", b"   "], []
    for i, r in enumerate(recs):
        rows.append(len(lines))
        lines.append(json.dumps(r).encode())
        if i % 7 == 0:
            lines += [b"", b"\t", b"\r"][: 1 + i % 3]
    data = b"\n".join(lines) + b"\n\n"
    write(tmp_path / "b.jsonl.zst", zstd_frames(data))
    for cb in (1024, 32 << 20):
        df, report = read_one(tmp_path / "b.jsonl.zst", chunk_bytes=cb)
        assert as_tuples(df) == expected_docs(recs, "b.jsonl.zst", rows=rows)
        assert report.n_read == len(recs)


def test_small_chunks_give_the_same_documents_as_default(demo_dir):
    inputs = [f"{demo_dir}/*/part-002.jsonl.zst"]  # books lines are far longer than a chunk
    small = read_corpus(inputs, ReadConfig(chunk_bytes=1024))
    assert small.equals(read_corpus(inputs))
    assert as_tuples(small) == demo_expected(parts={"part-002.jsonl.zst"})


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk_bytes=st.integers(1024, 300_000), cuts=st.lists(st.integers(0, 400_000), max_size=4))
def test_property_chunk_size_and_frames_do_not_change_documents(chunk_bytes, cuts):
    recs = sample_records()[3:120]  # code, docs and web documents: ~400 KB
    data = jsonl_bytes(recs)
    with tempfile.TemporaryDirectory() as d:
        p = write(Path(d) / "c.jsonl.zst", zstd_frames(data, [c for c in cuts if c < len(data)]))
        df, _ = read_one(p, chunk_bytes=chunk_bytes)
    assert as_tuples(df) == expected_docs(recs, "c.jsonl.zst")


# ------------------------------------------------------------------ generated files with bad records

SRC_NAMES = st.sampled_from(["web", "books", "a source", "ünï"])
TEXTS = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)


def _good(text, src, ensure_ascii):
    return json.dumps({"text": text, "meta": {"redpajama_set_name": src, "n": 1}}, ensure_ascii=ensure_ascii).encode()


@st.composite
def jsonl_line(draw):
    """One line and what a reader must make of it: ("doc", text, source) / ("blank",) / ("bad", reason)."""
    kind = draw(st.sampled_from(["doc", "doc", "doc", "doc_bad_utf8_elsewhere", "doc_bom", "blank", "malformed",
                                 "invalid_utf8", "missing_text", "non_string_text", "missing_source",
                                 "non_string_source"]))
    text, src = draw(TEXTS), draw(SRC_NAMES)
    if kind == "doc":
        return _good(text, src, draw(st.booleans())), ("doc", text, src)
    if kind == "doc_bad_utf8_elsewhere":  # invalid UTF-8 in a field that is not read does not matter
        line = json.dumps({"text": text, "meta": {"redpajama_set_name": src, "title": "@@"}}).encode()
        return line.replace(b"@@", b"\xff\xfeab"), ("doc", text, src)
    if kind == "doc_bom":  # a UTF-8 byte order mark before the record is tolerated
        return b"\xef\xbb\xbf" + _good(text, src, draw(st.booleans())), ("doc", text, src)
    if kind == "blank":
        return draw(st.sampled_from([b"", b" ", b"\t  ", b"\r"])), ("blank",)
    if kind == "malformed":
        good = _good(text, src, True)
        line = draw(st.sampled_from([good[:-1], b"not json", b"[1, 2]", b"null", b"5", b'"a string"',
                                     good + good, good + b" " + good, good[:-1] + b",}", b"{'text': 'x'}"]))
        return line, ("bad", "malformed_json")
    if kind == "invalid_utf8":
        line = draw(st.sampled_from([
            _good("@@", src, True).replace(b"@@", b"ok \xc3\x28 bad"),
            _good("@@", src, True).replace(b"@@", b"lone \\ud800 surrogate"),
            _good(text, "@@", True).replace(b"@@", b"\xff"),
        ]))
        return line, ("bad", "invalid_utf8")
    if kind == "missing_text":
        obj = draw(st.sampled_from([{"meta": {"redpajama_set_name": src}},
                                    {"text": None, "meta": {"redpajama_set_name": src}},
                                    {"Text": text, "meta": {"redpajama_set_name": src}}, {}]))
        return json.dumps(obj).encode(), ("bad", "missing_text")
    if kind == "non_string_text":
        val = draw(st.sampled_from([5, 1.5, True, [text], {"t": text}]))
        return json.dumps({"text": val, "meta": {"redpajama_set_name": src}}).encode(), ("bad", "non_string_text")
    if kind == "missing_source":
        obj = draw(st.sampled_from([{"text": text}, {"text": text, "meta": {}}, {"text": text, "meta": None},
                                    {"text": text, "meta": "web"}, {"text": text, "meta": {"redpajama_set_name": None}}]))
        return json.dumps(obj).encode(), ("bad", "missing_source")
    val = draw(st.sampled_from([3, False, ["web"], {"x": "web"}]))
    return json.dumps({"text": text, "meta": {"redpajama_set_name": val}}).encode(), ("bad", "non_string_source")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(jsonl_line(), min_size=1, max_size=60), trailing=st.booleans(),
       codec=st.sampled_from(["jsonl", "jsonl.zst", "jsonl.gz"]), chunk_bytes=st.integers(1024, 4096),
       cut=st.integers(0, 10_000))
def test_property_bad_records_are_found_whatever_the_chunking(lines, trailing, codec, chunk_bytes, cut):
    data = b"\n".join(raw for raw, _ in lines) + (b"\n" if trailing else b"")
    if not data:
        return
    cuts = [cut] if cut < len(data) else []
    blob = {"jsonl": data, "jsonl.zst": zstd_frames(data, cuts), "jsonl.gz": gzip_members(data, cuts)}[codec]
    want_docs = [(f"c.{codec}:{i}", f"c.{codec}", i, m[2], m[1]) for i, (_, m) in enumerate(lines) if m[0] == "doc"]
    want_skips = Counter(m[1] for _, m in lines if m[0] == "bad")
    n_nonblank = sum(m[0] != "blank" for _, m in lines)
    first_bad = next((i for i, (_, m) in enumerate(lines) if m[0] == "bad"), None)
    with tempfile.TemporaryDirectory() as d:
        p = write(Path(d) / f"c.{codec}", blob)
        for cb in (chunk_bytes, 32 << 20):
            df, report = read_one(p, on_error="skip", chunk_bytes=cb)
            assert as_tuples(df) == want_docs
            assert report.skipped == dict(want_skips)
            assert report.n_read == n_nonblank and report.error is None
            if first_bad is None:
                assert as_tuples(read_one(p, chunk_bytes=cb)[0]) == want_docs
            else:
                with pytest.raises(InputError) as e:
                    read_one(p, chunk_bytes=cb)
                assert (e.value.reason, e.value.line) == (lines[first_bad][1][1], first_bad + 1)


# ---------------------------------------------------------------------------- bad input, one by one

GOOD = [json.dumps({"text": f"document {i} " * (i + 1), "meta": {"redpajama_set_name": "web"}}).encode()
        for i in range(6)]

BAD_LINES = {
    "malformed_json": b'{"text": "unterminated, "meta": {"redpajama_set_name": "web"}}',
    "invalid_utf8": b'{"text": "caf\xe9 latin-1", "meta": {"redpajama_set_name": "web"}}',
    "missing_text": b'{"content": "x", "meta": {"redpajama_set_name": "web"}}',
    "non_string_text": b'{"text": 5, "meta": {"redpajama_set_name": "web"}}',
    "missing_source": b'{"text": "x", "meta": {"title": "no source"}}',
    "non_string_source": b'{"text": "x", "meta": {"redpajama_set_name": 7}}',
}


@pytest.mark.parametrize("ext", [".jsonl", ".jsonl.zst", ".jsonl.gz"])
@pytest.mark.parametrize("reason", list(BAD_LINES))
def test_bad_record_raise_and_skip(tmp_path, reason, ext):
    lines = GOOD[:3] + [BAD_LINES[reason]] + GOOD[3:]
    name = f"bad{ext}"
    p = write(tmp_path / name, encode(b"\n".join(lines) + b"\n", name))
    with pytest.raises(InputError) as e:
        read_one(p)
    msg = str(e.value)
    assert (e.value.reason, e.value.line) == (reason, 4)
    assert str(p) in msg and "line 4" in msg and f"[{reason}]" in msg
    df, report = read_one(p, on_error="skip")
    assert report.skipped == {reason: 1}
    assert (report.n_read, report.n_counted, report.n_skipped) == (7, 6, 1)
    assert df["row"].to_list() == [0, 1, 2, 4, 5, 6]
    assert df["text"].to_list() == [json.loads(x)["text"] for x in GOOD]


@pytest.mark.parametrize("value,reason", [("5", "non_string_text"), ("null", "missing_text"),
                                          ("[\"a\"]", "non_string_text"), ("{\"a\": \"b\"}", "non_string_text")])
def test_non_string_text_values(tmp_path, value, reason):
    bad = b'{"text": %s, "meta": {"redpajama_set_name": "web"}}' % value.encode()
    p = write(tmp_path / "t.jsonl", b"\n".join([GOOD[0], bad, GOOD[1]]) + b"\n")
    with pytest.raises(InputError) as e:
        read_one(p)
    assert (e.value.reason, e.value.line) == (reason, 2)
    _, report = read_one(p, on_error="skip")
    assert report.skipped == {reason: 1} and report.n_counted == 2


@pytest.mark.parametrize("chunk_bytes", [1024, 32 << 20])
def test_null_lines_are_malformed_not_a_crash(tmp_path, chunk_bytes):
    # pyarrow 26's JSON reader segfaults on a block whose first value is `null`. One zstd frame per line
    # and lines of ~1.1 KB make each `null` line start a chunk when chunks are 1 KB.
    good = [json.dumps({"text": f"{i} " + "x" * 1100, "meta": {"redpajama_set_name": "web"}}).encode()
            for i in range(4)]
    lines = [b"null", good[0], b"  null", good[1], b"null", b"null", good[2], b"\xef\xbb\xbfnull", good[3]]
    data = b"\n".join(lines) + b"\n"
    cuts = [data.index(x) for x in good[1:]] + [data.index(b"  null"), data.index(b"\xef\xbb\xbfnull")]
    p = write(tmp_path / "n.jsonl.zst", zstd_frames(data, cuts))
    with pytest.raises(InputError) as e:
        read_one(p, chunk_bytes=chunk_bytes)
    assert (e.value.reason, e.value.line) == ("malformed_json", 1)
    df, report = read_one(p, chunk_bytes=chunk_bytes, on_error="skip")
    assert report.skipped == {"malformed_json": 5}
    assert df["row"].to_list() == [1, 3, 6, 8]


def test_byte_order_mark_is_skipped_whatever_the_chunk(tmp_path):
    lines = [b"\xef\xbb\xbf" + GOOD[0], GOOD[1], b"\xef\xbb\xbf" + GOOD[2]]
    p = write(tmp_path / "bom.jsonl", b"\n".join(lines) + b"\n")
    assert read_one(p)[0]["row"].to_list() == [0, 1, 2]
    p = write(tmp_path / "bom.jsonl", b"\n".join([*lines, b"{broken"]) + b"\n")  # forces the line-by-line path
    df, report = read_one(p, on_error="skip")
    assert df["row"].to_list() == [0, 1, 2] and report.skipped == {"malformed_json": 1}
    assert df["text"].to_list() == [json.loads(x)["text"] for x in GOOD[:3]]


def _parquet(path, **cols):
    pq.write_table(pa.table(cols), path)
    return path


@pytest.mark.parametrize("case,reason", [
    ("null_text", "missing_text"), ("no_text_column", "missing_text"), ("int_text", "non_string_text"),
    ("null_source", "missing_source"), ("int_source", "non_string_source"), ("int_both", "non_string_text"),
])
def test_bad_parquet_records_raise_and_skip(tmp_path, case, reason):
    p = tmp_path / f"{case}.parquet"
    texts, srcs = ["a", "bb", "ccc", "dddd"], ["w", "w", "w", "w"]
    n_bad = 1
    if case == "null_text":
        _parquet(p, text=["a", None, "ccc", "dddd"], src=srcs)
    elif case == "no_text_column":
        _parquet(p, body=texts, src=srcs)
        n_bad = 4
    elif case == "int_text":
        _parquet(p, text=[1, 2, 3, 4], src=srcs)
        n_bad = 4
    elif case == "null_source":
        _parquet(p, text=texts, src=["w", None, "w", "w"])
    elif case == "int_source":
        _parquet(p, text=texts, src=[1, 2, 3, 4])
        n_bad = 4
    else:  # both columns have the wrong type: each row is still skipped once
        _parquet(p, text=[1, 2, 3, 4], src=[1, 2, 3, 4])
        n_bad = 4
    with pytest.raises(InputError) as e:
        read_one(p, source_field="src")
    assert e.value.reason == reason and str(p) in str(e.value) and f"[{reason}]" in str(e.value)
    df, report = read_one(p, source_field="src", on_error="skip")
    assert report.skipped == {reason: n_bad}
    assert (report.n_read, report.n_counted) == (4, 4 - n_bad)
    if n_bad == 1:
        assert df["row"].to_list() == [0, 2, 3]


def _truncated(blob: bytes) -> bytes:
    return blob[: len(blob) * 2 // 3]


def _flipped(blob: bytes) -> bytes:
    b = bytearray(blob)
    mid = len(b) // 2
    for i in range(mid, mid + 32):
        b[i] ^= 0x5A
    return bytes(b)


@pytest.mark.parametrize("case", ["truncated_zst", "corrupt_zst", "truncated_gz", "corrupt_gz"])
def test_broken_compressed_streams(tmp_path, case):
    lines = demo_lines("web/part-000.jsonl.zst")[:3000]
    head = b"\n".join(lines[:1000]) + b"\n"  # first frame / member: must survive the break
    tail = b"\n".join(lines[1000:]) + b"\n"
    if case.endswith("zst"):
        first, second, name = zstd_frames(head), zstd_frames(tail), "x.jsonl.zst"
    else:
        first, second, name = gzip.compress(head), gzip.compress(tail), "x.jsonl.gz"
    second = _truncated(second) if case.startswith("truncated") else _flipped(second)
    p = write(tmp_path / name, first + second)
    df, report = read_one(p, on_error="skip")
    assert report.error == "corrupt_compressed" and report.error_detail
    n = df.height
    assert n >= 1000  # the records before the break are kept, and are right
    assert as_tuples(df)[:1000] == expected_docs([json.loads(x) for x in lines[:1000]], name)
    if case == "corrupt_gz":  # zlib detects this flip only at the member's CRC: what it inflated before is read,
        assert report.skipped  # and its garbage lines are skipped by reason (tests/corpus/test_read_accounting.py)
    else:
        assert report.skipped == {}
        assert as_tuples(df) == expected_docs([json.loads(x) for x in lines[:n]], name)
        assert report.first_lost_row == n
    with pytest.raises(InputError) as e:
        read_one(p)
    if case == "corrupt_gz":  # raise mode stops at the first garbage line
        assert e.value.reason in report.skipped and e.value.line > 1000
        return
    assert e.value.reason == "corrupt_compressed"
    line = report.first_lost_row + 1  # the break comes after the complete lines
    assert e.value.line == line
    assert str(p) in str(e.value) and f"line {line}" in str(e.value) and "--on-error skip" in str(e.value)


def test_single_frame_truncation_keeps_a_correct_prefix(tmp_path):
    lines = demo_lines("web/part-000.jsonl.zst")
    blob = zstd_frames(b"\n".join(lines) + b"\n")
    p = write(tmp_path / "t.jsonl.zst", blob[: len(blob) - 5000])
    for cb in (1024, 32 << 20):
        df, report = read_one(p, on_error="skip", chunk_bytes=cb)
        assert report.error == "corrupt_compressed"
        assert 0 < df.height < len(lines)
        assert as_tuples(df) == expected_docs([json.loads(x) for x in lines[: df.height]], "t.jsonl.zst")


@pytest.mark.parametrize("case", ["corrupt", "truncated", "zero_bytes", "not_parquet"])
def test_broken_parquet(tmp_path, case):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist(list(sample_records())), good, compression="snappy")
    blob = good.read_bytes()
    data = {"corrupt": _flipped(blob), "truncated": _truncated(blob), "zero_bytes": b"",
            "not_parquet": jsonl_bytes(sample_records()[:5])}[case]
    p = write(tmp_path / "bad" / "x.parquet", data)
    with pytest.raises(InputError) as e:
        read_one(p)
    assert e.value.reason == "corrupt_file" and str(p) in str(e.value) and "[corrupt_file]" in str(e.value)
    df, report = read_one(p, on_error="skip")
    assert report.error == "corrupt_file" and report.n_read == report.n_counted == df.height


@pytest.mark.parametrize("name,data", [
    ("zero.jsonl", b""), ("zero.jsonl.zst", b""), ("empty.jsonl.zst", zstd_frames(b"")),
    ("zero.jsonl.gz", b""), ("empty.jsonl.gz", gzip.compress(b"")),
    ("empty.parquet", None),
])
def test_empty_files(tmp_path, name, data):
    p = tmp_path / name
    if data is None:
        pq.write_table(pa.table({"text": pa.array([], pa.string()), "src": pa.array([], pa.string())}), p)
    else:
        write(p, data)
    with pytest.raises(InputError) as e:
        read_one(p, source_field="src")
    assert e.value.reason == "empty_file" and str(p) in str(e.value)
    df, report = read_one(p, source_field="src", on_error="skip")
    assert (report.error, report.n_read, df.height) == ("empty_file", 0, 0)
    # in skip mode an empty file does not stop the others
    write(tmp_path / "ok.jsonl", GOOD[0] + b"\n")
    r = compute_stats([str(tmp_path)], StatsConfig(read=ReadConfig(on_error="skip", source_field="src")), workers=1)
    assert r.files.filter(pl.col("file") == name)["error"].to_list() == ["empty_file"]


def test_only_blank_lines_is_not_an_error(tmp_path):
    df, report = read_one(write(tmp_path / "blank.jsonl", b"\n \n\t\n"))
    assert (df.height, report.n_read, report.error) == (0, 0, None)


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_input_resolution_errors(tmp_path, on_error, demo_dir):
    cfg = ReadConfig(on_error=on_error)
    write(tmp_path / "notes.txt", b"x")
    write(tmp_path / "nocorpus" / "sub" / "README.md", b"x")
    write(tmp_path / "data.csv", b"text\nx\n")
    cases = [
        ([str(tmp_path / "missing.jsonl")], "not_found", "missing.jsonl"),
        ([str(tmp_path / "missing_dir")], "not_found", "missing_dir"),
        ([f"{tmp_path}/*.jsonl.zst"], "not_found", "*.jsonl.zst"),
        ([str(tmp_path / "data.csv")], "unsupported_format", "data.csv"),
        ([str(tmp_path / "nocorpus")], "not_found", "nocorpus"),
        ([str(demo_dir / "web"), str(demo_dir / "code")], "duplicate_input", "part-000.jsonl.zst"),
        ([str(demo_dir / "web" / "part-000.jsonl.zst"), str(demo_dir / "code" / "part-000.jsonl.zst")],
         "duplicate_input", "part-000.jsonl.zst"),
        ([str(demo_dir / "web"), str(demo_dir / "web" / "part-001.jsonl.zst")], "duplicate_input", "part-001"),
        ([str(demo_dir / "web"), str(demo_dir / "web")], "duplicate_input", "web"),
        ([], "no_input", "no input"),
    ]
    for inputs, reason, named in cases:
        with pytest.raises(InputError) as e:
            read_corpus(inputs, cfg)
        assert e.value.reason == reason, inputs
        assert named in str(e.value) and f"[{reason}]" in str(e.value)


def test_empty_text_documents_are_counted(tmp_path):
    recs = [{"text": t, "meta": {"redpajama_set_name": s}}
            for t, s in [("", "a"), ("hello world", "a"), ("", "b"), ("", "a"), ("x" * 100, "b")]]
    p = write(tmp_path / "e.jsonl.zst", zstd_frames(jsonl_bytes(recs)))
    df, report = read_one(p)
    assert df["text"].to_list() == [r["text"] for r in recs] and report.skipped == {}
    r = compute_stats([str(p)], StatsConfig(tokenizer=str(DEMO / "tokenizer.json")), workers=1)
    src = {row["source"]: row for row in r.sources.iter_rows(named=True)}
    assert (src["a"]["n_docs"], src["a"]["n_empty"], src["b"]["n_docs"], src["b"]["n_empty"]) == (3, 2, 2, 1)
    assert r.doc_lengths.filter(pl.col("n_chars") == 0)["n_tokens"].to_list() == [0, 0, 0]
    assert src["a"]["p50_tokens"] == 0


def test_lengths_mode_reads_the_same_documents(tmp_path, demo_dir):
    """`iter_lengths` (character-mode stats) reads and skips exactly what `iter_batches` does, with n_chars =
    the text's length in code points: on the demo corpus (fast path), a parquet copy of part of it, a file
    with bad lines, blank lines and non-ASCII text (the line-by-line path), with constant sources, sources
    from the path and an id field."""
    lines = [json.dumps({"text": "héllo wörld \U0001F600", "meta": {"redpajama_set_name": "web"}}), "", "{bad json",
             json.dumps({"text": 5, "meta": {"redpajama_set_name": "web"}}),
             json.dumps({"text": "ok", "meta": {"redpajama_set_name": "code"}})]
    bad = write(tmp_path / "bad.jsonl", ("\n".join(lines) + "\n").encode())
    pq_path = tmp_path / "part.parquet"
    read_corpus([str(demo_dir)]).head(500).select("text", meta=pl.struct(redpajama_set_name="source")).write_parquet(pq_path)
    configs = [ReadConfig(on_error="skip"), ReadConfig(on_error="skip", source="one"),
               ReadConfig(on_error="skip", source_from_path=True), ReadConfig(on_error="skip", id_field="text")]
    for f in resolve_inputs([str(demo_dir), str(bad), str(pq_path)]):
        for cfg in configs:
            r1, r2 = FileReport(file=f.rel, bytes=f.size), FileReport(file=f.rel, bytes=f.size)
            text = pl.concat(list(iter_batches(f, cfg, r1)))
            got = list(iter_lengths(f, cfg, r2))
            assert all(isinstance(b, Lengths) for b in got)
            assert np.concatenate([b.rows for b in got]).tolist() == text["row"].to_list()
            n_chars = np.concatenate([b.n_chars for b in got])
            assert n_chars.dtype == np.int64 and n_chars.tolist() == text["text"].str.len_chars().to_list()
            assert [s for b in got for s in b.sources.to_pylist()] == text["source"].to_list()
            if cfg.id_field:
                assert [i for b in got for i in b.ids.to_pylist()] == text["doc_id"].to_list()
            else:
                assert all(b.ids is None for b in got)  # the id is file:row
            assert (r1.n_read, r1.n_counted, r1.skipped) == (r2.n_read, r2.n_counted, r2.skipped)
            if f.rel.endswith("bad.jsonl") and cfg.id_field is None:
                assert n_chars.tolist() == [len("héllo wörld \U0001F600"), 2]
                assert r2.skipped == {"malformed_json": 1, "non_string_text": 1}


def test_zstd_one_shot_path_and_its_fallbacks():
    """A sized one-frame file is decoded in one call; other files (frame bigger than the chunk, no declared
    size, several frames) stream; all give the same bytes, and a corrupt one-frame file raises `Corrupt`."""
    import io

    from lcdata.corpus import Corrupt, zstd_pieces

    data = b"\n".join(demo_lines("web/part-000.jsonl.zst")) + b"\n"
    sized = zstd_frames(data)
    cobj = zstandard.ZstdCompressor().compressobj()
    unsized = cobj.compress(data) + cobj.flush()
    assert zstandard.frame_content_size(unsized) == -1
    one = list(zstd_pieces(io.BytesIO(sized), "x"))
    assert len(one) == 1 and one[0] == data  # the one-shot path
    assert b"".join(zstd_pieces(io.BytesIO(sized), "x", max_out=len(data) - 1)) == data  # streams
    assert b"".join(zstd_pieces(io.BytesIO(unsized), "x")) == data
    assert b"".join(zstd_pieces(io.BytesIO(zstd_frames(data, [len(data) // 2])), "x")) == data
    with pytest.raises(Corrupt):
        list(zstd_pieces(io.BytesIO(_flipped(sized)), "x"))
