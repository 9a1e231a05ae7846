"""benchmarks/gpu_check.py in its dry mode (CPU, tiny sizes, the GPU run's code paths): `make gpu-check DRY=1`
runs every part for real and writes the JSON and Markdown a GPU run writes, every correctness check passing; a
part over its budget is cut, reported as timeout, and the part after it still runs."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PARTS = ["correctness", "speed", "e2e"]


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_make_gpu_check_dry_runs_every_part(tmp_path):
    out, work = tmp_path / "gpu check", tmp_path / "work"  # a space in OUT, as a user's path may have
    if shutil.which("make"):
        cmd = ["make", "--no-print-directory", "-C", str(ROOT), "gpu-check", "DRY=1", f"PYTHON={sys.executable}",
               f"OUT={out}", f"GPU_CHECK_ARGS=--work {work}"]  # OUT reaches the script as $OUT, as on a lent machine
    else:
        cmd = [sys.executable, str(SCRIPT), "--dry", "--out", str(out), "--work", str(work)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    summary = _load(out / "summary.json")
    assert summary["status"] == "pass" and summary["environment"]["dry"] is True
    assert summary["environment"]["modules"]["torch"] and "flash_attn" in summary["environment"]["modules"]
    assert [p["part"] for p in summary["parts"]] == PARTS
    md = (out / "summary.md").read_text()
    assert all(f"| {p} | pass |" in md for p in PARTS), md
    res = {p: _load(out / p / "result.json") for p in PARTS}
    for p, r in res.items():
        assert r["status"] == "pass" and r["dry"] is True and r["seconds"] <= r["budget_s"], (p, r)
        assert (out / p / "result.md").read_text().startswith(f"# gpu-check: {p} (dry, CPU)")
        assert (out / p / "log.txt").exists()
        for c in r["checks"]:
            assert {"name", "status", "seconds", "detail"} <= set(c), c
            assert c["status"] in ("pass", "skip"), c

    checks = {c["name"]: c for c in res["correctness"]["checks"]}
    cuda = checks["pytest -m cuda"]
    assert cuda["status"] == "skip" and cuda["skipped"] >= 1 and cuda["failures"] == cuda["errors"] == 0
    att = [c for c in checks.values() if c.get("kind") == "attention"]
    assert {c["masked"] for c in att} == {False, True} and len(att) >= 6
    assert all(c["status"] == "pass" and 0 < c["max_abs_err"] < 2e-2 and 0 < c["grad_rel_err"] < 3e-2 for c in att), att
    assert {c["backend_used"] for c in att} == {"sdpa", "sdpa_docs"}
    dt = checks["train bf16 vs fp32"]
    assert len(dt["losses_bf16"]) == len(dt["losses_fp32"]) == 4 and dt["max_rel_diff"] < 2e-2
    rs = checks["save -> resume, next loss"]
    assert rs["status"] == "pass" and rs["bitwise"] is True and rs["losses_resumed"] == rs["losses_uninterrupted"]

    train = [c for c in res["speed"]["checks"] if c.get("kind") == "train"]
    rows = sorted((c["seq_len"], c["doc_mask"]) for c in train)
    assert rows == [(L, m) for L in (64, 128, 256) for m in (False, True)]
    for c in train:
        assert c["tokens_per_s"] > 0 and 0 <= c["data_share"] < 1 and c["steps"] == 2
        assert c["mfu"] is None and c["peak_memory_gib"] is None and c["peak_tflops"] is None  # CPU: null
    assert [c["attention"] for c in train if c["doc_mask"]] == ["sdpa_docs"] * 3
    evals = [c for c in res["speed"]["checks"] if c.get("kind") == "eval"]
    assert [c["length"] for c in evals] == [128, 256] and all(c["tokens_per_s"] > 0 for c in evals)
    speed_md = (out / "speed" / "result.md").read_text()
    assert "## bench_train" in speed_md and "## bench_eval (teacher-forced)" in speed_md and "MFU null" in speed_md

    e2e = {c["kind"]: c for c in res["e2e"]["checks"]}
    manifest = _load(work / "e2e" / "shards-256" / "manifest.json")  # shards and runs: in --work, not in OUT
    assert e2e["build"]["n_tokens"] == manifest["n_tokens"] > 0
    assert e2e["e2e-train"]["steps"] >= 3 and (work / "e2e" / "run" / "final" / "config.json").exists()
    assert 0 <= e2e["needle"]["mean_score"] <= 100 and (out / "e2e" / "needle" / "results.json").exists()
    assert (out / "correctness" / "pytest-cuda.xml").exists()
    assert not any(p.suffix in (".bin", ".safetensors") for p in out.rglob("*"))  # OUT stays small


def test_a_part_over_its_budget_is_reported_and_the_next_part_runs(tmp_path):
    out = tmp_path / "gc"
    r = subprocess.run([sys.executable, str(SCRIPT), "--dry", "--out", str(out), "--parts", "speed,e2e",
                        "--budget", "speed=4"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "TMPDIR": str(tmp_path)})
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    summary = _load(out / "summary.json")
    assert summary["status"] == "fail"
    assert [(p["part"], p["status"]) for p in summary["parts"]] == [("speed", "timeout"), ("e2e", "pass")]
    speed = _load(out / "speed" / "result.json")
    assert speed["status"] == "timeout" and speed["budget_s"] == 4 and speed["seconds"] < 4 + 10
    statuses = [c["status"] for c in speed["checks"]]  # what it finished, then the check it was cut in, if any
    assert "budget" in speed["note"] and set(statuses) <= {"pass", "timeout"} and statuses.count("timeout") <= 1
    assert "status **timeout**" in (out / "speed" / "result.md").read_text()
    assert "| speed | timeout |" in (out / "summary.md").read_text()
    assert _load(out / "e2e" / "result.json")["status"] == "pass"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("lcdata-gpu-check-")]  # temporary work: removed


def test_without_a_gpu_it_stops_at_once_and_says_to_use_dry(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: without --dry the script would run the real check")
    r = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gc")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "no CUDA GPU here: run `make gpu-check DRY=1`" in r.stderr, r.stderr[-2000:]
    summary = _load(tmp_path / "gc" / "summary.json")
    assert summary["status"] == "error" and summary["parts"] == [] and summary["environment"]["modules"]["torch"]
    assert sorted(p.name for p in (tmp_path / "gc").iterdir()) == ["summary.json", "summary.md"]
