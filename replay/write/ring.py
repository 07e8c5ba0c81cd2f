"""A frame ring in shared memory, between a driver and its writer process.

The driver (one producer) copies a frame and its step values into slot
``head % slots`` and then advances ``head``; the writer process (one consumer)
reads slots up to ``head`` and advances ``tail`` once it has encoded them. Both
counters live in the ring itself, so a slot posted before the driver died is
still visible to the writer process: a SIGKILLed driver loses nothing it
appended. Each slot has a `layouts` row besides: zeros when the slot holds the
frame, or the `replay.codec.pixel_order.Layout` of the frame's memory block it holds.
The writer process also publishes its `WriterStats` here (pickled, under a
sequence counter) so `stats()` in the driver reads them without a round trip.

The ring is a file in ``/dev/shm`` (memory, not disk; ``$REPLAY_SHM_DIR`` if set)
mapped by both processes; the writer process unlinks it as soon as it has mapped it,
so nothing is left behind whoever dies first. `Room` says whether a ring fits there
(`replay.write.start` picks a smaller ring or the thread writer when it does not).

    ring = FrameRing.create(slots=32, shape=(900, 1600, 3), steps={"reward": (np.float32, ())})
    ring.frames[0][...] = frame; ring.steps["reward"][0] = 1.0; ring.head = 1
    other = FrameRing.attach(ring.path, slots=32, shape=(900, 1600, 3), steps=...)
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from replay.format.race_schema import StepSpec

#: per-step arrays: name -> (dtype, per-step shape)
StepTable = dict[str, tuple[np.dtype[Any], tuple[int, ...]]]

_HEAD, _TAIL, _STATE, _FAILED, _SEQ, _STATS_LEN = range(6)
_HEADER = 8 * 8  # eight int64 counters
_STATS = 8192  # room for the pickled WriterStats (its error message is cut to fit)
_LAYOUT = 4  # int64 per slot: a frame_layout.Layout's offset and three strides
_ALIGN = 4096

STARTING, RUNNING, DONE = 0, 1, 2


#: where rings live: a memory-backed folder (tmpfs); /dev/shm unless set
SHM_DIR_ENV = "REPLAY_SHM_DIR"
#: what to do when a ring does not fit
SHM_FIX = (
    "give the recorder more shared memory (docker run --shm-size=1g, compose shm_size, "
    f"a memory-backed emptyDir at /dev/shm in Kubernetes) or set {SHM_DIR_ENV} to a "
    "larger tmpfs"
)


def memory_dir() -> Path:
    """The folder rings are created in: $REPLAY_SHM_DIR, else /dev/shm (else the temp
    folder, where there is no /dev/shm)."""
    chosen = os.environ.get(SHM_DIR_ENV)
    if chosen:
        return Path(chosen)
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def step_table(specs: list[StepSpec]) -> StepTable:
    """The ring's per-step arrays for a race's step arrays."""
    return {s.name: (s.dtype, s.shape) for s in specs}


@dataclass(frozen=True)
class Room:
    """The shared memory a new ring can have now: `free` bytes in folder `where`."""

    where: Path
    free: int

    @classmethod
    def now(cls) -> Room:
        """What `memory_dir` has free, bounded by the memory the kernel can give."""
        where = memory_dir()
        try:
            stat = os.statvfs(where)
            free = stat.f_bavail * stat.f_frsize
        except OSError:
            free = 0
        return cls(where, min(free, _available_memory()))

    def most_slots(self, shape: tuple[int, ...], steps: StepTable, at_most: int) -> int:
        """The most slots (up to `at_most`) of a ring that fits."""
        low, high = 0, at_most
        while low < high:
            mid = (low + high + 1) // 2
            if ring_nbytes(mid, shape, steps) <= self.free:
                low = mid
            else:
                high = mid - 1
        return low

    def shortfall(self, slots: int, shape: tuple[int, ...], steps: StepTable) -> str | None:
        """None if the ring fits, else what it needs and what is free, in one phrase."""
        needed = ring_nbytes(slots, shape, steps)
        if needed <= self.free:
            return None
        return (
            f"a ring of {slots} frames of {shape} needs {needed / 2**20:.1f} MiB of shared "
            f"memory in {self.where}, {self.free / 2**20:.1f} MiB is free"
        )


def _layout(
    slots: int, shape: tuple[int, ...], steps: StepTable
) -> tuple[dict[str, int], int, int]:
    """Byte offsets of the step arrays, of the frames, and the total size (the slots'
    layouts come first, at ``_HEADER + _STATS``)."""
    offset = _HEADER + _STATS + slots * _LAYOUT * 8
    offsets = {}
    for name, (dtype, step_shape) in steps.items():
        offsets[name] = offset
        offset += slots * int(np.prod(step_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        offset = -(-offset // 8) * 8
    frames_at = -(-offset // _ALIGN) * _ALIGN
    total = frames_at + slots * int(np.prod(shape, dtype=np.int64))
    return offsets, frames_at, total


def ring_nbytes(slots: int, shape: tuple[int, ...], steps: StepTable) -> int:
    """Bytes of shared memory a ring takes (its frames, step values and header)."""
    return _layout(slots, shape, steps)[2]


def _available_memory() -> int:
    """Bytes of memory the kernel says can be had now (MemAvailable), or no bound."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**63


class FrameRing:
    """`slots` frames of `shape` uint8 plus their step values, in a shared mapping."""

    def __init__(
        self, path: Path, fd: int, slots: int, shape: tuple[int, ...], steps: StepTable
    ) -> None:
        self.path = path
        self.slots = slots
        offsets, frames_at, total = _layout(slots, shape, steps)
        self._map = mmap.mmap(fd, total)
        os.close(fd)
        buf = memoryview(self._map)
        # int64 counters through a memoryview: a plain int in and out, cheaper than
        # indexing a NumPy array on the driver's per-frame path
        self._header = buf[:_HEADER].cast("q")
        self._stats = np.frombuffer(buf, np.uint8, _STATS, _HEADER)
        self.layouts = np.frombuffer(buf, np.int64, slots * _LAYOUT, _HEADER + _STATS).reshape(
            slots, _LAYOUT
        )
        self.steps: dict[str, npt.NDArray[Any]] = {
            name: np.frombuffer(
                buf, dtype, slots * int(np.prod(s, dtype=np.int64)), offsets[name]
            ).reshape(slots, *s)
            for name, (dtype, s) in steps.items()
        }
        self.frames: npt.NDArray[np.uint8] = np.frombuffer(
            buf, np.uint8, total - frames_at, frames_at
        ).reshape(slots, *shape)

    @classmethod
    def create(cls, slots: int, shape: tuple[int, ...], steps: StepTable) -> FrameRing:
        """A new zeroed ring (its pages faulted in now, not on the driver's first appends)."""
        total = ring_nbytes(slots, shape, steps)
        room = Room.now()
        shortfall = room.shortfall(slots, shape, steps)
        if shortfall is not None:
            raise MemoryError(f"{shortfall}: {SHM_FIX}")
        fd, name = tempfile.mkstemp(prefix="replay-ring-", dir=room.where)
        try:
            os.posix_fallocate(fd, 0, total)  # ENOSPC now, not SIGBUS on a later append
        except OSError as e:
            os.close(fd)
            os.unlink(name)
            raise MemoryError(
                f"cannot allocate a ring of {total / 2**20:.1f} MiB in {name}: {e}; {SHM_FIX}"
            ) from e
        ring = cls(Path(name), fd, slots, shape, steps)
        ring.frames.fill(0)
        return ring

    @classmethod
    def attach(cls, path: Path, slots: int, shape: tuple[int, ...], steps: StepTable) -> FrameRing:
        """Map the ring another process created at `path`, and unlink its name."""
        fd = os.open(path, os.O_RDWR)
        ring = cls(path, fd, slots, shape, steps)
        path.unlink(missing_ok=True)
        return ring

    def unlink(self) -> None:
        """Remove the ring's name (the mappings stay valid); for a writer that never attached."""
        self.path.unlink(missing_ok=True)

    # -- counters (each an aligned int64: one store, one load) ------------------------

    @property
    def head(self) -> int:
        """Frames posted by the driver."""
        return self._header[_HEAD]

    @head.setter
    def head(self, value: int) -> None:
        self._header[_HEAD] = value

    @property
    def tail(self) -> int:
        """Frames taken by the writer process (their slots are free again)."""
        return self._header[_TAIL]

    @tail.setter
    def tail(self, value: int) -> None:
        self._header[_TAIL] = value

    @property
    def state(self) -> int:
        """STARTING, RUNNING (the writer process took the race) or DONE (closed)."""
        return self._header[_STATE]

    @state.setter
    def state(self, value: int) -> None:
        self._header[_STATE] = value

    @property
    def failed(self) -> bool:
        """The writer process's writer has failed (details in `read_stats().error`)."""
        return bool(self._header[_FAILED])

    # -- stats, published by the writer process ----------------------------------------

    def publish(self, stats: Any, failed: bool) -> None:
        """Store `stats` (a picklable snapshot) for the driver to read."""
        blob = pickle.dumps(stats)
        if len(blob) > _STATS:
            raise ValueError(f"stats snapshot of {len(blob)} bytes exceeds {_STATS}")
        seq = self._header[_SEQ]
        self._header[_SEQ] = seq + 1  # odd: being written
        self._stats[: len(blob)] = np.frombuffer(blob, np.uint8)
        self._header[_STATS_LEN] = len(blob)
        if failed:
            self._header[_FAILED] = 1
        self._header[_SEQ] = seq + 2

    def read_stats(self) -> Any | None:
        """The last published snapshot (None before the first)."""
        while True:
            seq = self._header[_SEQ]
            if seq == 0:
                return None
            blob = self._stats[: self._header[_STATS_LEN]].tobytes()
            if seq % 2 == 0 and self._header[_SEQ] == seq:
                return pickle.loads(blob)

    def close(self) -> None:
        """Unmap (views into the ring must not be used afterwards)."""
        self._header.release()
        del self._stats, self.layouts, self.steps, self.frames
        with contextlib.suppress(BufferError):  # a view still alive: the GC unmaps it later
            self._map.close()
