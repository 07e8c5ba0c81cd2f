"""Committing a race's shards in a thread of their own, so encoding never waits on the disk.

A commit writes the shard whole, then its step chunks, then the arrays' shapes, then
the race's length, each file durably (`replay.storage.local`: written, fsynced, renamed):
13 files and 26 fsyncs, about 0.1 s on the benchmark machine's disk. Done in the
encoding thread, commits stopped the encoder for 0.7 s of every 2.4 s when a driver
recorded ViZDoom frames as fast as it could. A `ShardCommitter` takes the commits of
one race from a short queue and writes them in its own thread while the encoder goes
on. The protocol (`replay.format.spec`) is unchanged: one commit at a time, in order, so a
crash still leaves the last whole commit readable.

    committer = ShardCommitter(storage, info, specs, lease, on_shard=None)
    committer.commit(shard=0, chunks=blobs, steps={"reward": rewards})  # returns at once
    committer.finish()          # every queued commit written; raises a commit's error

What a writer commits is its `OpenShard`: the shard being filled, frame by frame (a local
race's `StoreSink`, a remote race's `RemoteRace` at the service).

    shard = OpenShard(info.shard_size, specs)
    if shard.add(blob, {"reward": 1.0}):     # that frame filled it
        shard.commit(committer)
        shard.next()
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from replay.codec.frames import encode_steps
from replay.format import shards
from replay.format import spec as fmt
from replay.format.race_doc import check_owner, update_race
from replay.storage.outage import ride_out

if TYPE_CHECKING:
    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec
    from replay.storage.base import ByteStorage

log = logging.getLogger(__name__)
MAINTENANCE_S = 10.0  # seconds between capacity checks by a writer
QUEUED_COMMITS = 2  # commits waiting at most (each holds a shard's frames): then `commit` waits


@dataclass
class _Commit:
    shard: int  # -1: renew the lease only
    chunks: list[bytes]
    steps: dict[str, npt.NDArray[Any]]


class ShardCommitter:
    """Writes one race's commits in order, in a thread; counts what is durable. It holds
    the writer's `lease` (taken when it is created: RaceTakenOverError if the race is
    someone else's)."""

    def __init__(
        self,
        storage: ByteStorage,
        info: RaceInfo,
        specs: list[StepSpec],
        lease: dict[str, Any],
        on_shard: Callable[[], object] | None,
    ) -> None:
        self._storage = storage
        self._info = info
        self._lease = lease
        self._on_shard = on_shard  # store maintenance (capacity), run after full shards
        self._last_maintenance = 0.0
        self._array_docs = {
            name: json.loads(storage.read(f"{fmt.race_key(info.race_id)}/{name}/{fmt.METADATA}"))
            for name in [fmt.FRAMES, *(s.name for s in specs)]
        }
        # read by the writer's stats(), written here
        self.written = self.bytes = self.shards = 0
        self.error: BaseException | None = None
        self.update_attrs()  # takes the lease (before the thread: a refusal leaves none)
        self._queue: queue.Queue[_Commit | None] = queue.Queue(QUEUED_COMMITS)
        self._thread = threading.Thread(
            target=self._run, name=f"replay-commit-{info.race_id}", daemon=True
        )
        self._thread.start()

    def commit(self, shard: int, chunks: list[bytes], steps: dict[str, npt.NDArray[Any]]) -> None:
        """Queue the commit of `shard` holding `chunks` (the lists and arrays are copied);
        waits while QUEUED_COMMITS are queued; raises the error of a commit that failed."""
        self.check()
        self._queue.put(_Commit(shard, list(chunks), {k: v.copy() for k, v in steps.items()}))

    def renew_lease(self) -> None:
        """Queue a renewal of the writer's lease (after the commits queued before it)."""
        self.check()
        self._queue.put(_Commit(-1, [], {}))

    def finish(self) -> None:
        """Wait until every queued commit is written (idempotent); raises a commit's error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self.check()

    def update_attrs(self, lease: bool = True, **changes: Any) -> None:
        """Update the race's attributes now (`replay.format.lease.update_race`): renews the lease,
        or gives it up (`lease=False`); RaceTakenOverError if the race is no longer ours.
        Call it only while no commit is queued: before the first, or after `finish`.
        An outage is ridden out, as a commit's."""
        if not lease:
            changes["lease"] = None
        ride_out(
            lambda: self._update(changes),
            what=self._what("update"),
            budget=self._storage.outage_timeout,
        )

    def _update(self, changes: dict[str, Any]) -> None:
        update_race(
            self._storage,
            self._info.race_id,
            lambda attrs: attrs.update(changes),
            writer=self._lease,
        )

    def check(self) -> None:
        """Raise the error of a commit that failed, if one did."""
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # the driver's threads first (as the encoder)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        while (job := self._queue.get()) is not None:
            if self.error is not None:
                continue  # failed: drop the rest, so that nobody waits on a full queue
            try:
                if job.shard < 0:
                    self.update_attrs()
                else:
                    what = self._what(f"commit of shard {job.shard}")
                    ride_out(
                        lambda: self._write(job), what=what, budget=self._storage.outage_timeout
                    )
            except BaseException as e:  # raised to the encoder at its next call
                log.exception("race %s: commit failed", self._info.race_id)
                self.error = e

    def _write(self, job: _Commit) -> None:
        """The shard whole, then its step chunks, then shapes, then length."""
        race, k, n = self._info.race_id, job.shard, len(job.chunks)
        s = self._info.shard_size
        check_owner(self._storage, race, self._lease)  # never recreate a removed race
        blob = shards.build_shard(job.chunks, s)
        self._storage.write(fmt.frames_key(race, k), blob)
        written = len(blob)
        for name, steps in job.steps.items():
            chunk = encode_steps(steps)
            self._storage.write(fmt.shard_key(race, name, k, steps.ndim), chunk)
            written += len(chunk)
        length = k * s + n
        for name, doc in self._array_docs.items():
            doc["shape"][0] = length
            self._storage.write(
                f"{fmt.race_key(race)}/{name}/{fmt.METADATA}", json.dumps(doc).encode()
            )
        self._update({"length": length})
        self.written = length
        self.bytes += written
        if n == s:
            self.shards += 1
            self._maintain()

    def _what(self, action: str) -> str:
        return f"race {self._info.race_id}: {action} in {self._storage}"

    def _maintain(self) -> None:
        """Run the store's maintenance at most every MAINTENANCE_S; never fail the race on it."""
        now = time.monotonic()
        if self._on_shard is None or now - self._last_maintenance < MAINTENANCE_S:
            return
        self._last_maintenance = now
        try:
            self._on_shard()
        except Exception:
            log.exception("race %s: store maintenance (capacity) failed", self._info.race_id)


class OpenShard:
    """The shard a writer is filling: its stored chunks (each frame with its CRC32C) and
    the step values of its slots, zero past the last frame (see the module doc)."""

    def __init__(self, size: int, specs: list[StepSpec], index: int = 0) -> None:
        self.size, self.index = size, index
        self.chunks: list[bytes] = []
        self.steps = {s.name: np.zeros((size, *s.shape), dtype=s.dtype) for s in specs}

    def add(self, blob: bytes, values: Mapping[str, Any]) -> bool:
        """One encoded frame and its step values (absent ones 0); True when it fills the shard."""
        i = len(self.chunks)
        for name, buf in self.steps.items():
            buf[i] = values.get(name, 0)
        self.chunks.append(shards.with_checksum(blob))
        return len(self.chunks) == self.size

    def commit(self, committer: ShardCommitter) -> None:
        """Queue the commit of the shard as it is now (`committer` copies it)."""
        committer.commit(self.index, self.chunks, self.steps)

    def next(self) -> None:
        """Start the next shard, empty."""
        self.index += 1
        self.chunks = []
        for buf in self.steps.values():
            buf[...] = 0
