"""Every byte a command could not read is accounted for (issue 14, item 4).

Real files: the demo corpus (zstd JSONL) truncated, flipped, cut into frames, gzip-recompressed, and Parquet
made from it. For each broken file the reader's report is checked against an *independent* decode (zstandard /
zlib fed growing prefixes of the file, no lcdata code): the documents kept are exactly the complete lines the
decoder gives before the break, ``first_lost_row`` is the line after them, and ``unread_bytes`` is the file
size less the decoded offset (decode.py's definition). Then `lcdata stats`, `build` and `sample` in skip mode
exit 0, put it in their reports and print it as a warning; raise mode stops with a one-line error.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcdata.build import BuildConfig, run_build
from lcdata.cli import main
from lcdata.corpus import FileReport, ReadConfig, iter_batches, iter_lengths, resolve_inputs
from lcdata.errors import InputError
from lcdata.stats import StatsConfig, compute_stats, load_stats, run_stats

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
TOKENIZER = str(DEMO / "tokenizer.json")
WEB = DEMO / "web" / "part-000.jsonl.zst"
SKIP = ReadConfig(on_error="skip")


# ------------------------------------------------------------------------ the independent reference decode


def _decode(data: bytes, codec: str) -> tuple[bytes, int]:
    """(output, frames completed) of ``data`` decoded frame by frame with a fresh decoder; raises on an error,
    stops quietly where ``data`` ends inside a frame."""
    out, frames = [], 0
    while data:
        if codec == "gz":
            data = data.lstrip(b"\0")
            if not data:
                break
            d = zlib.decompressobj(wbits=31)
        else:
            d = zstandard.ZstdDecompressor().decompressobj()
        out.append(d.decompress(data))
        if not d.eof:
            break
        frames += 1
        data = d.unused_data
    return b"".join(out), frames


def _ok(data: bytes, codec: str) -> bool:
    try:
        _decode(data, codec)
    except (zlib.error, zstandard.ZstdError):
        return False
    return True


def reference(blob: bytes, codec: str) -> tuple[list[bytes], int]:
    """(complete lines before the break, decoded offset). The longest prefix of ``blob`` the decoder accepts is
    found by bisection (a longer prefix of a rejected one is rejected too). Decoded offset: gzip, where that
    prefix ends (the first byte zlib rejects; the file end if it only ends early); zstd, the shortest prefix
    that gives the same output and completes the same frames (zstd gives a block's output once it is whole)."""
    lo, hi = 0, len(blob) + 1  # blob[:lo] is accepted, blob[:hi] is not
    if _ok(blob, codec):
        lo = len(blob)
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _ok(blob[:mid], codec) else (lo, mid)
    out, frames = _decode(blob[:lo], codec)
    offset = lo
    if codec == "zst":
        a, b = -1, lo  # state(blob[:a]) differs, state(blob[:b]) is the same
        while b - a > 1:
            mid = (a + b) // 2
            o, f = _decode(blob[:mid], codec)
            a, b = (a, mid) if (len(o), f) == (len(out), frames) else (mid, b)
        offset = b
    return out.split(b"\n")[:-1], offset


def kept_by_reference(lines: list[bytes]) -> list[tuple[int, str]]:
    """(row, text) of the lines that are documents (what the reader keeps), by json.loads."""
    keep = []
    for row, raw in enumerate(lines):
        try:
            obj = json.loads(raw.decode("utf-8", "surrogateescape"))
        except json.JSONDecodeError:
            continue
        src = obj.get("meta") if isinstance(obj, dict) else None
        src = src.get("redpajama_set_name") if isinstance(src, dict) else None
        if isinstance(obj.get("text") if isinstance(obj, dict) else None, str) and isinstance(src, str):
            try:
                obj["text"].encode()
                src.encode()
            except UnicodeEncodeError:
                continue
            keep.append((row, obj["text"]))
    return keep


# ------------------------------------------------------------------------------------------ broken files


def web_text() -> bytes:
    with open(WEB, "rb") as fh:
        return zstandard.ZstdDecompressor().decompress(fh.read())


def flip(blob: bytes, at: float, n: int = 32) -> bytes:
    b = bytearray(blob)
    i = int(len(b) * at)
    for k in range(i, i + n):
        b[k] ^= 0x5A
    return bytes(b)


def zstd_frames(text: bytes, n: int) -> tuple[bytes, list[int]]:
    """``text`` as ``n`` zstd frames (cut at newlines), with the offset where each frame starts."""
    lines = text.split(b"\n")[:-1]
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    frames = [cctx.compress(b"".join(x + b"\n" for x in lines[k * len(lines) // n: (k + 1) * len(lines) // n]))
              for k in range(n)]
    starts = [sum(len(f) for f in frames[:k]) for k in range(n)]
    return b"".join(frames), starts


def broken(case: str) -> tuple[str, bytes]:
    """(file name, bytes) of each broken file."""
    if case == "zst_truncated":
        blob = WEB.read_bytes()
        return "web.jsonl.zst", blob[: len(blob) * 3 // 5]
    if case == "zst_flipped":
        return "web.jsonl.zst", flip(WEB.read_bytes(), 0.5)
    if case == "zst_later_frame":  # three frames, the third corrupt: the first two are kept whole
        blob, starts = zstd_frames(web_text(), 3)
        return "web.jsonl.zst", flip(blob, (starts[2] + (len(blob) - starts[2]) / 2) / len(blob))
    if case == "gz_later_member":  # three members with zero padding between, the third corrupt
        lines = web_text().split(b"\n")[:-1]
        parts = [gzip.compress(b"".join(x + b"\n" for x in lines[k * len(lines) // 3: (k + 1) * len(lines) // 3]),
                               mtime=0) for k in range(3)]
        blob = parts[0] + b"\0" * 100 + parts[1] + b"\0" * 7 + parts[2]
        return "web.jsonl.gz", flip(blob, 1 - len(parts[2]) / 2 / len(blob))
    if case == "gz_truncated":
        blob = gzip.compress(web_text(), mtime=0)
        return "web.jsonl.gz", blob[: len(blob) * 3 // 5]
    if case == "empty":
        return "empty.jsonl", b""
    raise AssertionError(case)


CASES = ["zst_truncated", "zst_flipped", "zst_later_frame", "gz_truncated", "gz_later_member", "empty"]


def read(path: Path, cfg: ReadConfig = SKIP) -> tuple[list[tuple[int, str]], FileReport]:
    (f,) = resolve_inputs([str(path)])
    report = FileReport(file=f.rel, bytes=f.size)
    kept = [(r, t) for b in iter_batches(f, cfg, report) for r, t in zip(b["row"], b["text"])]
    assert report.n_read == report.n_counted + report.n_skipped == report.n_counted + sum(report.skipped.values())
    assert report.n_counted == len(kept)
    lengths = FileReport(file=f.rel, bytes=f.size)  # the character-mode reader reads and loses the same
    assert sum(len(x.rows) for x in iter_lengths(f, cfg, lengths)) == len(kept) and lengths == report
    return kept, report


@pytest.mark.parametrize("reads", ["default", "small"])
@pytest.mark.parametrize("case", CASES)
def test_report_matches_an_independent_decode(tmp_path, monkeypatch, case, reads):
    if reads == "small":  # many read() calls per frame, and files "too large" for the one-shot zstd path
        import lcdata.corpus.decode

        monkeypatch.setattr(lcdata.corpus.decode, "READ_BLOCK", 4096)
        monkeypatch.setattr(lcdata.corpus.decode, "ONE_SHOT_BYTES", 1000)
    name, blob = broken(case)
    p = tmp_path / name
    p.write_bytes(blob)
    kept, r = read(p)
    if case == "empty":
        assert (r.error, r.first_lost_row, r.unread_bytes, kept) == ("empty_file", None, 0, [])
        return
    lines, offset = reference(blob, name.rsplit(".", 1)[1])
    assert r.error == "corrupt_compressed"
    assert kept == kept_by_reference(lines)  # exactly the complete lines decoded before the break
    assert r.n_read == sum(1 for x in lines if x.strip())
    assert r.first_lost_row == len(lines)
    assert r.unread_bytes == len(blob) - offset and 0 <= r.unread_bytes <= len(blob)
    assert f"line {len(lines) + 1}" in r.error_detail and f"{r.unread_bytes:,} of {len(blob):,} bytes" in r.error_detail
    if case.endswith("later_frame") or case.endswith("later_member"):  # the two whole frames before are kept
        assert len(kept) >= 2 * web_text().count(b"\n") // 3 - 1
    if case.startswith("zst"):
        assert r.unread_bytes > 0
    if case == "gz_truncated":  # deflate decodes as it reads: every byte of a cut-off file was decoded
        assert r.unread_bytes == 0
    if case == "gz_later_member":  # zlib sees this flip only at the CRC: the detail says the member is suspect
        assert r.skipped and "checksum failure" in r.error_detail


def test_a_zstd_checksum_failure_is_named(tmp_path):
    blob = bytearray(WEB.read_bytes())
    blob[-1] ^= 1  # the frame's checksum (its last 4 bytes)
    p = tmp_path / "web.jsonl.zst"
    p.write_bytes(bytes(blob))
    kept, r = read(p)
    lines, offset = reference(bytes(blob), "zst")
    assert kept == kept_by_reference(lines) and len(kept) == web_text().count(b"\n")  # every block decoded
    assert (r.unread_bytes, offset) == (4, len(blob) - 4) and "checksum failure" in r.error_detail


@pytest.mark.parametrize("case", CASES)
def test_raise_mode_names_file_line_and_fix(tmp_path, case):
    name, blob = broken(case)
    p = tmp_path / name
    p.write_bytes(blob)
    with pytest.raises(InputError) as e:
        read(p, ReadConfig())
    msg = str(e.value)
    assert str(p) in msg and "--on-error skip" in msg and "\n" not in msg
    if case == "empty":
        assert e.value.reason == "empty_file"
    else:
        lines, _ = reference(blob, name.rsplit(".", 1)[1])
        docs = {row for row, _ in kept_by_reference(lines)}
        bad = [i for i, x in enumerate(lines) if x.strip() and i not in docs]
        if bad:  # zlib inflated garbage before it saw the error (gz_later_member): its first bad line stops it
            assert e.value.reason != "corrupt_compressed" and e.value.line == bad[0] + 1
            return
        assert e.value.reason == "corrupt_compressed" and e.value.line == len(lines) + 1
        assert f"line {len(lines) + 1}" in msg and "bytes unread" in msg


def parquet_blob(tmp_path: Path, rows_per_group: int = 500) -> tuple[bytes, list[dict]]:
    recs = [json.loads(x) for x in web_text().split(b"\n")[:2000]]
    table = pa.table({"text": [r["text"] for r in recs], "src": [r["meta"]["redpajama_set_name"] for r in recs]})
    p = tmp_path / "src.parquet"
    pq.write_table(table, p, row_group_size=rows_per_group, compression="zstd", use_dictionary=False)
    return p.read_bytes(), recs


def test_parquet_with_an_unreadable_footer_is_all_unread(tmp_path):
    blob, _ = parquet_blob(tmp_path)
    p = tmp_path / "c" / "x.parquet"
    p.parent.mkdir()
    p.write_bytes(blob[: len(blob) - 100])
    kept, r = read(p, ReadConfig(on_error="skip", source_field="src"))
    assert (kept, r.error, r.first_lost_row, r.unread_bytes) == ([], "corrupt_file", 0, len(blob) - 100)
    with pytest.raises(InputError) as e:
        read(p, ReadConfig(source_field="src"))
    assert e.value.reason == "corrupt_file" and str(p) in str(e.value) and "--on-error skip" in str(e.value)


def test_parquet_with_a_corrupt_row_group_keeps_the_groups_before_it(tmp_path):
    blob, recs = parquet_blob(tmp_path)
    md = pq.ParquetFile(tmp_path / "src.parquet").metadata
    rg = md.row_group(2)
    start = min(rg.column(j).data_page_offset for j in range(rg.num_columns))
    end = max(rg.column(j).data_page_offset + rg.column(j).total_compressed_size for j in range(rg.num_columns))
    p = tmp_path / "c" / "x.parquet"
    p.parent.mkdir()
    p.write_bytes(flip(blob, (start + (end - start) / 2) / len(blob), 64))
    kept, r = read(p, ReadConfig(on_error="skip", source_field="src"))
    # independently: the row groups pyarrow can still read, one by one
    good = []
    for k in range(md.num_row_groups):
        try:
            good += pq.ParquetFile(p).read_row_group(k).column("text").to_pylist()
        except (OSError, pa.ArrowInvalid):
            break
    assert len(good) == 1000 and kept == list(enumerate(good))
    assert good == [x["text"] for x in recs[:1000]]
    assert (r.error, r.first_lost_row, r.unread_bytes) == ("corrupt_file", 1000, len(blob) - start)


# ------------------------------------------------------------------------------------------ the commands


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One good demo file and every broken file of CASES, in one folder."""
    d = tmp_path_factory.mktemp("acct") / "corpus"
    d.mkdir()
    (d / "good.jsonl.zst").write_bytes((DEMO / "code" / "part-001.jsonl.zst").read_bytes())
    for case in CASES:
        name, blob = broken(case)
        (d / f"{case}-{name}").write_bytes(blob)
    return d


def expected(corpus: Path) -> dict[str, FileReport]:
    return {p.name: read(p)[1] for p in sorted(corpus.iterdir())}


def check_read_report(rr: dict, want: dict[str, FileReport]) -> None:
    assert rr["n_read"] == rr["n_counted"] + sum(rr["skipped"].values())
    assert rr["n_read"] == sum(r.n_read for r in want.values())
    assert rr["n_counted"] == sum(r.n_counted for r in want.values())
    bad = {k: r for k, r in want.items() if r.error}
    assert rr["files_with_errors"] == len(bad) == len(CASES)
    assert rr["unread_bytes"] == sum(e["unread_bytes"] for e in rr["errors"]) == sum(r.unread_bytes for r in bad.values())
    assert {e["file"]: (e["reason"], e["first_lost_row"], e["unread_bytes"], e["detail"]) for e in rr["errors"]} == {
        k: (r.error, r.first_lost_row, r.unread_bytes, r.error_detail) for k, r in bad.items()}


def check_warning(err: str, want: dict[str, FileReport]) -> None:
    assert "WARNING: not everything was read" in err
    for k, r in want.items():
        if r.error:
            assert f"  {k}: {r.error}: {r.error_detail}" in err


def test_stats_reports_every_unread_byte(corpus, tmp_path, capsys):
    want = expected(corpus)
    out = tmp_path / "stats"
    assert main(["stats", str(corpus), "--out", str(out), "--on-error", "skip", "--workers", "1", "--no-figure"]) == 0
    check_warning(capsys.readouterr().err, want)
    files = pl.read_parquet(out / "files.parquet")
    assert files.columns[:7] == ["file", "bytes", "n_read", "n_counted", "n_skipped", "error", "error_detail"]
    for row in files.iter_rows(named=True):
        r = want[row["file"]]
        assert (row["n_read"], row["n_counted"], row["n_skipped"], row["error"], row["first_lost_row"],
                row["unread_bytes"]) == (r.n_read, r.n_counted, r.n_skipped, r.error, r.first_lost_row, r.unread_bytes)
    t = json.loads((out / "stats.json").read_text())["totals"]
    assert t["n_read"] == t["n_counted"] + t["n_skipped"] and t["n_file_errors"] == len(CASES)
    assert t["unread_bytes"] == sum(r.unread_bytes for r in want.values()) > 0
    st = load_stats(str(out))
    check_read_report(st.read_report, want)
    # with a tokenizer (batches, worker processes) the reading loses exactly the same
    tok = compute_stats([str(corpus)], StatsConfig(tokenizer=TOKENIZER, read=SKIP), workers=1)
    assert tok.files.equals(st.files) and tok.skips.equals(st.skips)


def test_a_stats_folder_without_the_new_columns_still_loads(corpus, tmp_path):
    out = tmp_path / "stats"
    run_stats([str(corpus)], str(out), StatsConfig(read=SKIP), workers=1, figure=False)
    pl.read_parquet(out / "files.parquet").drop("first_lost_row", "unread_bytes").write_parquet(out / "files.parquet")
    meta = json.loads((out / "stats.json").read_text())
    meta.pop("outputs")  # as written before stats.json listed its files' checksums
    (out / "stats.json").write_text(json.dumps(meta))
    st = load_stats(str(out))
    assert st.files["unread_bytes"].null_count() == st.files.height  # not known, not 0
    assert st.totals["unread_bytes"] == 0 and st.read_report["files_with_errors"] == len(CASES)


def test_build_manifest_lists_every_unreadable_file(corpus, tmp_path, capsys):
    want = expected(corpus)
    out = tmp_path / "shards"
    assert main(["build", str(corpus), "--tokenizer", TOKENIZER, "--seq-len", "256", "--out", str(out),
                 "--on-error", "skip", "--workers", "1", "--quiet"]) == 0
    check_warning(capsys.readouterr().err, want)
    m = json.loads((out / "manifest.json").read_text())
    check_read_report(m["read_report"], want)
    assert m["read_report"]["files_resumed"] == 0
    docs = pl.read_parquet(out / "documents.parquet")
    for k, r in want.items():  # no document from after a break
        rows = docs.filter(pl.col("file") == k)["row"]
        if r.first_lost_row is not None:
            assert rows.len() == 0 or rows.max() < r.first_lost_row
    # raise mode (the default) refuses the corpus with a one-line error
    assert main(["build", str(corpus), "--tokenizer", TOKENIZER, "--seq-len", "256", "--out", str(tmp_path / "r"),
                 "--workers", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--on-error skip" in err and str(corpus) in err


def test_executor_build_has_the_same_read_report(corpus, tmp_path):
    pytest.importorskip("datatrove")
    from lcdata.scaleout import run_build_distributed

    cfg = BuildConfig(tokenizer=TOKENIZER, seq_len=256, read=SKIP)
    a = run_build([str(corpus)], str(tmp_path / "a"), cfg, workers=1).manifest
    b = run_build_distributed([str(corpus)], str(tmp_path / "b"), cfg, "local", tasks=2, workers=1).manifest
    check_read_report(b["read_report"], expected(corpus))
    run_info = ("elapsed_s", "phase_s", "command", "manifest_sha256")
    assert {k: v for k, v in a.items() if k not in run_info} == {k: v for k, v in b.items() if k not in run_info}


def test_sample_on_the_fly_reports_and_warns(corpus, tmp_path, capsys):
    want = expected(corpus)
    out = tmp_path / "plan"
    assert main(["sample", str(corpus), "--strategy", "natural", "--budget-tokens", "10K", "--out", str(out),
                 "--on-error", "skip", "--workers", "1", "--no-figure", "--quiet"]) == 0
    check_warning(capsys.readouterr().err, want)
    check_read_report(json.loads((out / "plan.json").read_text())["read_report"], want)


# ------------------------------------------------------------------------------------------ property


@pytest.fixture(scope="module")
def whole_files() -> dict[str, tuple[bytes, list[tuple[int, str]]]]:
    """The real demo file as .zst (as shipped) and as .gz, with its documents."""
    text = web_text()
    docs = [(i, json.loads(x)["text"]) for i, x in enumerate(text.split(b"\n")[:-1])]
    return {"zst": (WEB.read_bytes(), docs), "gz": (gzip.compress(text, mtime=0), docs)}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(codec=st.sampled_from(["zst", "gz"]), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_any_truncation_keeps_a_prefix_and_accounts_every_byte(tmp_path, whole_files, codec, cut):
    blob, docs = whole_files[codec]
    t = int(len(blob) * cut)
    p = tmp_path / f"t-{codec}-{t}.jsonl.{codec}"
    p.write_bytes(blob[:t])
    kept, r = read(p)
    assert kept == docs[: len(kept)]  # a prefix of the file's documents
    if t == 0:
        assert (r.error, r.unread_bytes) == ("empty_file", 0)
        return
    lines, offset = reference(blob[:t], codec)
    assert r.error == "corrupt_compressed" and len(kept) == len(lines) == r.first_lost_row
    assert r.bytes == t and t - r.unread_bytes == offset  # the decoded bytes (reference) + unread = the file
