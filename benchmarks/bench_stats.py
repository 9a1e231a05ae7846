#!/usr/bin/env python
"""Throughput and memory of `lcdata stats` on >= 200 MB of real text, beside its limits and a peer.

One run prints one table; every ratio in it comes from that run. Measurements (each in a fresh process):

* **parse floor**: zstd decompression + `pyarrow.json` parsing of the same files with the same libraries and
  options lcdata uses (one-shot decompression of each file's frame, zero-copy parse, explicit schema, one
  thread per task), mapping over the files one at a time on a pool of one worker per core. Nothing else is
  done with the documents. It runs on a thread pool (as lcdata's character mode does: zstd and Arrow's
  parser release the GIL) and on a `spawn` process pool; the faster of the two is THE floor the ratio uses
  (threads here: about 25% faster, no interpreter start and imports per worker).
* **hand-written lower bound**: the floor's pass plus the least a stats program writing lcdata's outputs
  must do, with Arrow and NumPy only (characters per document, the per-document table written to parquet
  as lcdata writes ``doc_lengths.parquet``, a per-source summary; no Polars, no figure, no validation):
  a reference for how much of the floor any implementation can reach here. No target.
* **raw tokenizer**: `Tokenizer.encode_batch_fast` (no special tokens) on the same texts, loaded in memory
  beforehand, with a Rayon pool of one thread per core; timed only around encoding.
* **datatrove**: `JsonlReader` + `DocStats` (summary and histogram groups) run by a `LocalPipelineExecutor`
  with tasks = workers = cores, on the same files.
* **lcdata stats**: the real CLI (`lcdata stats CORPUS --out DIR --quiet`, default options: per-document
  table and figure written), character mode and tokenizer mode (``data/demo/tokenizer.json``), at the whole
  corpus and at a quarter of its files; peak RSS of the parent process and of its worker processes.

Wall times are of the whole process (interpreter start, imports and pool start included) except the raw
tokenizer's. MB = 10^6 bytes of UTF-8 document text (the ``text`` fields, uncompressed); the table also
gives the compressed size of the files.

The bench corpus is assembled once (cached under ``--corpus-dir``, deterministic for a given machine and
package versions) from real text only: the running interpreter's standard library, and Debian packages
fetched with ``apt-get download`` (Go and Rust standard library sources, Python, Perl and Linux kernel
documentation, the GCIDE dictionary). Nothing is repeated: if less real text is available than asked, it
stops with a message.

    python benchmarks/bench_stats.py                  # 200 MB, a few minutes on 2 cores
    python benchmarks/bench_stats.py --quick          # 20 MB smoke run, < 1 minute
    python benchmarks/bench_stats.py --skip-datatrove
    python benchmarks/bench_stats.py --repeat 5       # floor and character mode: fastest of 5 rounds each
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO / "data" / "demo" / "tokenizer.json"
CORPUS_FORMAT = 1  # bump when the assembly changes, to invalidate cached corpora
FILES_TARGET = 60  # about this many .jsonl.zst files
MIN_FILE_MB = 1.0
ZSTD_LEVEL = 3
TOKENIZER_BATCH_CHARS = 1 << 20  # best of 64K..16M chars here; 16M costs ~1.5x the CPU (Encoding memory)
MB = 1e6
POOLS = ("threads", "processes")  # the parse floor runs on both; the faster is the floor

# ------------------------------------------------------------------------------------- corpus sources

# name -> (Debian package or None for the local interpreter, licence, what to take)
SOURCES = {
    "python-stdlib": (None, "PSF-2.0", "the running interpreter's standard library, **/*.py"),
    "go-stdlib": ("golang-1.19-src", "BSD-3-Clause", "Go 1.19 sources, **/*.go"),
    "rust-src": ("rust-src", "MIT OR Apache-2.0", "Rust 1.63 sources, **/*.rs"),
    "python-docs": ("python3.11-doc", "PSF-2.0", "Python 3.11 docs, html/_sources/**/*.rst.txt"),
    "perl-docs": ("perl-doc", "Artistic-1.0 OR GPL-1.0+", "Perl 5.36 pod, **/*.pod"),
    "linux-docs": ("linux-doc-6.1", "GPL-2.0", "Linux 6.1 docs, html/_sources/**/*.rst.txt"),
    "dictionary": ("dict-gcide", "GPL-3.0+", "GCIDE (Webster 1913 based), one entry per document"),
}


def _decode(data: bytes) -> str | None:
    """Strict UTF-8 text without NULs, else None (binary or mis-encoded files are left out)."""
    if not data or b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _files(root: Path, pattern: str, exclude: tuple[str, ...] = ()):
    seen = set()  # a file reached twice through a symlinked folder is taken once
    for p in sorted(root.glob(pattern)):
        rel = p.relative_to(root).as_posix()
        real = p.resolve()
        if real in seen:
            continue
        seen.add(real)
        if p.is_file() and not any(part in exclude for part in p.relative_to(root).parts):
            text = _decode(p.read_bytes())
            if text is not None:
                yield rel, text


def _b64_int(s: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for c in s:
        n = n * 64 + alphabet.index(c)
    return n


def _gcide(root: Path):
    d = root / "usr" / "share" / "dictd"
    data = gzip.decompress((d / "gcide.dict.dz").read_bytes())  # dictzip is gzip-compatible
    seen = set()
    for line in (d / "gcide.index").read_text(encoding="utf-8").splitlines():
        word, off, length = line.split("\t")
        if word.startswith("00-database") or off in seen:
            continue
        seen.add(off)
        o, n = _b64_int(off), _b64_int(length)
        text = _decode(data[o:o + n])
        if text is not None and text.strip():
            yield f"{o}", text


def _collect(name: str, root: Path | None):
    if name == "python-stdlib":
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        return _files(stdlib, "**/*.py", exclude=("site-packages", "dist-packages", "__pycache__"))
    if name == "go-stdlib":
        return _files(root, "usr/share/go-*/src/**/*.go")
    if name == "rust-src":
        return _files(root, "usr/src/rustc-*/**/*.rs")
    if name == "python-docs":
        return _files(root, "usr/share/doc/python3*/html/_sources/**/*.rst.txt")
    if name == "perl-docs":
        return _files(root, "usr/share/perl/**/*.pod")
    if name == "linux-docs":
        return _files(root, "usr/share/doc/linux-doc-*/html/_sources/**/*.rst.txt")
    if name == "dictionary":
        return _gcide(root)
    raise ValueError(name)


def _fetch_debs(tmp: Path) -> dict[str, tuple[Path, str]]:
    """apt-get download + dpkg-deb -x each package; returns {package: (root, version)} for those that worked."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return {}
    out = {}
    for pkg in sorted({p for p, _, _ in SOURCES.values() if p}):
        d = tmp / pkg
        d.mkdir()
        r = subprocess.run(["apt-get", "download", pkg], cwd=d, capture_output=True, text=True)
        debs = sorted(d.glob("*.deb"))
        if r.returncode or not debs:
            print(f"  apt-get download {pkg} failed: {(r.stderr or r.stdout).strip()[-300:]}", file=sys.stderr)
            continue
        root = d / "root"
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(root)], check=True)
        version = subprocess.run(["dpkg-deb", "-f", str(debs[0]), "Version"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        debs[0].unlink()
        out[pkg] = (root, version)
    return out


def _key(source: str, rel: str) -> str:
    return hashlib.sha1(f"{source}/{rel}".encode()).hexdigest()


def build_corpus(corpus_dir: Path, size_mb: float) -> dict:
    """Assemble (or reuse) the bench corpus; returns its manifest."""
    manifest_path = corpus_dir / "manifest.json"
    if manifest_path.exists():
        m = json.loads(manifest_path.read_text())
        if (m.get("format") == CORPUS_FORMAT and m.get("size_mb") == size_mb
                and all((corpus_dir / f["path"]).is_file() for f in m["files"])):
            return m
        for s in m.get("sources", {}):
            shutil.rmtree(corpus_dir / s, ignore_errors=True)
        manifest_path.unlink()
    elif corpus_dir.exists() and any(corpus_dir.iterdir()):
        sys.exit(f"bench: {corpus_dir} exists, is not empty and holds no manifest.json; "
                 "pass an empty or new --corpus-dir")

    import zstandard

    t0 = time.perf_counter()
    print(f"assembling a {size_mb:g} MB bench corpus of real text in {corpus_dir} (once; cached) ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="lcdata-bench-") as tmp:
        debs = _fetch_debs(Path(tmp))
        docs: dict[str, list[tuple[str, str]]] = {}
        info: dict[str, dict] = {}
        for name, (pkg, licence, what) in SOURCES.items():
            if pkg is None:
                version = f"Python {platform.python_version()}"
                root = None
            elif pkg in debs:
                root, v = debs[pkg]
                version = f"{pkg} {v}"
            else:
                continue
            got = sorted(_collect(name, root), key=lambda d, n=name: _key(n, d[0]))
            if got:
                docs[name] = got
                info[name] = {"origin": version, "licence": licence, "what": what}
    have = {n: sum(len(t.encode()) for _, t in d) for n, d in docs.items()}
    total = sum(have.values())
    print("  available: " + ", ".join(f"{n} {b / MB:.1f} MB" for n, b in have.items()) + f"; total {total / MB:.1f} MB")
    if total < size_mb * MB:
        sys.exit(f"bench: only {total / MB:.1f} MB of real text could be assembled (need {size_mb:g} MB; text is "
                 "never repeated). apt-get download of the Debian packages "
                 f"{sorted(p for p, _, _ in SOURCES.values() if p)} is needed: run on Debian 12 with apt "
                 "reachable, or pass a smaller --size-mb.")
    frac = size_mb * MB / total
    per_file = max(size_mb * MB / FILES_TARGET, MIN_FILE_MB * MB)
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, items in docs.items():
        want = frac * have[name]
        chosen, acc = [], 0
        for _rel, text in items:  # deterministic pseudo-random order (sha1 of the path)
            if acc >= want:
                break
            chosen.append(text)
            acc += len(text.encode())
        n_files = max(1, round(acc / per_file))
        (corpus_dir / name).mkdir()
        groups: list[list[str]] = [[] for _ in range(n_files)]
        done = 0
        for text in chosen:
            groups[min(n_files - 1, int(done * n_files / acc))].append(text)
            done += len(text.encode())
        for i, group in enumerate(groups):
            lines = [json.dumps({"text": t, "meta": {"redpajama_set_name": name}}, ensure_ascii=False)
                     for t in group]
            raw = ("\n".join(lines) + "\n").encode()
            rel = f"{name}/part-{i:05d}.jsonl.zst"
            z = cctx.compress(raw)
            (corpus_dir / rel).write_bytes(z)
            files.append({"path": rel, "source": name, "n_docs": len(group),
                          "text_bytes": sum(len(t.encode()) for t in group), "jsonl_bytes": len(raw),
                          "zst_bytes": len(z)})
        info[name].update(n_docs=len(chosen), text_bytes=acc, n_files=n_files)
    m = {"format": CORPUS_FORMAT, "size_mb": size_mb, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
         "sources": info, "files": files}
    manifest_path.write_text(json.dumps(m, indent=1))
    print(f"  wrote {len(files)} files in {time.perf_counter() - t0:.0f} s", flush=True)
    return m


# ------------------------------------------------------------------------------ child processes (timed)


def _read_schema():
    import pyarrow as pa

    return pa.schema([pa.field("text", pa.string()),
                      pa.field("meta", pa.struct([pa.field("redpajama_set_name", pa.string())]))])


def _parse_file(path: str):
    """zstd decompression + pyarrow.json parsing of one file, as lcdata does it (one thread): the file's one
    frame decompressed in one call into an exactly-sized buffer, parsed from it without a copy."""
    import pyarrow as pa
    import pyarrow.json as pj
    import zstandard

    with open(path, "rb") as fh:
        data = zstandard.ZstdDecompressor().decompress(fh.read())  # the bench files are one frame each
    return pj.read_json(
        pa.BufferReader(pa.py_buffer(data)),
        read_options=pj.ReadOptions(block_size=len(data) + 1, use_threads=False),
        parse_options=pj.ParseOptions(explicit_schema=_read_schema(), unexpected_field_behavior="ignore"),
    )


def _floor_one(path: str) -> int:
    return _parse_file(path).num_rows


def child_floor(pool: str, workers: int, files: list[str]) -> dict:
    """The parse floor on a pool of ``workers`` threads of this process (the GIL is released while zstd and
    Arrow's parser run) or ``workers`` spawned processes, one file per task, in order."""
    if pool == "threads":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as ex:
            n = sum(ex.map(_floor_one, files))
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as mpool:
            n = sum(mpool.imap(_floor_one, files, chunksize=1))
    return {"n_docs": n}


def child_lean(workers: int, root: str, out_dir: str, files: list[str]) -> dict:
    """A hand-written lower bound for character-mode statistics, with Arrow and NumPy only (no lcdata, no
    Polars, no figure, no validation beyond the parser's): the parse floor's pass, then per file the
    characters per document, the per-document table of ``doc_lengths.parquet`` (same columns and encoding as
    lcdata's) and a (source, length) histogram; the parent streams the tables to parquet and writes a
    per-source summary. What any program writing these outputs pays on top of the floor."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    s = pa.large_string()
    schema = pa.schema([("doc_id", s), ("file", s), ("row", pa.int64()), ("source", s), ("n_chars", pa.int64()),
                        ("n_tokens", pa.int64()), ("n_est_tokens", pa.int64())])

    def one(path):
        t = _parse_file(path)
        n_chars = pc.utf8_length(t.column("text")).to_numpy().astype(np.int64)
        src = pc.struct_field(t.column("meta"), "redpajama_set_name").combine_chunks()
        est = np.ceil(n_chars / 3.68).astype(np.int64)
        n, rel = len(n_chars), pa.scalar(os.path.relpath(path, root), s)
        rows = pa.array(np.arange(n, dtype=np.int64))
        ids = pc.binary_join_element_wise(rel, pc.cast(rows, s), pa.scalar(":", s))
        docs = pa.Table.from_arrays([ids, pa.repeat(rel, n), rows, src.cast(s), pa.array(n_chars), pa.array(est),
                                     pa.array(est)], schema=schema)
        enc = pc.dictionary_encode(src)
        k = enc.indices.to_numpy()
        order = np.lexsort((est, k))
        k, e = k[order], est[order]
        starts = np.flatnonzero(np.r_[True, (k[1:] != k[:-1]) | (e[1:] != e[:-1])])
        hist = (enc.dictionary.to_pylist(), k[starts], e[starts], np.diff(np.r_[starts, len(k)]),
                np.add.reduceat(n_chars[order], starts))
        return docs, hist

    os.makedirs(out_dir, exist_ok=True)
    totals: dict[str, list[int]] = {}
    w = pq.ParquetWriter(os.path.join(out_dir, "doc_lengths.parquet"), schema, compression="zstd",
                         use_dictionary=["file", "source"])
    with ThreadPoolExecutor(workers) as ex:
        for docs, (names, k, e, nd, nc) in ex.map(one, files):
            w.write_table(docs)
            sums = np.zeros((len(names), 3), np.int64)  # per source: documents, characters, est. tokens
            np.add.at(sums, k, np.stack([nd, nc, e * nd], axis=1))
            for name, row in zip(names, sums.tolist()):
                acc = totals.setdefault(name, [0, 0, 0])
                for j in range(3):
                    acc[j] += row[j]
    w.close()
    pq.write_table(pa.table({"source": list(totals), **{c: [v[i] for v in totals.values()] for i, c in
                                                        enumerate(("n_docs", "n_chars", "n_tokens"))}}),
                   os.path.join(out_dir, "sources.parquet"))
    return {"n_docs": sum(v[0] for v in totals.values())}


def child_tokenizer(threads: int, files: list[str]) -> dict:
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    texts = [t for f in files for t in _parse_file(f).column("text").to_pylist()]
    batches, start = [], 0
    while start < len(texts):
        end, chars = start, 0
        while end < len(texts) and (chars < TOKENIZER_BATCH_CHARS or end == start):
            chars += len(texts[end])
            end += 1
        batches.append(texts[start:end])
        start = end
    n_tokens = 0
    r0, t0 = _cpu(resource.RUSAGE_SELF), time.perf_counter()
    for b in batches:
        n_tokens += sum(len(e) for e in tok.encode_batch_fast(b, add_special_tokens=False))
    return {"encode_s": time.perf_counter() - t0, "encode_cpu_s": _cpu(resource.RUSAGE_SELF) - r0,
            "n_tokens": n_tokens, "n_docs": len(texts)}


def _cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def child_datatrove(workers: int, corpus_dir: str, out_dir: str) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.stats import DocStats

    LocalPipelineExecutor(
        pipeline=[JsonlReader(corpus_dir, glob_pattern="*/*.jsonl.zst"),
                  DocStats(os.path.join(out_dir, "stats"), groups_to_compute=["summary", "histogram"])],
        tasks=workers, workers=workers, logging_dir=os.path.join(out_dir, "logs"), skip_completed=False,
        start_method="spawn",  # not its default forkserver: workers must be our children to count their CPU/RSS
    ).run()
    return {}


def child_lcdata(argv: list[str]) -> dict:
    from lcdata.cli import run  # what the installed `lcdata` script runs

    rc = run(argv)
    if rc:
        raise SystemExit(rc)
    return {}


def child_lcdata_engine(engine: str, inputs: list[str], out: str) -> dict:
    """`lcdata stats --tokenizer` with a given tokenizer engine, through the API (what the CLI calls)."""
    from lcdata import StatsConfig, run_stats

    run_stats(inputs, out, StatsConfig(tokenizer=str(TOKENIZER), engine=engine), overwrite=True)
    return {}


def _child_main(argv: list[str]) -> None:
    kind, result_path, rest = argv[0], argv[1], argv[2:]
    if kind == "build":
        build_corpus(Path(rest[0]), float(rest[1]))
        res = {}
    elif kind == "floor":
        res = child_floor(rest[0], int(rest[1]), rest[2:])
    elif kind == "lean":
        res = child_lean(int(rest[0]), rest[1], rest[2], rest[3:])
    elif kind == "tokenizer":
        res = child_tokenizer(int(rest[0]), rest[1:])
    elif kind == "datatrove":
        res = child_datatrove(int(rest[0]), rest[1], rest[2])
    elif kind == "lcdata":
        res = child_lcdata(rest)
    elif kind == "lcdata-engine":
        res = child_lcdata_engine(rest[0], rest[2:], rest[1])
    else:
        raise SystemExit(f"unknown child {kind}")
    res["self_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res["cpu_s"] = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
    res["children_maxrss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    Path(result_path).write_text(json.dumps(res))


def run_child(kind: str, args: list[str], tmp: Path, log_name: str, env: dict | None = None,
              script: str | None = None) -> dict:
    """Run one measurement in a fresh interpreter (``script --_child KIND RESULT ARGS``, this file by default);
    returns its result plus ``wall_s`` (whole process)."""
    result = tmp / f"{log_name}.json"
    log = tmp / f"{log_name}.log"
    cmd = [sys.executable, script or str(Path(__file__).resolve()), "--_child", kind, str(result), *args]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        r = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO)
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"bench: {log_name} failed (exit {r.returncode}); last lines of {log}:\n"
                 + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
    res = json.loads(result.read_text())
    res["wall_s"] = wall
    return res


# ----------------------------------------------------------------------------------------------- main


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"Python {platform.python_version()}"]
    for p in ("lcdata", "polars", "pyarrow", "zstandard", "tokenizers", "tiktoken", "datatrove"):
        try:
            out.append(f"{p} {version(p)}")
        except PackageNotFoundError:
            out.append(f"{p} -")
    return ", ".join(out)


def _mib(kb: int) -> str:
    return f"{kb / 1024:.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus-dir", default=None,
                    help="where the bench corpus is assembled and cached (default out/bench/corpus, "
                         "out/bench/corpus-quick with --quick)")
    ap.add_argument("--size-mb", type=float, default=None, help="MB of document text (default 200; 20 with --quick)")
    ap.add_argument("--quick", action="store_true", help="a 20 MB smoke run (< 1 minute)")
    ap.add_argument("--skip-datatrove", action="store_true", help="do not run the datatrove peer")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of the parse floor and character-mode runs (seconds each), interleaved; each "
                         "keeps its fastest round (default 1)")
    a = ap.parse_args()
    size_mb = a.size_mb if a.size_mb is not None else (20.0 if a.quick else 200.0)
    corpus_dir = Path(a.corpus_dir or ("out/bench/corpus-quick" if a.quick else "out/bench/corpus"))
    if not corpus_dir.is_absolute():
        corpus_dir = (Path.cwd() / corpus_dir).resolve()
    if not a.skip_datatrove:
        missing = [m for m in ("datatrove", "orjson", "tldextract") if not _importable(m)]
        if missing:
            sys.exit(f"bench: datatrove's JsonlReader + DocStats need {missing}: "
                     f"`pip install {' '.join(missing)}`, or pass --skip-datatrove")

    cores = len(os.sched_getaffinity(0))  # = lcdata.util.config.default_workers(); lcdata is not imported here
    # The corpus is assembled in a child process and no heavy module is imported here: a child's peak RSS
    # (ru_maxrss) starts from its parent's at fork/exec, so this process must stay small.
    with tempfile.TemporaryDirectory(prefix="lcdata-bench-build-") as tmp_s:
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_child", "build",
                            str(Path(tmp_s) / "r.json"), str(corpus_dir), str(size_mb)], cwd=REPO)
        if r.returncode:
            sys.exit(r.returncode)
    m = json.loads((corpus_dir / "manifest.json").read_text())
    files = [str(corpus_dir / f["path"]) for f in m["files"]]
    quarter = [f for i, f in enumerate(m["files"]) if i % 4 == 0]
    text_b = sum(f["text_bytes"] for f in m["files"])
    zst_b = sum(f["zst_bytes"] for f in m["files"])
    jsonl_b = sum(f["jsonl_bytes"] for f in m["files"])
    q_text_b = sum(f["text_bytes"] for f in quarter)
    q_zst_b = sum(f["zst_bytes"] for f in quarter)
    n_docs = sum(f["n_docs"] for f in m["files"])
    print(f"corpus: {len(files)} files, {n_docs:,} documents, {text_b / MB:.1f} MB text "
          f"({jsonl_b / MB:.1f} MB JSONL, {zst_b / MB:.1f} MB zstd-compressed), {len(m['sources'])} sources: "
          + ", ".join(f"{n} {s['text_bytes'] / MB:.0f}" for n, s in m["sources"].items()))
    print(f"machine: {cores} cores, {platform.platform()}; {_versions()}", flush=True)

    load0 = os.getloadavg()[0]
    if load0 > 0.25 * cores:
        print(f"warning: the machine is busy (1-min load average {load0:.1f} on {cores} cores): wall times and "
              "ratios will be noisy; the CPU-seconds column is less affected", flush=True)
    with tempfile.TemporaryDirectory(prefix="lcdata-bench-run-") as tmp_s:
        tmp = Path(tmp_s)
        qdir = tmp / "quarter"  # a copy, so the files keep distinct relative names (<source>/part-*)
        for f in quarter:
            (qdir / f["source"]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(corpus_dir / f["path"], qdir / f["path"])
        q_files = [str(qdir / f["path"]) for f in quarter]
        def char_argv(name, inputs):
            return ["stats", *inputs, "--out", str(tmp / name), "--quiet", "--overwrite"]  # rounds reuse the folder

        # The parse floor and character mode take seconds: with --repeat they run in interleaved rounds and
        # each keeps its fastest (the machine's noise is +-20% from run to run).
        quick_runs = {f"floor-{pool}{part}": ("floor", [pool, str(cores), *fs])
                      for pool in POOLS for part, fs in (("", files), ("-quarter", q_files))}
        quick_runs.update({
            "lean": ("lean", [str(cores), str(corpus_dir), str(tmp / "lean"), *files]),
            "lcdata-char": ("lcdata", char_argv("lcdata-char", [str(corpus_dir)])),
            "lcdata-char-quarter": ("lcdata", char_argv("lcdata-char-quarter", [str(qdir)]))})
        fastest: dict[str, dict] = {}
        for rep in range(a.repeat):
            print(f"running: parse floors, hand-written lower bound and lcdata character mode (full, 1/4)"
                  f"{f', round {rep + 1}/{a.repeat}' if a.repeat > 1 else ''} ...", flush=True)
            for name, (kind, args) in quick_runs.items():
                res = run_child(kind, args, tmp, f"{name}-{rep}")
                if name not in fastest or res["wall_s"] < fastest[name]["wall_s"]:
                    fastest[name] = res
        # The floor is the faster of the two pools (threads here: no interpreter start per worker).
        pool = min(POOLS, key=lambda p: fastest[f"floor-{p}"]["wall_s"])
        floor, floor_q = fastest[f"floor-{pool}"], fastest[f"floor-{pool}-quarter"]
        lean = fastest["lean"]
        if lean["n_docs"] != n_docs:
            sys.exit(f"bench: the hand-written lower bound counted {lean['n_docs']} documents, expected {n_docs}")
        lc_char, lc_char_q = fastest["lcdata-char"], fastest["lcdata-char-quarter"]
        print("running: raw tokenizer ...", flush=True)
        rawtok = run_child("tokenizer", [str(cores), *files], tmp, "tokenizer")
        dt = None
        if not a.skip_datatrove:
            print("running: datatrove JsonlReader + DocStats ...", flush=True)
            dt = run_child("datatrove", [str(cores), str(corpus_dir), str(tmp / "dt")], tmp, "datatrove")

        def lcdata_tok(name, inputs):
            print(f"running: {name} ...", flush=True)
            return run_child("lcdata", char_argv(name, inputs) + ["--tokenizer", str(TOKENIZER)], tmp, name)

        lc_tok = lcdata_tok("lcdata-tok", [str(corpus_dir)])
        lc_tok_q = lcdata_tok("lcdata-tok-quarter", [str(qdir)])
        engine = json.loads((tmp / "lcdata-tok" / "stats.json").read_text()).get("engine") or {"name": "hf"}
        lc_hf = None
        if engine["name"] != "hf":  # the default engine is not HF's: also time the HF engine, like for like
            print("running: lcdata-tok-hf (engine hf) ...", flush=True)
            lc_hf = run_child("lcdata-engine", ["hf", str(tmp / "lcdata-tok-hf"), str(corpus_dir)], tmp,
                              "lcdata-tok-hf")
        # the runs must agree on what they read and count
        for name, res in (("lcdata-char", lc_char), ("lcdata-tok", lc_tok), ("lcdata-tok-hf", lc_hf)):
            if res is None:
                continue
            st = json.loads((tmp / name / "stats.json").read_text())
            if st["totals"]["n_docs"] != n_docs or st["totals"]["n_docs"] != floor["n_docs"]:
                sys.exit(f"bench: {name} counted {st['totals']['n_docs']} documents, expected {n_docs}")
            res["n_tokens"] = st["totals"]["n_tokens"]
        for res in (lc_tok, lc_hf):
            if res is not None and res["n_tokens"] != rawtok["n_tokens"]:
                sys.exit(f"bench: lcdata counted {res['n_tokens']} tokens, raw tokenizer {rawtok['n_tokens']}")
    load1 = os.getloadavg()[0]

    def mbs(sec, b=text_b):
        return b / MB / sec

    def rss(res):
        return f"{_mib(res['self_maxrss_kb'])} / {_mib(res['children_maxrss_kb'])}"

    floor_r, tok_r = mbs(floor["wall_s"]), mbs(rawtok["encode_s"])
    dt_r = mbs(dt["wall_s"]) if dt else None
    char_r, tokm_r = mbs(lc_char["wall_s"]), mbs(lc_tok["wall_s"])
    E = ""  # empty cell
    rows = [  # name, seconds, cpu seconds, MB/s, ratio, vs, target, rss
        *((f"{'PARSE FLOOR' if p == pool else 'parse'}: zstd + pyarrow.json, {cores} {p}",
           fastest[f"floor-{p}"]["wall_s"], fastest[f"floor-{p}"]["cpu_s"], mbs(fastest[f"floor-{p}"]["wall_s"]),
           E, E, E, rss(fastest[f"floor-{p}"])) for p in POOLS),
        ("hand-written lower bound (Arrow only)", lean["wall_s"], lean["cpu_s"], mbs(lean["wall_s"]),
         mbs(lean["wall_s"]) / floor_r, "x parse floor", E, rss(lean)),
        (f"raw tokenizer: encode_batch_fast, {cores} threads", rawtok["encode_s"], rawtok["encode_cpu_s"], tok_r,
         E, E, E, rss(rawtok)),
    ]
    if dt:
        rows.append((f"datatrove JsonlReader+DocStats, {cores} tasks", dt["wall_s"], dt["cpu_s"], dt_r, E, E, E,
                     rss(dt)))
    rows.append(("lcdata stats, char mode", lc_char["wall_s"], lc_char["cpu_s"], char_r, char_r / floor_r,
                 "x parse floor", 0.8, rss(lc_char)))
    if dt:
        rows.append(("lcdata stats, char mode", lc_char["wall_s"], lc_char["cpu_s"], char_r, char_r / dt_r,
                     "x datatrove", 10.0, rss(lc_char)))
    rows.append((f"lcdata stats, tokenizer mode ({engine['name']})", lc_tok["wall_s"], lc_tok["cpu_s"], tokm_r,
                 tokm_r / tok_r, "x raw tokenizer", 0.9, rss(lc_tok)))
    if lc_hf:
        hf_r = mbs(lc_hf["wall_s"])
        rows.append(("lcdata stats, tokenizer mode (engine hf)", lc_hf["wall_s"], lc_hf["cpu_s"], hf_r,
                     hf_r / tok_r, "x raw tokenizer", 0.9, rss(lc_hf)))
    rows.append((f"parse floor ({pool}), 1/4 files", floor_q["wall_s"], floor_q["cpu_s"], mbs(floor_q["wall_s"], q_text_b),
                 E, E, E, rss(floor_q)))
    rows.append(("lcdata stats, char mode, 1/4 files", lc_char_q["wall_s"], lc_char_q["cpu_s"],
                 mbs(lc_char_q["wall_s"], q_text_b), E, E, E, rss(lc_char_q)))
    rows.append(("lcdata stats, tokenizer mode, 1/4 files", lc_tok_q["wall_s"], lc_tok_q["cpu_s"],
                 mbs(lc_tok_q["wall_s"], q_text_b), E, E, E, rss(lc_tok_q)))

    print()
    print(f"MB = 10^6 bytes of UTF-8 document text (uncompressed). Full corpus: {text_b / MB:.1f} MB text = "
          f"{zst_b / MB:.1f} MB compressed ({len(files)} files); 1/4 files: {q_text_b / MB:.1f} MB text = "
          f"{q_zst_b / MB:.1f} MB compressed ({len(quarter)} files).")
    print(f"tokens: {rawtok['n_tokens']:,} ({text_b / rawtok['n_tokens']:.2f} bytes/token). seconds = wall time of "
          "the whole process (start, imports, pool, outputs), except the raw tokenizer's (encoding only); "
          "CPU s = user+sys of the process and its workers.")
    hdr = ("measurement", "seconds", "CPU s", "MB/s", "ratio", "vs", "target", "result", "peak RSS parent / workers")
    w = [43, 7, 7, 7, 6, 15, 6, 6, 25]
    left = (0, 5, 8)

    def line(cells):
        return "  ".join(c.ljust(n) if i in left else c.rjust(n) for i, (c, n) in enumerate(zip(cells, w))).rstrip()

    print(line(hdr))
    print(line(["-" * n for n in w]))
    failed = 0
    for name, sec, cpu, rate, ratio, vs, target, r in rows:
        ok = E if target == E else ("PASS" if ratio >= target else "FAIL")
        failed += ok == "FAIL"
        print(line((name, f"{sec:.2f}", f"{cpu:.1f}", f"{rate:.1f}", f"{ratio:.2f}" if ratio != E else E, vs,
                    f">={target:g}" if target != E else E, ok, r)))
    print()
    for mode, q, full in (("char", lc_char_q, lc_char), ("tokenizer", lc_tok_q, lc_tok)):
        pq = max(q["self_maxrss_kb"], q["children_maxrss_kb"])
        pf = max(full["self_maxrss_kb"], full["children_maxrss_kb"])
        print(f"peak RSS, lcdata {mode} mode: 1/4 corpus ({q_text_b / MB:.0f} MB): parent {_mib(q['self_maxrss_kb'])}, "
              f"workers {_mib(q['children_maxrss_kb'])}; full corpus ({text_b / MB:.0f} MB): parent "
              f"{_mib(full['self_maxrss_kb'])}, workers {_mib(full['children_maxrss_kb'])}; "
              f"largest x{pf / pq:.2f} for x{text_b / q_text_b:.1f} the data")
    # steady state: the difference of the two sizes removes fixed costs (start, imports, pool, figure, outputs)
    d_b = (text_b - q_text_b) / MB
    for name, q, full in (("parse floor", floor_q, floor), ("lcdata stats char mode", lc_char_q, lc_char)):
        d_t = full["wall_s"] - q["wall_s"]
        if d_t > 0:
            rate = d_b / d_t
            print(f"steady state, {name}: {rate:.0f} MB/s; fixed cost {full['wall_s'] - text_b / MB / rate:.2f} s "
                  "(from the 1/4 and full runs)")
    cpu = [f"char mode / parse floor {floor['cpu_s'] / lc_char['cpu_s']:.2f} (hand-written lower bound "
           f"{floor['cpu_s'] / lean['cpu_s']:.2f})",
           f"tokenizer mode / raw tokenizer {rawtok['encode_cpu_s'] / lc_tok['cpu_s']:.2f}"]
    if lc_hf:
        cpu.append(f"tokenizer mode (engine hf) / raw tokenizer {rawtok['encode_cpu_s'] / lc_hf['cpu_s']:.2f}")
    if dt:
        cpu.append(f"char mode / datatrove {dt['cpu_s'] / lc_char['cpu_s']:.1f}")
    print("MB per CPU-second, lcdata vs the reference (less sensitive to a busy machine): " + "; ".join(cpu))
    print(f"lcdata tokenizer engine (default 'auto'): {engine['name']} ({engine.get('reason', '')})")
    print(f"load average: {load0:.1f} at start, {load1:.1f} at end ({cores} cores)")
    if a.repeat > 1:
        print(f"parse floors, lower bound and character mode: the fastest of {a.repeat} interleaved rounds "
              "(the rest: one run)")
    print(f"\n{'all targets met' if not failed else f'{failed} target(s) missed'}")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        _child_main(sys.argv[2:])
    else:
        main()
