"""`lcdata stats`, `sample` and `build --executor slurm --wait` on a real Slurm cluster: real sbatch, job arrays,
afterok dependencies, scancel then the same command (stats; build with --resume), a failed task, a time limit;
the outputs equal the local path's bytes.

Runs only when `sinfo` answers with a node of this machine that is up (idle, mixed or allocated), e.g. after
`make slurm-up` (scripts/slurm_local.sh: a one-node cluster on this machine); skipped with the reason otherwise
(the tests' temporary folders are not shared with other nodes). The commands
run as subprocesses with PYTHONPATH set to this checkout, which sbatch exports to the jobs (`--export=ALL`),
and each job sources the venv of the Python running the tests. Demo corpus, 2 tasks per per-file stage.
The time-limit test needs a bit over a minute: Slurm's limits are whole minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lcdata.scaleout import FAIL_ENV, SLOW_ENV
from lcdata.shards import verify_shards

ROOT = Path(__file__).resolve().parents[2]
STATS_FRAMES = ["sources", "buckets", "histogram", "files", "skips", "doc_lengths"]
PLAN_FRAMES = ["plan", "report", "groups"]
SAMPLE = ["--strategy", "per-source", "--budget-tokens", "600000", "--no-figure"]
BUILD = ["--seq-len", "4096", "--shard-size", "65536"]


def _cluster() -> tuple[str | None, str]:
    """(the partition to use, '') when a node of this machine is up, else (None, why not). Only this machine's
    node: the tests' temporary folders are not on a filesystem other nodes see."""
    if shutil.which("sinfo") is None:
        return None, "no Slurm here (sinfo not on PATH): `make slurm-up` starts a one-node cluster (root)"
    try:
        p = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%T|%N"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer in 15 s (slurmctld down?): `make slurm-up`"
    if p.returncode != 0:
        return None, f"sinfo failed ({p.stderr.strip()}): `make slurm-up` starts a one-node cluster"
    rows = [line.split("|") for line in p.stdout.split()]
    up = [(part, node) for part, state, node in rows if state.rstrip("*~#") in ("idle", "mixed", "allocated")]
    if not up:
        return None, f"no Slurm node is up (sinfo: {p.stdout.strip() or 'no node'}): `make slurm-up`"
    host = socket.gethostname().split(".")[0]
    mine = [part for part, node in up if node == host]
    if not mine:
        return None, (f"no Slurm node up on this machine ({host}; up: {sorted({n for _, n in up})}): the tests' "
                      "temporary folders would not be seen there; `make slurm-up` starts a one-node cluster here")
    default = [x for x in mine if x.endswith("*")]
    return (default or mine)[0].rstrip("*"), ""


PARTITION, WHY = _cluster()
pytestmark = pytest.mark.skipif(PARTITION is None, reason=WHY)


@pytest.fixture(autouse=True, scope="module")
def _cancel_leftovers():
    """After the module: cancel any job these tests submitted that is still queued (a test that failed midway)."""
    yield
    q = subprocess.run(["squeue", "-h", "-o", "%i|%j"], capture_output=True, text=True).stdout.split()
    ids = sorted({i.split("_")[0] for i, name in (x.split("|", 1) for x in q) if name.startswith("lcdt-")})
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True)


def lcdata(*args, env_extra: dict | None = None, check: bool = True, timeout: float = 150,
           popen: bool = False):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           **(env_extra or {})}
    cmd = [sys.executable, "-m", "lcdata", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"lcdata {' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def slurm(*flags, name: str) -> list[str]:
    return ["--executor", "slurm", "--partition", PARTITION, "--tasks", "2", "--job-name", name, "--wait", *flags]


@pytest.fixture(scope="module")
def local(tmp_path_factory, demo_dir, tokenizer_path):
    """The reference: the same commands without --executor."""
    d = tmp_path_factory.mktemp("local")
    lcdata("stats", demo_dir, "--out", d / "stats", "--no-figure", "--quiet", "--workers", "1")
    lcdata("sample", demo_dir, "--out", d / "plan", *SAMPLE, "--quiet", "--workers", "1")
    lcdata("build", demo_dir, "--plan", d / "plan", "--tokenizer", tokenizer_path, "--out", d / "build", *BUILD,
           "--quiet", "--workers", "1")
    return d


def same_frames(ref: Path, got: Path, names: list[str]) -> None:
    for name in names:
        assert_frame_equal(pl.read_parquet(got / f"{name}.parquet"), pl.read_parquet(ref / f"{name}.parquet"))


def same_stats(ref: Path, got: Path) -> None:
    same_frames(ref, got, STATS_FRAMES)
    a, b = (json.loads((d / "stats.json").read_text()) for d in (ref, got))
    for key in ("fingerprint", "config", "inputs", "totals", "sources", "buckets", "files", "skips"):
        assert a[key] == b[key], key


def same_build(ref: Path, got: Path) -> None:
    names = sorted(p.name for p in ref.iterdir() if p.is_file() and p.name != "manifest.json")
    assert names == sorted(p.name for p in got.iterdir() if p.is_file() and p.name != "manifest.json")
    for name in names:
        assert (ref / name).read_bytes() == (got / name).read_bytes(), f"{name} differs"
    run_info = ("elapsed_s", "command", "manifest_sha256", "phase_s")  # how long, which command line
    ma, mb = ({k: v for k, v in json.loads((d / "manifest.json").read_text()).items() if k not in run_info}
              for d in (ref, got))
    assert ma == mb
    assert verify_shards(str(got)) == []


def slurm_jobs(logs: Path) -> dict[str, tuple[str, list[int]]]:
    """stage -> (its array job, the array indices that wrote a Slurm log ``LOGS/<stage>/slurm_logs/JOB_INDEX.out``);
    the logs of datatrove's merge_stats job (a later job id, index 0) are there too and are checked here."""
    out = {}
    for d in sorted(p for p in logs.iterdir() if p.is_dir()):
        jobs: dict[str, list[int]] = {}
        for f in (d / "slurm_logs").glob("*.out"):
            if m := re.fullmatch(r"(\d+)_(\d+)\.out", f.name):
                jobs.setdefault(m[1], []).append(int(m[2]))
        ids = sorted(jobs, key=int)
        assert all(jobs[j] == [0] for j in ids[1:]), jobs  # merge_stats: one task, submitted after the array
        out[d.name] = (ids[0], sorted(jobs[ids[0]])) if ids else (None, [])
    return out


def job_times(job: str) -> list[tuple[str, str, str]]:
    """(state, start, end) of each task of a finished job, from `scontrol show job` (kept MinJobAge seconds)."""
    p = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=True)
    rows = [dict(w.split("=", 1) for w in line.split() if "=" in w) for line in p.stdout.splitlines()]
    return [(r["JobState"], r["StartTime"], r["EndTime"]) for r in rows]


def test_sample_and_build_on_slurm_equal_the_local_path(local, demo_dir, tokenizer_path, tmp_path):
    plan = tmp_path / "plan"
    r = lcdata("sample", demo_dir, "--out", plan, *SAMPLE, *slurm("--time", "5", name="lcdt-sample"))
    assert "waiting for Slurm jobs" in r.stderr and "strategy" in r.stdout.lower()  # the local run's summary
    same_frames(local / "plan", plan, PLAN_FRAMES)
    same_stats(local / "stats", plan / "stats")
    logs = plan / "_scaleout" / "logs"  # where docs/scale-out.md says: LOGS/<stage>/{logs,slurm_logs,completions}
    jobs = slurm_jobs(logs)
    assert {s: idx for s, (_, idx) in jobs.items()} == {"stats": [0, 1], "stats-merge": [0], "sample": [0]}
    for stage, n in (("stats", 2), ("stats-merge", 1), ("sample", 1)):
        assert sorted(p.name for p in (logs / stage / "completions").iterdir()) == [f"{t:05d}" for t in range(n)]
        assert all((logs / stage / "logs" / f"task_{t:05d}.log").exists() for t in range(n))
        assert f"#SBATCH --array=0-{n - 1}" in (logs / stage / "launch_script.slurm").read_text()
    # afterok: each stage's job started after every task of the one before had completed
    order = [job_times(jobs[s][0]) for s in ("stats", "stats-merge", "sample")]
    for before, after in zip(order, order[1:]):
        assert all(st == "COMPLETED" for st, _, _ in before + after)
        assert min(start for _, start, _ in after) >= max(end for _, _, end in before)

    # the build, with task 1 of its shards stage cancelled mid-run, then the same command with --resume
    out = tmp_path / "build"
    cmd = ["build", demo_dir, "--plan", local / "plan", "--tokenizer", tokenizer_path, "--out", out, *BUILD,
           *slurm("--time", "5", name="lcdt-build")]
    logs = out / "_scaleout" / "logs"
    proc = lcdata(*cmd, env_extra={SLOW_ENV: "shards:1:120"}, popen=True)
    job = cancel_when_running("lcdt-build-shards", 1, logs / "shards")
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and re.search(rf"task 1 \(Slurm job {job}\) CANCELLED", text), text
    assert "'finish' did not start" in text and "--resume" in text
    assert not (out / "manifest.json").exists()
    kept = (logs / "shards" / "stats" / "00000.json").stat().st_mtime_ns
    lcdata(*cmd, "--resume")
    assert json.loads((logs / "shards" / "ranks_to_run.json").read_text()) == [1]  # only the cancelled task
    assert (logs / "shards" / "stats" / "00000.json").stat().st_mtime_ns == kept
    same_build(local / "build", out)
    jobs = slurm_jobs(logs)
    assert {s: idx for s, (_, idx) in jobs.items()} == {"tokenize": [0, 1], "pack": [0], "shards": [0, 1],
                                                        "finish": [0]}
    assert not (out / "_work").exists()


def cancel_when_running(name: str, rank: int, logs: Path) -> str:
    """scancel array task ``rank`` of job ``name`` (stage folder ``logs``) mid-run: Slurm says RUNNING, its
    datatrove log exists (the task is in its work, not being launched) and task 0 has completed; returns the
    Slurm id of the cancelled task (JOB_INDEX)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 90:
        q = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i|%T"], capture_output=True,
                           text=True).stdout.split()
        running = [i for i, st in (x.split("|") for x in q) if st == "RUNNING" and i.endswith(f"_{rank}")]
        done = (logs / "completions" / "00000").exists() and (logs / "logs" / f"task_{rank:05d}.log").exists()
        if running and done:
            subprocess.run(["scancel", running[0]], check=True)
            return running[0]
        time.sleep(0.5)
    raise AssertionError(f"task {rank} of {name} never ran beside a completed task 0")


def test_scancel_a_task_then_the_same_command_runs_only_it(local, demo_dir, tmp_path):
    out = tmp_path / "stats"
    cmd = ["stats", demo_dir, "--out", out, "--no-figure", *slurm("--time", "5", name="lcdt-cancel")]
    proc = lcdata(*cmd, env_extra={SLOW_ENV: "stats:1:120"}, popen=True)  # task 1 sleeps before its work
    logs = out / "_scaleout" / "logs" / "stats"
    job = cancel_when_running("lcdt-cancel-stats", 1, logs)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert re.search(rf"task 1 \(Slurm job {job}\) CANCELLED", text), text
    assert str(logs / "logs" / "task_00001.log") in text and "'stats-merge' did not start" in text
    assert not (out / "stats.json").exists()
    assert not (logs.parent / "stats-merge" / "completions").exists()  # the merge never ran
    assert slurm_jobs(logs.parent)["stats-merge"] == (None, [])  # it never started: no Slurm log
    kept = (logs / "stats" / "00000.json").stat().st_mtime_ns

    r = lcdata(*cmd)  # the same command, without the hook: only task 1 is submitted again
    assert json.loads((logs / "ranks_to_run.json").read_text()) == [1]
    assert (logs / "stats" / "00000.json").stat().st_mtime_ns == kept  # task 0 not rerun
    assert "waiting for Slurm jobs" in r.stderr
    same_stats(local / "stats", out)


def test_a_failed_task_stops_its_dependents_and_is_named_with_its_log(demo_dir, tmp_path):
    out = tmp_path / "stats"
    r = lcdata("stats", demo_dir, "--out", out, "--no-figure", *slurm("--time", "5", name="lcdt-fail"),
               env_extra={FAIL_ENV: "stats:1:0"}, check=False)
    text = r.stdout + r.stderr
    assert r.returncode != 0
    log = out / "_scaleout" / "logs" / "stats" / "logs" / "task_00001.log"
    assert re.search(r"task 1 \(Slurm job \d+_1\) FAILED", text), text
    assert str(log) in text and "'stats-merge' did not start" in text
    assert "InjectedFailure" in log.read_text()  # the log named holds the task's error
    slurm_log = Path(re.search(r"Slurm log (\S+\.out)", text)[1])
    assert slurm_log.parent == log.parent.parent / "slurm_logs"
    assert str(ROOT / "lcdata" / "scaleout" / "steps.py") in slurm_log.read_text()  # the job ran this checkout
    assert not (out / "stats.json").exists()
    assert not (out / "_scaleout" / "logs" / "stats-merge" / "completions").exists()
    q = subprocess.run(["squeue", "-h", "-n", "lcdt-fail-stats-merge,lcdt-fail-stats"], capture_output=True,
                       text=True)
    assert q.stdout.strip() == ""  # nothing of the run left waiting in the queue


def test_a_time_limit_too_short_is_reported_as_a_timeout(demo_dir, tmp_path):
    out = tmp_path / "stats"
    r = lcdata("stats", demo_dir, "--out", out, "--no-figure", *slurm("--time", "1", name="lcdt-time"),
               env_extra={SLOW_ENV: "stats:0:600"}, check=False, timeout=240)  # task 0 outlives its minute
    text = r.stdout + r.stderr
    assert r.returncode != 0
    assert re.search(r"task 0 \(Slurm job \d+_0\) TIMEOUT", text), text
    assert "--time 1" in text and "rerun the same command" in text
    assert not (out / "stats.json").exists()  # no silent partial output: the command failed, saying why
