"""A small progress line on stderr: files and bytes done, throughput. Silent unless enabled."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total_files: int, total_bytes: int, enabled: bool, label: str = "stats"):
        self.total_files, self.total_bytes, self.enabled, self.label = total_files, total_bytes, enabled, label
        self.files = self.bytes = 0
        self.t0 = self.last = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, n_bytes: int) -> None:
        self.files += 1
        self.bytes += n_bytes
        now = time.perf_counter()
        # a TTY redraws often; a log (CI) gets a line every 10 s
        if self.enabled and (now - self.last >= (0.2 if self.tty else 10.0) or self.files == self.total_files):
            self.last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        mb, tot = self.bytes / 1e6, self.total_bytes / 1e6
        rate = mb / max(now - self.t0, 1e-9)
        frac = self.bytes / self.total_bytes if self.total_bytes else 1.0
        bar = "#" * int(20 * frac) + "." * (20 - int(20 * frac))
        if self.total_bytes == self.total_files:  # counting items, not bytes
            line = f"{self.label} [{bar}] {self.files}/{self.total_files}"
        else:
            line = (f"{self.label} [{bar}] files {self.files}/{self.total_files}  {mb:,.1f}/{tot:,.1f} MB  "
                    f"{rate:,.1f} MB/s (compressed)")
        end = "\r" if self.tty and self.files < self.total_files else "\n"
        sys.stderr.write(line + end)
        sys.stderr.flush()
