"""`ThreadWriter`: a `Writer` whose encoder runs in a background thread of its process.

The driver's process for a CUDA writer and ``new_race(writer="thread")``; the writer
process (`replay.write.process_main`) for the default process writer. `append` copies a frame
into a preallocated ring slot (or posts the slot `frame_buffer` lent, drawn in
place); the background thread encodes frames in batches of
`ENCODE_BATCH` and assembles whole shards; a `ShardCommitter` commits them
(`replay.format.spec`) in a thread of its own, and the open shard again every
`flush_interval` seconds. `replay.write.writer` describes the interface.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from replay.codec.devices import on_device
from replay.codec.pixel_order import Layout, contiguous, copy_in, pixels
from replay.errors import (
    RaceTakenOverError,
    ReplayError,
    WriterClosedError,
    WriterFailedError,
)
from replay.format import shards
from replay.format import spec as fmt
from replay.format.lease import new_lease
from replay.write.shard_committer import ShardCommitter
from replay.write.writer import Writer, WriterStats

if TYPE_CHECKING:
    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec
    from replay.storage.base import ByteStorage
    from replay.write.settings import WriterSettings

log = logging.getLogger(__name__)
_CLOSE = object()
ENCODE_BATCH = 16  # frames per encoder call: nvJPEG batches them; on the CPU, lanes split them


def _free_slots(n: int) -> queue.Queue[int]:
    """Slots 0..n-1, taken by `append` and given back once encoded, in that order."""
    free: queue.Queue[int] = queue.Queue()
    for slot in range(n):
        free.put(slot)
    return free


def _maintenance(storage: ByteStorage, settings: WriterSettings) -> Callable[[], object] | None:
    """What the committer runs after full shards: the store's capacity, if it has one."""
    if not settings.enforce_capacity:
        return None
    from replay.maintenance import capacity  # zarr: imported by writers that need it only

    return functools.partial(capacity.enforce, storage)


@dataclass
class _Pending:
    slot: int
    steps: dict[str, npt.NDArray[Any]]
    layout: Layout | None  # the slot holds the frame's memory block (`replay.codec.pixel_order`)


class ThreadWriter(Writer):
    """A writer whose encoder runs in a background thread of the driver's process.

    The CUDA path (nvImageCodec releases the GIL for the whole nvJPEG encode), and
    ``new_race(writer="thread")`` for CPU frames. `settings` are resolved here (the
    device checked). `ring` and `on_free` are for the
    writer process (`replay.write.process_main`): it hands its shared-memory ring, `post`s the
    slots the driver filled, and learns through `on_free(slot)` when a slot is encoded
    (free again), so frames are never copied out of shared memory.
    """

    def __init__(
        self,
        storage: ByteStorage,
        info: RaceInfo,
        specs: list[StepSpec],
        settings: WriterSettings,
        *,
        ring: npt.NDArray[np.uint8] | None = None,
        on_free: Callable[[int], object] | None = None,
    ) -> None:
        super().__init__(info, specs, settings.resolved())
        self.pid = os.getpid()
        self._info = info
        self._storage = storage
        self._flush_interval = settings.flush_interval
        self._ring = self._allocate_ring(self._slots) if ring is None else ring
        self._free = _free_slots(self._slots)
        self._release: Callable[[int], object] = on_free or self._free.put
        self._lent: tuple[int, Any] | None = None  # (slot or -1, array) from frame_buffer
        self._spare: Any = None  # what frame_buffer lends when no slot is free
        self._pending: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        # counters (written by the background thread, read by stats())
        self._appended = self._dropped = 0
        self._encode_s, self._encoded = 0.0, 0
        self._encode_recent: deque[float] = deque(maxlen=4096)  # seconds per frame
        self._error: BaseException | None = None
        # the open shard, and how many frames the last commit queued held
        self._shard = 0
        self._chunks: list[bytes] = []
        self._queued = 0
        self._step_buf = {
            s.name: np.zeros((info.shard_size, *s.shape), dtype=s.dtype) for s in specs
        }
        self._codec = info.frame_codec
        self._codec.prepare(self.device, self._gpu)  # now, not on the driver's first frames
        self._committer = ShardCommitter(
            storage,
            info,
            specs,
            new_lease(settings.flush_interval),
            _maintenance(storage, settings),
        )
        self._thread = threading.Thread(
            target=self._run, name=f"replay-writer-{self.race_id}", daemon=True
        )
        self._thread.start()

    # -- driver side ---------------------------------------------------------------

    def _allocate_ring(self, n: int) -> Any:
        if self.device == "cuda":
            import cupy

            with on_device(self._gpu):
                self._events = [cupy.cuda.Event(disable_timing=True) for _ in range(n)]
                return cupy.empty((n, *self._shape), dtype=cupy.uint8)
        ring = np.empty((n, *self._shape), dtype=np.uint8)
        ring.fill(0)  # fault the pages in now, not on the driver's first appends
        return ring

    def frame_buffer(self) -> Any:
        if self._closed:
            raise WriterClosedError(f"race {self.race_id}: frame_buffer() after close()")
        if self._lent is None:
            slot = self._take_slot()
            if slot < 0 and self._spare is None:
                self._spare = self._ring[0].copy()  # same kind (NumPy or CuPy) and shape
            self._lent = (slot, self._ring[slot] if slot >= 0 else self._spare)
        return self._lent[1]

    def append(self, frame: Any, **steps: Any) -> bool:
        if self._closed:
            raise WriterClosedError(f"race {self.race_id}: append() after close()")
        values = self._check_steps(steps)
        slot, lent = self._lent if self._lent is not None else (-1, None)
        drawn = slot >= 0 and frame is lent  # drawn in its slot: nothing to copy
        if not drawn:
            frame, on_cuda = self._check_frame(frame)
        self._lent = None  # any append ends the loan
        if slot < 0:
            slot = self._take_slot()
        if slot < 0 or self._error is not None:
            if slot >= 0:
                self._free.put(slot)
            self._dropped += 1
            return False
        layout = None
        if drawn:
            self._drawn(slot)
        else:
            layout = self._copy_in(slot, frame, on_cuda)
        self.post(slot, values, layout)
        return True

    def post(self, slot: int, steps: dict[str, npt.NDArray[Any]], layout: Layout | None) -> bool:
        """Queue the frame already in ring slot `slot` (the writer process's feeder)."""
        if self._error is not None:
            self._dropped += 1
            self._release(slot)
            return False
        self._appended += 1
        self._pending.put(_Pending(slot, steps, layout))
        return True

    def _take_slot(self) -> int:
        """A free ring slot, or -1: none (``on_full="drop"``), or the background thread failed."""
        if self._error is not None:
            return -1
        try:
            return self._free.get(block=self._on_full == "block")
        except queue.Empty:
            return -1

    def _copy_in(self, slot: int, frame: Any, on_cuda: bool) -> Layout | None:
        if self.device != "cuda":
            return copy_in(self._ring[slot], frame)
        import cupy

        with on_device(self._gpu):
            # a device copy, or an upload from the host (contiguous first, the fast way)
            self._ring[slot][...] = cupy.asarray(frame if on_cuda else contiguous(frame))
            self._events[slot].record()
        return None

    def _drawn(self, slot: int) -> None:
        """A frame drawn in place: on the GPU, encode it after the kernels that drew it."""
        if self.device == "cuda":
            with on_device(self._gpu):
                self._events[slot].record()  # on the current stream, as the drawing

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        return WriterStats(
            appended=self._appended,
            written=self._committer.written,
            dropped=self._dropped,
            queue_depth=self._pending.qsize(),
            encode_ms_mean=self._encode_s * 1000 / self._encoded if self._encoded else 0.0,
            encode_ms_p99=float(np.percentile(list(self._encode_recent), 99)) * 1000
            if self._encode_recent
            else 0.0,
            bytes_written=self._committer.bytes,
            shards_written=self._committer.shards,
            error=None if self._error is None else f"{type(self._error).__name__}: {self._error}",
        )

    def close(self, status: str = fmt.COMPLETE) -> None:
        """Commit what is queued and mark the race `status` (complete); idempotent.

        Raises `WriterFailedError` if the background thread failed (the race is then
        marked aborted; what was committed before the failure stays readable).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pending.put(_CLOSE)
        self._thread.join()
        self._ring = self._spare = self._lent = None  # a closed writer holds no frames
        if self._error is not None:
            status = fmt.ABORTED
        if not isinstance(self._error, RaceTakenOverError):  # then the race is not ours
            try:
                self._committer.update_attrs(status=status, ended_at=fmt.utc_now(), lease=False)
            except (OSError, ReplayError) as e:
                self._error = self._error or e
        if self._error is not None:
            raise WriterFailedError(
                f"race {self.race_id}: background writer failed after {self._committer.written} "
                f"committed frames: {self._error}"
            ) from self._error

    # -- background thread -----------------------------------------------------------

    def _run(self) -> None:
        # Lower this thread's priority (and that of encoder threads it starts) so
        # the driver's thread wins the CPU whenever both want it.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        try:
            if self.device == "cuda":  # a new thread starts on GPU 0, not the writer's
                with on_device(self._gpu):
                    self._loop()
            else:
                self._loop()
        except BaseException as e:  # reported through stats() and close()
            log.exception("race %s: background writer failed", self.race_id)
            self._error = e
            with contextlib.suppress(BaseException):  # ends its thread; e is the error
                self._committer.finish()
            while True:  # unblock a driver waiting for a slot, and drain the queue
                self._free.put(-1)
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    break
                if item is _CLOSE:
                    break

    def _loop(self) -> None:
        next_flush = time.monotonic() + self._flush_interval
        last_lease = time.monotonic()
        closing = False
        while not closing:
            batch: list[_Pending] = []
            timeout = max(0.0, next_flush - time.monotonic())
            try:
                item = self._pending.get(timeout=timeout)
            except queue.Empty:
                item = None
            while item is not None:
                if item is _CLOSE:
                    closing = True
                    break
                assert isinstance(item, _Pending)
                batch.append(item)
                if len(batch) == ENCODE_BATCH:
                    break
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    item = None
            if batch:
                self._encode(batch)
            self._committer.check()  # a commit failed: stop now, the driver drops from here
            now = time.monotonic()
            if closing or now >= next_flush:
                if len(self._chunks) > self._queued:
                    self._commit()  # only when frames came since the last commit
                    last_lease = now
                elif now - last_lease >= 5 * self._flush_interval:
                    self._committer.renew_lease()
                    last_lease = now
                next_flush = now + self._flush_interval
        self._committer.finish()

    def _encode(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        images = [pixels(self._ring[p.slot], p.layout) for p in batch]
        if self.device == "cuda":
            for p in batch:
                self._events[p.slot].synchronize()
        # Leave a core to the driver (encoding on every core makes its appends wait
        # for a time slice: p99 11 ms instead of < 1 ms on 2 cores), unless it is
        # waiting for us anyway: a backlog, the ring more than half full.
        backlog = self._appended - self._encoded > self._slots // 2
        blobs = self._codec.encode(
            images, device=self.device, gpu=self._gpu, spare_core=not backlog
        )
        took = time.perf_counter() - started
        self._encode_s += took
        self._encoded += len(batch)
        self._encode_recent.extend([took / len(batch)] * len(batch))
        for p, blob in zip(batch, blobs, strict=True):
            self._release(p.slot)
            i = len(self._chunks)
            for name, buf in self._step_buf.items():
                buf[i] = p.steps.get(name, 0)
            self._chunks.append(shards.with_checksum(blob))
            if len(self._chunks) == self._info.shard_size:
                self._commit()
                self._shard += 1
                self._chunks, self._queued = [], 0
                for buf in self._step_buf.values():
                    buf[...] = 0

    def _commit(self) -> None:
        """Queue the commit of the open shard as it is now (written in the background)."""
        self._committer.commit(self._shard, self._chunks, self._step_buf)
        self._queued = len(self._chunks)
