"""Where a writer's encoded frames go: a `FrameSink`, opened from a `Destination`.

Every writer encodes the same way (`replay.write.thread_writer.ThreadWriter`: its ring,
encoder batches, CUDA events, flush timer), in the driver's process or in its writer
process; what differs is where the frames then go. A local race commits whole shards
to its store (`replay.write.store_sink.StoreSink`); a race recorded through a replay
service sends chunks that the service commits (`replay.remote.service_sink.ServiceSink`).
So "remote" is not another writer, only another sink, and it gets the local writer's
process, ring, priorities and failure rules.

A `Destination` is the picklable half: it travels to the writer process inside the
race's setup and opens the sink there (a store's storage; a service's URL and token).

    sink = destination.open(info, specs, settings)
    sink.add(blobs, steps)          # may wait (back-pressure); raises the sink's error
    sink.flush(now)                 # the writer's flush timer ticked
    sink.finish(); sink.close("complete")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy.typing as npt

    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec
    from replay.write.settings import WriterSettings


class FrameSink(Protocol):
    """Takes one race's encoded frames, in order, and makes them durable.

    `written` steps are durable (committed, or acknowledged by the service), `nbytes`
    and `shards` count what that took; the writer's `stats()` reports them.
    """

    @property
    def written(self) -> int: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def shards(self) -> int: ...

    def add(self, blobs: list[bytes], steps: list[dict[str, npt.NDArray[Any]]]) -> None:
        """Take encoded frames and their step values (may wait while the sink is full);
        raises the sink's error once it has failed."""

    def flush(self, now: float) -> None:
        """The writer's flush timer ticked (every ``flush_interval``, and at close): make
        what was added durable soon, renew the race's lease when nothing came."""

    def check(self) -> None:
        """Raise the sink's error, if it has failed."""

    def finish(self) -> None:
        """Wait until everything added is durable; raises the sink's error."""

    def fail(self, error: BaseException) -> None:
        """The writer failed with `error`: stop, keeping what is durable."""

    def close(self, status: str) -> None:
        """Mark the race `status` and give up its lease (after `finish`); `ReplayError`
        or `OSError` if that fails."""


class Destination(Protocol):
    """Where a race is recorded; picklable, so that the writer process can open it."""

    def open(self, info: RaceInfo, specs: list[StepSpec], settings: WriterSettings) -> FrameSink:
        """The sink of race `info` (its lease taken: `RaceTakenOverError` if it is not ours)."""
        ...
