"""A one-line progress display for long runs (`seethrough batch`, `seethrough dataset make`): overall
count, ETA and what each worker is doing."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from seethrough_core.time_left import clock, time_left


class ProgressLine:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty()
        self._start = time.perf_counter()
        self._current: dict[str, str] = {}  # worker -> what it is doing
        self._lock = threading.Lock()
        self._last_draw = 0.0

    def status(self, worker: str, text: str | None) -> None:
        with self._lock:
            if text is None:
                self._current.pop(worker, None)
            else:
                self._current[worker] = text
            self._draw()

    def advance(self, message: str) -> None:
        """One task finished (done, skipped or failed); `message` goes on its own line."""
        with self._lock:
            self.done += 1
            self._clear()
            print(f"[{self.done}/{self.total}] {message}", file=self.stream, flush=True)
            self._draw(force=True)

    def note(self, message: str) -> None:
        """A line of its own that does not count as a finished task."""
        with self._lock:
            self._clear()
            print(message, file=self.stream, flush=True)
            self._draw(force=True)

    def close(self) -> None:
        with self._lock:
            self._clear()

    def _eta(self) -> str:
        left = time_left(time.perf_counter() - self._start, self.done, self.total)
        return "ETA --" if left is None else f"ETA {clock(left)}"

    def _draw(self, force: bool = False) -> None:
        if not self.interactive:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (width - filled)
        jobs = "; ".join(self._current.values())
        line = f"[{bar}] {self.done}/{self.total} {self._eta()}  {jobs}"
        self.stream.write("\r\x1b[2K" + line[:200])
        self.stream.flush()

    def _clear(self) -> None:
        if self.interactive:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
