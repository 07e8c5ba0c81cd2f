"""The items a sampler draws from, and what a selector is.

An item is a window of `span` steps inside one race. `ItemSpace` holds, per race of
the index, how many windows fit (and, for selectors that choose by time, a way to
read the steps' times); `Draw` is what a selector chose; `Selector` is the protocol
every selector follows (`replay.sample.selectors`: `Uniform`, `Recent`, `Prioritized`),
with no-op defaults as TorchRL's ``Sampler`` base class has.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.errors import SamplingError
from replay.format import spec as fmt
from replay.read.index import Index, RaceEntry

__all__ = ["ItemSpace", "StepTimes"]

#: A race's ``t_ns`` (time at append) at some of its steps.
StepTimes = Callable[[RaceEntry, npt.NDArray[np.int64]], npt.NDArray[np.int64]]


@dataclass
class ItemSpace:
    """The items a sampler can draw at one moment: per race, how many windows fit."""

    entries: list[RaceEntry]
    counts: npt.NDArray[np.int64]
    span: int
    #: the steps' times, read when a selector asks (`Recent`); None: not available
    step_times: StepTimes | None = None
    ends: npt.NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.ends = np.cumsum(self.counts)

    @property
    def total(self) -> int:
        """Items in the space."""
        return int(self.ends[-1]) if len(self.ends) else 0

    def require(self, n: int, where: str, seq_len: int, stride: int) -> None:
        """Raise `SamplingError` saying why, unless `n` items can be drawn (`where`: the
        store and filters, for the message)."""
        if self.total >= n:
            return
        if not self.entries:
            raise SamplingError(f"nothing to sample: no committed frames in {where}")
        longest = max(e.length for e in self.entries)
        if longest < self.span:
            raise SamplingError(
                f"seq_len={seq_len} with stride={stride} needs races of {self.span} "
                f"steps; the longest race in {where} has {longest}"
            )
        raise SamplingError(
            f"batch_size={n} is more than the {self.total} items (windows of {self.span} "
            f"steps) available in {where}"
        )

    def locate(self, items: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], Any]:
        """(race position, start step) of global item numbers."""
        race = np.searchsorted(self.ends, items, side="right")
        before = np.where(race > 0, self.ends[np.maximum(race - 1, 0)], 0)
        return race, items - before


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
