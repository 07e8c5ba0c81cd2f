"""What one app keeps between requests: the open store, the samplers, the metrics.

Race metadata is never cached (it is read fresh on every request, so races being
written show up and grow without a restart); only what cannot change is kept:
the disk size of finished races, and the samplers, whose random state and
priorities must persist from one request to the next.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio

from replay.format import spec as fmt
from replay.format.race import RaceInfo
from replay.sample.sampler import Sampler
from replay.store import Store, open_store
from service.metrics import Metrics
from service.request_ids import RequestIds

T = TypeVar("T")
log = logging.getLogger(__name__)


def _close_sampler(sampler: Sampler) -> None:
    try:
        sampler.close()
    except Exception:  # a read-only store: nothing to save; never fail a request for it
        log.exception("closing sampler %r", sampler)


@dataclass
class Cached(Generic[T]):
    """One cached value, its parameters, and who is using it."""

    value: T
    params: dict[str, Any]
    users: int = 0
    evicted: bool = False


class LRUCache(Generic[T]):
    """A small thread-safe least-recently-used cache of values built on demand.

    Entries are borrowed (`borrow`, a context manager); an entry pushed out while
    borrowed is closed (`close(value)`) when its last borrower returns it, so a
    sampler's I/O threads never stop under a request that is using them.
    """

    def __init__(self, size: int, close: Callable[[T], None] = lambda value: None) -> None:
        self.size = size
        self._close = close
        self._items: OrderedDict[Hashable, Cached[T]] = OrderedDict()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(
        self, key: Hashable, params: dict[str, Any], build: Callable[[], T]
    ) -> Iterator[Cached[T]]:
        """The entry of `key`, built by `build()` (outside the cache lock) if absent."""
        entry = self._acquire(key)
        if entry is None:
            value = build()
            entry, closed = self._insert(key, params, value)
            for old in closed:
                self._close(old)
        try:
            yield entry
        finally:
            self._release(entry)

    def _acquire(self, key: Hashable) -> Cached[T] | None:
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:
                self._items.move_to_end(key)
                entry.users += 1
            return entry

    def _insert(self, key: Hashable, params: dict[str, Any], value: T) -> tuple[Cached[T], list[T]]:
        closed = []
        with self._lock:
            entry = self._items.get(key)
            if entry is not None:  # built twice at once: keep the first
                closed.append(value)
            else:
                entry = self._items[key] = Cached(value, params)
            self._items.move_to_end(key)
            entry.users += 1
            while len(self._items) > self.size:
                _, old = self._items.popitem(last=False)
                old.evicted = True
                if old.users == 0:
                    closed.append(old.value)
        return entry, closed

    def _release(self, entry: Cached[T]) -> None:
        with self._lock:
            entry.users -= 1
            close = entry.evicted and entry.users == 0
        if close:
            self._close(entry.value)

    def entries(self) -> list[Cached[T]]:
        """The cached entries, least recently used first."""
        with self._lock:
            return list(self._items.values())

    def clear(self) -> None:
        """Close and drop every entry not in use (at shutdown)."""
        with self._lock:
            items = list(self._items.values())
            self._items.clear()
            for entry in items:
                entry.evicted = True
            idle = [e.value for e in items if e.users == 0]
        for value in idle:
            self._close(value)


class BatchSlots:
    """Bounds the batches in memory at once: a slot is taken before a batch is read and
    given back once its last byte has left for the client (or the client is gone).

    Waiting for a slot is async, so requests waiting for one hold no worker thread.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._semaphore = anyio.Semaphore(n, max_value=n)

    @property
    def free(self) -> int:
        """Slots free now."""
        return self._semaphore.value

    async def acquire(self, timeout: float) -> bool:
        """Take a slot, waiting up to `timeout` seconds; False if none freed in time."""
        with anyio.move_on_after(timeout):
            await self._semaphore.acquire()
            return True
        return False

    def release(self) -> None:
        """Give a slot back (on the event loop)."""
        self._semaphore.release()


class ServiceState:
    """Per-app state, on ``app.state.replay``."""

    def __init__(
        self, sampler_cache_size: int, batches_in_flight: int = 8, request_ids_ttl_s: float = 300.0
    ) -> None:
        self.metrics = Metrics()
        #: Bounds the batches held in memory at once (each up to max_batch_frames frames).
        self.batch_slots = BatchSlots(batches_in_flight)
        #: Answers of requests with a request id, for safe retries.
        self.request_ids = RequestIds(request_ids_ttl_s)
        #: Worker threads of the readiness probe alone (other routes share AnyIO's).
        self.probe_threads = anyio.CapacityLimiter(2)
        #: Races this service has sampled: their priorities are ignored, not refused,
        #: once evicted (the embedded sampler's behaviour); others unknown are a 404.
        self.sampled_races: set[str] = set()
        #: /v1/sample requests waiting for a rate limit now (on the event loop)
        self.rate_waiters = 0
        self.samplers: LRUCache[Sampler] = LRUCache(sampler_cache_size, close=_close_sampler)
        self._stores: dict[str, Store] = {}
        self._sizes: dict[str, int] = {}
        self._damaged: tuple[float, dict[str, str]] = (-math.inf, {})
        self._lock = threading.Lock()

    def store(self, path: str) -> Store:
        """The store at `path` (a directory or an s3:// URL), opened read-only once."""
        with self._lock:
            store = self._stores.get(path)
            if store is None:
                store = self._stores[path] = open_store(path, mode="r")
            return store

    def scan(self, store: Store) -> tuple[list[RaceInfo], dict[str, str]]:
        """`Store.scan`, remembered for `damaged` (what ``/v1/health`` reports)."""
        races, damaged = store.scan()
        self._damaged = (time.monotonic(), damaged)
        return races, damaged

    def damaged(self, store: Store, max_age: float) -> dict[str, str]:
        """{race id: why} of races that cannot be read, by a scan at most `max_age` s old."""
        scanned, damaged = self._damaged
        if time.monotonic() - scanned > max_age:
            damaged = self.scan(store)[1]
        return damaged

    def race_nbytes(self, store: Store, info: RaceInfo) -> int:
        """Disk bytes of a race; remembered once the race is finished (it cannot grow)."""
        cached = self._sizes.get(info.race_id)
        if cached is not None:
            return cached
        nbytes = store.race_nbytes(info.race_id)
        if info.status != fmt.RECORDING:
            self._sizes[info.race_id] = nbytes
        return nbytes

    def forget_sizes_except(self, race_ids: set[str]) -> None:
        """Drop remembered sizes of races that are gone (evicted or deleted)."""
        for race_id in set(self._sizes) - race_ids:
            self._sizes.pop(race_id, None)
