"""Rate limiting of a sampler, as Reverb's ``MinSize`` and ``SampleToInsertRatio``.

Two limits, both off by default (then an empty store raises `SamplingError` at once):

- ``min_size=M``: sampling waits until the sampler's races hold M committed steps
  (and enough windows for one batch), so a learner started before its actors waits
  for their first steps instead of crashing.
- ``samples_per_insert=R`` with ``error_margin=E`` items: a learner may have sampled
  at most ``R * (inserted - min_size) + E`` items, where `inserted` counts the steps
  committed to the sampler's races since the store began (what the learner has
  seen grow, so capacity eviction does not take budget back). A learner that gets
  ahead of its actors waits; one that falls behind is not held, and the writers
  are never held. `E` defaults to two batches (one in hand, one prefetched).

Waiting is bounded by ``timeout`` seconds (None: for ever); past it `RateLimitedError`
says which limit held and by how much.

    sampler = store.sampler(batch_size=32, min_size=1000, samples_per_insert=8.0, timeout=60)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from replay.errors import RateLimitedError

if TYPE_CHECKING:
    from replay.read.index import RaceEntry

#: Longest pause between two looks at the store while waiting (seconds).
MAX_POLL_S = 0.25


@dataclass(frozen=True)
class RateLimit:
    """A sampler's limits; `active` is False when none is set."""

    min_size: int = 0
    samples_per_insert: float | None = None
    error_margin: float | None = None
    timeout: float | None = 60.0

    def __post_init__(self) -> None:
        if not isinstance(self.min_size, int) or self.min_size < 0:
            raise ValueError(f"min_size must be an integer >= 0, got {self.min_size!r}")
        spi = self.samples_per_insert
        if spi is not None and not spi > 0:
            raise ValueError(f"samples_per_insert must be > 0, got {spi!r}")
        if self.error_margin is not None and not self.error_margin >= 0:
            raise ValueError(f"error_margin must be >= 0, got {self.error_margin!r}")
        if self.timeout is not None and not self.timeout >= 0:
            raise ValueError(f"timeout must be >= 0 seconds or None, got {self.timeout!r}")

    @property
    def active(self) -> bool:
        """True when sampling may have to wait."""
        return self.min_size > 0 or self.samples_per_insert is not None


class RateLimiter:
    """Counts steps inserted and items sampled, and holds a sampler back while a
    limit is not met. Thread-safe; one per sampler."""

    def __init__(self, limit: RateLimit, batch_size: int) -> None:
        self.limit = limit
        self.margin = (
            float(limit.error_margin) if limit.error_margin is not None else 2.0 * batch_size
        )
        self.inserted = 0
        self.sampled = 0
        self._lengths: dict[str, int] = {}
        self._lock = threading.Lock()

    def _observe(self, entries: Sequence[RaceEntry]) -> int:
        """Count the steps committed since the last look; the committed total now."""
        committed = 0
        for e in entries:
            committed += e.length
            grew = e.length - self._lengths.get(e.race_id, 0)
            if grew > 0:
                self.inserted += grew
                self._lengths[e.race_id] = e.length
        return committed

    def _blocked(self, committed: int, items: int, n: int) -> str | None:
        """Why a batch of `n` items cannot be drawn now (None: it can)."""
        limit = self.limit
        if committed < limit.min_size:
            return f"min_size={limit.min_size}: the store holds {committed} committed steps"
        if items < n:
            return f"a batch of {n} needs {n} items (windows); the store has {items}"
        spi = limit.samples_per_insert
        if spi is not None:
            allowed = spi * (self.inserted - limit.min_size) + self.margin
            if self.sampled + n > allowed:
                return (
                    f"samples_per_insert={spi:g}: {self.sampled} items sampled for "
                    f"{self.inserted} steps inserted (min_size={limit.min_size}, "
                    f"error_margin={self.margin:g}); a batch of {n} waits for the writers"
                )
        return None

    def held(self, n: int, look: Callable[[bool], tuple[Sequence[RaceEntry], int]]) -> str | None:
        """Why a batch of `n` items would wait now (None: it would not), after a fresh
        `look`; counts nothing sampled. For callers that wait elsewhere (the service
        waits on its event loop, holding no thread, then draws)."""
        entries, items = look(True)
        with self._lock:
            return self._blocked(self._observe(entries), items, n)

    def acquire(
        self,
        n: int,
        look: Callable[[bool], tuple[Sequence[RaceEntry], int]],
        timeout: float | None = None,
    ) -> None:
        """Wait until a batch of `n` items may be drawn, and count it as sampled.

        `look(fresh)` returns the sampler's races and items (re-reading the store when
        `fresh`). `timeout` overrides the limit's for this call. Raises
        `RateLimitedError` when the limits still hold after the timeout.
        """
        wait = self.limit.timeout if timeout is None else timeout
        deadline = None if wait is None else time.monotonic() + wait
        pause, fresh = 0.01, False
        while True:
            entries, items = look(fresh)
            with self._lock:
                why = self._blocked(self._observe(entries), items, n)
                if why is None:
                    self.sampled += n
                    return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RateLimitedError(
                    f"sampling waited {wait:g} s and is still held: {why}",
                    retry_after=MAX_POLL_S,
                )
            time.sleep(pause if left is None else min(pause, left))
            pause, fresh = min(2 * pause, MAX_POLL_S), True
