"""Errors raised by `replay`.

Every error derives from `ReplayError`, so ``except ReplayError`` catches all of
them; the service maps them to HTTP status codes and the CLI to clean exit
messages. Messages name the offending value (the path, race, shard or step).

    ReplayError
    ├── StoreError              a path is not a store, or cannot be used as one
    │   ├── ReadOnlyStoreError  a write was attempted on a store opened read-only
    │   └── RaceBusyError       repair/recover/prune refused: the race's writer is alive
    │                           (or chunks: the race's service on another host may be)
    ├── RaceNotFoundError       no race with that id (also: a malformed id)
    ├── FrameError              a frame of the wrong shape, dtype or kind
    ├── StepDataError           per-step data of the wrong shape or an unknown key
    ├── WriterClosedError       append() after close()
    ├── WriterFailedError       the background writer hit an I/O error
    │   └── RaceTakenOverError  its race was aborted or removed while it was paused
    ├── CorruptDataError        a shard or frame that cannot be read back
    └── SamplingError           nothing (or not enough) to sample
        └── RateLimitedError    min_size / samples_per_insert not met within the timeout
"""

from __future__ import annotations


class ReplayError(Exception):
    """Base class of every error raised by `replay`."""


class StoreError(ReplayError):
    """A path is not a replay store, or cannot be opened as one."""


class ReadOnlyStoreError(StoreError):
    """A write was attempted on a store opened with ``mode="r"`` or on a read-only disk."""


class RaceBusyError(StoreError):
    """A race's writer is alive (as far as its lease tells), so repair, recover and prune
    leave the race alone, and a service replica refuses its chunks (503, retry) while the
    replica that holds it lives."""


class RaceNotFoundError(ReplayError, KeyError):
    """No race with this id exists in the store (or the id is malformed)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class FrameError(ReplayError, ValueError):
    """A frame that does not match the race's declared (H, W, 3) uint8 layout."""


class StepDataError(ReplayError, ValueError):
    """Per-step data (action, reward, extras) that does not match the race's declaration."""


class WriterClosedError(ReplayError):
    """The writer was closed; nothing more can be appended."""


class WriterFailedError(ReplayError):
    """The background writer stopped on an error; the message carries the cause."""


class RaceTakenOverError(WriterFailedError):
    """A writer's race was aborted or removed by a process that judged the writer dead
    (it was paused past its lease); the writer stops instead of resurrecting it."""


class GpuCodecError(ReplayError, RuntimeError):
    """The GPU JPEG path was asked for explicitly (``device="cuda"``) but a library it
    needs (nvJPEG) did not load: the environment is at fault, not the data."""


class CorruptDataError(ReplayError):
    """A shard or frame that cannot be decoded; the message names race, shard and step.

    `whole_shard` says the damage is not one frame's (the shard's index, its file or a
    step array cannot be read), so a ``skip_corrupt`` sampler avoids the whole shard;
    `step` is then the step that ran into it (None where none did).
    """

    def __init__(
        self,
        message: str,
        *,
        race_id: str,
        shard: int,
        step: int | None = None,
        whole_shard: bool = False,
    ):
        super().__init__(message)
        self.race_id = race_id
        self.shard = shard
        self.step = step
        self.whole_shard = whole_shard or step is None

    @classmethod
    def at(
        cls,
        race_id: str,
        shard: int,
        problem: str,
        step: int | None = None,
        *,
        whole_shard: bool = False,
    ) -> CorruptDataError:
        """The error for `problem` in a shard of a race: ``race R, shard K: problem``."""
        return cls(
            f"race {race_id}, shard {shard}: {problem}",
            race_id=race_id,
            shard=shard,
            step=step,
            whole_shard=whole_shard,
        )


class SamplingError(ReplayError, ValueError):
    """A sample request that the store cannot satisfy (empty, too short, too large)."""


class RateLimitedError(SamplingError):
    """Sampling waited its `timeout` for a rate limit (``min_size``, ``samples_per_insert``)
    that the writers did not lift; the message says which. `retry_after` is a hint in
    seconds (the service sends it as ``Retry-After`` with its 429)."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after
