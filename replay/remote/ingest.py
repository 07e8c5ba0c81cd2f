"""The service's side of remote recording: races created over HTTP, their chunks
checked and committed to the store.

A `RemoteRace` holds what a local writer holds for its race (the open shard's
stored chunks and step values, the committed length, the lease) and commits each
chunk with a `replay.write.shard_committer.ShardCommitter`, the local writer's own
commit protocol: whole shards, the open shard re-committed, ``length`` last. A
chunk is acknowledged once `apply` returns, so an acknowledged step is durable.
Chunks say which step they start at: a chunk already committed (a retry whose
answer was lost) is acknowledged again without being applied twice, a chunk
past the committed length is refused (`ChunkGapError` names the step expected).

The lease of a remote race is judged by its heartbeat (its ``host`` is not a host
name, `REMOTE_HOST`), not by the service's pid: a race whose actor stays silent
past the lease's ttl is closed as aborted by `replay recover`, however long the
service lives. A restarted service takes a race back (`RemoteRace.resume`) from
what the store holds, open shard included, so the actor's writer goes on from
the last acknowledged step. So does another replica sharing the store, once the
race's own replica is dead: on this host as soon as its process is gone, from
another host once its lease has expired; until then it answers `RaceBusyError`
(503 with Retry-After), and the actor's writer sends the chunk again (a balancer
that sent it astray sends the retry to the right replica, or to a live one).

    race = create_race(storage, RaceRequest(env="CarRacing-v3", codec="zstd"))
    race.apply(unpack(body))          # -> committed length; FrameError/StepDataError/...
    race.close("complete")
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ulid import ULID

from replay.errors import RaceBusyError, RaceTakenOverError, ReplayError
from replay.format import shards
from replay.format import spec as fmt
from replay.format.lease import new_lease, pid_alive
from replay.format.race import RaceInfo, read_race_info, read_step_chunk
from replay.format.race_doc import update_race
from replay.format.race_schema import RaceSpec, step_specs, write_race
from replay.remote.chunk_checks import check_chunk
from replay.remote.protocol import DTYPES
from replay.write.shard_committer import OpenShard, ShardCommitter

if TYPE_CHECKING:
    from replay.codec.frames import FrameCodec
    from replay.format.race_schema import StepSpec
    from replay.remote.chunks import Chunk
    from replay.storage.base import ByteStorage

#: The ``host`` of a remote race's lease: not a host name, so that the lease is judged
#: by its heartbeat (`replay.format.lease.writer_alive`) and a silent actor's race expires.
REMOTE_HOST = f"remote actor via {socket.gethostname()}"


class ChunkGapError(ReplayError):
    """A chunk that starts past the race's committed length (steps would be missing)."""

    def __init__(self, message: str, expected: int) -> None:
        super().__init__(message)
        self.expected = expected


@dataclass(frozen=True)
class RaceRequest(RaceSpec):
    """The arguments of a remote `new_race`: those of `Store.new_race` that describe the
    race (`RaceSpec`: where frames are encoded is the actor's business), and its
    `flush_interval` (the lease's ttl follows it)."""

    flush_interval: float = 1.0

    def check(self) -> tuple[FrameCodec, list[StepSpec]]:
        """As `RaceSpec.check`, and ValueError for a bad `flush_interval` or a step dtype
        that chunks cannot carry."""
        if not self.flush_interval > 0:
            raise ValueError(f"flush_interval must be positive, got {self.flush_interval}")
        codec, specs = super().check()
        for spec in specs:
            if spec.dtype.newbyteorder("<").str not in DTYPES:
                raise ValueError(f"step array {spec.name!r}: dtype {spec.dtype} is not allowed")
        return codec, specs


def remote_lease(ttl: float) -> dict[str, Any]:
    """The lease this service holds on a remote race (see the module doc)."""
    return {**new_lease(1.0), "host": REMOTE_HOST, "ttl": ttl, "remote": True}


def create_race(
    storage: ByteStorage, request: RaceRequest, on_shard: Callable[[], object] | None = None
) -> RemoteRace:
    """Write a new race's group and take its lease; ValueError/ReplayError for bad arguments
    (before anything is written)."""
    codec, specs = request.check()
    race_id = str(ULID())
    try:
        info = write_race(storage, race_id, request.attrs(codec), specs)
        lease = remote_lease(fmt.lease_ttl(request.flush_interval))
        update_race(storage, race_id, lambda attrs: None, writer=lease)
    except BaseException:
        storage.delete_tree(fmt.race_key(race_id))
        raise
    return RemoteRace(storage, info, lease, on_shard)


def _held_elsewhere(lease: Any) -> str | None:
    """Who else holds `lease` now: ``"process"``, a live process of this host (a local
    writer, or another service); ``"heartbeat"``, a holder on another host, whose lease
    is judged by its heartbeat (it may have died: its lease expires after its ttl);
    None, nobody."""
    if not isinstance(lease, dict):
        return None
    try:
        if lease.get("host") == REMOTE_HOST:  # this host's services: by pid
            pid = int(lease["pid"])
            alive = pid != os.getpid() and pid_alive(pid, lease.get("started"))
            return "process" if alive else None
        if lease.get("host") == socket.gethostname():  # a local writer on this host
            return "process" if pid_alive(int(lease["pid"]), lease.get("started")) else None
        fresh = time.time() - float(lease["heartbeat"]) <= float(lease["ttl"])
        return "heartbeat" if fresh else None
    except (KeyError, TypeError, ValueError):
        return None


class RemoteRace:
    """One race recorded by a remote actor: its open shard and committed length."""

    def __init__(
        self,
        storage: ByteStorage,
        info: RaceInfo,
        lease: dict[str, Any],
        on_shard: Callable[[], object] | None = None,
    ) -> None:
        self.info = info
        self.length = info.length
        self._storage = storage
        self._lease = lease
        self._on_shard = on_shard
        self._specs: list[StepSpec] = step_specs(
            info.action_shape,
            {n: (e["dtype"], tuple(e["shape"])) for n, e in info.extras.items()},
        )
        s = info.shard_size
        shard, held = divmod(self.length, s)
        self._open = OpenShard(s, self._specs, shard)
        if held:  # the open shard as committed: its stored chunks and step values
            key = fmt.frames_key(info.race_id, shard)
            blob = storage.read(key)
            for slot in shards.read_index(storage, key, s)[:held]:
                if slot is None:
                    raise ReplayError(f"race {info.race_id}: open shard {shard} has a hole")
                self._open.chunks.append(blob[slot[0] : slot[0] + slot[1]])
            for name in self._open.steps:
                self._open.steps[name] = read_step_chunk(storage, info, name, shard).copy()

    @classmethod
    def resume(
        cls, storage: ByteStorage, race_id: str, on_shard: Callable[[], object] | None = None
    ) -> RemoteRace:
        """Take back a race created through a service (this one before a restart, say);
        RaceTakenOverError if it is not recording or not remote; RaceBusyError (503: try
        again) while another replica holds it: one of this host while its process lives,
        one of another host until its lease expires (docs/deploy.md)."""
        info = read_race_info(storage, race_id)
        lease = info.lease if isinstance(info.lease, dict) else {}
        if info.status != fmt.RECORDING or not lease.get("remote"):
            why = f"is {info.status}" if info.status != fmt.RECORDING else "is not remote"
            raise RaceTakenOverError(
                f"race {race_id} {why}: no service records it, so it takes neither chunks nor "
                "a close"
            )
        holder = _held_elsewhere(lease)
        where = f"(host {lease.get('host')!r}, pid {lease.get('pid')})"
        if holder == "process":
            raise RaceBusyError(
                f"race {race_id} is held by another live replica of this host {where}: send "
                "its chunks there, or again once that replica has ended"
            )
        if holder == "heartbeat":
            raise RaceBusyError(
                f"race {race_id} is held by a writer on another host {where}, alive as far as "
                f"its lease tells (renewed in the last {lease['ttl']} s): send its chunks "
                "there, or again once that lease has expired"
            )
        ours = remote_lease(float(lease.get("ttl", fmt.lease_ttl(1.0))))
        update_race(storage, race_id, lambda attrs: None, writer=ours)
        return cls(storage, info, ours, on_shard)

    def apply(self, chunk: Chunk) -> int:
        """Check `chunk` against the race, commit the steps it adds; returns the committed
        length. A chunk already committed is not applied again; `ChunkGapError` for one
        that starts past the length. Nothing is written unless every check passes."""
        race = self.info.race_id
        if chunk.first_step > self.length:
            raise ChunkGapError(
                f"race {race}: chunk starts at step {chunk.first_step}, but {self.length} "
                f"steps are committed: expected step {self.length}",
                expected=self.length,
            )
        steps = check_chunk(self.info, self._specs, chunk)
        skip = self.length - chunk.first_step
        if skip >= chunk.n:  # a retry of what is committed, or a heartbeat: renew the lease
            update_race(self._storage, race, lambda attrs: None, writer=self._lease)
            return self.length
        committer = ShardCommitter(
            self._storage, self.info, self._specs, self._lease, self._on_shard
        )
        try:
            for i in range(skip, chunk.n):
                if self._open.add(chunk.frames[i], {k: v[i] for k, v in steps.items()}):
                    self._open.commit(committer)
                    self._open.next()
            if self._open.chunks:
                self._open.commit(committer)
        finally:
            committer.finish()
        self.length = chunk.first_step + chunk.n
        return self.length

    def close(self, status: str) -> None:
        """Mark the race `status` (complete or aborted) and give up its lease."""
        changes = {"status": status, "ended_at": fmt.utc_now(), "lease": None}
        update_race(
            self._storage,
            self.info.race_id,
            lambda attrs: attrs.update(changes),
            writer=self._lease,
        )
