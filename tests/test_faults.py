"""Fault injection on real data, as real subprocesses: what a crash, an out-of-memory kill or a full disk
leaves behind, and that the next run repairs it.

- kill -9 at the named points of `lcdata build` (`lcdata.util.faults`: ``LCDATA_FAULT=<point>[@N]``), then
  ``--resume``: every output file has the SHA-256 of an uninterrupted build's (the manifest's too, but for
  its timing, command line and ``files_resumed``).
- kill -9 of `lcdata train` after a step's log line (twice: between checkpoints, and at a checkpoint step
  before its checkpoint), then ``--resume``: the same losses in log.jsonl and the same final weights, bitwise.
- A build worker process killed (as by the out-of-memory killer): a one-line error naming the file it was
  tokenizing, not a BrokenProcessPool traceback; ``--resume`` then gives the uninterrupted bytes.
- EFBIG (``RLIMIT_FSIZE`` in the child, SIGXFSZ ignored, so a write past the limit fails as on a full disk)
  in each kind of writer (a phase-1 spill, a shard, documents.parquet, the streamed doc_lengths.parquet of
  `stats`): exit code 2, a one-line error naming the file, no ``*.tmp-*`` file anywhere under --out, and
  the run with the limit lifted completes with the bytes of a clean run.
- A read-only --out and an --out that is a file: a one-line error, nothing written.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "data" / "demo" / "tokenizer.json"
SLICE = ("web/part-000.jsonl.zst", "books/part-002.jsonl.zst", "code/part-001.jsonl.zst")
SMALL = ["--seq-len", 2048, "--packing", "best-fit", "--shard-size", 8192]  # 94 shards of 16 KB
ONE_SHARD = ["--seq-len", 2048, "--shard-size", 1 << 20]  # one 2 MB shard, larger than every spill (<= 660 KB)
VOLATILE = ("elapsed_s", "phase_s", "command", "manifest_sha256")


def run(module: str, *args, fault: str | None = None, fsize: int | None = None, timeout: int = 300):
    """``python -m module args`` in a child; ``fault`` sets LCDATA_FAULT, ``fsize`` its RLIMIT_FSIZE (bytes)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LCDATA_DEBUG", "LCDATA_FAULT")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **({"LCDATA_FAULT": fault} if fault else {}))

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer: we want EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit if fsize else None)


def build(corpus: Path, out: Path, *extra, **kw) -> subprocess.CompletedProcess:
    return run("lcdata", "build", corpus, "--tokenizer", TOKENIZER, "--out", out, "--quiet", *extra, **kw)


def assert_one_line_error(p: subprocess.CompletedProcess, command: str, *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lcdata {command}: error: "), p.stderr
    for n in needles:
        assert n in lines[0], (n, p.stderr)


def temp_files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*.tmp-*"))


def digests(d: Path, volatile=VOLATILE) -> dict[str, str]:
    """SHA-256 of every file under ``d``; the manifest / stats.json hashed without its run-specific keys."""
    out = {}
    for p in sorted(d.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.name in ("manifest.json", "stats.json"):
            meta = json.loads(data)
            for k in volatile:
                meta.pop(k, None)
            meta.get("read_report", {}).pop("files_resumed", None)
            data = json.dumps(meta, sort_keys=True).encode()
        out[p.relative_to(d).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, demo_dir) -> Path:
    d = tmp_path_factory.mktemp("faults") / "corpus"
    for rel in SLICE:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_dir / rel, d / rel)
    return d


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory) -> dict[str, dict[str, str]]:
    """The uninterrupted builds' digests, by configuration."""
    root = tmp_path_factory.mktemp("clean")
    res = {}
    for name, args in (("small", SMALL), ("one_shard", ONE_SHARD)):
        p = build(corpus, root / name, *args, "--workers", 1)
        assert p.returncode == 0, p.stderr
        res[name] = digests(root / name)
    assert len([k for k in res["small"] if k.endswith(".bin")]) == 94
    return res


# ------------------------------------------------------------------------------------------ kill -9


@pytest.mark.parametrize("point", [
    "build.tokenize:web/part-000.jsonl.zst",  # phase 1, halfway through the last of the 3 files
    "build.spill@1",  # phase 1, right after the first file's spill was complete
    "build.shard@3",  # phase 2, after 3 shards
    "build.manifest",  # every shard and documents.parquet written, the manifest not yet
])
def test_build_killed_at_a_named_point_resumes_to_the_same_bytes(corpus, clean, tmp_path, point):
    out = tmp_path / "out"
    p = build(corpus, out, *SMALL, "--workers", 1, fault=point)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr)
    assert (out / "build.json").exists() and not (out / "manifest.json").exists()
    p = build(corpus, out, *SMALL, "--workers", 1, "--resume")
    assert p.returncode == 0, p.stderr
    assert digests(out) == clean["small"]
    m = json.loads((out / "manifest.json").read_text())
    assert m["read_report"]["files_resumed"] == {"build.tokenize:web/part-000.jsonl.zst": 2, "build.spill@1": 1}.get(
        point, 3)  # finished spills are reused, not redone


def test_killed_build_worker_is_named_and_resume_gives_the_same_bytes(corpus, clean, tmp_path):
    """workers=2: the worker tokenizing code/part-001 is SIGKILLed halfway through it (as the out-of-memory
    killer would); the other worker is stopped by the pool and is not blamed."""
    out = tmp_path / "out"
    p = build(corpus, out, *SMALL, "--workers", 2, fault="build.tokenize:code/part-001.jsonl.zst")
    assert_one_line_error(p, "build", "a worker process was killed by SIGKILL", f"{corpus}/code/part-001.jsonl.zst",
                          "--resume")
    assert "BrokenProcessPool" not in p.stderr and "books" not in p.stderr and "web" not in p.stderr
    p = build(corpus, out, *SMALL, "--workers", 2, "--resume")
    assert p.returncode == 0, p.stderr
    assert digests(out) == clean["small"] and not temp_files(out)


def test_train_killed_at_a_step_resumes_to_the_same_losses_and_weights(tmp_path, train_shards):
    """6 steps, a checkpoint every 2. Killed after step 3 (resumes from 2), then, resumed, killed after step 4
    was logged but before its checkpoint (resumes from 2 again: the log's steps 3-4 are dropped and redone)."""
    args = ["train", "--shards", train_shards, "--model", "debug", "--lr", "1e-2", "--batch-tokens", 512,
            "--micro-batch", 2, "--tokens", 512 * 6, "--save-every", 2, "--no-act-ckpt", "--quiet", "--out"]
    ref = run("lcdata_train", *args, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    p = run("lcdata_train", *args, out, fault="train.step@3")
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    p = run("lcdata_train", *args, out, "--resume", fault="train.step@2")  # the 2nd step of this process: step 4
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert len((out / "log.jsonl").read_text().splitlines()) == 4
    assert sorted(os.listdir(out / "checkpoints")) == ["step-00000002"]
    p = run("lcdata_train", *args, out, "--resume")
    assert p.returncode == 0, p.stderr

    def losses(d):
        return [(r["step"], r["loss"], r["grad_norm"]) for r in map(json.loads, (d / "log.jsonl").open())]

    assert losses(out) == losses(tmp_path / "ref") and len(losses(out)) == 6
    for f in ("final/model.safetensors", "checkpoints/step-00000006/model.safetensors"):
        assert (out / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f


# ------------------------------------------------------------------------------------------ full disk


def test_build_file_size_limit_in_each_phase_leaves_no_temp_files(corpus, clean, tmp_path):
    """One shard of 2 MB: a 300 KB limit stops phase 1 (the first spill, 463 KB), 1 MB stops phase 2 (the
    shard); then the limit is lifted and the build resumes to the clean bytes."""
    out = tmp_path / "out"
    p = build(corpus, out, *ONE_SHARD, "--workers", 1, fsize=300_000)
    assert_one_line_error(p, "build", f"{out}/_work/tok-00000.bin: File too large", "--shard-size")
    assert not temp_files(out) and not (out / "manifest.json").exists()
    p = build(corpus, out, *ONE_SHARD, "--workers", 1, "--resume", fsize=1_000_000)
    assert_one_line_error(p, "build", f"{out}/shard-00000.bin: File too large")
    assert not temp_files(out) and not (out / "manifest.json").exists()
    p = build(corpus, out, *ONE_SHARD, "--workers", 1, "--resume")
    assert p.returncode == 0, p.stderr
    assert digests(out) == clean["one_shard"]


def test_build_file_size_limit_at_documents_parquet(corpus, clean, tmp_path):
    """Killed after 1 shard (every spill done); resumed under a 40 KB limit: the 16 KB shards are written,
    documents.parquet (60 KB, streamed by a ParquetWriter) is not; then resumed to the clean bytes."""
    out = tmp_path / "out"
    assert build(corpus, out, *SMALL, "--workers", 1, fault="build.shard@1").returncode == -signal.SIGKILL
    p = build(corpus, out, *SMALL, "--workers", 1, "--resume", fsize=40_000)
    assert_one_line_error(p, "build", f"{out}/documents.parquet: File too large")
    assert not temp_files(out) and (out / "shard-00093.bin").exists() and not (out / "manifest.json").exists()
    p = build(corpus, out, *SMALL, "--workers", 1, "--resume")
    assert p.returncode == 0, p.stderr
    assert digests(out) == clean["small"]


def test_stats_file_size_limit_leaves_no_temp_files(corpus, tmp_path):
    """The 32 KB doc_lengths.parquet is streamed while files are counted: a 20 KB limit stops it; the folder
    is left without stats.json (incomplete) and without temp files; run again, the clean bytes."""
    args = ["stats", corpus, "--tokenizer", TOKENIZER, "--workers", 1, "--quiet", "--out"]
    ref = run("lcdata", *args, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "out"
    p = run("lcdata", *args, out, fsize=20_000)
    assert_one_line_error(p, "stats", f"{out}/doc_lengths.parquet: File too large")
    assert not temp_files(out) and not (out / "stats.json").exists()
    p = run("lcdata", *args, out)
    assert p.returncode == 0, p.stderr
    assert digests(out) == digests(tmp_path / "ref")


# ------------------------------------------------------------------------------------------ unwritable --out


def _read_only_folder(tmp_path: Path) -> tuple[Path, str]:
    """A folder this process cannot create anything in: a chmod 0555 folder, or (as root, whom permissions do
    not stop) /sys, which the kernel keeps read-only even for root."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        return d, "Permission denied"
    probe = Path("/sys/lcdata-fault-probe")
    try:
        probe.mkdir()
    except OSError as e:
        return Path("/sys"), os.strerror(e.errno)
    probe.rmdir()
    pytest.skip("running as root and /sys is writable: no folder here refuses writes")


@pytest.mark.parametrize("command", ["build", "stats"])
def test_read_only_or_file_out_is_a_one_line_error(corpus, tmp_path, command):
    ro, reason = _read_only_folder(tmp_path)
    afile = tmp_path / "a-file"
    afile.write_text("not a folder\n")
    args = {"build": ["build", corpus, "--tokenizer", TOKENIZER, *SMALL], "stats": ["stats", corpus]}[command]
    try:
        p = run("lcdata", *args, "--quiet", "--out", ro / "out")
        assert_one_line_error(p, command, str(ro / "out"), reason)
        assert not (ro / "out").exists()
        p = run("lcdata", *args, "--quiet", "--out", afile)
        assert_one_line_error(p, command, str(afile))
        p = run("lcdata", *args, "--quiet", "--out", afile / "sub")
        assert_one_line_error(p, command, str(afile / "sub"), "Not a directory")
        assert afile.read_text() == "not a folder\n"
    finally:
        if ro != Path("/sys"):
            ro.chmod(0o755)
