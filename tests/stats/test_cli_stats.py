"""`lcdata stats` end to end: the real command in a subprocess on the demo corpus, plus run_stats to fsspec URLs.

Expected values come from the raw demo records (zstandard + json) and the `tokenizers` library.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import polars as pl
import pytest
import zstandard
from tokenizers import Tokenizer

from lcdata import ReadConfig, StatsConfig, load_stats, run_stats

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
TOK = DEMO / "tokenizer.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def demo_records(pattern: str = "*/*.jsonl.zst") -> list[tuple[str, dict]]:
    out = []
    for p in sorted(DEMO.glob(pattern)):
        with open(p, "rb") as fh:
            data = zstandard.ZstdDecompressor().stream_reader(fh).read()
        rel = p.relative_to(DEMO).as_posix()
        out += [(f"{rel}:{i}", json.loads(line)) for i, line in enumerate(data.decode().splitlines())]
    return out


def lcdata(*args, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LCDATA_DEBUG"}
    return subprocess.run([sys.executable, "-m", "lcdata", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def error_paragraph(stderr: str) -> str:
    """The error message: stderr minus progress lines; it must be a single paragraph, no traceback."""
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith("stats [")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("lcdata stats: error: ")
    return lines[0]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "stats"
    proc = lcdata("stats", "data/demo", "--tokenizer", "data/demo/tokenizer.json", "--out", out)
    return proc, out


def test_stats_end_to_end_on_the_demo_corpus(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    recs = demo_records()
    by_source: dict[str, list] = {}
    for doc_id, r in recs:
        by_source.setdefault(r["meta"]["redpajama_set_name"], []).append((doc_id, r["text"]))

    src = pl.read_parquet(out / "sources.parquet")
    assert {"source", "n_docs", "n_chars", "n_tokens", "token_share"} <= set(src.columns)
    assert src["source"].to_list() == sorted(by_source)
    assert src["n_docs"].to_list() == [len(by_source[s]) for s in sorted(by_source)]
    assert src["n_chars"].to_list() == [sum(len(t) for _, t in by_source[s]) for s in sorted(by_source)]
    assert src["token_share"].sum() == pytest.approx(1.0)
    # README of the demo corpus documents the exact totals of this tokenizer
    assert src["n_tokens"].to_list() == [920_596, 740_049, 851_868, 632_130]

    buckets = pl.read_parquet(out / "buckets.parquet")
    assert {"source", "bucket_min", "bucket_max", "n_docs", "n_tokens"} <= set(buckets.columns)
    assert buckets.group_by("source").agg(pl.col("n_docs", "n_tokens").sum()).sort("source").rows() == \
        src.select("source", "n_docs", "n_tokens").rows()

    docs = pl.read_parquet(out / "doc_lengths.parquet")
    assert docs.height == len(recs) == 9893
    assert docs["doc_id"].to_list() == [d for d, _ in recs]
    tok = Tokenizer.from_file(str(TOK))
    texts = dict((d, r["text"]) for d, r in recs)
    for doc_id, n in docs.select("doc_id", "n_tokens").rows()[::200]:
        assert n == len(tok.encode(texts[doc_id], add_special_tokens=False).ids)

    meta = json.loads((out / "stats.json").read_text())
    assert {"config", "inputs", "fingerprint"} <= set(meta)
    assert meta["config"]["tokenizer"] == "data/demo/tokenizer.json"
    assert [i["rel"] for i in meta["inputs"]] == sorted(p.relative_to(DEMO).as_posix() for p in DEMO.glob("*/*.zst"))
    assert len(meta["fingerprint"]) == 32
    assert meta["totals"]["n_docs"] == 9893 and meta["totals"]["n_skipped"] == 0

    assert (out / "length_distribution.png").read_bytes()[:8] == PNG_MAGIC
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]  # atomic writes leave no temp files

    # the table on stdout
    table = proc.stdout
    for s in by_source:
        assert any(line.startswith(s) for line in table.splitlines())
    assert "9,893" in table and "total" in table and "3,144,643" in table and "p90" in table


def test_stats_folder_loads_back(demo_run):
    _, out = demo_run
    r = load_stats(str(out), with_doc_lengths=True)
    assert r.sources.equals(pl.read_parquet(out / "sources.parquet"))
    assert r.buckets.equals(pl.read_parquet(out / "buckets.parquet"))
    assert r.doc_lengths.equals(pl.read_parquet(out / "doc_lengths.parquet"))
    assert r.fingerprint == json.loads((out / "stats.json").read_text())["fingerprint"]


def test_bad_input_fails_with_one_message(tmp_path):
    good = json.dumps({"text": "fine", "meta": {"redpajama_set_name": "web"}})
    bad = tmp_path / "corpus" / "web" / "part-000.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text(f"{good}\n{good}\n{{\"text\": \"broken\"\n{good}\n")
    for name in ("part-001.jsonl", "part-002.jsonl"):  # several files: the error comes back from a worker
        (bad.parent / name).write_text(f"{good}\n")
    proc = lcdata("stats", tmp_path / "corpus", "--out", tmp_path / "out", "--workers", "2")
    assert proc.returncode == 2
    msg = error_paragraph(proc.stderr)
    assert str(bad) in msg and "line 3" in msg and "[malformed_json]" in msg and "--on-error skip" in msg
    assert not (tmp_path / "out" / "stats.json").exists()
    assert not [p.name for p in (tmp_path / "out").glob("*")]  # no half-written doc_lengths or temp files

    proc = lcdata("stats", tmp_path / "nowhere", "--out", tmp_path / "out2")
    assert proc.returncode == 2 and "nowhere" in error_paragraph(proc.stderr)

    proc = lcdata("stats", tmp_path / "corpus", "--out", tmp_path / "out3", "--tokenizer", DEMO / "README.md")
    assert proc.returncode == 2 and "README.md" in error_paragraph(proc.stderr)

    proc = lcdata("stats", tmp_path / "corpus", "--out", tmp_path / "out4", "--buckets", "0,4Ki,1Ki")
    assert proc.returncode == 2 and "buckets" in error_paragraph(proc.stderr)


def test_on_error_skip_prints_the_skip_counts(tmp_path):
    good = json.dumps({"text": "fine text", "meta": {"redpajama_set_name": "web"}})
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.jsonl").write_text("\n".join([good, "{oops", good, '{"text": 5}', "{also bad", good]) + "\n")
    (corpus / "b.jsonl").write_text("\n".join([good, '{"meta": {"redpajama_set_name": "web"}}']) + "\n")
    blob = zstandard.ZstdCompressor().compress(((good + "\n") * 500).encode())
    (corpus / "c.jsonl.zst").write_bytes(blob[: len(blob) // 2])
    proc = lcdata("stats", corpus, "--out", tmp_path / "out", "--on-error", "skip", "--workers", "1", "--no-figure")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: not everything was read" in proc.stderr and "skipped by reason:" in proc.stderr
    assert "malformed_json: 2" in proc.stderr
    assert "non_string_text: 1" in proc.stderr and "missing_text: 1" in proc.stderr
    assert "unreadable files" in proc.stderr and "  c.jsonl.zst: corrupt_compressed" in proc.stderr
    skips = pl.read_parquet(tmp_path / "out" / "skips.parquet")
    assert sorted(skips.rows()) == [("a.jsonl", "malformed_json", 2), ("a.jsonl", "non_string_text", 1),
                                    ("b.jsonl", "missing_text", 1)]
    files = pl.read_parquet(tmp_path / "out" / "files.parquet")
    assert (files["n_read"] == files["n_counted"] + files["n_skipped"]).all()
    assert pl.read_parquet(tmp_path / "out" / "sources.parquet")["n_docs"].to_list() == [4 + files["n_counted"][2]]


def test_source_and_chars_per_token_flags(tmp_path):
    proc = lcdata("stats", "data/demo/[cd]o*/part-00[01].jsonl.zst", "--source", "everything",
                  "--chars-per-token", "2.0", "--out", tmp_path / "out", "--quiet", "--no-figure", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "out" / "length_distribution.png").exists()
    recs = demo_records("[cd]o*/part-00[01].jsonl.zst")
    assert {r["meta"]["redpajama_set_name"] for _, r in recs} == {"code", "docs"}
    src = pl.read_parquet(tmp_path / "out" / "sources.parquet")
    assert src.select("source", "n_docs").rows() == [("everything", len(recs))]
    docs = pl.read_parquet(tmp_path / "out" / "doc_lengths.parquet")
    want = sorted(math.ceil(len(r["text"]) / 2.0) for _, r in recs)
    assert sorted(docs["n_tokens"].to_list()) == want
    assert src["n_tokens"][0] == sum(want)
    meta = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert meta["config"]["chars_per_token"] == 2.0 and meta["config"]["read"]["source"] == "everything"


def test_engine_flag(tmp_path):
    """`--engine tiktoken` and `--engine hf` count the same tokens; stats.json records which ran. An engine
    without a tokenizer is refused (there is nothing for it to run)."""
    pytest.importorskip("tiktoken", reason="the tiktoken engine needs pip install 'lcdata[fast]'")
    frames = {}
    for e in ("hf", "tiktoken"):
        out = tmp_path / e
        proc = lcdata("stats", "data/demo/books", "--tokenizer", TOK, "--engine", e, "--out", out, "--quiet",
                      "--no-figure", "--workers", "1")
        assert proc.returncode == 0, proc.stderr
        assert json.loads((out / "stats.json").read_text())["engine"]["name"] == e
        frames[e] = {n: pl.read_parquet(out / f"{n}.parquet") for n in ("sources", "doc_lengths")}
    for n in ("sources", "doc_lengths"):
        assert frames["hf"][n].equals(frames["tiktoken"][n]), n
    proc = lcdata("stats", "data/demo/books", "--engine", "hf", "--out", tmp_path / "none", "--quiet")
    assert proc.returncode == 2
    assert "engine='hf' needs a tokenizer" in error_paragraph(proc.stderr)


def test_buckets_and_field_flags(tmp_path):
    corpus = tmp_path / "corpus"
    for name, n in (("alpha", 30), ("beta", 12)):
        (corpus / name).mkdir(parents=True)
        lines = [json.dumps({"body": {"txt": "word " * (37 * i)}}) for i in range(n)]
        (corpus / name / "x.jsonl").write_text("\n".join(lines) + "\n")
    proc = lcdata("stats", corpus, "--text-field", "body.txt", "--source-from-path", "--buckets", "0,64,1K",
                  "--out", tmp_path / "out", "--workers", "1", "--no-figure")
    assert proc.returncode == 0, proc.stderr
    b = pl.read_parquet(tmp_path / "out" / "buckets.parquet").sort("source", "bucket_min")
    assert b.select("source", "bucket_min", "bucket_max").rows() == [
        (s, lo, hi) for s in ("alpha", "beta") for lo, hi in ((0, 64), (64, 1024), (1024, None))]
    for s, n in (("alpha", 30), ("beta", 12)):
        est = [math.ceil(len("word " * (37 * i)) / 3.68) for i in range(n)]
        got = b.filter(pl.col("source") == s)["n_docs"].to_list()
        assert got == [sum(e < 64 for e in est), sum(64 <= e < 1024 for e in est), sum(e >= 1024 for e in est)]


def test_run_stats_to_a_memory_url():
    base = f"memory://lcdata-test-{uuid.uuid4().hex}/stats"
    fs = fsspec.filesystem("memory")
    inputs = [str(DEMO / "web" / "part-000.jsonl.zst")]
    try:
        r = run_stats(inputs, base, StatsConfig(tokenizer=str(TOK), read=ReadConfig(source="web")), workers=1)
        names = {p.rsplit("/", 1)[-1] for p in fs.ls(base.removeprefix("memory://"), detail=False)}
        assert {"sources.parquet", "buckets.parquet", "histogram.parquet", "doc_lengths.parquet", "stats.json",
                "length_distribution.png", "files.parquet", "skips.parquet", ".lcdata.json"} == names  # marker: no lock
        with fsspec.open(f"{base}/sources.parquet", "rb") as fh:
            assert pl.read_parquet(fh).equals(r.sources)
        with fsspec.open(f"{base}/doc_lengths.parquet", "rb") as fh:
            docs = pl.read_parquet(fh)
        recs = demo_records("web/part-000.jsonl.zst")
        assert docs["doc_id"].to_list() == [d.removeprefix("web/") for d, _ in recs]
        tok = Tokenizer.from_file(str(TOK))
        assert docs["n_tokens"].to_list()[:300] == [
            len(tok.encode(rec["text"], add_special_tokens=False).ids) for _, rec in recs[:300]]
        with fsspec.open(f"{base}/length_distribution.png", "rb") as fh:
            assert fh.read(8) == PNG_MAGIC
        back = load_stats(base, with_doc_lengths=True)
        assert back.sources.equals(r.sources) and back.doc_lengths.equals(docs)
        assert back.fingerprint == r.fingerprint and back.config == r.config
    finally:
        if fs.exists(base.removeprefix("memory://").rsplit("/", 1)[0]):
            fs.rm(base.removeprefix("memory://").rsplit("/", 1)[0], recursive=True)


def test_program_writes_what_the_function_writes(tmp_path):
    """The installed program (`run`: GC paused during imports and frozen at exit, process tuning) writes the
    same stats folder, byte for byte, as `main` called in this process."""
    from lcdata.cli import main

    proc = lcdata("stats", "data/demo", "--out", tmp_path / "program", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert main(["stats", "data/demo", "--out", str(tmp_path / "function"), "--quiet"]) == 0
    for name in ("sources", "buckets", "histogram", "files", "skips", "doc_lengths"):
        assert (tmp_path / "program" / f"{name}.parquet").read_bytes() == (tmp_path / "function" / f"{name}.parquet").read_bytes(), name
    png = "length_distribution.png"
    assert (tmp_path / "program" / png).read_bytes() == (tmp_path / "function" / png).read_bytes()


@pytest.mark.parametrize("preset", [None, "3"])
def test_process_tuning_keeps_an_explicit_setting(preset):
    """`_tune_process` sets OPENBLAS_NUM_THREADS=1 only when the user did not set it."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset:
        env["OPENBLAS_NUM_THREADS"] = preset
    code = "import os; from lcdata.cli import _tune_process; _tune_process(); print(os.environ['OPENBLAS_NUM_THREADS'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == (preset or "1")


@pytest.mark.parametrize("preset, tuned", [({}, True), ({"MALLOC_ARENA_MAX": "2"}, False),
                                           ({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}, False)])
def test_process_tuning_leaves_an_explicit_malloc_setting(preset, tuned):
    """glibc's malloc is tuned (mallopt M_MMAP_THRESHOLD, M_TRIM_THRESHOLD) unless the user configured it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"} | preset
    code = ("import ctypes, sys\n"
            "calls = []\n"
            "real = ctypes.CDLL(None)\n"
            "class Libc:\n"
            "    def mallopt(self, p, v):\n"
            "        calls.append((p, v)); return real.mallopt(p, v)\n"
            "ctypes.CDLL = lambda name: Libc()\n"
            "from lcdata.cli import _tune_process; _tune_process(); print(calls)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    want = [(-3, 32 << 20), (-1, 1 << 30)] if tuned and sys.platform == "linux" else []
    assert out.strip() == str(want)


def test_program_settings_only_for_the_data_commands():
    """`run` of a command outside COMMAND_MODULES (here --version; the training commands alike) is `main`:
    no process settings, the GC untouched."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    code = ("import gc, os, contextlib, io\n"
            "from lcdata.cli import run\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            "        run(['--version'])\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(os.environ.get('OPENBLAS_NUM_THREADS'), gc.isenabled(), gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "True", "0"]
