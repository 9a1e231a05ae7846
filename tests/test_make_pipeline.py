"""The Makefile chain (stats -> sample -> build -> train -> needle + eval-loss -> report) at toy size, in a
temp dir, on a slice of the demo corpus: every stage runs through the real CLI, the report has every
section, a second `make` finds everything up to date, and a changed input file or variable re-runs only
the stages after it."""

import json
import os
import re
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


def _make(*args, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), *args], capture_output=True, text=True,
                          env=env)


def _tree(d: Path) -> set[str]:
    return {p.relative_to(d).as_posix() for p in d.rglob("*")}


def test_make_chain_on_paths_with_spaces_writes_a_report_and_reruns_nothing(tmp_path):
    """OUT, CORPUS and TOKENIZER all hold spaces (the hard case: on plain paths the Makefile's quoting and
    escaping change nothing). `make -n` on a fresh OUT writes nothing, anywhere."""
    root = tmp_path / "my data"
    slice_corpus(root / "the corpus")
    tok = root / "tok dir" / "my tokenizer.json"
    tok.parent.mkdir()
    tok.write_bytes((DEMO / "tokenizer.json").read_bytes())
    out = root / "out put"
    corpus = root / "the corpus"
    args = [f"OUT={out}", f"CORPUS={corpus}", f"TOKENIZER={tok}", f"INPUTS='{corpus / 'train'}'",
            f"HELDOUT='{corpus / 'heldout'}'", f"BIN={Path(sys.executable).parent}", "STAMP=",
            "BUDGET=40K", "SEQ_LEN=1024", "TRAIN_SEQ_LEN=256", "BATCH_TOKENS=1024", "TRAIN_TOKENS=4096",
            "NEEDLE_LENGTHS=256,512", "NEEDLE_DEPTHS=0,50,100", "POS_BUCKETS=0,128", "EVAL_SEQUENCES=8",
            "WORKERS=1"]
    before, repo_before = _tree(tmp_path), _tree_top(ROOT)
    n = _make("-n", "report", *args)
    assert n.returncode == 0, n.stderr
    assert f"--out '{out}/stats'" in n.stdout and f"--tokenizer '{tok}'" in n.stdout
    assert _tree(tmp_path) == before and _tree_top(ROOT) == repo_before  # -n created nothing

    r = _make("report", *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = (out / "report.md").read_text()
    for section in ("## 1. Corpus statistics", "## 2. Sample", "## 3. Shards", "## 4. Continual pretraining",
                    "## 5. Needle in a haystack", "## 6. Validation loss by source and position"):
        assert section in report
    assert "(no " not in report  # every stage's output was there
    assert "Position = `document`: a token's offset in its own document" in report  # eval-loss names its definition
    for fig in ("stats/length_distribution.png", "plan/sample.png", "loss_curve.png", "needle/heatmap.png"):
        assert f"]({fig})" in report and (out / fig).exists()
    for src in ("books", "code", "docs", "web"):  # a row of each source in the tables (cells padded to width)
        assert re.search(rf"\| {src} +\|", report), src
    assert _tree_top(ROOT) == repo_before  # nothing written outside OUT
    # real dependencies: nothing left to do, and a changed plan re-runs the stages after it
    q = _make("-q", "report", *args)
    assert q.returncode == 0, q.stdout + q.stderr
    n = _make("-n", "report", *args, "EVAL_POSITION=sequence")  # only eval-loss and the report re-run
    assert "--position 'sequence'" in n.stdout and "lcdata' report" in n.stdout, n.stdout
    assert not re.search(r"lcdata' (stats|sample|build|train|needle) ", n.stdout), n.stdout
    os.utime(out / "plan" / "plan.json")
    n = _make("-n", "report", *args)
    assert "lcdata' build" in n.stdout and "lcdata' train" in n.stdout and "lcdata' stats" not in n.stdout
    # a changed variable re-runs its stage and those after it, not those before; -n does not record it
    recorded = (out / ".vars" / "plan").read_text()
    args = [a if not a.startswith("BUDGET=") else "BUDGET=30K" for a in args]
    n = _make("-n", "report", *args)
    assert "lcdata' sample" in n.stdout and "lcdata' needle" in n.stdout and "lcdata' stats" not in n.stdout
    assert (out / ".vars" / "plan").read_text() == recorded
    # an edited corpus file re-runs from stats; an edited tokenizer too
    for path in (corpus / "train" / "web" / "part-000.jsonl", tok):
        st = path.stat()
        os.utime(path)
        assert "lcdata' stats" in _make("-n", "report", *args).stdout, path
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _tree_top(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_make_report_checks_heldout_before_any_stage(tmp_path):
    """A non-demo CORPUS without HELDOUT, a HELDOUT glob that matches nothing, a HELDOUT that overlaps INPUTS:
    make stops while reading the Makefile (exit 2, the reason on stderr), no stage runs, OUT is not created."""
    slice_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    base = [f"OUT={out}", f"CORPUS={tmp_path / 'corpus'}", f"BIN={Path(sys.executable).parent}", "STAMP="]
    cases = {
        "HELDOUT is empty": [],
        "matches no corpus file": [f"HELDOUT='{tmp_path}/corpus/nope/*.jsonl'"],
        "HELDOUT and INPUTS share 4 file(s)": [f"HELDOUT='{tmp_path}/corpus/heldout'"],  # INPUTS = all of CORPUS
    }
    for goal in ("report", "eval-loss", "heldout"):
        for needle, extra in cases.items():
            r = _make(goal, *base, "HELDOUT=", *extra)
            assert r.returncode == 2, (goal, needle, r.stdout, r.stderr)
            assert needle in r.stderr and r.stdout == "", (goal, needle, r.stdout, r.stderr)
            assert not out.exists()
    # stages that do not use HELDOUT are not held up by it
    assert _make("-n", "stats", *base, "HELDOUT=").returncode == 0
    ok = _make("-n", "report", *base, f"INPUTS='{tmp_path}/corpus/train'", f"HELDOUT='{tmp_path}/corpus/heldout'")
    assert ok.returncode == 0, ok.stderr
    assert not out.exists()


def test_eval_position_reaches_eval_loss_and_names_its_stage(tmp_path):
    """EVAL_POSITION (default document) is passed to `lcdata eval-loss --position` and is one of the eval-loss
    stage's variables; a dry run (`make -n`: nothing written) is enough to see both."""
    slice_corpus(tmp_path / "corpus")
    out = tmp_path / "out"
    base = [f"OUT={out}", f"CORPUS={tmp_path / 'corpus'}", f"BIN={Path(sys.executable).parent}", "STAMP=",
            f"INPUTS='{tmp_path}/corpus/train'", f"HELDOUT='{tmp_path}/corpus/heldout'"]
    for extra, want in (([], "document"), (["EVAL_POSITION=sequence"], "sequence")):
        r = _make("-n", "eval-loss", *base, *extra)
        assert r.returncode == 0, r.stderr
        line = next(ln for ln in r.stdout.replace("\\\n", " ").splitlines() if "lcdata' eval-loss" in ln)
        assert f"--position '{want}' " in line, r.stdout
        assert f"printf '%s\\n' '0,512 {want} 16' > '{out}/.vars/eval-loss'" in r.stdout, r.stdout
    assert not out.exists()


def _recipe(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout.replace("\\\n", " ")


def test_demo_sizes_and_installs(tmp_path):
    """`make demo` installs the pipeline's extras only (`.[train,fast]`), `make test` adds `[dev]` after them
    (two stamps: a demo venv is upgraded, not rebuilt); DEMO=quick (default) trains and evaluates a quarter
    of DEMO=full, and a variable given on its own wins; the torch stages run on TORCH_THREADS (1) threads. Dry runs (`make -n`) on a venv path that does not
    exist: nothing is installed or written."""
    venv = tmp_path / "venv"
    base = [f"VENV={venv}", f"BIN={venv}/bin", f"STAMP={venv}/.stamp", f"OUT={tmp_path / 'out'}"]
    demo = _recipe(_make("-n", "demo", *base))
    assert 'pip install -q -e ".[train,fast]"' in demo and "dev]" not in demo and "megatron" not in demo
    assert "--tokens 32768 " in demo and "--max-sequences 16 " in demo and "--log-every 2 " in demo
    test = _recipe(_make("-n", "test", *base))
    assert test.index('-e ".[train,fast]"') < test.index('-e ".[train,fast,dev]"') < test.index("-m pytest -q tests")
    assert "--no-deps megatron-core" in test and f"touch {venv}/.lcdata-dev-installed" in test
    full = _recipe(_make("-n", "demo", *base, "DEMO=full"))
    assert "--tokens 131072 " in full and "--max-sequences 64 " in full and "--log-every 8 " in full
    for stage in ("train", "needle", "eval-loss"):  # torch stages on 1 CPU thread unless TORCH_THREADS says
        assert f"OMP_NUM_THREADS=1 '{venv}/bin/lcdata' {stage} " in demo
        assert f"\n'{venv}/bin/lcdata' {stage} " in _recipe(_make("-n", "demo", *base, "TORCH_THREADS="))
    assert demo.count("OMP_NUM_THREADS") == 3  # the data stages keep their own threads
    assert "--tokens 1M " in _recipe(_make("-n", "demo", *base, "TRAIN_TOKENS=1M"))
    bad = _make("-n", "demo", *base, "DEMO=huge")
    assert bad.returncode == 2 and "DEMO='huge' is not quick or full" in bad.stderr
    assert not venv.exists() and not (tmp_path / "out").exists()
