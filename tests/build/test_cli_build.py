"""`lcdata build / verify / inspect / export` end to end, as real subprocesses, on a slice of the demo corpus.

- Resume: a build is really SIGKILLed (once in phase 1, once in phase 2), resumed, and compared byte for
  byte with an uninterrupted build; finished spills and shards are not redone.
- workers=1 and workers=2 (same seed) give byte-identical folders.
- Interop: the datatrove and Megatron-Core exports are read back with those projects' own readers.
- Bad input: exit code, message on stderr naming the value or file, no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zstandard
from tokenizers import Tokenizer

from lcdata.build import BuildConfig, run_build
from lcdata.errors import ConfigError
from lcdata.shards import open_shards

ROOT = Path(__file__).resolve().parents[2]
SLICE = {"web": "web/part-000.jsonl.zst", "books": "books/part-002.jsonl.zst", "code": "code/part-001.jsonl.zst"}
L = 2048
SHARD = 8192  # 4 sequences per shard: ~100 shard files, so phase 2 lasts long enough to be interrupted
BOS, PAD = 0, 2
VOLATILE = ("elapsed_s", "phase_s", "command", "manifest_sha256")  # the seal covers the run info too


def lcdata(*args, check: bool = False, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "LCDATA_DEBUG"}
    p = subprocess.run([sys.executable, "-m", "lcdata", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def assert_user_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    assert p.stderr.startswith("lcdata build: error:"), p.stderr
    for n in needles:
        assert n in p.stderr, (n, p.stderr)


@pytest.fixture(scope="session")
def slice_dir(tmp_path_factory, demo_dir) -> Path:
    d = tmp_path_factory.mktemp("cli_slice")
    for rel in SLICE.values():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_dir / rel, d / rel)
    return d


@pytest.fixture(scope="session")
def hf_tok(tokenizer_path) -> Tokenizer:
    return Tokenizer.from_file(tokenizer_path)


@pytest.fixture(scope="session")
def raw_texts(slice_dir) -> dict[tuple[str, int], str]:
    out = {}
    for rel in SLICE.values():
        with open(slice_dir / rel, "rb") as fh:
            data = zstandard.ZstdDecompressor().stream_reader(fh).read()
        for i, line in enumerate(data.split(b"\n")):
            if line.strip():
                out[(rel, i)] = json.loads(line)["text"]
    return out


def build_args(slice_dir, out, *extra) -> list:
    return ["build", slice_dir, "--tokenizer", ROOT / "data/demo/tokenizer.json", "--seq-len", L, "--packing",
            "best-fit", "--shard-size", SHARD, "--out", out, "--quiet", *extra]


@pytest.fixture(scope="session")
def build_w1(slice_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "w1"
    lcdata(*build_args(slice_dir, out, "--workers", 1), check=True)
    return out


@pytest.fixture(scope="session")
def build_w2(slice_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "w2"
    lcdata(*build_args(slice_dir, out, "--workers", 2), check=True)
    return out


def files_of(d: Path) -> list[str]:
    return sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())


def compare_builds(a: Path, b: Path, also_volatile: tuple[str, ...] = ()) -> None:
    assert files_of(a) == files_of(b)
    for name in files_of(a):
        if name == "manifest.json":
            ma, mb = (json.loads((x / name).read_text()) for x in (a, b))
            for k in VOLATILE:
                ma.pop(k, None)
                mb.pop(k, None)
            for k in also_volatile:
                ma["read_report"].pop(k)
                mb["read_report"].pop(k)
            assert ma == mb
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


# ------------------------------------------------------------------------------------------ determinism


def test_memory_limit_flag_same_bytes(build_w1, slice_dir, tmp_path):
    """`--memory-limit` (a size: 64Ki here, which spills the layout to the work folder) changes no byte and is
    not recorded in the manifest's config (a run setting, like --workers); a bad value is one clear error."""
    out = tmp_path / "lim"
    lcdata(*build_args(slice_dir, out, "--workers", 1, "--memory-limit", "64Ki"), check=True)
    assert json.loads((build_w1 / "manifest.json").read_text())["n_instances"] * 160 > 64 * 1024  # it spills
    compare_builds(build_w1, out)
    assert "memory" not in json.dumps(json.loads((out / "manifest.json").read_text())["config"])
    p = lcdata(*build_args(slice_dir, tmp_path / "bad", "--memory-limit", "8GB"), check=False)
    assert p.returncode == 2 and "--memory-limit" in p.stderr and "ambiguous" in p.stderr


def test_workers_1_and_2_identical(build_w1, build_w2):
    """Same seed, different worker counts and runs: the same bytes (and the same manifest, minus timing)."""
    m = json.loads((build_w1 / "manifest.json").read_text())
    assert len(m["shards"]) > 20 and m["read_report"]["files_resumed"] == 0
    assert not (build_w1 / "_work").exists()
    compare_builds(build_w1, build_w2)


def _run_until(args, path: Path, timeout: float = 120) -> list[str]:
    """Start `lcdata build`, SIGKILL it as soon as ``path`` exists; returns what the dead run left behind."""
    env = {k: v for k, v in os.environ.items() if k != "LCDATA_DEBUG"}
    p = subprocess.Popen([sys.executable, "-m", "lcdata", *map(str, args)], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    try:
        while not path.exists():
            assert p.poll() is None, f"the build ended (rc {p.returncode}) before {path.name} appeared"
            assert time.monotonic() - t0 < timeout, f"{path.name} never appeared"
            time.sleep(0.003)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    out = Path(str(args[args.index("--out") + 1]))
    assert not (out / "manifest.json").exists(), "the kill came too late: the build had finished"
    return files_of(out)


def test_resume_after_kills_is_byte_identical(slice_dir, tmp_path, build_w1):
    out = tmp_path / "killed"
    args = build_args(slice_dir, out, "--workers", 1)
    # 1. killed in phase 1, right after the first file's spill was committed
    left = _run_until(args, out / "_work" / "tok-00000.done.json")
    spills = [f for f in left if f.startswith("_work/tok-") and f.endswith((".units.parquet", ".done.json"))]
    assert 1 <= sum(f.endswith(".done.json") for f in spills) < 3 and "build.json" in left
    mtimes = {f: (out / f).stat().st_mtime_ns for f in spills}
    # without --resume the folder is refused, and left as it is
    assert_user_error(lcdata(*args), str(out), "--resume")
    # 2. resumed, then killed again in phase 2, after a few shards were written
    left2 = _run_until(args + ["--resume"], out / "shard-00003.bin")
    assert {f: (out / f).stat().st_mtime_ns for f in spills} == mtimes  # finished spills were not redone
    assert sum(f.endswith(".units.parquet") for f in left2) == 3
    done = sorted(f.removeprefix("_work/").removesuffix(".done.json") for f in left2
                  if f.startswith("_work/shard-") and f.endswith(".done.json"))
    assert done and done[0] == "shard-00000"
    shard_mtimes = {f"{n}.{ext}": (out / f"{n}.{ext}").stat().st_mtime_ns for n in done for ext in ("bin", "seg.npy")}
    # 3. resumed to the end
    p = lcdata(*args, "--resume", check=True)
    assert p.stderr == ""
    m = json.loads((out / "manifest.json").read_text())
    assert m["read_report"]["files_resumed"] == 3
    assert {f: (out / f).stat().st_mtime_ns for f in shard_mtimes} == shard_mtimes  # finished shards kept
    # byte-identical to the uninterrupted build, read report included (counts of resumed files are kept)
    compare_builds(out, build_w1, also_volatile=("files_resumed",))
    assert lcdata("verify", out).returncode == 0


def test_engine_flag_tiktoken_and_hf_give_the_same_shards(slice_dir, tmp_path):
    """`--engine` only changes the speed: forced tiktoken and forced hf write the same bytes, and the manifest
    differs only in the engine it records."""
    pytest.importorskip("tiktoken", reason="the tiktoken engine needs pip install 'lcdata[fast]'")
    outs = {}
    for e in ("hf", "tiktoken"):
        outs[e] = tmp_path / e
        lcdata(*build_args(slice_dir, outs[e], "--workers", 1, "--engine", e), check=True)
    m = {e: json.loads((d / "manifest.json").read_text()) for e, d in outs.items()}
    assert m["hf"]["engine"] == {"name": "hf", "reason": "requested"}
    assert m["tiktoken"]["engine"]["name"] == "tiktoken"
    for e, d in outs.items():  # the engine is recorded, but is not in the identity: drop it, compare the rest
        for name in ("manifest.json", "build.json"):
            x = json.loads((d / name).read_text())
            assert x["config"].pop("engine") == e
            x.pop("engine", None)
            (d / name).write_text(json.dumps(x))
    compare_builds(outs["hf"], outs["tiktoken"])
    p = lcdata(*build_args(slice_dir, tmp_path / "x", "--engine", "fast"))
    assert p.returncode == 2 and "invalid choice: 'fast'" in p.stderr


# ------------------------------------------------------------------------------------------ verify, inspect


def test_verify_good_and_corrupted(build_w1, tmp_path):
    p = lcdata("verify", build_w1)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("OK ")
    bad = tmp_path / "bad"
    shutil.copytree(build_w1, bad)
    b1 = bad / "shard-00001.bin"
    b1.write_bytes(b1.read_bytes()[:-1])  # truncated
    seg = bad / "shard-00002.seg.npy"
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0x01  # one byte altered, same size
    seg.write_bytes(bytes(data))
    p = lcdata("verify", bad)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2, p.stderr
    assert "shard-00001.bin" in lines[0] and "size" in lines[0]
    assert "shard-00002.seg.npy" in lines[1] and "SHA-256" in lines[1]


def test_verify_and_inspect_catch_altered_documents_parquet(build_w1, tmp_path):
    """documents.parquet is listed with its size and SHA-256: two appended bytes fail verify (naming it), and
    inspect, which reads it, says the file is damaged instead of showing Polars' traceback."""
    m = json.loads((build_w1 / "manifest.json").read_text())
    data = (build_w1 / "documents.parquet").read_bytes()
    assert m["documents"]["bytes"] == len(data) and m["documents"]["path"] == "documents.parquet"
    bad = tmp_path / "bad"
    shutil.copytree(build_w1, bad)
    (bad / "documents.parquet").write_bytes(data + b"\x00\x01")
    p = lcdata("verify", bad)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines() == [
        f"FAIL documents.parquet: size {len(data) + 2} != {len(data)} bytes in manifest.json (truncated or altered)"]
    p = lcdata("inspect", bad, "--seq", 0)  # the readers' structural check sees the size
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "documents.parquet: size" in p.stderr and "lcdata verify" in p.stderr
    (bad / "documents.parquet").write_bytes(data[:-4] + b"XXXX")  # same size: only reading it shows the damage
    p = lcdata("inspect", bad, "--seq", 0)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "documents.parquet cannot be read" in p.stderr and "lcdata verify" in p.stderr
    # the key is required (format v2): a manifest without it is a FAIL naming the key
    del m["documents"]
    (bad / "manifest.json").write_text(json.dumps(m))
    p = lcdata("verify", bad)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "FAIL manifest.json: documents: missing key" in p.stderr


def test_inspect_prints_decoded_pieces(build_w1, raw_texts, hf_tok):
    s = open_shards(str(build_w1))
    docs = s.documents
    # a sequence holding at least one whole document
    for i in range(len(s)):
        whole = [p for p in s.pieces(i) if p["offset"] == 0 and p["length"] == p["doc_length"]]
        if whole:
            break
    p = lcdata("inspect", build_w1, "--seq", i, "--max-chars", 10**7, check=True)
    out = p.stdout
    assert out.startswith(f"sequence {i} of {len(s)} ({L} tokens, packing best-fit)")
    for piece in s.pieces(i):
        d = docs.row(piece["doc"], named=True)
        assert f"=== [{d['source']}] {d['doc_id']} chunk " in out
    d = docs.row(whole[0]["doc"], named=True)
    text = raw_texts[(d["file"], d["row"])]
    assert f"=== [{d['source']}] {d['doc_id']} chunk 0 copy 0 | seq {whole[0]['start']}-" in out
    assert "<|bos|>" + text in out
    total_pad = L - sum(p["length"] for p in s.pieces(i))
    if total_pad:
        assert "[padding x " in out


# ------------------------------------------------------------------------------------------ interop


def test_export_datatrove_read_back(build_w1, tmp_path):
    try:
        from datatrove.utils.dataset import DatatroveFolderDataset
    except ImportError as e:  # pragma: no cover
        pytest.skip(f"datatrove's reader cannot be imported: {e}")
    out = tmp_path / "dt"
    p = lcdata("export", build_w1, "--format", "datatrove", "--out", out, check=True)
    assert f"seq_len={L - 1}" in p.stdout
    s = open_shards(str(build_w1))
    ds = DatatroveFolderDataset(str(out), seq_len=L - 1, token_size=2, return_positions=True)
    assert len(ds) == len(s)
    first = {e["files"]["bin"]["path"].removesuffix(".bin"): e["first_sequence"] for e in s.manifest["shards"]}
    # datatrove lists the .ds files in its own (sorted) order: map each of its items to our sequence
    item = 0
    for f in ds.files:
        name = Path(f.file_path).name.removesuffix(".ds")
        for j in range(len(f)):
            ours = first[name] + j
            got = ds[item]
            assert np.array_equal(got["input_ids"].numpy(), np.asarray(s[ours]).astype(np.int64))
            pos = got["positions"].numpy()
            for g in s.segments(ours):
                a, n = int(g["start"]), int(g["length"])
                assert np.array_equal(pos[a: a + n], np.arange(n)), (ours, a)  # reset at each piece start
            item += 1
    assert item == len(s)


def test_export_megatron_read_back(build_w1, tmp_path, raw_texts, hf_tok):
    """Megatron-Core's own IndexedDataset: every document it reports (``document_indices``) is exactly one of
    our document instances, pieces in order, though the shards cut documents across shuffled sequences and
    shards; each instance once, in the file of the shard holding its first piece, in the shards' order. With
    ``--megatron-layout pieces`` a document is one Megatron sequence per piece; by default one sequence."""
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from megatron.core.datasets.indexed_dataset import IndexedDataset
    except ImportError as e:  # pragma: no cover
        pytest.skip(f"megatron-core's IndexedDataset cannot be imported: {e}")
    out = tmp_path / "mg"
    lcdata("export", build_w1, "--format", "megatron", "--megatron-layout", "pieces", "--out", out, check=True)
    whole_doc = tmp_path / "mg-doc"
    lcdata("export", build_w1, "--format", "megatron", "--out", whole_doc, check=True)  # default: document
    s = open_shards(str(build_w1))
    whole = s.instance_tokens()
    segs = s.all_segments()  # shard order
    shard_of = np.searchsorted([e["first_sequence"] for e in s.manifest["shards"]], segs["gseq"].astype(np.int64),
                               side="right") - 1
    first_shard: dict[int, int] = {}  # instances in the order of their first piece, and that piece's shard
    for d, k in zip(segs["doc"].tolist(), shard_of.tolist()):
        first_shard.setdefault(d, k)
    # the case this is about: documents whose pieces are not adjacent in the shards, and across shard files
    pieces: dict[int, list[int]] = {}
    for i, d in enumerate(segs["doc"].tolist()):
        pieces.setdefault(d, []).append(i)
    assert any(len(p) > 1 and p != list(range(p[0], p[0] + len(p))) for p in pieces.values())
    assert any(len({int(shard_of[i]) for i in p}) > 1 for p in pieces.values())
    docs = s.documents
    n_seen = 0
    for k, e in enumerate(s.manifest["shards"]):
        want = [d for d, fk in first_shard.items() if fk == k]
        if not want:  # its pieces all continue documents of earlier shards: no (empty) file
            assert not (out / f"{e['name']}.bin").exists()
            continue
        ds = IndexedDataset(str(out / e["name"]))
        one = IndexedDataset(str(whole_doc / e["name"]))  # the same documents, one sequence each
        assert np.array_equal(np.array(one.document_indices), np.arange(len(want) + 1))
        assert all(np.array_equal(np.array(one[j]), whole[doc]) for j, doc in enumerate(want))
        assert ds.index.dtype == np.uint16
        di = np.array(ds.document_indices)
        assert di[0] == 0 and di[-1] == len(ds) and len(di) == len(want) + 1
        for doc, a, b in zip(want, di[:-1], di[1:]):
            got = np.concatenate([np.array(x) for x in ds[int(a): int(b)]])  # copies: the map goes with ds
            assert got.dtype == np.uint16
            assert np.array_equal(got, whole[doc]), (e["name"], doc)
            assert int(b - a) == len(pieces[doc])  # a Megatron sequence per piece
            d = docs.row(doc, named=True)
            assert got[0] == BOS and len(got) == d["length"]
            assert hf_tok.decode(got[1:].tolist(), skip_special_tokens=False) == raw_texts[(d["file"], d["row"])]
        n_seen += len(want)
    assert n_seen == len(whole) == docs.height
    man = json.loads((out / "export-megatron.json").read_text())
    assert man["documents"] == docs.height and man["layout"] == "pieces"
    man = json.loads((whole_doc / "export-megatron.json").read_text())
    assert man["documents"] == docs.height and man["layout"] == "document"
    assert sorted(man["files"]) == sorted(p.name for p in whole_doc.iterdir() if p.suffix in (".bin", ".idx"))


# ------------------------------------------------------------------------------------------ bad input


def test_plan_for_other_inputs_is_refused(slice_dir, tmp_path, tokenizer_path):
    plan = tmp_path / "plan"
    lcdata("sample", slice_dir / "code", "--tokenizer", tokenizer_path, "--strategy", "natural", "--budget-tokens",
           "100K", "--out", plan, "--quiet", "--no-figure", "--workers", 1, check=True)
    out = tmp_path / "out"
    p = lcdata(*build_args(slice_dir, out, "--plan", plan, "--workers", 1))
    assert_user_error(p, str(plan), "other inputs")
    assert not (out / "manifest.json").exists()
    with pytest.raises(ConfigError, match="other inputs"):
        run_build([str(slice_dir)], str(tmp_path / "api"), BuildConfig(tokenizer=tokenizer_path, seq_len=L,
                                                                       plan=str(plan)))


def test_bad_values_are_refused(slice_dir, tmp_path, tokenizer_path):
    big = Tokenizer.from_file(tokenizer_path)
    big.add_tokens([f"tok{i}" for i in range(60000)])
    big.save(str(tmp_path / "big.json"))
    p = lcdata("build", slice_dir, "--tokenizer", tmp_path / "big.json", "--seq-len", L, "--token-dtype", "uint16",
               "--out", tmp_path / "o1")
    assert_user_error(p, "uint16", f"largest id ({big.get_vocab_size() - 1:,})")
    p = lcdata(*build_args(slice_dir, tmp_path / "o2", "--seq-len", 1))
    assert_user_error(p, "seq_len=1")
    assert not (tmp_path / "o2" / "manifest.json").exists()
    p = lcdata(*build_args(slice_dir, tmp_path / "o3"), "--tokenizer", tmp_path / "nope.json")
    assert_user_error(p, "nope.json")


def test_output_folder_holding_another_build(slice_dir, tmp_path, build_w1):
    out = tmp_path / "copy"
    shutil.copytree(build_w1, out)
    before = {f: (out / f).read_bytes() for f in files_of(out)}
    # the same build, again, without --resume / --overwrite
    assert_user_error(lcdata(*build_args(slice_dir, out, "--workers", 1)), str(out), "--resume", "--overwrite")
    # --resume with another configuration
    assert_user_error(lcdata(*build_args(slice_dir, out, "--workers", 1, "--seed", 7, "--resume")), str(out),
                      "another configuration")
    assert {f: (out / f).read_bytes() for f in files_of(out)} == before
    # a folder with unrelated files
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert_user_error(lcdata(*build_args(slice_dir, other, "--workers", 1)), str(other), "other files")
    assert files_of(other) == ["notes.txt"]
    assert_user_error(lcdata(*build_args(slice_dir, other, "--workers", 1, "--resume")), str(other), "other files")
    assert files_of(other) == ["notes.txt"]


def test_documents_parquet_matches_inputs(build_w1, raw_texts):
    docs = pl.read_parquet(build_w1 / "documents.parquet")
    assert sorted(zip(docs["file"], docs["row"])) == sorted(raw_texts)
    assert docs["doc"].to_list() == list(range(docs.height))


def test_build_prints_its_phase_times(slice_dir, tmp_path, tokenizer_path):
    """Issue #19: the end of a build says how long each phase took, as recorded in the manifest."""
    out = tmp_path / "out"
    p = lcdata("build", slice_dir / "code", "--tokenizer", tokenizer_path, "--seq-len", 1024, "--out", out,
               "--workers", 1, check=True)
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("phases: "))
    phases = json.loads((out / "manifest.json").read_text())["phase_s"]
    assert [part.split()[0] for part in line.removeprefix("phases: ").split(", ")] == list(phases)
