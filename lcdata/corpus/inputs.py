"""Resolve INPUT arguments (files, directories, globs, fsspec URLs) into an ordered list of files.

Each file gets a *relative name* (`rel`): its path relative to the root it was found under (the directory
given, the fixed prefix of a glob, or the parent folder of a single file). `rel` plus a row number is a
document's stable identity, so it must not depend on where the corpus is mounted nor on the order inputs
were listed: the list is sorted by `rel`, and two files with the same `rel` are an error.

Cost: one `find`/`glob`/`info` call per input on the filesystem; no file is opened.
"""

from __future__ import annotations

import glob as _glob
import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

import fsspec

from ..errors import InputError

# Longest suffix first: the format is decided by the file name.
FORMATS: dict[str, str] = {
    ".jsonl.zst": "jsonl.zst",
    ".json.zst": "jsonl.zst",
    ".jsonl.zstd": "jsonl.zst",
    ".jsonl.gz": "jsonl.gz",
    ".json.gz": "jsonl.gz",
    ".jsonl": "jsonl",
    ".parquet": "parquet",
}


def detect_format(name: str) -> str | None:
    low = name.lower()
    for suffix, fmt in FORMATS.items():
        if low.endswith(suffix):
            return fmt
    return None


@dataclass(frozen=True, slots=True)
class InputFile:
    """One corpus file. ``url`` opens it with fsspec; ``rel`` names it inside its root. ``version`` changes when
    the file's content may have changed: the modification time in nanoseconds for a local file, else what
    the store reports (mtime, LastModified, ETag, generation), "" when it reports nothing. Fingerprints of
    inputs are (rel, size, version): a same-size edit is seen, and so is a copy that does not keep
    modification times (`cp -p`, `rsync -t` keep them)."""

    url: str
    rel: str
    size: int
    format: str
    version: str = ""

    @property
    def protocol(self) -> str:
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    @property
    def parent_name(self) -> str:
        path = self.url.split("://", 1)[-1]
        return posixpath.basename(posixpath.dirname(path.rstrip("/")))


def _unsupported(path: str) -> InputError:
    return InputError(
        path,
        "unsupported_format",
        "unsupported file extension",
        f"use one of {', '.join(FORMATS)} (the format is decided by the file name)",
    )


def _file(fs, path: str, root: str, size: int | None = None, info: dict | None = None) -> InputFile:
    fmt = detect_format(path)
    if fmt is None:
        raise _unsupported(path)
    rel = posixpath.relpath(path, root) if root else posixpath.basename(path)
    if not _is_remote(fs):
        st = os.stat(path)
        return InputFile(url=path, rel=rel, size=st.st_size, format=fmt, version=str(st.st_mtime_ns))
    info = info if info is not None else fs.info(path)
    size = info.get("size") if size is None else size
    return InputFile(url=fs.unstrip_protocol(path), rel=rel, size=int(size or 0), format=fmt, version=_version(info))


_VERSION_KEYS = ("mtime", "LastModified", "last_modified", "updated", "generation", "ETag", "etag", "created")


def _version(info: dict) -> str:
    """What a remote store says about a file's version (see `InputFile`)."""
    return ";".join(f"{k}={info[k]}" for k in _VERSION_KEYS if info.get(k) is not None)


def _is_remote(fs) -> bool:
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" not in protos and "local" not in protos


def resolve_inputs(inputs: Iterable[str] | str) -> list[InputFile]:
    """Expand inputs into corpus files sorted by relative name.

    Directories are searched recursively and files of other formats in them are ignored (a corpus folder
    may hold a README or a tokenizer); a file named explicitly must have a supported extension.

    >>> files = resolve_inputs(["data/demo"])  # doctest: +SKIP
    >>> files[0].rel  # doctest: +SKIP
    'books/part-000.jsonl.zst'
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    inputs = list(inputs)
    if not inputs:
        raise InputError("<inputs>", "no_input", "no input given", "pass at least one file, directory, glob or URL")
    found: list[InputFile] = []
    for inp in inputs:
        fs, path = fsspec.core.url_to_fs(str(inp))
        if _glob.has_magic(path):
            matches = sorted(fs.glob(path))
            files = [m for m in matches if not fs.isdir(m) and detect_format(m)]
            if not files:
                raise InputError(
                    str(inp), "not_found", "the glob matches no corpus file",
                    f"check the pattern; supported extensions: {', '.join(FORMATS)}",
                )
            root = _glob_root(path)
            found += [_file(fs, m, root) for m in files]
        elif fs.isdir(path):
            detail = fs.find(path, detail=True)
            files = sorted(p for p, info in detail.items() if info.get("type") != "directory" and detect_format(p))
            if not files:
                raise InputError(
                    str(inp), "not_found", "the directory holds no corpus file",
                    f"point at a folder with {', '.join(FORMATS)} files",
                )
            root = path.rstrip("/")
            found += [_file(fs, p, root, detail[p].get("size"), detail[p]) for p in files]
        elif fs.exists(path):
            found.append(_file(fs, path, posixpath.dirname(path)))
        else:
            raise InputError(str(inp), "not_found", "no such file or directory", "check the path or URL")
    seen: set[str] = set()
    for f in found:  # also through two inputs, e.g. a folder and a file in it (their `rel` differ)
        if f.url in seen:
            raise InputError(f.url, "duplicate_input", "this file is given twice", "list each file once")
        seen.add(f.url)
    found.sort(key=lambda f: (f.rel, f.url))
    for a, b in zip(found, found[1:]):
        if a.rel == b.rel:
            raise InputError(
                b.url, "duplicate_input",
                f"its relative name {a.rel!r} is the same as that of {a.url}, so documents would share ids",
                "pass the common parent directory instead of the two files/folders",
            )
    return found


def _glob_root(pattern: str) -> str:
    parts = pattern.split("/")
    fixed = []
    for p in parts:
        if _glob.has_magic(p):
            break
        fixed.append(p)
    return "/".join(fixed)
