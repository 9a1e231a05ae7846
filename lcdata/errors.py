"""Typed errors. Every error names the bad value and says what to do about it.

`LcdataError` is the root; the CLI turns any of them into a one-paragraph message and exit code 2
(never a traceback). Input errors carry the file and, where known, the line/row, so a user can open
the exact record. User input is never checked with `assert`.

`user_message` is the one place that decides what counts as a user's error (ours, and the operating
system's "disk full", "read-only", "no such file", ... and fsspec's "unknown protocol") and words it as
one line; `cli_errors` is the ``try/except`` every command line runs its command under. Anything else
is a bug: it keeps its traceback. ``LCDATA_DEBUG=1`` (or ``--debug``) shows the traceback of any error.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable


class LcdataError(Exception):
    """Base class of every error lcdata raises on purpose."""


class ConfigError(LcdataError, ValueError):
    """A configuration value is invalid (flag, config field, spec file)."""


class InputError(LcdataError):
    """An input file cannot be read as asked.

    Attributes ``path``, ``line`` (1-based, or None), ``reason`` (a short machine-readable tag, the same
    tags `--on-error skip` counts by) and ``fix`` (what to do).
    """

    def __init__(self, path: str, reason: str, detail: str, fix: str, line: int | None = None):
        self.path, self.reason, self.detail, self.fix, self.line = path, reason, detail, fix, line
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {detail} [{reason}]. {fix}")

    def __reduce__(self):  # survive pickling across worker processes
        return (InputError, (self.path, self.reason, self.detail, self.fix, self.line))


class TokenizerError(LcdataError):
    """A tokenizer file is missing or is not a Hugging Face `tokenizers` JSON file."""


class MissingDependencyError(LcdataError, ImportError):
    """An optional dependency is needed for this feature; the message names the extra to install."""


# errno -> what to do; any other OSError is not a user's error and keeps its traceback
_OS_FIX = {
    errno.ENOSPC: "the disk is full: free space (or choose another --out) and run the command again; "
                  "a build continues with --resume",
    errno.EDQUOT: "the disk quota is exceeded: free space and run the command again",
    errno.EFBIG: "a file grew beyond the file-size limit (ulimit -f or the filesystem's): raise the limit, "
                 "or write smaller files (build: --shard-size), and run the command again",
    errno.EROFS: "the filesystem is read-only: choose a writable --out",
    errno.EACCES: "permission denied: choose a path you can write (or read)",
    errno.EPERM: "operation not permitted: choose a path you own",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "the path is a folder where a file is expected: name a file",
    errno.ENOENT: "no such file or folder: check the path",
    errno.EEXIST: "the path exists already: choose another one",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter one",
    errno.EMFILE: "too many open files: raise `ulimit -n` or use fewer --workers",
}


def user_message(e: BaseException) -> str | None:
    """One line for an error that is the user's to fix (None: a bug, which keeps its traceback)."""
    if isinstance(e, LcdataError):
        return str(e)
    if isinstance(e, OSError) and e.errno in _OS_FIX:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        return f"{where}{os.strerror(e.errno)}; {_OS_FIX[e.errno]}"
    if isinstance(e, ValueError) and str(e).startswith("Protocol not known"):  # fsspec's unknown URL scheme
        return f"{e}: the URL's scheme names no installed fsspec filesystem; check the URL or install its package"
    return None


def cli_errors(command: str, func: Callable[[], int], debug: bool = False) -> int:
    """Run one command's ``func`` as a command line does: a user's error is one line on stderr and exit 2
    (no traceback unless ``debug`` or ``LCDATA_DEBUG=1``), Ctrl-C exits 130, a closed stdout pipe exits 0."""
    debug = debug or bool(os.environ.get("LCDATA_DEBUG"))
    try:
        return func()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        msg = user_message(e)
        if msg is None or debug:
            raise
        print(f"lcdata {command}: error: {msg}", file=sys.stderr)
        return 2
