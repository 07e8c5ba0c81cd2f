"""The races this service records for remote actors (`replay.remote.ingest`), one lock each.

The store is opened for writing once, on the first insert (the read routes keep
their read-only store). Chunks of one race are applied one at a time, in the
order they arrive; different races in parallel. A race whose chunk failed to
commit (a full disk, a store outage) is forgotten and taken back from the store
(`RemoteRace.resume`) by its next chunk, so the in-memory state never runs
ahead of what is committed; so is every race after a restart of the service.
Chunks in flight are bounded in bytes, per race and in all (`budget`), and at most
``insert_workers`` are committed at once (`commits`). What the insert routes receive
is counted (`received`: requests, and the bytes of their request lines, headers and
bodies, each try of a retried chunk again), in /metrics as
``replay_insert_requests_total`` and ``replay_insert_request_bytes_total``.

    inserts = Inserts(settings)
    race = inserts.create(RaceRequest(env="CarRacing-v3"))
    inserts.apply(race.info.race_id, chunk)   # -> committed length
    inserts.close(race.info.race_id, "complete")
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter

from replay.errors import FrameError, RaceTakenOverError, StepDataError
from replay.format.race import read_race_info
from replay.remote.chunks import Chunk
from replay.remote.ingest import ChunkGapError, RaceRequest, RemoteRace, create_race
from replay.store import Store, open_store
from service.insert_budget import CommitSlots, InsertBudget
from service.settings import Settings


class Inserts:
    """Remote races being recorded through this service."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self._settings = settings
        #: the chunk bytes in flight (`service.insert_budget`), gauges in `registry`
        self.budget = InsertBudget(*settings.insert_limits(), registry=registry)
        #: the worker threads that commit chunks, `insert_workers` at once
        self.commits = CommitSlots(settings.insert_workers, registry=registry)
        self._requests = Counter(
            "replay_insert_requests", "Requests the insert routes took", registry=registry
        )
        self._request_bytes = Counter(
            "replay_insert_request_bytes",
            "Bytes of the request lines, headers and bodies the insert routes took",
            registry=registry,
        )
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._races: dict[str, RemoteRace] = {}
        self._race_locks: dict[str, threading.Lock] = {}

    def received(self, nbytes: int) -> None:
        """Count a request of `nbytes` (request line, headers, body) to an insert route."""
        self._requests.inc()
        self._request_bytes.inc(nbytes)

    def store(self) -> Store:
        """The served store, opened for writing (once)."""
        with self._lock:
            if self._store is None:
                self._store = open_store(self._settings.store, mode="a")
            return self._store

    def create(self, request: RaceRequest) -> RemoteRace:
        """A new race, its lease held by this service."""
        store = self.store()
        race = create_race(store.storage, request, self._maintenance(store))
        with self._lock:
            self._races[race.info.race_id] = race
        return race

    def apply(self, race_id: str, chunk: Chunk) -> int:
        """Apply `chunk` to race `race_id`; the committed length (see `RemoteRace.apply`)."""
        with self._race(race_id) as race:
            return race.apply(chunk)

    def close(self, race_id: str, status: str) -> int:
        """Mark race `race_id` `status` and give up its lease; its committed length."""
        try:
            with self._race(race_id) as race:
                race.close(status)
                self._forget(race_id)
                return race.length
        except RaceTakenOverError:  # closed already: a retry whose answer was lost is fine
            info = read_race_info(self.store().storage, race_id)
            if info.status != status:
                raise
            return info.length

    @contextmanager
    def _race(self, race_id: str) -> Iterator[RemoteRace]:
        with self._lock:
            lock = self._race_locks.setdefault(race_id, threading.Lock())
        with lock:
            race = self._races.get(race_id)
            if race is None:
                store = self.store()
                race = RemoteRace.resume(store.storage, race_id, self._maintenance(store))
                with self._lock:
                    self._races[race_id] = race
            try:
                yield race
            except (FrameError, StepDataError, ChunkGapError):
                raise  # refused before anything was written: the race is as it was
            except BaseException:
                self._forget(race_id)  # maybe partly applied: take it back from the store
                raise

    def _forget(self, race_id: str) -> None:
        with self._lock:
            self._races.pop(race_id, None)

    @staticmethod
    def _maintenance(store: Store) -> Callable[[], object]:
        """What a race runs after full shards (at most every 10 s): the store's capacity."""
        return store.enforce_capacity
