"""report.md warns (issue 17): long-document shares per source, a line per missed target, equal needle scores,
seeds and scorer, repeated epochs; no absolute path; stage folders found by their manifests whatever their
names. One real run of every stage on the demo corpus (stats and sample in character mode, a build of a
small slice, a few CPU training steps of the debug model, an untrained model's needle grid)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from lcdata.cli import main
from lcdata.report import BUCKET_TOLERANCE, SOURCE_TOLERANCE, target_misses

ROOT = Path(__file__).resolve().parents[2]
TOK = ROOT / "data" / "demo" / "tokenizer.json"


def lcdata(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "lcdata", *map(str, args)], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def run_dir(train_shards, tmp_path_factory) -> Path:
    """A run folder whose stage folders are not named as the Makefile names them."""
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("report") / "my run"
    lcdata("stats", ROOT / "data" / "demo", "--out", d / "corpus-stats", "--no-figure", "--quiet")
    lcdata("sample", "--stats", d / "corpus-stats", "--strategy", "per-source", "--budget-tokens", "1M",
           "--out", d / "mixture", "--no-figure", "--quiet")
    lcdata("build", Path(train_shards).parent / "corpus", "--tokenizer", TOK, "--seq-len", 256, "--out",
           d / "tokens", "--quiet", "--workers", 1)
    # 8 steps of 8 x 256 tokens = 64 windows of the 50 the shards hold: 1.28 epochs
    lcdata("train", "--shards", d / "tokens", "--model", "debug", "--seq-len", 256, "--batch-tokens", 2048,
           "--micro-batch", 8, "--tokens", 16384, "--out", d / "training", "--quiet", "--no-act-ckpt")
    model = d / "untrained"
    from lcdata_train.checkpoint import save_hf
    from lcdata_train.config import preset
    from lcdata_train.model import init_state_dict

    cfg = preset("debug", 16384, 4096)
    save_hf(init_state_dict(cfg, 0), cfg, str(model))
    shutil.copy(TOK, model / "tokenizer.json")
    lcdata("needle", "--model", model, "--mode", "teacher-forced", "--lengths", "300,600", "--depths", "0,50",
           "--out", d / "haystack-test", "--name", "untrained-debug", "--quiet", "--seed", 3)
    shutil.rmtree(model)
    assert main(["report", str(d), "--name", "demo run"]) == 0
    return d


@pytest.fixture(scope="module")
def page(run_dir) -> str:
    return (run_dir / "report.md").read_text()


def test_stage_folders_are_found_by_their_manifests(page):
    assert page.startswith("# lcdata report: `demo run`")
    assert not re.search(r"\(no (stats|plan|shards|run|needle)/", page)  # every stage found under its own name
    assert "(no eval-loss/ folder)" in page  # the one stage not run
    for stage, folder in (("stats", "corpus-stats"), ("plan", "mixture"), ("shards", "tokens"), ("run", "training"),
                          ("needle", "haystack-test")):
        assert f"{stage} `{folder}/`" in page, stage
    assert "## 4. Continual pretraining" in page and "8 steps (16,384 tokens, 1.28 epoch(s) of the shards)" in page


def test_no_absolute_path_of_the_machine(run_dir, page):
    for p in (str(run_dir), os.path.realpath(run_dir), str(run_dir.parent), str(ROOT)):
        assert p not in page
    assert not re.search(r"(^|[\s`(])/(tmp|home|work|root|Users)/", page)


def test_long_document_share_per_source_original_target_achieved(run_dir, page):
    rep = pl.read_parquet(run_dir / "mixture" / "report.parquet")
    block = page[page.index("Long-document share per source"):]
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:5]] for ln in block.splitlines()[2:8]
            if ln.startswith("| ") and "---" not in ln}
    long = rep.filter((pl.col("level") == "bucket") & (pl.col("bucket_min") >= 4096)).group_by("source").agg(
        pl.col("original_share_in_source", "target_share_in_source", "achieved_share_in_source").sum())
    assert set(rows) - {"source"} == set(long["source"])
    for r in long.iter_rows(named=True):
        want = [f"{100 * r[c]:.1f}%" for c in ("original_share_in_source", "target_share_in_source",
                                               "achieved_share_in_source")]
        assert rows[r["source"]] == want, r["source"]


def test_a_line_for_every_missed_target(run_dir, page):
    rep = pl.read_parquet(run_dir / "mixture" / "report.parquet")
    b = rep.filter(pl.col("level") == "bucket")
    missed = b.filter((pl.col("achieved_share_in_source") - pl.col("target_share_in_source")).abs() > BUCKET_TOLERANCE)
    assert missed.height > 0  # 1M tokens cannot hold the books' 128K+ target
    warned = [ln for ln in page.splitlines() if ln.startswith("- **Warning:** source `")]
    for r in missed.iter_rows(named=True):
        assert any(f"`{r['source']}`, documents of" in w and f"{100 * r['achieved_share_in_source']:.1f}% of the "
                   f"source's tokens achieved vs {100 * r['target_share_in_source']:.1f}% targeted" in w
                   for w in warned), r
    src = rep.filter(pl.col("level") == "source")
    n_src = src.filter((pl.col("achieved_tokens") / pl.col("target_tokens") - 1).abs() > SOURCE_TOLERANCE).height
    assert len(warned) == missed.height + n_src
    assert n_src > 0  # in character mode the plan misses a source too (code: +9.7%)
    # the source lines: exactly the sources off by more than 5% (here also with one source's tokens cut to 80%)
    cut = rep.with_columns(achieved_tokens=pl.when((pl.col("level") == "source") & (pl.col("source") == "web"))
                           .then(pl.col("achieved_tokens") * 0.8).otherwise(pl.col("achieved_tokens")))
    for frame in (rep, cut):
        s = frame.filter(pl.col("level") == "source")
        err = dict(zip(s["source"], s["achieved_tokens"] / s["target_tokens"] - 1))
        lines = [ln for ln in target_misses(frame, 1_000_000) if "missed its target" in ln]
        assert [ln.split("`")[1] for ln in lines] == [k for k, e in err.items() if abs(e) > SOURCE_TOLERANCE]
        assert all(f"({err[ln.split('`')[1]]:+.1%}; tolerance 5%) at a budget of 1,000,000 tokens" in ln for ln in lines)
    assert "web" in [ln.split("`")[1] for ln in target_misses(cut) if "missed its target" in ln]


def test_equal_needle_scores_seeds_scorer_and_repeated_epochs_are_named(run_dir, page):
    res = json.loads((run_dir / "haystack-test" / "results.json").read_text())
    assert res["name"] == "untrained-debug" and res["seed"] == 3
    assert "Run `untrained-debug`" in page
    assert len({c["score"] for c in res["cells"]}) == 1  # an untrained model: every cell the same
    assert "**Warning:** every needle cell scores" in page
    assert "**Warning:** training repeated its data" in page and "1.28 epochs" in page
    seeds = page[page.index("## Seeds and scorer"):page.index("## 1.")]
    for stage, seed in (("sample", 0), ("build", 0), ("train", 0), ("needle", 3)):
        assert re.search(rf"\| {stage} +\| +{seed} \|", seeds), (stage, seeds)
    assert "Needle scorer: `exact`" in seeds


def test_percentages_are_the_same_on_the_terminal_and_in_the_report(run_dir, page):
    p = lcdata("sample", "--stats", run_dir / "corpus-stats", "--strategy", "per-source", "--budget-tokens", "1M",
               "--out", run_dir.parent / "again", "--no-figure")
    term = {ln.split()[0]: ln.split()[1:4] for ln in p.stdout.splitlines()[3:7]}
    md = page[page.index("## 2. Sample"):]
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:5]] for ln in md.splitlines()
            if ln.startswith("| ") and ln.count("|") > 8}
    for s, shares in term.items():
        assert rows[s] == shares, (s, rows[s], shares)  # orig., target, achieved share: 29.3% both sides
