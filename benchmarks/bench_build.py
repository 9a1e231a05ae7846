#!/usr/bin/env python
"""Throughput and memory of `lcdata build` on >= 200 MB of real text, beside its limits and a peer.

One run prints one table; every ratio in it comes from that run, on the same cores. Measurements (each in a
fresh process; the corpus is the one `bench_stats.py` assembles, imported from it, not another):

* **raw HF tokenizer** (limit a): `Tokenizer.encode_batch_fast` (no special tokens) on the same texts, loaded
  in memory beforehand, Rayon pool of one thread per core, and each encoding's ids as a NumPy array (the
  issue's "raw encode_batch_fast + NumPy conversion": a writer needs the ids); timed only around that.
* **raw tiktoken**: the demo tokenizer converted by `lcdata.tokenizer.tiktoken_engine` (vocab bytes -> id, same regex),
  `Encoding.encode_ordinary_batch` with one thread per core, ids to NumPy, texts in memory, timed only
  around encoding and conversion.
* **datatrove** (peer b): `JsonlReader` + `DocumentTokenizer` (same tokenizer file) run by a
  `LocalPipelineExecutor` with tasks = workers = cores (spawn start method, like lcdata's pool, so its workers'
  CPU time and RSS are counted), on the same files; whole process.
* **lcdata build**: `run_build` (what `lcdata build` calls) with seq-len 131072, concat packing, workers = all
  cores, engine ``hf`` and engine ``tiktoken``; whole process (interpreter start, imports, pool start, reading,
  tokenizing, packing, writing shards and manifest). Then the tiktoken build on a quarter of the files, for
  peak RSS against corpus size. Both builds must write byte-identical shards (checked by sha256).
* Megatron's ``tools/preprocess_data.py`` (peer c) is not run: it ships in the Megatron-LM repository, not in
  the ``megatron-core`` wheel, and needs torch + transformers.

MB = 10^6 bytes of UTF-8 document text (uncompressed); tokens/s counts document tokens (no BOS/EOS).

    python benchmarks/bench_build.py                  # 200 MB, several minutes on 2 cores
    python benchmarks/bench_build.py --quick          # 20 MB smoke run
    python benchmarks/bench_build.py --skip-datatrove --corpus-dir out/bench/corpus
    python benchmarks/bench_build.py --repeat 2      # on a shared machine: fastest of 2 interleaved rounds
    python benchmarks/bench_build.py --scaling        # phase times, serial fraction, Amdahl, RSS per document
    python benchmarks/bench_build.py --scaling --copies 1,4,16 --layout-docs 100K,1M,10M
    python benchmarks/bench_build.py --scaling --copies 1 --layout-docs 100K,1M,10M --layout-limits none,256Mi
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_stats  # noqa: E402  (the corpus assembly and the raw-tokenizer child are reused from there)

REPO = bench_stats.REPO
TOKENIZER = bench_stats.TOKENIZER
SEQ_LEN = 131072
MB = 1e6
SCALING_SEQ_LEN = 8192  # --scaling: the demo copies' builds (short documents, many pieces per sequence)
SCALING_SHARD_TOKENS = 1 << 22


# ------------------------------------------------------------------------------ child processes (timed)


def _texts(files: list[str]) -> list[str]:
    return [t for f in files for t in bench_stats._parse_file(f).column("text").to_pylist()]


def _batches(texts: list[str]) -> list[list[str]]:
    batches, start = [], 0
    while start < len(texts):
        end, chars = start, 0
        while end < len(texts) and (chars < bench_stats.TOKENIZER_BATCH_CHARS or end == start):
            chars += len(texts[end])
            end += 1
        batches.append(texts[start:end])
        start = end
    return batches


def child_raw_hf(threads: int, files: list[str]) -> dict:
    """As `bench_stats.child_tokenizer`, plus the CPU time of the encoding."""
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    import numpy as np
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    batches = _batches(_texts(files))
    n_tokens = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        n_tokens += sum(len(np.asarray(e.ids, dtype=np.uint32)) for e in tok.encode_batch_fast(b, add_special_tokens=False))
    return {"encode_s": time.perf_counter() - t0, "encode_cpu_s": time.process_time() - c0, "n_tokens": n_tokens,
            "n_docs": sum(map(len, batches))}


def child_tiktoken(threads: int, files: list[str]) -> dict:
    import numpy as np

    from lcdata.tokenizer import tiktoken_engine

    eng, why = tiktoken_engine(str(TOKENIZER), threads=threads)
    if eng is None:
        raise SystemExit(f"tiktoken engine unavailable: {why}")
    enc = eng._enc  # the plain tiktoken.Encoding (no added-token handling: the raw library)
    batches = _batches(_texts(files))
    n_tokens = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        n_tokens += sum(len(np.asarray(ids, dtype=np.uint32)) for ids in enc.encode_ordinary_batch(b, num_threads=threads))
    return {"encode_s": time.perf_counter() - t0, "encode_cpu_s": time.process_time() - c0, "n_tokens": n_tokens,
            "n_docs": sum(map(len, batches))}


def child_datatrove(workers: int, corpus_dir: str, out_dir: str) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    LocalPipelineExecutor(
        pipeline=[JsonlReader(corpus_dir, glob_pattern="*/*.jsonl.zst"),
                  DocumentTokenizer(os.path.join(out_dir, "tokens"), tokenizer_name_or_path=str(TOKENIZER),
                                    local_working_dir=os.path.join(out_dir, "work"))],
        tasks=workers, workers=workers, logging_dir=os.path.join(out_dir, "logs"), skip_completed=False,
        start_method="spawn",  # as lcdata's pool; its default forkserver hides the workers' CPU and RSS from us
    ).run()
    return {}


def child_build(engine: str, workers: int, out_dir: str, inputs: list[str]) -> dict:
    from lcdata.build import BuildConfig, run_build

    cfg = BuildConfig(tokenizer=str(TOKENIZER), seq_len=SEQ_LEN, packing="concat", engine=engine)
    m = run_build(inputs, out_dir, cfg, workers=workers).manifest
    return {k: m[k] for k in ("n_tokens", "dropped_tokens", "padding_tokens", "n_documents", "n_sequences",
                              "engine", "special_tokens")} | {
        "shard_sha": [s["files"]["bin"]["sha256"] for s in m["shards"]],
        "docs_read": m["read_report"]["n_read"]}


def child_phases(workers: int, out_dir: str, inputs: list[str]) -> dict:
    """A build of the demo copies (`scaling`): its manifest's phase times."""
    from lcdata.build import BuildConfig, run_build

    cfg = BuildConfig(tokenizer=str(TOKENIZER), seq_len=SCALING_SEQ_LEN, shard_tokens=SCALING_SHARD_TOKENS)
    m = run_build(inputs, out_dir, cfg, workers=workers).manifest
    return {"phase_s": m["phase_s"], "elapsed_s": m["elapsed_s"], "n_instances": m["n_instances"],
            "n_tokens": m["n_tokens"], "shard_sha": [s["files"]["bin"]["sha256"] for s in m["shards"]]}


def child_synth_units(work: str, n_docs: int, n_files: int) -> dict:
    """A synthetic unit table of ``n_docs`` documents over ``n_files`` spill tables (`UNIT_SCHEMA`; lengths
    drawn log-uniform from 50 to 50,000 tokens, 4 sources); no spill data (the layout does not read it)."""
    import numpy as np
    import polars as pl

    from lcdata.build import UNIT_SCHEMA

    rng = np.random.default_rng(0)
    os.makedirs(work, exist_ok=True)
    per = -(-n_docs // n_files)
    for i in range(n_files):
        n = max(0, min(per, n_docs - i * per))
        length = np.exp(rng.uniform(np.log(50), np.log(50_000), n)).astype(np.int64)
        pl.DataFrame({"file_index": np.full(n, i, np.int32), "file": f"src{i % 4}/part-{i:05d}.jsonl",
                      "row": np.arange(n, dtype=np.int64), "chunk": np.zeros(n, np.int32), "doc_id": None,
                      "source": f"src{i % 4}", "doc_tokens": length, "length": length,
                      "offset": np.cumsum(length) - length, "copies": np.ones(n, np.int64)},
                     schema=UNIT_SCHEMA).write_parquet(os.path.join(work, f"tok-{i:05d}.units.parquet"))
    return {}


def child_layout(work: str, out_dir: str, n_files: int, memory_limit: int = 0) -> dict:
    """The parent's serial phase 2 on a synthetic unit table: the layout (`load_units` + `pack_layout` in
    memory, or `spilled_layout` under ``memory_limit`` bytes when it is > 0) and documents.parquet; peak RSS
    before (imports done) and after, and the SHA-256 of documents.parquet (the same with and without a limit)."""
    import numpy as np  # noqa: F401  (imported before the baseline)
    import polars as pl  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    from lcdata.build import BuildConfig, load_units, pack_layout, spilled_layout, write_documents

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cfg = BuildConfig(tokenizer=str(TOKENIZER), seq_len=SEQ_LEN)
    t0 = time.perf_counter()
    rels = [f"src{i % 4}/part-{i:05d}.jsonl" for i in range(n_files)]
    if memory_limit > 0:
        lay = spilled_layout(work, range(n_files), rels, cfg, memory_limit)
    else:
        lay = pack_layout(load_units(work, range(n_files)), rels, cfg, consume=True)  # as `build_layout`
    t1 = time.perf_counter()
    layout_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    os.makedirs(out_dir, exist_ok=True)
    entry = write_documents(lay, out_dir, None)
    t2 = time.perf_counter()
    return {"base_kb": base, "layout_kb": layout_kb, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "layout_s": t1 - t0, "documents_s": t2 - t1, "n_docs": int(len(lay.inst_unit)),
            "documents_sha256": entry["sha256"], "segs_sha256": _sha(lay.segs)}


def _sha(arr) -> str:
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for a in range(0, len(arr), 1 << 20):
        h.update(np.ascontiguousarray(arr[a: a + (1 << 20)]).tobytes())
    return h.hexdigest()


def _child_main(argv: list[str]) -> None:
    kind, result_path, rest = argv[0], argv[1], argv[2:]
    if kind == "corpus":
        bench_stats.build_corpus(Path(rest[0]), float(rest[1]))
        res = {}
    elif kind == "raw-hf":
        res = child_raw_hf(int(rest[0]), rest[1:])
    elif kind == "raw-tiktoken":
        res = child_tiktoken(int(rest[0]), rest[1:])
    elif kind == "datatrove":
        res = child_datatrove(int(rest[0]), rest[1], rest[2])
    elif kind == "build":
        res = child_build(rest[0], int(rest[1]), rest[2], rest[3:])
    elif kind == "phases":
        res = child_phases(int(rest[0]), rest[1], rest[2:])
    elif kind == "synth":
        res = child_synth_units(rest[0], int(rest[1]), int(rest[2]))
    elif kind == "layout":
        res = child_layout(rest[0], rest[1], int(rest[2]), int(rest[3]))
    else:
        raise SystemExit(f"unknown child {kind}")
    me, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    res["self_maxrss_kb"], res["children_maxrss_kb"] = me.ru_maxrss, ch.ru_maxrss
    res["cpu_s"] = me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime  # the process and its pool
    Path(result_path).write_text(json.dumps(res))


def run_child(kind: str, args: list[str], tmp: Path, log_name: str) -> dict:
    """`bench_stats.run_child` for this script's children."""
    return bench_stats.run_child(kind, args, tmp, log_name, script=str(Path(__file__).resolve()))


# ----------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus-dir", default=None,
                    help="bench corpus (assembled and cached by bench_stats' code; default out/bench/corpus, "
                         "out/bench/corpus-quick with --quick)")
    ap.add_argument("--size-mb", type=float, default=None, help="MB of document text (default 200; 20 with --quick)")
    ap.add_argument("--quick", action="store_true", help="a 20 MB smoke run")
    ap.add_argument("--skip-datatrove", action="store_true", help="do not run the datatrove peer")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of all measurements, interleaved; each keeps its fastest (for shared machines)")
    ap.add_argument("--scaling", action="store_true",
                    help="instead: phase times, serial fraction and Amdahl projection on copies of the demo corpus, "
                         "and the layout's peak RSS per document on synthetic unit tables")
    ap.add_argument("--copies", default="1,4", help="--scaling: demo corpus copies (default 1,4)")
    ap.add_argument("--layout-docs", default="100K,1M", help="--scaling: synthetic documents (default 100K,1M)")
    ap.add_argument("--layout-limits", default="none",
                    help="--scaling: memory limits of the synthetic layouts, e.g. none,256Mi (none = in memory; "
                         "each is run on every --layout-docs size; documents.parquet must be the same)")
    a = ap.parse_args()
    if a.scaling:
        return scaling(a)
    size_mb = a.size_mb if a.size_mb is not None else (20.0 if a.quick else 200.0)
    corpus_dir = Path(a.corpus_dir or ("out/bench/corpus-quick" if a.quick else "out/bench/corpus"))
    if not corpus_dir.is_absolute():
        corpus_dir = (Path.cwd() / corpus_dir).resolve()
    if not a.skip_datatrove:
        missing = [m for m in ("datatrove", "orjson") if not bench_stats._importable(m)]
        if missing:
            sys.exit(f"bench: datatrove's JsonlReader + DocumentTokenizer need {missing}: "
                     f"`pip install {' '.join(missing)}`, or pass --skip-datatrove")
    if not bench_stats._importable("tiktoken"):
        sys.exit("bench: the tiktoken engine needs `pip install 'lcdata[fast]'`")

    cores = len(os.sched_getaffinity(0))  # = lcdata.util.config.default_workers(); lcdata is not imported here
    with tempfile.TemporaryDirectory(prefix="lcdata-bench-build-") as tmp_s:  # a child: keeps this process small
        r = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_child", "corpus",
                            str(Path(tmp_s) / "r.json"), str(corpus_dir), str(size_mb)], cwd=REPO)
        if r.returncode:
            sys.exit(r.returncode)
    m = json.loads((corpus_dir / "manifest.json").read_text())
    files = [str(corpus_dir / f["path"]) for f in m["files"]]
    quarter = [f for i, f in enumerate(m["files"]) if i % 4 == 0]
    text_b = sum(f["text_bytes"] for f in m["files"])
    zst_b = sum(f["zst_bytes"] for f in m["files"])
    q_text_b = sum(f["text_bytes"] for f in quarter)
    n_docs = sum(f["n_docs"] for f in m["files"])
    print(f"corpus: {len(files)} files, {n_docs:,} documents, {text_b / MB:.1f} MB text "
          f"({zst_b / MB:.1f} MB zstd-compressed), {len(m['sources'])} sources: "
          + ", ".join(f"{n} {s['text_bytes'] / MB:.0f}" for n, s in m["sources"].items()))
    print(f"machine: {cores} cores, {platform.platform()}; {bench_stats._versions()}, "
          f"tiktoken {_version('tiktoken')}", flush=True)

    (REPO / "out" / "bench").mkdir(parents=True, exist_ok=True)  # on disk, not a tmpfs: shards and spills are large
    with tempfile.TemporaryDirectory(prefix="lcdata-bench-run-", dir=REPO / "out" / "bench") as tmp_s:
        tmp = Path(tmp_s)
        qdir = tmp / "quarter"  # a copy, so the files keep distinct relative names (<source>/part-*)
        for f in quarter:
            (qdir / f["source"]).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(corpus_dir / f["path"], qdir / f["path"])
        steps = [("raw HF tokenizer", "raw-hf", [str(cores), *files], None),
                 ("raw tiktoken", "raw-tiktoken", [str(cores), *files], None)]
        if not a.skip_datatrove:
            steps.append(("datatrove JsonlReader + DocumentTokenizer", "datatrove",
                          [str(cores), str(corpus_dir), str(tmp / "dt")], tmp / "dt"))
        for engine in ("hf", "tiktoken"):
            steps.append((f"lcdata build, engine {engine}", "build",
                           [engine, str(cores), str(tmp / f"b-{engine}"), str(corpus_dir)], tmp / f"b-{engine}"))
        steps.append(("lcdata build, engine tiktoken, 1/4 files", "build",
                      ["tiktoken", str(cores), str(tmp / "b-q"), str(qdir)], tmp / "b-q"))
        best: dict[str, dict] = {}
        for rep in range(a.repeat):  # rounds interleave the measurements; each keeps its fastest round
            for label, kind, args, out in steps:
                print(f"running: {label}{f' (round {rep + 1}/{a.repeat})' if a.repeat > 1 else ''} ...", flush=True)
                res = run_child(kind, args, tmp, f"{label.replace(' ', '_').replace('/', '-')}-{rep}")
                if out is not None:
                    shutil.rmtree(out, ignore_errors=True)
                key = "encode_s" if "encode_s" in res else "wall_s"
                if label not in best or res[key] < best[label][key]:
                    best[label] = res
        raw_hf, raw_tt = best["raw HF tokenizer"], best["raw tiktoken"]
        dt = best.get("datatrove JsonlReader + DocumentTokenizer")
        builds = {e: best[f"lcdata build, engine {e}"] for e in ("hf", "tiktoken")}
        bq = best["lcdata build, engine tiktoken, 1/4 files"]

    # the runs must agree on what they produced
    if raw_tt["n_tokens"] != raw_hf["n_tokens"]:
        print(f"WARNING: raw tiktoken gave {raw_tt['n_tokens']:,} tokens, raw HF {raw_hf['n_tokens']:,} (added-token "
              "strings in the text are split out by HF and by lcdata's engine, not by raw encode_ordinary)")
    for e, b in builds.items():
        bos = b["special_tokens"]["bos_id"] is not None
        eos = b["special_tokens"]["eos_id"] is not None
        want = raw_hf["n_tokens"] + n_docs * (bos + eos)
        if b["docs_read"] != n_docs or b["n_tokens"] + b["dropped_tokens"] != want:
            sys.exit(f"bench: build ({e}) has {b['n_tokens'] + b['dropped_tokens']:,} tokens for {b['docs_read']:,} "
                     f"documents; expected {want:,} for {n_docs:,}")
        if b["engine"]["name"] != e:
            sys.exit(f"bench: build asked for engine {e} used {b['engine']}")
    same = builds["hf"]["shard_sha"] == builds["tiktoken"]["shard_sha"]
    if not same:
        sys.exit("bench: the hf and tiktoken builds wrote different shards")

    def mbs(s, b=text_b):
        return b / MB / s

    tok_n = raw_hf["n_tokens"]
    hf_r, tt_r = mbs(raw_hf["encode_s"]), mbs(raw_tt["encode_s"])
    dt_r = mbs(dt["wall_s"]) if dt else None
    bh_r, bt_r = mbs(builds["hf"]["wall_s"]), mbs(builds["tiktoken"]["wall_s"])

    def rss(res):
        return f"{_mib(res['self_maxrss_kb'])} / {_mib(res['children_maxrss_kb'])}"

    def cpu(res):
        return res.get("encode_cpu_s", res["cpu_s"])

    rows = [
        (f"raw HF encode_batch_fast, {cores} threads", raw_hf["encode_s"], cpu(raw_hf), hf_r, tok_n, "", "", "",
         rss(raw_hf)),
        (f"raw tiktoken encode_ordinary_batch, {cores} thr", raw_tt["encode_s"], cpu(raw_tt), tt_r, tok_n, "", "", "",
         rss(raw_tt)),
    ]
    if dt:
        rows.append((f"datatrove JsonlReader+DocumentTokenizer, {cores} t", dt["wall_s"], cpu(dt), dt_r, tok_n, "", "",
                     "", rss(dt)))
    for e, r_, lim in (("hf", bh_r, 0.9), ("tiktoken", bt_r, 1.6)):
        b = builds[e]
        rows.append((f"lcdata build, engine {e}", b["wall_s"], cpu(b), r_, tok_n, r_ / hf_r, "x raw HF", lim, rss(b)))
        if dt:
            rows.append((f"lcdata build, engine {e}", b["wall_s"], cpu(b), r_, tok_n, r_ / dt_r, "x datatrove",
                         1.8 if e == "hf" else 3.5, rss(b)))
    rows.append(("lcdata build, engine tiktoken", builds["tiktoken"]["wall_s"], cpu(builds["tiktoken"]), bt_r, tok_n,
                 bt_r / tt_r, "x raw tiktoken", "", rss(builds["tiktoken"])))
    rows.append(("lcdata build, engine tiktoken, 1/4 files", bq["wall_s"], cpu(bq), mbs(bq["wall_s"], q_text_b), None,
                 "", "", "", rss(bq)))

    print()
    print(f"MB = 10^6 bytes of UTF-8 document text. Corpus: {text_b / MB:.1f} MB text, {n_docs:,} documents, "
          f"{tok_n:,} tokens ({text_b / tok_n:.2f} bytes/token). Build: seq-len {SEQ_LEN}, concat packing, "
          f"workers = {cores}; shards identical for both engines: {same}.")
    print("seconds = whole process wall time (start, imports, read, tokenize, pack, write), except the raw "
          "tokenizers (encoding only, texts already in memory); CPU s = user+system CPU time of the same span "
          "(all threads and worker processes): a check on the wall times when other work shares the cores")
    hdr = ("measurement", "seconds", "CPU s", "MB/s", "Mtok/s", "ratio", "vs", "target", "result",
           "peak RSS parent / workers")
    w = [48, 8, 7, 7, 7, 6, 15, 7, 6, 26]
    left = (0, 6, 9)
    print("  ".join(h.ljust(n) if i in left else h.rjust(n) for i, (h, n) in enumerate(zip(hdr, w))))
    print("  ".join("-" * n for n in w))
    failed = 0
    for name, sec, cpu_s, rate, ntok, ratio, vs, target, r in rows:
        ok = "" if target == "" else ("PASS" if ratio >= target else "FAIL")
        failed += ok == "FAIL"
        cells = (name, f"{sec:.2f}", f"{cpu_s:.1f}", f"{rate:.2f}", f"{ntok / sec / 1e6:.2f}" if ntok else "",
                 f"{ratio:.2f}" if ratio != "" else "", vs, f">={target:g}" if target != "" else "", ok, r)
        print("  ".join(c.ljust(n) if i in left else c.rjust(n) for i, (c, n) in enumerate(zip(cells, w))))
    print()
    full = builds["tiktoken"]
    pq = max(bq["self_maxrss_kb"], bq["children_maxrss_kb"])
    pf = max(full["self_maxrss_kb"], full["children_maxrss_kb"])
    print(f"peak RSS, lcdata build (tiktoken, seq-len {SEQ_LEN}): 1/4 corpus ({q_text_b / MB:.0f} MB): "
          f"max {_mib(pq)}; full corpus ({text_b / MB:.0f} MB): max {_mib(pf)}; grows x{pf / pq:.2f} for "
          f"x{text_b / q_text_b:.1f} data; target < 2 GiB: {'PASS' if pf < 2 << 20 else 'FAIL'}")
    failed += pf >= 2 << 20
    print("Megatron preprocess_data: not run (not in the megatron-core wheel; needs the Megatron-LM repository)")
    if a.repeat > 1:
        print(f"each figure: the fastest of {a.repeat} interleaved rounds")
    print(f"\n{'all targets met' if not failed else f'{failed} target(s) missed'}")


def _count(s: str) -> int:
    s = s.strip().upper()
    if s[-1:] == "I" and s[-2:-1] in ("K", "M", "G"):  # 256Mi: binary
        return int(float(s[:-2]) * (1 << (10 * ("KMG".index(s[-2]) + 1))))
    mult = {"K": 10**3, "M": 10**6, "G": 10**9}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def amdahl(f: float, n: int) -> float:
    """Speed-up on ``n`` cores of work whose fraction ``f`` (of its one-core time) does not parallelise."""
    return 1.0 / (f + (1.0 - f) / n)


def scaling(a) -> None:
    """Phase times, serial fraction, projected speed-up (Amdahl) and the parent's peak RSS per document.

    Each demo-copy build runs twice in a fresh process: with one worker (its phase walls are one-core times:
    the serial fraction is (elapsed - tokenize - write) / elapsed, everything but the two phases that run on all
    workers) and with all cores (the measured speed-up; the shards must be identical). The layout runs on
    synthetic unit tables (`child_synth_units`) of growing size; bytes per document = growth of the peak RSS
    between the smallest and the largest table over the growth in documents."""
    cores = len(os.sched_getaffinity(0))
    demo = REPO / "data" / "demo"
    parts = sorted(p.relative_to(demo) for p in demo.rglob("*.jsonl.zst"))
    print(f"machine: {cores} cores, {platform.platform()}; demo corpus {len(parts)} files; build seq-len "
          f"{SCALING_SEQ_LEN}, concat, shards of {SCALING_SHARD_TOKENS:,} tokens", flush=True)
    (REPO / "out" / "bench").mkdir(parents=True, exist_ok=True)
    rows, lay_rows = [], []
    with tempfile.TemporaryDirectory(prefix="lcdata-bench-scaling-", dir=REPO / "out" / "bench") as tmp_s:
        tmp = Path(tmp_s)
        for c in [int(x) for x in a.copies.split(",") if x.strip() not in ("", "0")]:  # 0: no demo builds
            src = tmp / f"demo-x{c}"
            for k in range(c):
                for rel in parts:
                    (src / f"c{k}" / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(demo / rel, src / f"c{k}" / rel)
            res = {}
            for w in (1, cores):
                print(f"running: demo x{c}, {w} worker(s) ...", flush=True)
                res[w] = run_child("phases", [str(w), str(tmp / f"o-{c}-{w}"), str(src)], tmp, f"phases-{c}-{w}")
                shutil.rmtree(tmp / f"o-{c}-{w}", ignore_errors=True)
            if res[1]["shard_sha"] != res[cores]["shard_sha"]:
                sys.exit(f"bench: demo x{c}: 1 and {cores} workers wrote different shards")
            rows.append((c, res[1], res[cores]))
            shutil.rmtree(src, ignore_errors=True)
        limits = [(x.strip(), 0 if x.strip() == "none" else _count(x)) for x in a.layout_limits.split(",")]
        for n in [_count(x) for x in a.layout_docs.split(",")]:
            n_files = max(1, min(256, n // 20_000))
            print(f"running: synthetic unit tables, {n:,} documents ...", flush=True)
            run_child("synth", [str(tmp / f"w-{n}"), str(n), str(n_files)], tmp, f"synth-{n}")
            for name, lim in limits:
                print(f"running: synthetic layout, {n:,} documents, memory limit {name} ...", flush=True)
                lay_rows.append((n, name, run_child("layout", [str(tmp / f"w-{n}"), str(tmp / f"d-{n}"),
                                                               str(n_files), str(lim)], tmp, f"layout-{n}-{name}")))
                shutil.rmtree(tmp / f"d-{n}", ignore_errors=True)
                shutil.rmtree(tmp / f"w-{n}" / "layout-spill", ignore_errors=True)
            same = {(r["documents_sha256"], r["segs_sha256"]) for m, _, r in lay_rows if m == n}
            if len(same) != 1:
                sys.exit(f"bench: {n:,} synthetic documents: the memory limits gave different layouts")
            shutil.rmtree(tmp / f"w-{n}", ignore_errors=True)

    print("\nphases (wall s) of `run_build` with 1 worker (one-core times) and the serial fraction f = (elapsed - "
          "tokenize - write) / elapsed;\nprojected speed-up = 1 / (f + (1 - f) / N) (Amdahl); measured = wall(1 "
          f"worker) / wall({cores} workers), whole process")
    hdr = ["copies", "docs", "Mtokens", "tokenize", "layout", "write", "docs.pq", "verify", "other", "elapsed",
           "serial f", "x16", "x32", "x64", f"meas. x{cores}", "RSS parent", "B/doc"]
    print("  ".join(f"{h:>9}" for h in hdr))
    for c, r1, rw in rows:
        ph = r1["phase_s"]
        other = r1["elapsed_s"] - sum(v for v in ph.values() if v is not None)
        serial = r1["elapsed_s"] - ph["tokenize"] - ph["write"]
        f = serial / r1["elapsed_s"]
        cells = [f"x{c}", f"{r1['n_instances']:,}", f"{r1['n_tokens'] / 1e6:.1f}",
                 *(f"{ph[k]:.2f}" for k in ("tokenize", "layout", "write", "documents", "verify")),
                 f"{other:.2f}", f"{r1['elapsed_s']:.2f}", f"{f:.3f}", *(f"{amdahl(f, n):.1f}" for n in (16, 32, 64)),
                 f"{r1['wall_s'] / rw['wall_s']:.2f}", _mib(r1["self_maxrss_kb"]),
                 f"{r1['self_maxrss_kb'] * 1024 / r1['n_instances']:.0f}"]
        print("  ".join(f"{x:>9}" for x in cells))
    print(f"(write phase with {cores} workers: " + ", ".join(
        f"x{c} {rw['phase_s']['write']:.2f} s vs {r1['phase_s']['write']:.2f} s" for c, r1, rw in rows) + ")")
    if lay_rows:
        print("\nlayout + documents.parquet on synthetic unit tables (the parent's serial phase 2; peak RSS of the "
              "process, after the layout and at the end; B/doc = growth above the imports per document)")
        print("  ".join(f"{h:>12}" for h in ("documents", "mem. limit", "layout s", "docs.pq s", "RSS layout",
                                              "peak RSS", "B/doc")))
        for n, name, r in lay_rows:
            grow = (r["peak_kb"] - r["base_kb"]) * 1024
            print("  ".join(f"{x:>12}" for x in (f"{n:,}", name, f"{r['layout_s']:.2f}", f"{r['documents_s']:.2f}",
                                                   _mib(r["layout_kb"]), _mib(r["peak_kb"]), f"{grow / n:.0f}")))
        for name, _ in limits:
            rs = [(n, r) for n, m, r in lay_rows if m == name]
            if len(rs) > 1:
                (n0, r0), (n1, r1) = rs[0], rs[-1]
                slope = (r1["peak_kb"] - r0["peak_kb"]) * 1024 / (n1 - n0)
                lslope = (r1["layout_kb"] - r0["layout_kb"]) * 1024 / (n1 - n0)
                print(f"memory limit {name}: peak RSS growth {n0:,} -> {n1:,} documents: {slope:.0f} bytes/document "
                      f"(layout alone {lslope:.0f}; target < 40: {'PASS' if slope < 40 else 'FAIL'})")
        if len(limits) > 1:
            print("documents.parquet and the segments identical under every limit: yes")


def _mib(kb: int) -> str:
    return f"{kb / 1024:.0f} MiB"


def _version(p: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(p)
    except PackageNotFoundError:
        return "-"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        _child_main(sys.argv[2:])
    else:
        main()
