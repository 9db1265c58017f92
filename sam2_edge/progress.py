"""A dependency-free progress bar on stderr (tqdm-like), silent when stderr is not a TTY
unless forced. Used by long CLI work (export, tracking, benchmarks)."""

from __future__ import annotations

import sys
import time
from typing import Optional



class Progress:
    def __init__(self, total: Optional[int], desc: str = "", stream=None, enabled: Optional[bool] = None) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, n: int = 1, note: str = "") -> None:
        self.n += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or (self.total and self.n >= self.total)):
            self._last = now
            rate = self.n / max(now - self.t0, 1e-9)
            if self.total:
                frac = min(self.n / self.total, 1.0)
                bar = "#" * int(frac * 30)
                line = f"\r{self.desc} [{bar:<30}] {self.n}/{self.total} {rate:.1f}/s {note}"
            else:
                line = f"\r{self.desc} {self.n} {rate:.1f}/s {note}"
            self.stream.write(line[:200])
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

