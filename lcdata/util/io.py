"""Atomic writes of output artifacts to local paths or fsspec URLs, and the small fsspec helpers every
module uses (`join`, `exists`, `is_local`, `read_bytes`, `read_text`, `read_json`, `read_parquet`).

Every file is written to ``NAME.tmp-<pid>-<n>`` in the same folder and renamed into place, so a reader
never sees a half-written file. A write that fails (disk full, file-size limit, an exception in the block)
removes its temp file and names the file in the OSError; only a killed process (SIGKILL, power loss) leaves
a temp file, which the next run of the same command removes (`build --resume`) or ignores.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import fsspec
import polars as pl

_counter = itertools.count()


def join(base: str, name: str) -> str:
    """``base/name`` for a local path or an fsspec URL (no doubled slash)."""
    return base.rstrip("/") + "/" + name


def is_local(url: str) -> bool:
    """Whether ``url`` is a local path (no scheme, or ``file://``)."""
    return "://" not in url or url.startswith("file://")


def exists(url: str) -> bool:
    """Whether a file or folder exists at a local path or fsspec URL."""
    fs, p = fsspec.core.url_to_fs(url)
    return fs.exists(p)


def read_bytes(url: str) -> bytes:
    """The whole content of a file at a local path or fsspec URL."""
    with fsspec.open(url, "rb") as fh:
        return fh.read()


def read_text(url: str) -> str:
    """The content of a UTF-8 text file at a local path or fsspec URL."""
    return read_bytes(url).decode()


def read_parquet(url: str) -> pl.DataFrame:
    """A parquet file at a local path or fsspec URL, read whole."""
    with fsspec.open(url, "rb") as fh:
        return pl.read_parquet(fh)


def _norm(url: str) -> tuple[str, str]:
    """(protocol, normalised absolute path) of a local path or fsspec URL: links resolved for local paths."""
    if "://" in url and not url.startswith("file://"):
        proto, _, rest = url.partition("://")
        return proto, posixpath.normpath("/" + rest.strip("/"))
    return "file", os.path.realpath(os.path.expanduser(url.removeprefix("file://")))


def path_relation(a: str, b: str) -> str | None:
    """How path ``a`` relates to path ``b``: "same", "inside" (a is below b), "contains" (b is below a), or None.

    Local paths are compared after resolving symbolic links (``os.path.realpath``), URLs by protocol and
    normalised path. Cost: a few ``stat`` calls; nothing is opened."""
    (pa, a), (pb, b) = _norm(a), _norm(b)
    if pa != pb:
        return None
    if a == b:
        return "same"
    if a.startswith(b.rstrip("/") + "/"):
        return "inside"
    if b.startswith(a.rstrip("/") + "/"):
        return "contains"
    return None


def make_dirs(path: str) -> None:
    fs, p = fsspec.core.url_to_fs(path)
    fs.makedirs(p, exist_ok=True)


@contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[io.IOBase]:
    """Open ``path`` for writing; the file appears under its name only if the block succeeds. If anything
    fails (the block, the final flush, the rename), the temp file is removed and an OSError without a file
    name gets ``path`` as its ``filename`` (so the one-line error names the file being written)."""
    fs, p = fsspec.core.url_to_fs(path)
    tmp = _temp_name(p)
    fh = fs.open(tmp, mode)
    try:
        yield fh
        fh.close()
        if fs.exists(p) and not _fs_is_local(fs):
            fs.rm(p)
        if _fs_is_local(fs):
            os.replace(tmp, p)
        else:
            fs.mv(tmp, p)
    except BaseException as e:
        with suppress(Exception):  # a close that fails again (its buffer cannot be flushed) must not stop the rm
            fh.close()
        with suppress(Exception):
            if fs.exists(tmp):
                fs.rm(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = path
        raise


@contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary local path next to ``path`` for writers that take a file name (``safetensors.save_file``,
    ``shutil.copyfile``); renamed to ``path`` if the block succeeds, removed if it fails."""
    tmp = _temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(OSError):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = path
        raise


def _temp_name(p: str) -> str:
    return f"{p}.tmp-{os.getpid()}-{next(_counter)}"


def _fs_is_local(fs) -> bool:
    protos = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    return "file" in protos or "local" in protos


def write_parquet(df: pl.DataFrame, path: str) -> None:
    with atomic_open(path) as fh:
        df.write_parquet(fh, compression="zstd", statistics=True)


def write_json(obj, path: str) -> None:
    with atomic_open(path) as fh:
        fh.write((json.dumps(obj, indent=2, sort_keys=False, default=_default) + "\n").encode())


def write_bytes(data: bytes, path: str) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def write_text(text: str, path: str) -> None:
    """``text`` as UTF-8, atomically."""
    write_bytes(text.encode(), path)


def read_json(path: str):
    with fsspec.open(path, "rb") as fh:
        return json.loads(fh.read())


def _default(o):
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def command_line() -> list[str] | None:
    """The lcdata command line that produced an artifact (None when called from Python)."""
    import sys

    argv = sys.argv or [""]
    if argv[0].endswith(("lcdata", "__main__.py")):
        return ["lcdata", *argv[1:]]
    return None
