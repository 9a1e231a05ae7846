"""Live progress of a command's stages on stderr, drawn by ``tqdm``; counters that move inside a file.

A `Stage` is one step of a command (``stats``, ``tokenize``, ``pack``): a total (bytes, sequences) and a
count of documents beside it. How it shows itself depends on where stderr goes:

- a terminal: a tqdm bar (done / total, rate, ETA) redrawn at most every 0.2 s while the stage runs;
- not a terminal (a log, CI): nothing while it runs, then **one line** when it ends
  (``stats: 12 files, 10.8 MB, 65,101 docs in 4.2 s (2.6 MB/s)``);
- disabled (``--quiet``, and the Python API's default): nothing.

Inside a file. A stage over files owns a `Meter`: two int64 counters per file (bytes done, documents done)
in shared memory (`multiprocessing.RawArray`), so a worker process or thread of `parallel.ordered_map`
writes its file's counters as it goes and a thread of this process polls their sum into the bar. The
worker side is `chunk_read` / `chunk_done` (the corpus reader, around each chunk it yields: the chunk's
compressed byte span and its documents) and `partial` (the tokenizer, after each sub-batch: the fraction of
the current chunk done, interpolated over the chunk's span), so the bar moves while a 10 MB file is
tokenized, not only when it ends. Outside a bound worker these calls do nothing (one attribute lookup).
Counters never feed a result: outputs are the same with or without progress.

Cost: a worker writes two integers per chunk or sub-batch; the poll sums 2 x files integers every 0.2 s
(``LCDATA_PROGRESS_INTERVAL`` seconds: the tests draw every 5 ms to see a file's progress deterministically
enough on a fast machine).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
import time

POLL_S = float(os.environ.get("LCDATA_PROGRESS_INTERVAL", "0.2"))  # seconds between redraws on a terminal

_local = threading.local()  # in a worker: .slot = (counters, item index); .chunk = [a, b, n_docs, docs_before]


class Meter:
    """Per-item counters (bytes done, documents done) in shared memory, for `ordered_map`'s workers."""

    def __init__(self, n_items: int):
        self.n = n_items
        self.array = mp.get_context("spawn").RawArray("q", 2 * max(1, n_items))

    def totals(self) -> tuple[int, int]:
        a = self.array
        return sum(a[0::2]), sum(a[1::2])

    def set(self, i: int, n_bytes: int, n_docs: int) -> None:
        self.array[2 * i], self.array[2 * i + 1] = int(n_bytes), int(n_docs)


# ------------------------------------------------------------------------------------------ worker side


def bind(array, i: int) -> None:
    """Make the calling thread report into item ``i``'s counters of ``array`` (a `Meter`'s); None unbinds."""
    _local.slot = None if array is None else (array, i)
    _local.chunk = None


def chunk_read(start: int, end: int, n_docs: int) -> None:
    """The reader yields a chunk of ``n_docs`` documents decoded from compressed bytes ``[start, end)``."""
    slot = getattr(_local, "slot", None)
    if slot is None:
        return
    before = _local.chunk[3] + _local.chunk[2] if _local.chunk else 0
    _local.chunk = [start, end, n_docs, before]
    _write(slot, start, before)


def partial(fraction: float) -> None:
    """A consumer (the tokenizer) has done ``fraction`` of the current chunk's work."""
    slot, c = getattr(_local, "slot", None), getattr(_local, "chunk", None)
    if slot is None or c is None:
        return
    f = min(1.0, max(0.0, fraction))
    _write(slot, c[0] + (c[1] - c[0]) * f, c[3] + c[2] * f)


def chunk_done() -> None:
    """The consumer asked for the next chunk: the current one is done."""
    partial(1.0)


def _write(slot, n_bytes, n_docs) -> None:
    array, i = slot
    array[2 * i], array[2 * i + 1] = int(n_bytes), int(n_docs)


# -------------------------------------------------------------------------------------------- main side


def _human(n: float, unit: str) -> str:
    if unit == "B":
        return f"{n / 1e6:,.1f} MB"
    return f"{int(n):,} {unit}"


class Stage:
    """One stage's progress (module docstring). ``total`` in ``unit`` ("B" for bytes, else a noun such as
    "seq"); ``items``: the number of files whose `meter` workers write (0: the caller calls `update`)."""

    def __init__(self, label: str, total: int, *, enabled: bool, unit: str = "B", items: int = 0,
                 what: str = "files"):
        self.label, self.total, self.unit, self.enabled = label, int(total), unit, enabled
        self.items, self.what = items, what
        self.tty = enabled and sys.stderr.isatty()
        self.meter = Meter(items) if self.tty and items else None
        self.done = self.docs = self.items_done = 0
        self.note = None
        self.t0 = time.perf_counter()
        self.bar = self._stop = self._thread = None
        self.closed = False
        self._lock = threading.Lock()  # the poll thread and the caller both draw
        self._drawn = 0.0
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=label, unit=unit, unit_scale=unit == "B",
                            unit_divisor=1000, file=sys.stderr, mininterval=POLL_S, dynamic_ncols=True, leave=True)
            if self.meter is not None:
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._poll, name="lcdata-progress", daemon=True)
                self._thread.start()

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, et, ev, tb) -> None:
        self.close(ok=et is None)

    def _poll(self) -> None:
        while not self._stop.wait(POLL_S):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            self._drawn = time.perf_counter()
            self._redraw()

    def _redraw(self) -> None:
        if self.meter is not None:
            self.done, self.docs = self.meter.totals()
        if self.bar is not None:
            self.bar.n = min(self.done, self.total) if self.total else self.done
            post = f"{self.docs:,} docs" if self.meter is not None else None
            if self.items:
                post = f"{self.items_done}/{self.items} {self.what}" + (f", {post}" if post else "")
            if self.note:
                post = f"{post}, {self.note}" if post else self.note
            self.bar.set_postfix_str(post or "", refresh=False)
            self.bar.refresh()

    def item_done(self, i: int, n_bytes: int, n_docs: int) -> None:
        """Item ``i`` finished: its final counters (whatever its worker wrote last)."""
        self.items_done += 1
        if self.meter is not None:
            self.meter.set(i, n_bytes, n_docs)
        else:
            self.done += n_bytes
            self.docs += n_docs
        if self.tty:
            self._draw()

    def update(self, n: int = 1, docs: int = 0, note: str | None = None) -> None:
        """``n`` more units done (and ``docs`` documents); ``note``: a text shown beside the count (``"3.2 MB
        written"``) until replaced."""
        self.done += n
        self.docs += docs
        self.note = note if note is not None else self.note
        if self.tty and (time.perf_counter() - self._drawn >= POLL_S or self.done >= self.total):
            self._draw()

    def close(self, ok: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        if self.bar is not None:
            if ok:
                self._draw()
            self.bar.close()
        elif self.enabled and ok:  # a log: one line per stage
            dt = time.perf_counter() - self.t0
            parts = [f"{self.items:,} {self.what}"] if self.items else []
            parts.append(_human(self.done, self.unit))
            if self.docs:
                parts.append(f"{self.docs:,} docs")
            if self.note:
                parts.append(self.note)
            rate = (f"{self.done / 1e6 / dt:,.1f} MB/s" if self.unit == "B" else f"{self.done / dt:,.1f} {self.unit}/s") \
                if dt > 0 else "-"
            sys.stderr.write(f"{self.label}: {', '.join(parts)} in {dt:.1f} s ({rate})\n")
            sys.stderr.flush()
