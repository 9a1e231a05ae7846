"""Output folders: one life cycle for every command that takes ``--out`` (claim, lock, overwrite, complete).

A command *claims* its output folder (`claim_out`) before it writes anything in it, and holds the claim
(a context manager) until it has written the folder's completion file:

1. Refusals, before anything is written: ``--out`` names a file; ``--out`` is, or contains, a path the
   command reads (an input, the tokenizer, the plan/stats/model folder in use; ``protect``), or lies inside
   an input folder (the next run over that folder would read the outputs as corpus).
2. The lock: ``.lcdata.lock`` in the folder, held with ``flock`` for the whole run. A second command on the
   same folder is refused, naming the process that holds it; the kernel drops the lock of a killed process,
   so a stale lock file is taken over without a word. The file stays (removing it would let a waiting
   process lock a deleted file while a third creates a new one). Local folders only: fsspec stores have no
   locks (documented in docs/reliability.md).
3. What the folder holds. Empty or absent: a fresh folder. Otherwise it must be a folder of this *kind*
   (its marker ``.lcdata.json`` says so; folders written before markers existed are recognised by their
   completion file), and then ``resume`` keeps it (the command checks its own identity) and ``overwrite``
   empties it: only entries this kind writes are removed, the completion file first (so a crash while
   deleting leaves a folder recognisably incomplete), and any other entry refuses the whole overwrite,
   naming it. Neither: a refusal that says which flag to pass.
4. The marker ``.lcdata.json`` ({"kind", "lcdata_version"}) is written at once.

Completion: every kind writes one completion file last (`KINDS`), and that file lists the other outputs
with size and SHA-256 (`outputs_record`), so readers (`check_outputs`) refuse a folder that is
incomplete (no completion file) or mixed (a file of another run).

A command that stops on the user's error (an `LcdataError`: a bad record, a plan that does not match) in a
folder that was empty or absent removes what it wrote there (and the folder it created), so a refused run
leaves nothing behind; any other failure (a crash, a full disk) keeps the files for ``--resume``.

Cost: a directory listing and a few ``stat`` calls per claim; `outputs_record` and `check_outputs` read
the files they hash once.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import fsspec

from ..errors import ConfigError, LcdataError
from ..version import VERSION
from .io import is_local, join, path_relation

MARKER = ".lcdata.json"
LOCK = ".lcdata.lock"
COMMON = (MARKER, LOCK, "*.tmp-*")


@dataclass(frozen=True)
class Kind:
    """What a kind of folder holds: its completion file (written last; a name or an ``fnmatch`` pattern) and
    the patterns of every entry its command writes (files or folders, ``fnmatch`` on the entry's name)."""

    name: str
    command: str
    complete: str
    entries: tuple[str, ...]
    # how a folder written before markers existed is recognised: (file, key, value) - the JSON ``file`` has
    # ``key`` (equal to ``value`` unless it is None)
    legacy: tuple[str, str, str | None] | None = None


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("stats", "lcdata stats", "stats.json",
         ("stats.json", "sources.parquet", "buckets.parquet", "histogram.parquet", "files.parquet", "skips.parquet",
          "doc_lengths.parquet", "length_distribution.png", "_scaleout"), ("stats.json", "kind", "lcdata.stats.lengths")),
    Kind("plan", "lcdata sample", "plan.json",
         ("plan.json", "plan.parquet", "report.parquet", "groups.parquet", "report.json", "sample.png", "_scaleout",
          "stats"),
         ("plan.json", "kind", "lcdata.plan")),
    Kind("shards", "lcdata build", "manifest.json",
         ("manifest.json", "build.json", "shard-*.bin", "shard-*.seg.npy", "documents.parquet", "_work", "_scaleout"),
         ("manifest.json", "format", "lcdata.shards")),
    Kind("export", "lcdata export", "export-*.json",
         ("export-*.json", "shard-*.ds", "shard-*.ds.index", "shard-*.bin", "shard-*.idx")),
    Kind("train", "lcdata train", "final", ("run.json", "log.jsonl", "checkpoints", "final"),
         ("run.json", "total_steps", None)),
    Kind("needle", "lcdata needle", "results.json", ("results.json", "results.parquet", "heatmap*.png"),
         ("results.json", "average_score", None)),
    Kind("eval-loss", "lcdata eval-loss", "loss.json", ("loss.json", "loss.parquet", "units.parquet", "compare.parquet"),
         ("loss.json", "loss", None)),
)}


def _fs(url: str):
    return fsspec.core.url_to_fs(url)


def _name(p: str) -> str:
    return p.rstrip("/").rsplit("/", 1)[-1]


def _read_json(fs, path: str):
    try:
        with fs.open(path, "rb") as fh:
            return json.loads(fh.read())
    except (OSError, ValueError):
        return None


def folder_kind(out: str) -> str | None:
    """The kind of lcdata folder ``out`` is (its marker, else a completion file of an older lcdata), or None."""
    fs, p = _fs(out)
    m = _read_json(fs, f"{p}/{MARKER}")
    if isinstance(m, dict) and m.get("kind") in KINDS:
        return m["kind"]
    for k in KINDS.values():
        if k.legacy and fs.exists(f"{p}/{k.legacy[0]}"):
            j = _read_json(fs, f"{p}/{k.legacy[0]}")
            if isinstance(j, dict) and k.legacy[1] in j and k.legacy[2] in (None, j[k.legacy[1]]):
                return k.name
    if fs.exists(f"{p}/build.json"):
        return "shards"
    return None


def _is_ours(kind: Kind, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in (*kind.entries, *COMMON))


def input_roots(inputs: Iterable[str]) -> list[str]:
    """The folders (or files) INPUT arguments name: a glob's fixed prefix, else the argument itself."""
    import glob

    out = []
    for inp in [inputs] if isinstance(inputs, str) else inputs:
        s = str(inp)
        if glob.has_magic(s):
            fixed = []
            for part in s.split("/"):
                if glob.has_magic(part):
                    break
                fixed.append(part)
            s = "/".join(fixed) or "."
        out.append(s)
    return out


def _check_paths(out: str, protect: dict[str, Iterable[str]], inputs: Iterable[str]) -> None:
    for what, paths in protect.items():
        for q in paths:
            if not q:
                continue
            rel = path_relation(out, q)
            if rel in ("same", "contains"):
                raise ConfigError(
                    f"--out {out!r} {'is' if rel == 'same' else 'contains'} {what} {q!r}: an output folder may "
                    "never hold what the command reads (it could be overwritten or deleted); choose another --out"
                )
    for q in inputs:
        if path_relation(out, q) == "inside":
            raise ConfigError(
                f"--out {out!r} lies inside the input folder {q!r}: the next run over that folder would read "
                "the outputs as corpus; choose an --out outside it"
            )


class _Lock:
    """An exclusive ``flock`` on ``FOLDER/.lcdata.lock`` (local folders; a no-op elsewhere)."""

    def __init__(self, out: str, command: str):
        self.fd = None
        if not is_local(out):
            return
        import fcntl

        path = os.path.join(out.removeprefix("file://"), LOCK)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # a filesystem without locks: as remote
                os.close(fd)
                return
            if not isinstance(e, BlockingIOError):
                os.close(fd)
                raise
            try:
                info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                info = {}
            os.close(fd)
            raise ConfigError(
                f"{out!r} is being written by another lcdata command (pid {info.get('pid', '?')} on "
                f"{info.get('host', '?')}: {info.get('command', '?')}, since {info.get('since', '?')}); wait for it "
                "to finish, or choose another --out"
            ) from None
        body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, body, 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            os.ftruncate(self.fd, 0)  # the holder's details only while it holds the lock: outputs stay reproducible
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@dataclass
class Claim:
    """A claimed output folder: ``fresh`` (it was empty or absent) or ``resumed`` (an earlier run's files kept)."""

    out: str
    kind: Kind
    fresh: bool
    created: bool

    def wipe(self, everything: bool = False) -> None:
        """Remove every entry (all of them this kind's: `claim_out` checked), completion file first; the lock
        and the marker stay unless ``everything``."""
        fs, p = _fs(self.out)
        names = sorted((_name(e) for e in fs.ls(p, detail=False)),
                       key=lambda n: not fnmatch.fnmatchcase(n, self.kind.complete))
        for n in names:
            if n in (LOCK, MARKER) and not everything:
                continue
            fs.rm(f"{p}/{n}", recursive=True)


@contextmanager
def claim_out(out: str, kind: str, *, overwrite: bool = False, resume: bool = False,
              protect: dict[str, Iterable[str]] | None = None, inputs: Iterable[str] = (),
              resume_flag: str | None = "--resume") -> Iterator[Claim]:
    """Claim ``out`` for a command writing a folder of ``kind`` (see the module docstring); yields a `Claim`.

    ``protect``: {"the tokenizer": [path], "an input": [paths], ...}: paths ``out`` may not be or contain
    (the working directory is always protected from an overwrite). ``inputs``: input folders ``out`` may not
    lie inside. ``resume_flag``: the command's flag to continue a run (None: the command cannot resume)."""
    k = KINDS[kind]
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume contradict each other; pass one")
    protect = dict(protect or {})
    _check_paths(out, protect, inputs)
    fs, p = _fs(out)
    if fs.exists(p) and not fs.isdir(p):
        raise ConfigError(f"--out {out!r} is a file, not a folder; choose a folder path (it is created if missing)")
    created = not fs.exists(p)
    if not created:
        _refuse_foreign(out, fs, p, k, resume_flag)  # before the lock file: nothing is written into a foreign folder
    fs.makedirs(p, exist_ok=True)
    lock = _Lock(out, k.command)
    try:
        held = _refuse_foreign(out, fs, p, k, resume_flag)  # again, now that no other command can change it
        fresh = not held
        if held:
            if overwrite:
                stray = sorted(n for n in held if not _is_ours(k, n))
                if stray:
                    raise ConfigError(
                        f"--overwrite refused: {out!r} holds entries {k.command} did not write "
                        f"({', '.join(stray[:5])}); move them away or choose another --out")
                if path_relation(out, os.getcwd()) in ("same", "contains"):
                    raise ConfigError(f"--overwrite refused: {out!r} is or contains the working directory")
                Claim(out, k, False, False).wipe()
                fresh = True
            elif not resume:
                done = any(fnmatch.fnmatchcase(n, k.complete) for n in held)
                how = " or ".join(f for f in (resume_flag, "--overwrite") if f)
                raise ConfigError(
                    f"--out {out!r} is not empty: it holds a {'complete' if done else 'partial (interrupted)'} "
                    f"{k.command} folder; pass {how}, or choose another --out")
        _write_marker(fs, p, k)
        claim = Claim(out, k, fresh, created)
        try:
            yield claim
        except LcdataError:  # the user's error (bad input, bad option): a fresh folder is left as it was found
            if fresh:
                lock.release()
                claim.wipe(everything=True)
                if created:
                    fs.rm(p, recursive=True)
            raise
    finally:
        lock.release()


def _refuse_foreign(out: str, fs, p: str, k: Kind, resume_flag: str | None) -> list[str]:
    """The entries of ``out`` (lock, marker and temp files aside); refuse unless there are none or ``out`` is a
    folder of kind ``k``."""
    held = [n for n in (_name(e) for e in fs.ls(p, detail=False)) if n not in (LOCK, MARKER) and ".tmp-" not in n]
    if held:
        have = folder_kind(out)
        if have != k.name:
            what = (f"a {KINDS[have].command} folder" if have else
                    f"other files, which lcdata did not write ({', '.join(sorted(held)[:5])})")
            raise ConfigError(f"--out {out!r} is not empty: it holds {what}; choose another --out"
                              + (" (--overwrite only ever replaces a folder of the same command)" if have else ""))
    return held


def _write_marker(fs, p: str, k: Kind) -> None:
    path = f"{p}/{MARKER}"
    if _read_json(fs, path) == {"kind": k.name, "lcdata_version": VERSION}:
        return
    with fs.open(path, "wb") as fh:
        fh.write(json.dumps({"kind": k.name, "lcdata_version": VERSION}).encode())


# ------------------------------------------------------------------------------------ completeness


def file_sha256(url: str) -> tuple[int, str]:
    """(size, SHA-256) of a file, read in 8 MiB blocks."""
    h = hashlib.sha256()
    n = 0
    with fsspec.open(url, "rb") as fh:
        while block := fh.read(8 << 20):
            h.update(block)
            n += len(block)
    return n, h.hexdigest()


def outputs_record(out: str, names: Iterable[str]) -> dict:
    """{name: {"bytes", "sha256"}} of the files ``names`` of ``out``, for its completion file."""
    rec = {}
    for n in names:
        size, sha = file_sha256(join(out, n))
        rec[n] = {"bytes": size, "sha256": sha}
    return rec


def check_outputs(out: str, record: dict | None, names: Iterable[str], kind: str) -> None:
    """Refuse a folder whose files ``names`` are missing or differ from the completion file's ``record``
    (None: a folder written before records existed, accepted as it is)."""
    if record is None:
        return
    k = KINDS[kind]
    for n in names:
        meta = record.get(n)
        if meta is None:
            fs, p = _fs(out)
            if fs.exists(f"{p}/{n}"):
                raise LcdataError(f"{out!r}: {n} is not listed in {k.complete}: it was left by another run (the folder "
                                  f"is mixed); rerun `{k.command}` with --overwrite")
            continue
        try:
            size, sha = file_sha256(join(out, n))
        except FileNotFoundError:
            raise LcdataError(f"{out!r}: {n} is missing although {k.complete} lists it: the folder is incomplete; "
                              f"rerun `{k.command}` with --overwrite") from None
        if (size, sha) != (meta["bytes"], meta["sha256"]):
            raise LcdataError(f"{out!r}: {n} is not the file {k.complete} lists ({size} bytes, sha "
                              f"{sha[:12]} != {meta['bytes']} bytes, sha {meta['sha256'][:12]}): the folder mixes "
                              f"files of different runs or was altered; rerun `{k.command}` with --overwrite")
