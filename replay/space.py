"""What a sampler can draw now: the `ItemSpace` of its index, kept current.

`LiveSpace` re-reads the index (`refresh`, cheap) at most every `interval` seconds
when asked for the space (`current`), builds a new `ItemSpace` only when the index
changed, and hands each new space to `on_change` (the selector's `on_refresh`). The
space carries the steps' times for selectors that choose by them (`Recent`), read
through `step_times` when asked. Not thread-safe: the sampler calls it under its lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from replay import format as fmt
from replay.index import Index, RaceEntry
from replay.items import ItemSpace, StepTimes

__all__ = ["LiveSpace"]


class LiveSpace:
    """The windows of `span` steps the races of `index` allow, refreshed every `interval` s."""

    def __init__(
        self,
        index: Index,
        span: int,
        interval: float,
        step_times: StepTimes,
        on_change: Callable[[ItemSpace], None],
    ) -> None:
        self.index, self.span, self.interval = index, span, interval
        self.step_times, self.on_change = step_times, on_change
        #: the space as of the last refresh
        self.space = ItemSpace([], np.zeros(0, np.int64), span)
        self.generation = -1  # the index's generation the space was built from
        self.refreshes = 0
        self._last = -np.inf

    def refresh(self) -> ItemSpace:
        """Pick up races and frames committed since the last refresh; the space."""
        self.index.refresh()
        self.refreshes += 1
        self._last = time.monotonic()
        if self.index.generation != self.generation:
            entries = self.index.entries
            counts = np.array([max(0, e.length - self.span + 1) for e in entries], np.int64)
            self.space = ItemSpace(entries, counts, self.span, self.step_times)
            self.generation = self.index.generation
            self.on_change(self.space)
        return self.space

    @property
    def due(self) -> bool:
        """True when `interval` seconds have passed since the last refresh."""
        return time.monotonic() - self._last >= self.interval

    def look(self, fresh: bool) -> tuple[list[RaceEntry], int]:
        """The races and items (a rate limiter's look; `fresh`: refresh first)."""
        space = self.refresh() if fresh or self.due else self.space
        return space.entries, space.total

    def evicted(self, race_id: str, lock: threading.RLock) -> bool:
        """True (and the race dropped, the space refreshed under `lock`) if a race
        vanished from the store since the last refresh (capacity eviction)."""
        if self.index.storage.exists(f"{fmt.race_key(race_id)}/{fmt.METADATA}"):
            return False
        with lock:
            self.index.drop(race_id)
            self.refresh()
        return True
