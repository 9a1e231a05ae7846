"""`lcdata export` never writes into or over its input, never copies a folder that fails verify, and never
writes outside its --out (issue #14), on a real small demo build, through the command line (`lcdata.cli.main`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lcdata.build import BuildConfig, run_build
from lcdata.cli import main
from lcdata.shards.format import seal


@pytest.fixture(scope="module")
def shards(tmp_path_factory, demo_dir, tokenizer_path) -> Path:
    root = tmp_path_factory.mktemp("export_safety")
    (root / "corpus").mkdir()
    shutil.copy(demo_dir / "code" / "part-000.jsonl.zst", root / "corpus")
    out = root / "shards"
    run_build([str(root / "corpus")], str(out), BuildConfig(tokenizer=tokenizer_path, seq_len=512, shard_tokens=4096),
              workers=1)
    return out


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _export(capsys, src, out, fmt="megatron") -> tuple[int, str]:
    rc = main(["export", str(src), "--format", fmt, "--out", str(out)])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("fmt", ["megatron", "datatrove"])
@pytest.mark.parametrize("where", ["same", "inside", "contains", "same-through-link"])
def test_export_refuses_its_own_input(shards, tmp_path, capsys, fmt, where):
    """Issue #14: `export S --format megatron --out S` overwrote the source shards and exited 0."""
    src = tmp_path / "parent" / "s"
    shutil.copytree(shards, src)
    before = _snapshot(tmp_path)
    out = {"same": src, "inside": src / "exported", "contains": tmp_path / "parent",
           "same-through-link": tmp_path / "link"}[where]
    if where == "same-through-link":
        out.symlink_to(src)
        before = _snapshot(tmp_path)
    rc, err = _export(capsys, src, out, fmt)
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "the input folder" in err and "choose another --out" in err
    assert _snapshot(tmp_path) == before
    assert not (src / "exported").exists()


def test_export_refuses_a_corrupt_input(shards, tmp_path, capsys):
    """It verified nothing and copied corrupt shards; now the full verify runs first and nothing is written."""
    src = tmp_path / "s"
    shutil.copytree(shards, src)
    data = bytearray((src / "shard-00000.bin").read_bytes())
    data[100] ^= 0x40
    (src / "shard-00000.bin").write_bytes(bytes(data))
    rc, err = _export(capsys, src, tmp_path / "out")
    assert rc == 2 and "shard-00000.bin: SHA-256 mismatch" in err and "not exported" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("key,value", [("name", "../../escaped"), ("bin", "../escaped.bin"),
                                       ("seg", "/tmp/escaped.seg.npy"), ("bin", "..")])
def test_crafted_names_never_leave_the_folders(shards, tmp_path, capsys, key, value):
    """A manifest naming ``../../x`` made export write outside --out and verify read outside the folder (and say
    OK). Now such a name is refused before any file is opened, even with the seal recomputed."""
    src = tmp_path / "a" / "b" / "s"
    shutil.copytree(shards, src)
    m = json.loads((src / "manifest.json").read_text())
    if key == "name":
        m["shards"][0]["name"] = value
    else:
        m["shards"][0]["files"][key]["path"] = value
    m["manifest_sha256"] = seal(m)
    (src / "manifest.json").write_text(json.dumps(m))
    before = _snapshot(tmp_path)
    assert main(["verify", str(src)]) == 1
    err = capsys.readouterr().err
    assert "FAIL manifest.json: shards[0]." in err and repr(value) in err and "Traceback" not in err, err
    rc, err = _export(capsys, src, tmp_path / "a" / "out")
    assert rc == 2 and repr(value) in err, err
    assert _snapshot(tmp_path) == before
    assert not Path("/tmp/escaped.seg.npy").exists()


def test_export_of_a_good_folder_still_works(shards, tmp_path, capsys):
    rc = main(["export", str(shards), "--format", "megatron", "--out", str(tmp_path / "mg")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "mg" / "shard-00000.bin").exists() and (tmp_path / "mg" / "export-megatron.json").exists()
