"""Tools of measurement shared by the benchmark's runs: peak memory, and a cold page cache."""

from __future__ import annotations

import os
import threading
from pathlib import Path


class PeakRSS:
    """Peak resident set size while the block runs, sampled every 50 ms (often enough for memory
    that grows over a pass; rarely enough not to compete with the measured work for the GIL)."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._process, self._interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self):
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak / 1e6


def evict_from_page_cache(path: Path) -> None:
    """Drop a store's files from the page cache (no root needed): flush, then POSIX_FADV_DONTNEED."""
    files = [path] if path.is_file() else [Path(r) / f for r, _, fs in os.walk(path) for f in fs]
    for file in files:
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
