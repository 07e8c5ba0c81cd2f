"""Peak resident memory of this process over a block (what a writer or sampler costs).

with PeakRss() as rss:
    run()
rss.peak, rss.start      # bytes; rss.growth_mb: (peak - start) / 1e6
"""

from __future__ import annotations

import threading


class PeakRss:
    """Samples this process's RSS every 5 ms on a thread and keeps the peak."""

    def __init__(self) -> None:
        import psutil  # the bench extra; `replay --help` must not need it

        self._process = psutil.Process()
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        """Growth of the peak over the RSS at the start, in MB."""
        return (self.peak - self.start) / 1e6
