"""`lcdata verify` against tampering: a real shard folder (two demo sources, best-fit, several shards, padding,
documents split across sequences) is edited one field or one byte at a time, and every edit must be a FAIL
naming the key or the file, never OK and never a traceback.

- Manifest edits (hypothesis): every key, nested ones and list items too; the value changed, its type
  changed, the key deleted, a key added. Each edit is checked twice: as is (the seal ``manifest_sha256`` goes
  stale: FAIL) and resealed, as a careful forger would (then the claim itself must be caught against the data,
  except for the provenance keys below, which describe how the folder was made, not what it holds).
- Data file edits (hypothesis): one byte flipped, the file cut or grown, in each ``.bin``, ``.seg.npy`` and
  documents.parquet.
- Data edits with the manifest's sizes, SHA-256s and seal recomputed: the checks against the data (token ids
  <= the largest id, padding, BOS, piece sources and overlaps, document rows) catch them.
- The readers: `open_shards` (the training loader's entry) raises one `LcdataError`, never an IndexError.

Each example edits the shared folder and restores it (a few ms), so the suite takes seconds.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcdata.build import BuildConfig, run_build
from lcdata.corpus import ReadConfig
from lcdata.errors import LcdataError
from lcdata.shards import check_folder, open_shards, verify_shards
from lcdata.shards.format import BUILD_CONFIG_SCHEMA, MANIFEST_SCHEMA, READ_CONFIG_SCHEMA, seal

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Keys that record how the folder was made (not what it holds): a forger who reseals the manifest can change
# them undetected; the seal catches an edit that is not resealed. docs/format.md lists them.
PROVENANCE = re.compile(r"^(lcdata_version|identity|command|elapsed_s|phase_s|engine|read_report|inputs\[\d+\]\.bytes|"
                        r"tokenizer\.sha256|config\.(read|engine|split_long|shard_tokens|dtype))(\b|\[|\.|$)")


def _lines(path: Path, n: int, short: bool = False) -> list[str]:
    rows = zstandard.ZstdDecompressor().decompress(path.read_bytes()).decode().splitlines()
    if short:
        rows = [r for r in rows if len(json.loads(r)["text"]) < 6000]
    return rows[:n]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, demo_dir, tokenizer_path) -> Path:
    root = tmp_path_factory.mktemp("tamper")
    for name, rows in (("web", _lines(demo_dir / "web" / "part-000.jsonl.zst", 30)),
                       ("code", _lines(demo_dir / "code" / "part-000.jsonl.zst", 3, short=True))):
        (root / "corpus" / name).mkdir(parents=True)
        (root / "corpus" / name / "part-000.jsonl").write_text("\n".join(rows) + "\n")
    out = root / "shards"
    run_build([str(root / "corpus")], str(out), BuildConfig(tokenizer=tokenizer_path, seq_len=256, packing="best-fit",
                                                           shard_tokens=2048), workers=1)
    m = json.loads((out / "manifest.json").read_text())
    assert len(m["shards"]) >= 3 and len(m["sources"]) == 2 and m["padding_tokens"] > 0
    assert verify_shards(str(out)) == []
    return out


def _ok(problems: list[str]) -> None:
    assert all("bug in lcdata" not in p for p in problems), problems


@dataclasses.dataclass
class Saved:
    """Restores every file of a folder that an edit touches."""

    folder: Path

    def __enter__(self):
        self.bytes = {p.name: p.read_bytes() for p in self.folder.iterdir() if p.is_file()}
        return self

    def __exit__(self, *exc):
        for p in self.folder.iterdir():
            if p.is_file() and p.name not in self.bytes:
                p.unlink()
        for name, data in self.bytes.items():
            if (self.folder / name).read_bytes() != data:
                (self.folder / name).write_bytes(data)


def test_untampered_folder_verifies_and_opens(folder):
    assert verify_shards(str(folder)) == []
    assert check_folder(str(folder))[1] == []
    s = open_shards(str(folder))
    assert len(s) == s.manifest["n_sequences"]


# ------------------------------------------------------------------------------------------ manifest edits


def _paths(v, path=()) -> list[tuple]:
    out = [path] if path else []
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*path, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*path, i))
    return out


def _dotted(path: tuple) -> str:
    s = ""
    for p in path:
        s += f"[{p}]" if isinstance(p, int) else (f".{p}" if s else p)
    return s


def _get(m, path):
    for p in path:
        m = m[p]
    return m


OTHER_TYPES = [None, True, 7, 2.5, "x", [], {}]


KINDS = ("value", "type", "delete", "add")


def edit_manifest(m: dict, path: tuple, kind: str, pick) -> tuple[dict, str, str]:
    """(edited copy of ``m``, dotted path of the edited key, what was done); ``pick(options)`` chooses among
    candidate values (hypothesis draws; the exhaustive sweep takes the first)."""
    e = copy.deepcopy(m)
    parent, key = _get(e, path[:-1]), path[-1]
    old = parent[key]
    if kind == "delete":
        del parent[key]
        return (e, _dotted(path[:-1]), "delete item") if isinstance(parent, list) else (e, _dotted(path), "delete")
    if kind == "add":
        target = old if isinstance(old, dict) else parent if isinstance(parent, dict) else None
        if target is not None:
            name = pick(["zz_extra", "path", "bytes", "n_sequences", "shards"])
            name = name if name not in target else name + "_2"
            target[name] = pick([0, "x", None, [1]])
            where = path if target is old else path[:-1]
            return e, _dotted((*where, name)), "add"
        kind = "value"
    if kind == "type":
        new = pick([x for x in OTHER_TYPES if type(x) is not type(old)])
    elif isinstance(old, bool):
        new = not old
    elif isinstance(old, int):
        new = old + pick([1, -1, -7, 2, 255, 1 << 16, 1 << 40, -(1 << 20)])
    elif isinstance(old, float):
        new = old + 1.5
    elif isinstance(old, str):
        new = pick([s for s in [old + "x", "", "a", "..", "../../x", "/etc/passwd", "uint32", "concat", "auto", "none",
                                old[:-1], old.upper(), "0" * 64, "f" * 64] if s != old])
    elif old is None:
        new = pick([1, 0, "x", "0" * 64])
    elif isinstance(old, list):
        new = pick(["append", "drop"]) if old else "append"
        new = old + [copy.deepcopy(old[0]) if old else 1] if new == "append" else old[:-1]
    else:  # a dict: rename its first key
        k0 = next(iter(old), None)
        new = {(k + "_" if k == k0 else k): x for k, x in old.items()} if old else {"a": 1}
    parent[key] = new
    return e, _dotted(path), kind


@st.composite
def manifest_edit(draw, m: dict):
    path = draw(st.sampled_from(_paths(m)))
    return edit_manifest(m, path, draw(st.sampled_from(KINDS)), lambda opts: draw(st.sampled_from(opts)))


def _write(folder: Path, m: dict, reseal: bool) -> None:
    if reseal and isinstance(m, dict):
        m["manifest_sha256"] = seal(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def _names_it(problems: list[str], dotted: str) -> bool:
    """A problem line names the edited key (or a parent of it), or the data file the key describes."""
    heads = {dotted}
    d = dotted
    while re.search(r"[.\[]", d):
        d = re.sub(r"(\.[^.\[]*|\[\d+\])$", "", d)
        heads.add(d)
    if (mm := re.match(r"shards\[(\d+)\]", dotted)):
        heads.add(f"shard-{int(mm.group(1)):05d}")
    if dotted.startswith("documents"):
        heads.add("documents.parquet")
    return any(h and h in p for p in problems for h in heads)


@SETTINGS
@given(data=st.data())
def test_manifest_edits_fail_stale_seal(folder, data):
    m = json.loads((folder / "manifest.json").read_text())
    edited, dotted, kind = data.draw(manifest_edit(m))
    with Saved(folder):
        _write(folder, edited, reseal=False)
        problems = verify_shards(str(folder))
        _ok(problems)
        assert problems, (dotted, kind)
        assert _names_it(problems, dotted) or any("manifest_sha256" in p for p in problems), (dotted, problems)
        with pytest.raises(LcdataError):
            open_shards(str(folder))


def _check_resealed(folder: Path, edited: dict, dotted: str, kind: str) -> None:
    with Saved(folder):
        _write(folder, edited, reseal=not dotted.startswith("manifest_sha256"))
        problems = verify_shards(str(folder))
        _ok(problems)
        if PROVENANCE.match(dotted) and kind != "delete":
            return  # provenance: a schema-valid edit is caught by the seal only (test above)
        if kind == "delete" and dotted in MANIFEST_SCHEMA.optional:
            assert not problems, problems  # run information folders built before it was added lack (phase_s)
            return
        if not problems and _equivalent_specials(edited, dotted, kind):
            return  # e.g. eos "auto" -> "none" with a BOS tokenizer: the same ids, so the edit claims nothing false
        assert problems, (dotted, kind)
        assert _names_it(problems, dotted), (dotted, kind, problems)
        try:  # the readers: a valid folder or one LcdataError line, nothing else
            open_shards(str(folder))
        except LcdataError as e:
            assert "\n" not in str(e)


def _equivalent_specials(m: dict, dotted: str, kind: str) -> bool:
    """Whether an edit of ``config.bos`` / ``config.eos`` resolves, with the manifest's tokenizer, to the very
    special-token ids the manifest records (an independent resolution through `tokenizers`)."""
    if dotted not in ("config.bos", "config.eos") or kind != "value":
        return False
    from tokenizers import Tokenizer

    from lcdata.tokenizer import resolve_specials

    try:
        sp = resolve_specials(Tokenizer.from_file(m["tokenizer"]["path"]), m["config"]["bos"], m["config"]["eos"])
    except Exception:  # an edit naming no token: not equivalent
        return False
    st_ = m["special_tokens"]
    return (sp.bos, sp.eos, sp.pad) == (st_["bos_id"], st_["eos_id"], st_["pad_id"])


@SETTINGS
@given(data=st.data())
def test_manifest_edits_fail_resealed(folder, data):
    m = json.loads((folder / "manifest.json").read_text())
    _check_resealed(folder, *data.draw(manifest_edit(m)))


def test_every_key_every_edit_resealed(folder):
    """The exhaustive sweep: every key (nested, list items) x value / type / delete / add, resealed."""
    m = json.loads((folder / "manifest.json").read_text())
    n = 0
    for path in _paths(m):
        for kind in KINDS:
            _check_resealed(folder, *edit_manifest(m, path, kind, lambda opts: opts[0]))
            n += 1
    assert n > 400


@pytest.mark.parametrize("edit", [
    ("shards", 0, "name", "../../x"), ("shards", 1, "files", "bin", "path", "../outside.bin"),
    ("shards", 0, "files", "seg", "path", "/etc/passwd"), ("documents", "path", "sub/documents.parquet"),
    ("documents_file", ".."), ("shards", 2, "files", "bin", "path", "shard-00003.bin"),
])
def test_names_must_be_plain_file_names_of_the_format(folder, edit):
    """A manifest naming a path (``..``, absolute, a separator) or another shard's file is rejected before any
    file is opened, by verify and by the readers."""
    m = json.loads((folder / "manifest.json").read_text())
    *path, value = edit
    _get(m, path[:-1])[path[-1]] = value
    with Saved(folder):
        _write(folder, m, reseal=True)
        problems = verify_shards(str(folder))
        assert problems and _names_it(problems, _dotted(tuple(path))), problems
        with pytest.raises(LcdataError, match=re.escape(value)):
            open_shards(str(folder))


def test_seq_len_edit_is_an_lcdata_error_in_training(folder):
    """Issue #14: an edited seq_len passed verify and crashed `train` with an IndexError."""
    torch_data = pytest.importorskip("lcdata_train.data")
    m = json.loads((folder / "manifest.json").read_text())
    m["seq_len"] = m["config"]["seq_len"] = 512
    with Saved(folder):
        _write(folder, m, reseal=True)
        problems = verify_shards(str(folder))
        assert any("files.bin.bytes" in p for p in problems), problems
        with pytest.raises(LcdataError, match="seq_len"):
            torch_data.ShardDataset(str(folder))


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '"x"', "\xff\xfe", '{"format": "lcdata.shards"}'])
def test_broken_manifest_is_a_fail_line(folder, text):
    with Saved(folder):
        (folder / "manifest.json").write_bytes(text.encode("latin-1"))
        problems = verify_shards(str(folder))
        assert problems and all(p.startswith("manifest.json: ") for p in problems), problems
        _ok(problems)


def test_missing_folder_and_manifest(tmp_path):
    assert "no such folder" in verify_shards(str(tmp_path / "nope"))[0]
    assert "holds no manifest.json" in verify_shards(str(tmp_path))[0]
    (tmp_path / "manifest.json").mkdir()
    assert verify_shards(str(tmp_path))[0].startswith("manifest.json: cannot be read (IsADirectoryError")


# ------------------------------------------------------------------------------------------ data file edits


@SETTINGS
@given(data=st.data())
def test_data_file_edits_fail(folder, data):
    names = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".npy", ".parquet"))
    name = data.draw(st.sampled_from(names))
    raw = (folder / name).read_bytes()
    kind = data.draw(st.sampled_from(["flip", "cut", "grow"]))
    if kind == "flip":
        at = data.draw(st.integers(0, len(raw) - 1))
        new = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1:]
    elif kind == "cut":
        new = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        new = raw + bytes(data.draw(st.integers(1, 9)))
    with Saved(folder):
        (folder / name).write_bytes(new)
        problems = verify_shards(str(folder))
        _ok(problems)
        assert problems and any(p.startswith(f"{name}: ") for p in problems), (name, kind, problems)


def test_unlisted_shard_file_fails(folder):
    with Saved(folder):
        shutil.copy(folder / "shard-00000.bin", folder / "shard-00099.bin")
        problems = verify_shards(str(folder))
        assert problems == [p for p in problems if p.startswith("shard-00099.bin: ")] and problems


# -------------------------------------------------------- data edits with sizes, checksums and seal recomputed


def _reseal_files(folder: Path) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    for meta in [e["files"][t] for e in m["shards"] for t in ("bin", "seg")] + [m["documents"]]:
        data = (folder / meta["path"]).read_bytes()
        meta["bytes"], meta["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    _write(folder, m, reseal=True)


def _tokens(folder: Path, k: int) -> np.ndarray:
    return np.fromfile(folder / f"shard-{k:05d}.bin", dtype="<u2")


def _set_token(folder: Path, k: int, pos: int, value: int) -> None:
    t = _tokens(folder, k)
    t[pos] = value
    t.tofile(folder / f"shard-{k:05d}.bin")


def _segs(folder: Path, k: int) -> np.ndarray:
    return np.load(folder / f"shard-{k:05d}.seg.npy")


def _padded_shard(folder: Path, L: int) -> tuple[int, int]:
    """(shard, flat position) of a padding position."""
    for k in range(len(list(folder.glob("shard-*.bin")))):
        cover = np.zeros(len(_tokens(folder, k)), bool)
        for s in _segs(folder, k):
            a = int(s["seq"]) * L + int(s["start"])
            cover[a: a + int(s["length"])] = True
        if (~cover).any():
            return k, int(np.flatnonzero(~cover)[0])
    raise AssertionError("no padding in the fixture")


def _edit_tokens_beyond_max_id(folder, segs, L):
    _set_token(folder, 0, int(segs["start"][0]) + 1, 16384)  # > max_id 16,383, still a valid uint16
    return "token id 16,384 > tokenizer.max_id"


def _edit_padding(folder, segs, L):
    _set_token(folder, *_padded_shard(folder, L), 5)
    return "padding position"


def _edit_bos(folder, segs, L):
    s = segs[segs["offset"] == 0][0]
    _set_token(folder, 0, int(s["seq"]) * L + int(s["start"]), 7)
    return "start with special_tokens.bos_id"


def _edit_seg_source(folder, segs, L):
    segs = segs.copy()
    segs["source"][0] = 1 - segs["source"][0]
    np.save(folder / "shard-00000.seg.npy", segs)
    return "source differs"


def _edit_seg_overlap(folder, segs, L):
    segs = segs.copy()
    same = np.flatnonzero(segs["seq"][1:] == segs["seq"][:-1])[0] + 1
    segs["start"][same] -= 1
    np.save(folder / "shard-00000.seg.npy", segs)
    return "overlapping"


def _edit_documents_row(folder, segs, L):
    docs = pl.read_parquet(folder / "documents.parquet")
    docs.with_columns(pl.when(pl.col("doc") == 0).then(pl.col("length") + 1).otherwise(pl.col("length"))
                      .alias("length")).write_parquet(folder / "documents.parquet")
    return "dropped_tokens"


@pytest.mark.parametrize("edit", [_edit_tokens_beyond_max_id, _edit_padding, _edit_bos, _edit_seg_source,
                                  _edit_seg_overlap, _edit_documents_row])
def test_data_checks_behind_the_checksums(folder, edit):
    """A forger who recomputes every size, SHA-256 and the seal is still caught by the data checks."""
    L = json.loads((folder / "manifest.json").read_text())["seq_len"]
    with Saved(folder):
        needle = edit(folder, _segs(folder, 0), L)
        _reseal_files(folder)
        problems = verify_shards(str(folder))
        _ok(problems)
        assert any(needle in p for p in problems), (needle, problems)


# ------------------------------------------------------------------------------------------ one schema


def test_schema_matches_the_config_classes_and_the_docs():
    """The manifest schema is written once (lcdata.shards.format): the config keys are the dataclasses' fields,
    and docs/format.md names every key."""
    assert set(BUILD_CONFIG_SCHEMA.fields) == {f.name for f in dataclasses.fields(BuildConfig)}
    assert set(READ_CONFIG_SCHEMA.fields) == {f.name for f in dataclasses.fields(ReadConfig)}
    doc = (ROOT / "docs" / "format.md").read_text()

    def keys(spec):
        if hasattr(spec, "inner"):
            yield from keys(spec.inner)
        for k, v in getattr(spec, "fields", {}).items():
            yield k
            yield from keys(v)

    missing = sorted({k for k in keys(MANIFEST_SCHEMA) if f"`{k}`" not in doc})
    assert not missing, f"docs/format.md does not name {missing}"
