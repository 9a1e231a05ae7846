"""Append-only JSON-lines logs (the training log ``RUN/log.jsonl``): one JSON object per line, appended by
one writer, read back by the trainer on resume and by `lcdata report`.

Invariant: a process killed while appending leaves at most its *last* line incomplete (cut short, or
without its newline). `read_log` treats such a last line as the crash it records and drops it
(``torn=True``); every other line must be a JSON object, else the file is damaged and an `InputError`
names the file and the line. `rewrite_log` writes the records it keeps to a temporary file in the same
folder that is renamed over the log, so a crash during a rewrite leaves the old log or the new one, never
a mix. Cost: one pass over the file; nothing is fsync'ed (a power loss may lose the last lines).

>>> import os, tempfile
>>> p = os.path.join(tempfile.mkdtemp(), "log.jsonl")
>>> append_record(p, {"step": 1}); _ = open(p, "a").write('{"step": 2, "lo')  # killed mid-line
>>> read_log(p)
([{'step': 1}], True)
"""

from __future__ import annotations

import json

from ..errors import InputError
from .io import atomic_open


def read_log(path: str) -> tuple[list[dict], bool]:
    """(records, torn): every line's object in order; ``torn`` when the last line was incomplete and dropped."""
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline; else the last line, unterminated: torn
    records = []
    for i, ln in enumerate(lines, 1):
        if not ln.strip():
            continue
        try:
            rec = json.loads(ln)
        except ValueError as e:
            raise InputError(path, "bad_json", f"not a JSON record ({e.msg})",
                             "the log is damaged before its last line (a crash only cuts the last one): restore it, "
                             "or delete the line to keep the rest", line=i) from None
        if not isinstance(rec, dict):
            raise InputError(path, "bad_record", f"a JSON {type(rec).__name__}, not an object",
                             "restore the log, or delete the line to keep the rest", line=i)
        records.append(rec)
    return records, bool(tail.strip())


def append_record(path: str, rec: dict) -> None:
    """Append ``rec`` as one line (a single write: a crash cuts at most this line)."""
    with open(path, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


def rewrite_log(path: str, records: list[dict]) -> None:
    """Replace the log at ``path`` by ``records``, atomically (temporary file + rename)."""
    with atomic_open(path) as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in records).encode())
