"""Named fault points: a test kills a command at an exact place to prove that it resumes or fails cleanly.

``fault_point(name)`` is a no-op unless the environment variable ``LCDATA_FAULT`` names that point, as
``NAME`` (the first time this process reaches it) or ``NAME@N`` (the N-th time); then the process kills
itself with SIGKILL, as the out-of-memory killer or ``kill -9`` would: no ``finally``, no ``atexit``, open
files left as they are. The count is per process (a build's spawned workers inherit the variable and count
their own). Cost when unset: one dictionary lookup per call.

The points (each name says what has just been made durable, or what is about to be):

- ``build.tokenize:<file rel>``: in phase 1, after the first batch of that input file was written to its
  spill temp file (the file is half tokenized; run in whichever worker process handles it).
- ``build.spill``: after an input file's spill is complete (its ``units.parquet`` renamed into place).
- ``build.shard``: after shard k's ``.bin``, ``.seg.npy`` and its marker are written.
- ``build.manifest``: after documents.parquet and every shard, just before ``manifest.json`` is written.
- ``train.step``: after a training step's line was appended to ``log.jsonl``, before that step's checkpoint.

Tests: tests/test_faults.py.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Kill this process (SIGKILL) if ``LCDATA_FAULT`` is ``name`` or ``name@N`` and this is the N-th call."""
    spec = os.environ.get("LCDATA_FAULT")
    if not spec:
        return
    want, at, n = spec.rpartition("@")
    if not (at and n.isdigit()):
        want, n = spec, "1"
    if want != name:
        return
    _hits[name] += 1
    if _hits[name] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)
