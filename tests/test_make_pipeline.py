"""The Makefile chain (stats -> sample -> build -> train -> needle + eval-loss -> report) at toy size, in a
temp dir, on a slice of the demo corpus: every stage runs through the real CLI, the report has every
section, a second `make` finds everything up to date, and a changed input file or variable re-runs only
the stages after it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"


def _lines(path: Path) -> list[str]:
    return zstandard.ZstdDecompressor().decompress(path.read_bytes()).decode().splitlines()


def slice_corpus(root: Path) -> None:
    """Train and held-out parts: for each demo source, short documents from two different part files."""
    for src in ("books", "code", "docs", "web"):
        for split, part, n, limit in (("train", "part-000", 30, 20000), ("heldout", "part-001", 4, 8000)):
            rows = [ln for ln in _lines(DEMO / src / f"{part}.jsonl.zst") if len(json.loads(ln)["text"]) < limit]
            if src == "books":  # books are long: one cut-down book chapter-sized piece each
                rows = [json.dumps({**json.loads(ln), "text": json.loads(ln)["text"][:limit]})
                        for ln in _lines(DEMO / src / f"{part}.jsonl.zst")[:2]]
            (root / split / src).mkdir(parents=True, exist_ok=True)
            (root / split / src / "part-000.jsonl").write_text("\n".join(rows[:n]) + "\n")


def test_make_chain_writes_a_report_and_reruns_nothing(tmp_path):
    slice_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    args = [f"OUT={out}", f"CORPUS={tmp_path / 'corpus'}", f"INPUTS={tmp_path / 'corpus' / 'train'}",
            f"HELDOUT={tmp_path / 'corpus' / 'heldout'}", f"BIN={Path(sys.executable).parent}", "STAMP=",
            "BUDGET=40K", "SEQ_LEN=1024", "TRAIN_SEQ_LEN=256", "BATCH_TOKENS=1024", "TRAIN_TOKENS=4096",
            "NEEDLE_LENGTHS=256,512", "NEEDLE_DEPTHS=0,50,100", "POS_BUCKETS=0,128", "EVAL_SEQUENCES=8",
            "WORKERS=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["make", "-C", str(ROOT), "report", *args], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (out / "report.md").read_text()
    for section in ("## 1. Corpus statistics", "## 2. Sample", "## 3. Shards", "## 4. Continual pretraining",
                    "## 5. Needle in a haystack", "## 6. Validation loss by source and position"):
        assert section in report
    assert "(no " not in report  # every stage's output was there
    for fig in ("stats/length_distribution.png", "plan/sample.png", "loss_curve.png", "needle/heatmap.png"):
        assert f"]({fig})" in report and (out / fig).exists()
    for src in ("books", "code", "docs", "web"):
        assert f"| {src} |" in report
    # real dependencies: nothing left to do, and a changed plan re-runs the stages after it
    q = subprocess.run(["make", "-C", str(ROOT), "-q", "report", *args], capture_output=True, text=True, env=env)
    assert q.returncode == 0, q.stdout + q.stderr
    os.utime(out / "plan" / "plan.json")
    n = subprocess.run(["make", "-C", str(ROOT), "-n", "report", *args], capture_output=True, text=True, env=env)
    assert "lcdata build" in n.stdout and "lcdata train" in n.stdout and "lcdata stats" not in n.stdout
    # a changed variable re-runs its stage and those after it, not those before
    args = [a if not a.startswith("BUDGET=") else "BUDGET=30K" for a in args]
    n = subprocess.run(["make", "-C", str(ROOT), "-n", "report", *args], capture_output=True, text=True, env=env)
    assert "lcdata sample" in n.stdout and "lcdata needle" in n.stdout and "lcdata stats" not in n.stdout
