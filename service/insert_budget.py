"""Back-pressure on recording: the chunk bytes in flight, per race and for the service.

A chunk counts from the moment its route takes it (its body received, not yet
decoded) until it is committed or refused. A chunk that would take a race past
``max_insert_bytes_per_race`` is answered 429, one that would take the service past
``max_insert_bytes`` 503, both with ``Retry-After`` and nothing decoded or written:
the actor sends the same chunk again later (`replay.remote.retries`). So a flood of
actors holds a bounded amount of memory and of worker threads, and the sample routes
keep theirs. Both limits are at least the largest body (`service.settings`), so a
chunk alone always fits.

    budget = InsertBudget(per_race=4 << 20, total=32 << 20)
    with budget.held(race_id, len(body)):     # InsertsBusy (429 or 503) when full
        inserts.apply(race_id, chunk)

The event loop admits and releases (a lock keeps it honest from threads too);
``replay_insert_bytes_in_flight`` and ``replay_insert_bytes_peak`` show it in /metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Gauge
from starlette.exceptions import HTTPException

#: Seconds an actor refused for back-pressure waits before it sends again: about
#: what a commit of one chunk takes, so a retry meets a budget that has moved.
RETRY_AFTER_S = 1


class InsertsBusy(HTTPException):
    """A chunk refused for back-pressure: 429 (its race) or 503 (the service), Retry-After."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail=detail, headers={"Retry-After": str(RETRY_AFTER_S)})


class InsertBudget:
    """Counts the chunk bytes in flight and refuses chunks past the limits."""

    def __init__(
        self, per_race: int, total: int, registry: CollectorRegistry | None = None
    ) -> None:
        self.per_race, self.total = per_race, total
        self.in_flight = 0
        self.peak = 0
        self._races: dict[str, int] = {}
        self._lock = threading.Lock()
        if registry is not None:
            in_flight = Gauge(
                "replay_insert_bytes_in_flight",
                "Chunk bytes received and not yet committed or refused",
                registry=registry,
            )
            in_flight.set_function(lambda: self.in_flight)
            peak = Gauge(
                "replay_insert_bytes_peak",
                "Most chunk bytes in flight at once since the service started",
                registry=registry,
            )
            peak.set_function(lambda: self.peak)

    @contextmanager
    def held(self, race_id: str, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` of race `race_id` for the block; `InsertsBusy` if they do not fit."""
        self._admit(race_id, nbytes)
        try:
            yield
        finally:
            self._release(race_id, nbytes)

    def _admit(self, race_id: str, nbytes: int) -> None:
        with self._lock:
            race = self._races.get(race_id, 0)
            if race + nbytes > self.per_race:
                raise InsertsBusy(
                    429,
                    f"race {race_id} has {race} chunk bytes in flight; {nbytes} more would pass "
                    f"max_insert_bytes_per_race={self.per_race}: send it again after "
                    f"{RETRY_AFTER_S} s",
                )
            if self.in_flight + nbytes > self.total:
                raise InsertsBusy(
                    503,
                    f"busy: {self.in_flight} chunk bytes in flight; {nbytes} more would pass "
                    f"max_insert_bytes={self.total}: send it again after {RETRY_AFTER_S} s",
                )
            self._races[race_id] = race + nbytes
            self.in_flight += nbytes
            self.peak = max(self.peak, self.in_flight)

    def _release(self, race_id: str, nbytes: int) -> None:
        with self._lock:
            self.in_flight -= nbytes
            left = self._races.pop(race_id) - nbytes
            if left:
                self._races[race_id] = left
