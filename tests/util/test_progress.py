"""Progress (`lcdata.util.progress`): under a pseudo-terminal the bar moves inside a file; in a log, one line per
stage; with --quiet, nothing. Real commands on the demo corpus."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lcdata.util import progress
from lcdata.util.parallel import ordered_map

ROOT = Path(__file__).resolve().parents[2]
BOOKS = str(ROOT / "data" / "demo" / "books")
TOK = str(ROOT / "data" / "demo" / "tokenizer.json")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "LCDATA_PROGRESS_INTERVAL": "0.005"}  # a redraw every 5 ms: a file's middle is seen on a fast machine


def lcdata_in_pty(*args) -> tuple[int, str]:
    """Run ``python -m lcdata ARGS`` with stderr on a pseudo-terminal (160 columns); its stderr as text."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    p = subprocess.Popen([sys.executable, "-m", "lcdata", *map(str, args)], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=slave, env=_env(), cwd=ROOT)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(master)
    return p.wait(), out.decode(errors="replace")


def lcdata_logged(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lcdata", *map(str, args)], capture_output=True, text=True,
                          env=_env(), cwd=ROOT)


def test_the_bar_moves_inside_a_file_under_a_terminal(tmp_path):
    # one worker, the HF engine (1M-character sub-batches): the first book is counted in several steps
    rc, err = lcdata_in_pty("stats", BOOKS, "--tokenizer", TOK, "--engine", "hf", "--workers", "1", "--no-figure",
                            "--out", tmp_path / "st")
    assert rc == 0, err
    frames = [f for f in re.split(r"[\r\n]+", err) if f.startswith("stats:")]
    assert len(frames) > 3, err
    seen = [(int(m[1]), int(m[2].replace(",", ""))) for f in frames
            if (m := re.search(r"(\d+)/3 files, ([\d,]+) docs", f))]
    per_file = pl.read_parquet(tmp_path / "st" / "files.parquet")["n_counted"].to_list()
    at_file_ends = set(np.cumsum([0, *per_file]).tolist())
    # a frame drawn while a file was being read: documents counted that no number of whole files adds up to
    assert any(docs not in at_file_ends for _, docs in seen), seen
    assert seen[-1] == (3, sum(per_file))  # and the last frame is the total
    assert "100%" in frames[-1] and "Traceback" not in err


def test_a_log_gets_one_line_per_stage_and_quiet_nothing(tmp_path):
    p = lcdata_logged("stats", BOOKS, "--workers", "1", "--no-figure", "--out", tmp_path / "st")
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"stats: 3 files, [\d.]+ MB, [\d,]+ docs in [\d.]+ s \(.+ MB/s\)",
                                            lines[0]), p.stderr
    p = lcdata_logged("build", BOOKS, "--tokenizer", TOK, "--seq-len", "2048", "--out", tmp_path / "sh",
                      "--workers", "1")
    assert p.returncode == 0, p.stderr
    stages = [ln.split(":")[0] for ln in p.stderr.splitlines()]
    assert stages == ["tokenize", "pack"], p.stderr
    assert re.search(r"pack: [\d,]+ seq, 1/1 shards, [\d.]+ MB written in", p.stderr), p.stderr
    p = lcdata_logged("stats", BOOKS, "--workers", "1", "--no-figure", "--quiet", "--out", tmp_path / "st2")
    assert p.returncode == 0 and p.stderr == ""


def _count_in_steps(n):
    progress.chunk_read(0, 1000, 10)
    progress.partial(0.5)
    seen = list(_ARRAY[:2])
    progress.chunk_done()
    return seen


_ARRAY = None


def test_workers_write_their_files_counters_and_unbound_calls_do_nothing():
    global _ARRAY
    progress.partial(0.5)  # no meter bound: nothing happens
    m = progress.Meter(2)
    _ARRAY = m.array
    out = list(ordered_map(_count_in_steps, [0, 1], 1, meter=m))
    assert out[0] == [500, 5]  # half of the chunk's bytes and documents, mid-chunk
    assert m.totals() == (2000, 20)  # both items done
    progress.partial(0.5)
    assert m.totals() == (2000, 20)  # unbound again after the map


def test_eval_loss_progress_ends_at_the_total_and_names_the_run(train_shards):
    """50 windows: the bar's last frame is 50/50 and the log's one line says 50, under the --name given."""
    pytest.importorskip("torch")
    args = ("eval-loss", "--model", f"unigram:{train_shards}", "--shards", train_shards, "--name", "my-unigram")
    rc, err = lcdata_in_pty(*args)
    assert rc == 0, err
    frames = [f for f in re.split(r"[\r\n]+", err) if f.startswith("eval-loss my-unigram:")]
    assert frames and re.search(r"\b50/50 \[", frames[-1]) and "100%" in frames[-1], frames[-3:]
    p = lcdata_logged(*args)
    assert p.returncode == 0, p.stderr
    assert re.fullmatch(r"eval-loss my-unigram: 50 seq, [\d,]+ tokens scored in [\d.]+ s \(.+ seq/s\)\n", p.stderr)
    assert "my-unigram" in p.stdout  # the table's rows carry the name


def test_the_reader_reports_compressed_bytes_and_documents_chunk_by_chunk(tmp_path):
    """The demo corpus's zstd files concatenated (a valid multi-frame file of 3.4 MB, read ahead whole) and
    read in 64 KiB chunks: as each chunk starts, its counters hold the compressed bytes the decoder consumed
    (not what was read ahead) and the documents before it; at the end, every document."""
    from lcdata.corpus import ReadConfig, iter_lengths
    from lcdata.corpus.inputs import resolve_inputs

    path = tmp_path / "all.jsonl.zst"
    path.write_bytes(b"".join(p.read_bytes() for p in sorted((ROOT / "data" / "demo").glob("*/*.jsonl.zst"))))
    f = resolve_inputs([str(path)])[0]
    m = progress.Meter(1)
    progress.bind(m.array, 0)
    try:
        seen, docs = [], 0
        for lengths in iter_lengths(f, ReadConfig(chunk_bytes=64 << 10)):
            seen.append(tuple(m.array[:2]))
            docs += len(lengths.rows)
    finally:
        progress.bind(None, 0)
    assert len(seen) > 2 and seen[0] == (0, 0)
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in zip(seen, seen[1:])), seen  # both move inside the file
    assert len({b for b, _ in seen}) >= 3, seen  # bytes by the decoder's 1 MiB reads, documents by chunk
    assert seen[-1][0] < m.totals()[0] <= f.size and m.totals()[1] == docs  # the end: every document
