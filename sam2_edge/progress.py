"""A dependency-free progress display on stderr for long CLI work (export, tracking,
benchmarks).

* On a terminal (or `enabled=True`): a tqdm-like bar redrawn in place.
* Not on a terminal (a log file, CI, a pipe; `enabled=None`): a log line on the
  ``sam2_edge.progress`` logger every `interval` seconds (``bench: 40/120 (33%), 1.2/s,
  ~67 s left, torch 1 obj frame 9``) and one when the work ends, so a redirected run is
  never silent for minutes. Quick work (under `interval`) logs nothing.
* `enabled=False` (``--no-progress``): nothing.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional

log = logging.getLogger("sam2_edge.progress")

LOG_INTERVAL_S = 15.0


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _duration(s: float) -> str:
    s = max(0.0, s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


class Progress:
    def __init__(self, total: Optional[int], desc: str = "", stream=None, enabled: Optional[bool] = None,
                 interval: float = LOG_INTERVAL_S) -> None:
        self.total, self.desc, self.n = total, desc, 0
        self.stream = stream or sys.stderr
        tty = _isatty(self.stream)
        self.enabled = tty if enabled is None else bool(enabled)       # the in-place bar
        self.log_lines = enabled is None and not tty                    # periodic log lines instead
        self.interval = float(interval)
        self.t0 = time.perf_counter()
        self._last = 0.0
        self._last_log = self.t0
        self._logged = False
        self._note = ""

    def _summary(self, now: float) -> str:
        elapsed = now - self.t0
        rate = self.n / max(elapsed, 1e-9)
        if self.total:
            left = (self.total - self.n) / rate if rate > 0 else float("inf")
            eta = f", ~{_duration(left)} left" if rate > 0 and self.n < self.total else ""
            text = f"{self.desc}: {self.n}/{self.total} ({100.0 * self.n / self.total:.0f}%), {rate:.2g}/s{eta}"
        else:
            text = f"{self.desc}: {self.n} done, {rate:.2g}/s"
        return text + (f", {self._note}" if self._note else "") + f" [{_duration(elapsed)}]"

    def update(self, n: int = 1, note: str = "") -> None:
        self.n += n
        self._note = note
        now = time.perf_counter()
        if self.log_lines:
            if self.total and self.n >= self.total:  # the end: close() says "finished" if it took a while
                self._logged = self._logged or now - self.t0 >= self.interval
            elif now - self._last_log >= self.interval:
                self._last_log = now
                self._logged = True
                log.info("%s", self._summary(now))
            return
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

    def message(self, text: str) -> None:
        """An intermediate result: a log line (the bar, if drawn, continues on the next line)."""
        if self.enabled and not self.log_lines and self.n:
            self.stream.write("\n")
            self.stream.flush()
        log.info("%s", text)

    def close(self) -> None:
        if self.log_lines:
            if self._logged:
                self._note = ""
                log.info("%s", self._summary(time.perf_counter()).replace(": ", ": finished ", 1))
                self._logged = False
            return
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
