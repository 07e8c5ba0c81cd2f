"""Back-pressure on recording: the chunk bytes in flight, per race and for the service,
and the chunks committed at once (`CommitSlots`).

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

A chunk taken is unpacked, checked and committed in a worker thread, at most
``insert_workers`` of them at once in the whole service (`CommitSlots`); the others
wait on the event loop, holding no thread, their bytes still counted above. Those
threads share the service's GIL and cores with the sample routes: eight actors'
commits at once made a sample request wait for the GIL behind each of them (on 2
cores, with the actors on a core of their own, its p99 at 9.8-56x of none; 1.6-9.9x with
two at a time: docs/benchmarks.md, issue 25).
``replay_insert_commits_running``, ``..._peak`` and ``..._waited`` show it in /metrics.

    slots = CommitSlots(1)
    length = await slots.run(inserts.apply, race_id, chunk)   # in a worker thread
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio
from prometheus_client import CollectorRegistry, Gauge
from starlette.exceptions import HTTPException

#: Seconds an actor refused for back-pressure waits before it sends again: about
#: what a commit of one chunk takes, so a retry meets a budget that has moved.
RETRY_AFTER_S = 1

T = TypeVar("T")


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


class CommitSlots:
    """Runs chunk commits in worker threads, at most `n` at once; the others wait
    (on the event loop, holding no thread) in the order they came."""

    def __init__(self, n: int, registry: CollectorRegistry | None = None) -> None:
        self.n = n
        self.peak = 0
        #: chunks that found every slot taken and waited, since the service started
        self.waited = 0
        self._limiter = anyio.CapacityLimiter(n)
        self._lock = threading.Lock()
        if registry is not None:
            for name, what in (
                ("running", "Chunks being unpacked, checked and committed now"),
                ("peak", "Most chunks committed at once since the service started"),
                ("waited", "Chunks that waited for a commit slot since the service started"),
            ):
                gauge = Gauge(f"replay_insert_commits_{name}", what, registry=registry)
                gauge.set_function(functools.partial(getattr, self, name))

    @property
    def running(self) -> int:
        """Chunks being committed now: the slots taken."""
        return int(self._limiter.borrowed_tokens)

    async def run(self, call: Callable[..., T], *args: object) -> T:
        """`call(*args)` in a worker thread once a slot is free."""
        if self._limiter.available_tokens < 1:
            self.waited += 1
        return await anyio.to_thread.run_sync(self._counted, call, *args, limiter=self._limiter)

    def _counted(self, call: Callable[..., T], *args: object) -> T:
        with self._lock:  # this call's slot is taken (by `run`) before its thread starts
            self.peak = max(self.peak, self.running)
        return call(*args)
