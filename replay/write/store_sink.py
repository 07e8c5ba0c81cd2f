"""A local race's sink: encoded frames assembled into whole shards and committed to its store.

`StoreSink` keeps the open shard (its stored chunks, each with its CRC32C, and its
step values); a full shard, and the open shard on each flush with new frames, is
handed to a `ShardCommitter`, which writes it in a thread of its own by the store's
commit protocol (`replay.format.spec`: the shard whole, its step chunks, ``length``
last). A flush with nothing new renews the writer's lease once 5 flush intervals
have passed without a commit. `StoreDestination` is what the writer process
receives: the store's storage.

    sink = StoreDestination(storage).open(info, specs, settings)
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy.typing as npt

from replay.format import spec as fmt
from replay.format.lease import new_lease
from replay.write.shard_committer import OpenShard, ShardCommitter

if TYPE_CHECKING:
    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec
    from replay.storage.base import ByteStorage
    from replay.write.settings import WriterSettings

#: Flush intervals without a commit after which a flush renews the writer's lease.
LEASE_INTERVALS = 5


def _maintenance(storage: ByteStorage, settings: WriterSettings) -> Callable[[], object] | None:
    """What the committer runs after full shards: the store's capacity, if it has one."""
    if not settings.enforce_capacity:
        return None
    from replay.maintenance import capacity  # zarr: imported by writers that need it only

    return functools.partial(capacity.enforce, storage)


@dataclass(frozen=True)
class StoreDestination:
    """A race recorded into the store behind `storage` (this machine's disk, or S3)."""

    storage: ByteStorage

    def open(self, info: RaceInfo, specs: list[StepSpec], settings: WriterSettings) -> StoreSink:
        return StoreSink(self.storage, info, specs, settings)


class StoreSink:
    """Assembles race `info`'s shards and commits them (see the module doc)."""

    def __init__(
        self,
        storage: ByteStorage,
        info: RaceInfo,
        specs: list[StepSpec],
        settings: WriterSettings,
    ) -> None:
        self._interval = settings.flush_interval
        self._open = OpenShard(info.shard_size, specs)
        self._queued = 0  # frames of the open shard in the last commit queued
        self._last_commit = time.monotonic()
        self._committer = ShardCommitter(
            storage,
            info,
            specs,
            new_lease(settings.flush_interval),
            _maintenance(storage, settings),
        )

    @property
    def written(self) -> int:
        return self._committer.written

    @property
    def nbytes(self) -> int:
        return self._committer.bytes

    @property
    def shards(self) -> int:
        return self._committer.shards

    def add(self, blobs: list[bytes], steps: list[dict[str, npt.NDArray[Any]]]) -> None:
        for blob, values in zip(blobs, steps, strict=True):
            if self._open.add(blob, values):
                self._commit()
                self._open.next()
                self._queued = 0

    def flush(self, now: float) -> None:
        if len(self._open.chunks) > self._queued:
            self._commit()  # only when frames came since the last commit
            self._last_commit = now
        elif now - self._last_commit >= LEASE_INTERVALS * self._interval:
            self._committer.renew_lease()
            self._last_commit = now

    def _commit(self) -> None:
        """Queue the commit of the open shard as it is now (written in the background)."""
        self._open.commit(self._committer)
        self._queued = len(self._open.chunks)

    def check(self) -> None:
        self._committer.check()

    def finish(self) -> None:
        self._committer.finish()

    def fail(self, error: BaseException) -> None:
        with contextlib.suppress(BaseException):  # what was queued is still committed;
            self._committer.finish()  # a commit's own error is logged, `error` is reported

    def close(self, status: str) -> None:
        self._committer.update_attrs(status=status, ended_at=fmt.utc_now(), lease=False)
