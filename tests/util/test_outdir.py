"""Output folders (`lcdata.util.outdir`): nothing a command did not write is ever deleted or overwritten, two commands
never write one folder at once, readers refuse incomplete or mixed folders, and a changed input is seen.

Each test runs the real commands (`lcdata.cli.main`, or a subprocess where a second process is the point) on a
small real corpus cut from the demo corpus, with the demo tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zstandard

from lcdata.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
TOK = DEMO / "tokenizer.json"


def tree(d: Path) -> dict[str, str]:
    """Every file under ``d`` with its SHA-256."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def run(*args) -> int:
    return main([str(a) for a in args])


def err(capsys) -> str:
    e = capsys.readouterr().err
    assert "Traceback" not in e
    return e


@pytest.fixture()
def proj(tmp_path) -> Path:
    """A user's project folder: a corpus (two sources, 60 documents) and a tokenizer beside it."""
    for src in ("web", "code"):
        raw = zstandard.ZstdDecompressor().decompress((DEMO / src / "part-000.jsonl.zst").read_bytes())
        lines = [ln for ln in raw.decode().splitlines() if len(ln) < 6000][:30]
        (tmp_path / "corpus" / src).mkdir(parents=True)
        (tmp_path / "corpus" / src / "part-000.jsonl").write_text("\n".join(lines) + "\n")
    shutil.copy(TOK, tmp_path / "tokenizer.json")
    return tmp_path


def build_args(proj: Path, out, *more) -> list:
    return ["build", proj / "corpus", "--source-from-path", "--tokenizer", proj / "tokenizer.json", "--seq-len", 512,
            "--workers", 1, "--quiet", "--out", out, *more]


# ------------------------------------------------------------------------------- nothing is ever lost


@pytest.mark.parametrize("command", ["build", "stats", "sample"])
def test_overwrite_never_deletes_inputs_or_the_tokenizer(proj, capsys, command):
    before = tree(proj)
    args = {"build": build_args(proj, proj, "--overwrite"),
            "stats": ["stats", proj / "corpus", "--source-from-path", "--out", proj, "--overwrite", "--quiet"],
            "sample": ["sample", proj / "corpus", "--source-from-path", "--strategy", "natural", "--budget-tokens",
                       "10K", "--out", proj, "--overwrite", "--quiet"]}[command]
    assert run(*args) == 2
    e = err(capsys)
    assert "an input" in e or "the tokenizer" in e, e
    assert tree(proj) == before  # not a byte written or removed
    # the folder *inside* the corpus folder: the next run would read the outputs as corpus
    inside = proj / "corpus" / "out"
    args = [inside if a == proj else a for a in args]
    assert run(*args) == 2 and "inside the input folder" in err(capsys)
    assert not inside.exists() and tree(proj) == before


def test_overwrite_only_replaces_a_folder_of_the_same_command(proj, tmp_path, capsys):
    out = tmp_path / "shards"
    assert run(*build_args(proj, out)) == 0
    first = tree(out)
    # a second build without a flag is refused, the folder untouched
    assert run(*build_args(proj, out)) == 2 and "--resume or --overwrite" in err(capsys)
    # stats may not overwrite a build folder
    assert run("stats", proj / "corpus", "--source-from-path", "--out", out, "--overwrite", "--quiet") == 2
    assert "a lcdata build folder" in err(capsys)
    # a file the user put into the shard folder: --overwrite refuses to delete it
    (out / "notes.txt").write_text("mine")
    assert run(*build_args(proj, out, "--overwrite", "--seed", 3)) == 2
    assert "notes.txt" in err(capsys)
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert tree(out) == first
    # now --overwrite replaces it
    assert run(*build_args(proj, out, "--overwrite", "--seed", 3)) == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 3
    # a folder of unrelated files is never touched, whatever the flags
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("years of work")
    for flag in ("--overwrite", "--resume"):
        assert run(*build_args(proj, other, flag)) == 2 and "lcdata did not write" in err(capsys)
    assert sorted(p.name for p in other.iterdir()) == ["thesis.tex"]  # no marker, no lock file either


def test_out_naming_a_file_and_export_into_its_input(proj, tmp_path, capsys):
    f = tmp_path / "a-file"
    f.write_text("x")
    assert run("stats", proj / "corpus", "--source-from-path", "--out", f) == 2
    assert "is a file, not a folder" in err(capsys) and f.read_text() == "x"
    out = tmp_path / "shards"
    assert run(*build_args(proj, out)) == 0
    before = tree(out)
    for target in (out, out / "export", tmp_path):
        assert run("export", out, "--format", "megatron", "--out", target) == 2
        assert "the input folder" in err(capsys)
    assert tree(out) == before


def test_stats_and_sample_refuse_non_empty_folders_and_overwrite_their_own(proj, tmp_path, capsys):
    st = tmp_path / "stats"
    assert run("stats", proj / "corpus", "--source-from-path", "--out", st, "--quiet") == 0
    assert run("stats", proj / "corpus", "--source-from-path", "--out", st, "--quiet", "--no-doc-lengths") == 2
    assert "--overwrite" in err(capsys)
    assert run("stats", proj / "corpus", "--source-from-path", "--out", st, "--quiet", "--no-doc-lengths",
               "--overwrite") == 0
    assert not (st / "doc_lengths.parquet").exists()  # the old run's file is gone, not mixed in
    plan = tmp_path / "plan"
    args = ["sample", proj / "corpus", "--source-from-path", "--strategy", "natural", "--budget-tokens", "10K",
            "--out", plan, "--quiet"]
    assert run(*args) == 0
    assert run(*args) == 2 and "--overwrite" in err(capsys)
    assert run(*args, "--overwrite", "--seed", 1) == 0


# ------------------------------------------------------------------------------- incomplete or mixed folders


def test_readers_refuse_incomplete_and_mixed_folders(proj, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    corpus = ["--source-from-path", "--quiet"]
    assert run("stats", proj / "corpus", *corpus, "--out", a) == 0
    # b: the same corpus, one source only (other lengths and sources)
    assert run("stats", proj / "corpus" / "web", "--source", "web", "--quiet", "--out", b) == 0
    sample = ["sample", "--strategy", "natural", "--budget-tokens", "10K", "--quiet"]
    # mixed: a's doc_lengths replaced by b's
    shutil.copy(b / "doc_lengths.parquet", a / "doc_lengths.parquet")
    assert run(*sample, "--stats", a, "--out", tmp_path / "p1") == 2
    assert "doc_lengths.parquet" in err(capsys) and not (tmp_path / "p1").exists()
    # incomplete: stats.json (written last) missing
    (b / "stats.json").unlink()
    assert run(*sample, "--stats", b, "--out", tmp_path / "p2") == 2 and "no stats.json" in err(capsys)
    # a plan whose plan.parquet was swapped is refused by build
    assert run("stats", proj / "corpus", *corpus, "--out", tmp_path / "s3") == 0
    for seed, name in ((0, "p3"), (1, "p4")):
        assert run(*sample, "--stats", tmp_path / "s3", "--seed", seed, "--strategy", "per-source",
                   "--out", tmp_path / name) == 0
    shutil.copy(tmp_path / "p4" / "plan.parquet", tmp_path / "p3" / "plan.parquet")
    assert run(*build_args(proj, tmp_path / "sh", "--plan", tmp_path / "p3")) == 2
    assert "plan.parquet" in err(capsys) and not (tmp_path / "sh").exists()


# ------------------------------------------------------------------------------- stale inputs


def test_a_same_size_edit_of_an_input_is_seen(proj, tmp_path, capsys):
    st, plan, out = tmp_path / "stats", tmp_path / "plan", tmp_path / "shards"
    assert run("stats", proj / "corpus", "--source-from-path", "--quiet", "--tokenizer", TOK, "--out", st) == 0
    assert run("sample", proj / "corpus", "--stats", st, "--strategy", "natural", "--budget-tokens", "10K",
               "--quiet", "--out", plan) == 0
    f = proj / "corpus" / "web" / "part-000.jsonl"
    text = f.read_text()
    i = text.index('"text": "') + 9
    f.write_text(text[:i] + ("X" if text[i] != "X" else "Y") + text[i + 1:])  # one character, same size
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert run("sample", proj / "corpus", "--stats", st, "--strategy", "natural", "--budget-tokens", "10K",
               "--quiet", "--out", tmp_path / "plan2") == 2
    assert "modification times" in err(capsys)
    assert run(*build_args(proj, out, "--plan", plan)) == 2 and "other inputs" in err(capsys)


def test_resume_refuses_an_edited_input(proj, tmp_path, capsys):
    out = tmp_path / "shards"
    assert run(*build_args(proj, out)) == 0
    (out / "manifest.json").unlink()  # as if interrupted before the end
    f = proj / "corpus" / "code" / "part-000.jsonl"
    os.utime(f, ns=(time.time_ns(), f.stat().st_mtime_ns + 10**9))
    assert run(*build_args(proj, out, "--resume")) == 2 and "modification times" in err(capsys)


# ------------------------------------------------------------------------------- checks before anything is written


@pytest.mark.parametrize("bad", [["build", "--seed", "-1"], ["build", "--workers", "-1"],
                                 ["sample", "--buckets", "5,3,1"], ["stats", "--buckets", "5,3,1"],
                                 ["sample", "--seed", "-2"], ["stats", "--workers", "-3"]])
def test_bad_options_are_refused_before_anything_is_written(proj, tmp_path, capsys, bad):
    out = tmp_path / "out"
    command, *flags = bad
    args = {"build": build_args(proj, out),
            "stats": ["stats", proj / "corpus", "--source-from-path", "--quiet", "--out", out],
            "sample": ["sample", proj / "corpus", "--source-from-path", "--strategy", "natural", "--budget-tokens",
                       "10K", "--quiet", "--out", out]}[command]
    assert run(*args, *flags) == 2
    e = err(capsys)
    assert e.startswith(f"lcdata {command}: error:") and ("seed" in e or "workers" in e or "buckets" in e), e
    assert not out.exists()


def test_seq_len_beyond_the_corpus_leaves_no_folder(proj, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(*[a if a != 512 else 10**8 for a in build_args(proj, out)]) == 2
    assert "less than one sequence" in err(capsys) and not out.exists()


# ------------------------------------------------------------------------------- two commands at once


def test_a_second_command_on_the_same_folder_is_refused_and_a_killed_ones_lock_taken_over(proj, tmp_path):
    out = tmp_path / "stats"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom lcdata.util.outdir import claim_out\n"
         "with claim_out(sys.argv[1], 'stats', resume_flag=None):\n    print('held', flush=True)\n"
         "    time.sleep(600)\n", str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        p = subprocess.run([sys.executable, "-m", "lcdata", "stats", str(proj / "corpus"), "--source-from-path",
                            "--quiet", "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert "being written by another lcdata command" in p.stderr and f"pid {holder.pid}" in p.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder's lock file is still there, but its lock died with it: taken over
    assert (out / ".lcdata.lock").exists()
    p = subprocess.run([sys.executable, "-m", "lcdata", "stats", str(proj / "corpus"), "--source-from-path",
                        "--quiet", "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert (out / "stats.json").exists()


def test_resume_redoes_a_spill_altered_since_it_was_written(proj, tmp_path):
    from lcdata.build import BuildConfig, run_build

    cfg = BuildConfig(tokenizer=str(proj / "tokenizer.json"), seq_len=512)
    inputs = [str(proj / "corpus")]
    ref = tmp_path / "ref"
    run_build(inputs, str(ref), cfg, workers=1)
    out = tmp_path / "out"
    run_build(inputs, str(out), cfg, workers=1, keep_work=True)
    for p in out.glob("shard-*"):  # interrupted after phase 1: spills done, no shard written
        p.unlink()
    (out / "manifest.json").unlink()
    for p in (out / "_work").glob("shard-*"):
        p.unlink()
    spill = out / "_work" / "tok-00000.bin"
    data = bytearray(spill.read_bytes())
    data[10] ^= 0xFF  # same size, other content
    spill.write_bytes(bytes(data))
    r = run_build(inputs, str(out), cfg, workers=1, resume=True)
    assert r.manifest["read_report"]["files_resumed"] == 1  # the intact spill was reused, the altered one redone
    got, want = tree(out), tree(ref)
    got.pop("manifest.json"), want.pop("manifest.json")
    assert got == want


def test_seq_len_beyond_a_plan_is_refused_before_tokenizing(proj, tmp_path, capsys):
    st, plan, out = tmp_path / "stats", tmp_path / "plan", tmp_path / "out"
    assert run("stats", proj / "corpus", "--source-from-path", "--quiet", "--tokenizer", proj / "tokenizer.json",
               "--out", st) == 0
    assert run("sample", proj / "corpus", "--stats", st, "--strategy", "natural", "--budget-tokens", "5K",
               "--quiet", "--out", plan) == 0
    planned = json.loads((plan / "plan.json").read_text())["totals"]["tokens"]
    args = [a if a != 512 else planned + 1000 for a in build_args(proj, out, "--plan", plan)]
    assert run(*args) == 2
    e = err(capsys)
    assert "less than one sequence" in e and "tokenize" not in e and not out.exists()


def test_a_work_folder_the_caller_named_keeps_everything_but_the_builds_files(proj, tmp_path):
    from lcdata.build import BuildConfig, run_build

    work = tmp_path / "scratch"
    work.mkdir()
    (work / "mine.txt").write_text("keep")
    run_build([str(proj / "corpus")], str(tmp_path / "out"), BuildConfig(tokenizer=str(TOK), seq_len=512), workers=1,
              work_dir=str(work))
    assert sorted(p.name for p in work.iterdir()) == ["mine.txt"]  # the spills and markers gone, the rest kept
    run_build([str(proj / "corpus")], str(tmp_path / "out2"), BuildConfig(tokenizer=str(TOK), seq_len=512), workers=1)
    assert not (tmp_path / "out2" / "_work").exists()  # lcdata's own work folder: removed whole
