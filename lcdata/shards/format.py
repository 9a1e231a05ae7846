"""The lcdata shard format, version 2: file names, the ``.seg.npy`` and documents.parquet schemas, the
manifest schema and `validate_manifest` (byte-level spec and the meaning of every key in docs/format.md).

A shard folder holds:
- ``manifest.json``: self-description (`MANIFEST_SCHEMA`): format version, dtype, seq_len, packing, tokenizer
  hash, vocabulary size and largest id, special token ids, sources, counts, the config and the size +
  SHA-256 of every data file, sealed by ``manifest_sha256`` (`seal`). Written last (`write_manifest`): its
  presence marks a complete build.
- ``shard-NNNNN.bin``: ``n_sequences x seq_len`` token ids, little-endian ``uint16`` (largest id <= 65,535)
  or ``uint32``, row-major, no header: ``np.memmap(path, dtype, mode="r").reshape(-1, seq_len)``.
- ``shard-NNNNN.seg.npy``: `SEG_FILE_DTYPE` rows, one per document piece, sorted by (seq, start).
- ``documents.parquet``: `DOCS_SCHEMA`, one row per document instance, in ``doc`` order.

Invariants `validate_manifest` proves from the manifest alone (no data read; O(keys + shards)): every key
present with its type and allowed values and no other key; every file name a plain name of the expected
form (``shard-NNNNN.bin``, never a path); the counts agree with each other (shard ranges contiguous, sizes
= sequences x seq_len x itemsize, per-source sums = totals, padding = positions - tokens); the dtype holds
the tokenizer's largest id and follows the config; the seal matches. The checks against the data are in
`lcdata.shards.verify`. Version rule: any change to this schema bumps `FORMAT_VERSION`; older versions are
refused by name (`OLD_VERSIONS`), never read with a guess.
"""

from __future__ import annotations

import hashlib
import io
import json
import re

import numpy as np
import polars as pl

FORMAT = "lcdata.shards"
FORMAT_VERSION = 2
OLD_VERSIONS = {1: "it does not record the tokenizer's largest id (ids of tokenizers whose ids are not contiguous "
                   "could wrap in uint16) and has no manifest checksum"}
MANIFEST_FILE = "manifest.json"
DOCUMENTS_FILE = "documents.parquet"
PACKINGS = ("concat", "best-fit")
TOKEN_DTYPES = ("uint16", "uint32")
PHASES = ("tokenize", "layout", "write", "documents", "verify")  # manifest "phase_s": wall seconds of each
SEG_FILE_DTYPE = np.dtype([("seq", "<u4"), ("start", "<u4"), ("length", "<u4"), ("doc", "<u8"),
                           ("offset", "<u8"), ("source", "<u2")])
DOCS_SCHEMA = {"doc": pl.Int64, "doc_id": pl.String, "file": pl.String, "row": pl.Int64, "chunk": pl.Int32,
               "copy": pl.Int64, "source": pl.String, "length": pl.Int64}


def shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def bin_name(k: int) -> str:
    return f"{shard_name(k)}.bin"


def seg_name(k: int) -> str:
    return f"{shard_name(k)}.seg.npy"


def token_dtype(max_id: int) -> np.dtype:
    """The smallest dtype of the format that holds every id up to ``max_id`` (the tokenizer's largest id)."""
    return np.dtype("<u2") if max_id <= 0xFFFF else np.dtype("<u4")


def choose_token_dtype(max_id: int, forced: str = "auto") -> np.dtype:
    """``token_dtype(max_id)``, or the ``forced`` one (uint16 | uint32) if it holds ``max_id``."""
    from ..errors import ConfigError

    if max_id > 0xFFFFFFFF:
        raise ConfigError(f"the tokenizer's largest id ({max_id:,}) does not fit uint32; lcdata shards cannot hold it")
    if forced == "auto":
        return token_dtype(max_id)
    dt = np.dtype(forced).newbyteorder("<")
    if max_id > np.iinfo(dt).max:
        raise ConfigError(f"the tokenizer's largest id ({max_id:,}) does not fit dtype {forced} (largest "
                          f"{np.iinfo(dt).max:,}); use --token-dtype uint32 or auto")
    return dt


def sha256_bytes(data) -> str:
    return hashlib.sha256(memoryview(data).cast("B")).hexdigest()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ schema
# A spec is a function (value, path, problems) -> bool (True: the value has the right type and value).

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")


def _say(problems: list[str], path: str, what: str) -> bool:
    problems.append(f"{MANIFEST_FILE}: {path}: {what}")
    return False


def _int(lo: int = 0):
    def check(v, path, problems):
        if not isinstance(v, int) or isinstance(v, bool):
            return _say(problems, path, f"{v!r} is not an integer")
        return v >= lo or _say(problems, path, f"{v} < {lo}")
    return check


def _number(v, path, problems):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v or v < 0:
        return _say(problems, path, f"{v!r} is not a number >= 0")
    return True


def _bool(v, path, problems):
    return isinstance(v, bool) or _say(problems, path, f"{v!r} is not true/false")


def _str(pattern: re.Pattern | None = None, nonempty: bool = False):
    def check(v, path, problems):
        if not isinstance(v, str):
            return _say(problems, path, f"{v!r} is not a string")
        if nonempty and not v:
            return _say(problems, path, "is empty")
        if pattern is not None and not pattern.fullmatch(v):
            return _say(problems, path, f"{v!r} is not a {'SHA-256' if pattern is _HEX64 else 'hex'} digest")
        return True
    return check


def _name(v, path, problems):
    """A plain file name inside the folder: no path separator, not '.', '..', empty or absolute."""
    if not isinstance(v, str):
        return _say(problems, path, f"{v!r} is not a file name")
    if v in ("", ".", "..") or "/" in v or "\\" in v or "\x00" in v or ":" in v:
        return _say(problems, path, f"{v!r} is not a plain file name inside the folder (no path, no '..'); "
                                    "the manifest was altered: rebuild the folder")
    return True


def _const(value):
    def check(v, path, problems):
        return (v == value and type(v) is type(value)) or _say(problems, path, f"{v!r} is not {value!r}")
    return check


def _enum(*values):
    def check(v, path, problems):
        return (isinstance(v, str) and v in values) or _say(problems, path, f"{v!r} is not one of {values}")
    return check


def _opt(spec):
    def check(v, path, problems):
        return v is None or spec(v, path, problems)
    check.inner = spec
    return check


def _list(item, nonempty: bool = False):
    def check(v, path, problems):
        if not isinstance(v, list):
            return _say(problems, path, f"{type(v).__name__} is not a list")
        if nonempty and not v:
            return _say(problems, path, "is an empty list")
        return all([item(x, f"{path}[{i}]", problems) for i, x in enumerate(v)])
    check.inner = item
    return check


def _map(value):
    """An object with any string keys, each value of spec ``value``."""
    def check(v, path, problems):
        if not isinstance(v, dict):
            return _say(problems, path, f"{type(v).__name__} is not an object")
        return all([value(x, f"{path}.{k}", problems) for k, x in v.items()])
    check.inner = value
    return check


def _obj(fields: dict, optional: tuple[str, ...] = ()):
    """An object with exactly ``fields`` (name -> spec): a missing or extra key is a problem, except that the
    keys in ``optional`` may be missing."""
    def check(v, path, problems):
        where = f"{path}." if path else ""
        if not isinstance(v, dict):
            return _say(problems, path or "(top level)", f"{type(v).__name__} is not an object")
        ok = True
        for k in fields:
            if k not in v and k not in optional:
                ok = _say(problems, f"{where}{k}", "missing key")
        for k in v:
            if k not in fields:
                ok = _say(problems, f"{where}{k}", "unknown key (not in the format; the manifest was altered)")
        return all([fields[k](v[k], f"{where}{k}", problems) for k in fields if k in v]) and ok
    check.fields = fields  # for the docs test: every key of the schema is documented
    check.optional = optional
    return check


FILE_SCHEMA = _obj({"path": _name, "bytes": _int(), "sha256": _str(_HEX64)})
READ_CONFIG_SCHEMA = _obj({
    "text_field": _str(nonempty=True), "source_field": _str(nonempty=True), "source_from_path": _bool,
    "source": _opt(_str(nonempty=True)), "id_field": _opt(_str(nonempty=True)), "on_error": _enum("raise", "skip"),
    "chunk_bytes": _int(1024)})
BUILD_CONFIG_SCHEMA = _obj({
    "tokenizer": _str(nonempty=True), "seq_len": _int(2), "packing": _enum(*PACKINGS), "bos": _str(nonempty=True),
    "eos": _str(nonempty=True), "shard_tokens": _int(1), "seed": _int(), "plan": _opt(_str(nonempty=True)),
    "split_long": _bool, "dtype": _enum("auto", *TOKEN_DTYPES), "read": READ_CONFIG_SCHEMA,
    "engine": _enum("auto", "hf", "tiktoken")})
MANIFEST_SCHEMA = _obj({
    "format": _const(FORMAT), "format_version": _const(FORMAT_VERSION), "lcdata_version": _str(nonempty=True),
    "identity": _str(_HEX), "dtype": _enum(*TOKEN_DTYPES), "seq_len": _int(2), "packing": _enum(*PACKINGS),
    "n_sequences": _int(1), "n_documents": _int(), "n_instances": _int(), "n_tokens": _int(),
    "padding_tokens": _int(), "dropped_tokens": _int(),
    "tokenizer": _obj({"path": _str(nonempty=True), "sha256": _str(_HEX64), "vocab_size": _int(1), "max_id": _int()}),
    "special_tokens": _obj({"bos_id": _opt(_int()), "eos_id": _opt(_int()), "pad_id": _int()}),
    "sources": _list(_str()), "per_source": _map(_obj({"documents": _int(), "tokens": _int()})),
    "plan_fingerprint": _opt(_str(nonempty=True)), "seed": _int(), "config": BUILD_CONFIG_SCHEMA,
    "inputs": _list(_obj({"rel": _str(nonempty=True), "bytes": _int()})),
    "shards": _list(_obj({"name": _name, "first_sequence": _int(), "n_sequences": _int(1),
                          "files": _obj({"bin": FILE_SCHEMA, "seg": FILE_SCHEMA})}), nonempty=True),
    "documents_file": _name, "documents": FILE_SCHEMA,
    "read_report": _obj({"n_read": _int(), "n_counted": _int(), "skipped": _map(_int()),
                         "files_with_errors": _int(), "unread_bytes": _int(),
                         "errors": _list(_obj({"file": _str(nonempty=True), "reason": _str(nonempty=True),
                                               "detail": _opt(_str()), "first_lost_row": _opt(_int()),
                                               "unread_bytes": _int()})),
                         "files_resumed": _int()}),
    "engine": _obj({"name": _enum("hf", "tiktoken"), "reason": _str()}),
    "command": _opt(_list(_str())), "elapsed_s": _number, "manifest_sha256": _str(_HEX64),
    "phase_s": _obj({p: _opt(_number) for p in PHASES}),
}, optional=("phase_s",))  # phase_s: written since issue #19; folders built before have none (same format)


def seal_copy(manifest: dict) -> dict:
    """``manifest`` as `write_manifest` would write it (plain JSON values, sealed), without writing it."""
    m = json.loads(json.dumps({k: v for k, v in manifest.items() if k != "manifest_sha256"}, default=_plain))
    m["manifest_sha256"] = seal(m)
    return m


def seal(manifest: dict) -> str:
    """SHA-256 of the manifest's canonical JSON (sorted keys, no spaces), ``manifest_sha256`` left out: any edit
    of any key after the build changes it. Not a signature (anyone can recompute it): the claims about the
    data are checked against the data as well (`lcdata.shards.verify`)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(manifest: dict, out_dir: str) -> dict:
    """Seal ``manifest`` (adds ``manifest_sha256``) and write it atomically as ``out_dir/manifest.json``."""
    from ..util.io import join, write_json

    manifest.pop("manifest_sha256", None)
    manifest = json.loads(json.dumps(manifest, default=_plain))  # what a reader will see (tuples made lists)
    manifest["manifest_sha256"] = seal(manifest)
    write_json(manifest, join(out_dir, MANIFEST_FILE))
    return manifest


def _plain(o):
    if hasattr(o, "item"):  # a NumPy scalar
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def parse_manifest(data: bytes) -> tuple[dict | None, list[str]]:
    """(manifest, problems) of the bytes of a manifest.json: problems when it is not JSON or not an object."""
    try:
        m = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        return None, [f"{MANIFEST_FILE}: not valid JSON ({e}); the file is damaged: rebuild the folder"]
    if not isinstance(m, dict):
        return None, [f"{MANIFEST_FILE}: {type(m).__name__} is not a JSON object; the file is damaged: rebuild the folder"]
    return m, []


def validate_manifest(m) -> list[str]:
    """Every problem of manifest ``m`` found without reading data (see the module docstring); [] = valid."""
    if not isinstance(m, dict):
        return [f"{MANIFEST_FILE}: {type(m).__name__} is not a JSON object"]
    if m.get("format") != FORMAT:
        return [f"{MANIFEST_FILE}: format: {m.get('format')!r} is not {FORMAT!r}: not an lcdata shard folder"]
    v = m.get("format_version")
    if isinstance(v, int) and not isinstance(v, bool) and v in OLD_VERSIONS:  # (a list or dict is not hashable)
        return [f"{MANIFEST_FILE}: format_version: format v{v} written by lcdata {m.get('lcdata_version')}: this "
                f"lcdata reads v{FORMAT_VERSION} only ({OLD_VERSIONS[v]}); rebuild the folder with this lcdata "
                "(`lcdata build ... --out NEW_FOLDER`)"]
    if v != FORMAT_VERSION:
        return [f"{MANIFEST_FILE}: format_version: {v!r} is not {FORMAT_VERSION} (written by a newer or unknown "
                f"lcdata: {m.get('lcdata_version')!r}); read it with that lcdata or rebuild the folder"]
    problems: list[str] = []
    if not MANIFEST_SCHEMA(m, "", problems):
        if "manifest_sha256" in m and isinstance(m["manifest_sha256"], str) and m["manifest_sha256"] != seal(m):
            problems.append(_seal_problem())
        return problems
    problems += _consistency(m)
    if m["manifest_sha256"] != seal(m):
        problems.append(_seal_problem())
    return problems


def _seal_problem() -> str:
    return (f"{MANIFEST_FILE}: manifest_sha256: does not match the manifest's content: it was edited after the "
            "build; rebuild the folder")


def _consistency(m: dict) -> list[str]:
    """The manifest's keys against each other (types already checked)."""
    p: list[str] = []

    def bad(path: str, what: str) -> None:
        _say(p, path, what)

    c, tok, sp = m["config"], m["tokenizer"], m["special_tokens"]
    L, n_seq = m["seq_len"], m["n_sequences"]
    for key, ck in (("seq_len", "seq_len"), ("packing", "packing"), ("seed", "seed")):
        if m[key] != c[ck]:
            bad(key, f"{m[key]!r} != config.{ck} {c[ck]!r}")
    if tok["path"] != c["tokenizer"]:
        bad("tokenizer.path", f"{tok['path']!r} != config.tokenizer {c['tokenizer']!r}")
    if (m["plan_fingerprint"] is None) != (c["plan"] is None):
        bad("plan_fingerprint", f"{m['plan_fingerprint']!r} does not go with config.plan {c['plan']!r}")
    max_id = tok["max_id"]
    if tok["vocab_size"] > max_id + 1:
        bad("tokenizer.vocab_size", f"{tok['vocab_size']:,} ids cannot all be <= tokenizer.max_id {max_id:,}")
    want = token_dtype(max_id).name if c["dtype"] == "auto" else c["dtype"]
    if np.iinfo(np.dtype(m["dtype"])).max < max_id:
        bad("dtype", f"{m['dtype']} cannot hold tokenizer.max_id {max_id:,}")
    elif m["dtype"] != want:
        bad("dtype", f"{m['dtype']} but config.dtype {c['dtype']!r} with tokenizer.max_id {max_id:,} gives {want}")
    for k, v in sp.items():
        if v is not None and v > max_id:
            bad(f"special_tokens.{k}", f"{v:,} > tokenizer.max_id {max_id:,}")
    src, per = m["sources"], m["per_source"]
    if src != sorted(set(src)):
        bad("sources", "not sorted and unique")
    if set(per) != set(src):
        bad("per_source", f"sources {sorted(set(per) ^ set(src))} are not in both per_source and sources")
    elif sum(x["tokens"] for x in per.values()) != m["n_tokens"]:
        bad("per_source", f"tokens sum to {sum(x['tokens'] for x in per.values()):,} != n_tokens {m['n_tokens']:,}")
    elif sum(x["documents"] for x in per.values()) != m["n_documents"]:
        bad("per_source", f"documents sum to {sum(x['documents'] for x in per.values()):,} != n_documents "
                          f"{m['n_documents']:,}")
    rels = [f["rel"] for f in m["inputs"]]
    if len(set(rels)) != len(rels):
        bad("inputs", "a file is listed twice")
    if m["n_documents"] > m["n_instances"]:
        bad("n_documents", f"{m['n_documents']:,} > n_instances {m['n_instances']:,}")
    if m["n_tokens"] + m["padding_tokens"] != n_seq * L:
        bad("padding_tokens", f"n_tokens {m['n_tokens']:,} + padding_tokens {m['padding_tokens']:,} != n_sequences "
                              f"x seq_len = {n_seq * L:,}")
    if m["packing"] == "concat" and m["padding_tokens"]:
        bad("padding_tokens", f"{m['padding_tokens']:,} but packing concat never pads")
    if m["packing"] == "best-fit" and m["dropped_tokens"]:
        bad("dropped_tokens", f"{m['dropped_tokens']:,} but packing best-fit drops nothing")
    for key in ("documents_file", "documents.path"):
        v = m["documents_file"] if key == "documents_file" else m["documents"]["path"]
        if v != DOCUMENTS_FILE:
            bad(key, f"{v!r} is not {DOCUMENTS_FILE!r}")
    per_shard, first = max(1, c["shard_tokens"] // L), 0
    itemsize = np.dtype(m["dtype"]).itemsize
    shards = m["shards"]
    for k, e in enumerate(shards):
        at = f"shards[{k}]"
        for key, v, w in (("name", e["name"], shard_name(k)), ("files.bin.path", e["files"]["bin"]["path"], bin_name(k)),
                          ("files.seg.path", e["files"]["seg"]["path"], seg_name(k))):
            if v != w:
                bad(f"{at}.{key}", f"{v!r} is not {w!r}")
        if e["first_sequence"] != first:
            bad(f"{at}.first_sequence", f"{e['first_sequence']:,} != {first:,} (the sequences of the shards before)")
        last = k == len(shards) - 1
        if e["n_sequences"] > per_shard or (not last and e["n_sequences"] != per_shard):
            bad(f"{at}.n_sequences", f"{e['n_sequences']:,}, but config.shard_tokens // seq_len puts {per_shard:,} "
                                     f"sequences in {'at most ' if last else ''}each shard")
        if e["files"]["bin"]["bytes"] != e["n_sequences"] * L * itemsize:
            bad(f"{at}.files.bin.bytes", f"{e['files']['bin']['bytes']:,} != n_sequences x seq_len x {itemsize} "
                                         f"({m['dtype']}) = {e['n_sequences'] * L * itemsize:,}")
        first += e["n_sequences"]
    if first != n_seq:
        bad("n_sequences", f"{n_seq:,} != {first:,}, the sum of the shards' n_sequences")
    return p
