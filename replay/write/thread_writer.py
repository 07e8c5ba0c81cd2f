"""`ThreadWriter`: a `Writer` whose encoder runs in a background thread of its process.

The driver's process for a CUDA writer and ``new_race(writer="thread")``; the writer
process (`replay.write.process_main`) for the default process writer. `append` copies a frame
into a preallocated ring slot (or posts the slot `frame_buffer` lent, drawn in
place); the background thread encodes frames in batches of `ENCODE_BATCH` and hands
them to the race's sink (`replay.write.sink`): whole shards committed to a store in a
thread of their own, and the open shard again every `flush_interval` seconds
(`replay.write.store_sink`), or chunks sent to a replay service
(`replay.remote.service_sink`). `replay.write.writer` describes the interface.
"""

from __future__ import annotations

import contextlib
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
from replay.format import spec as fmt
from replay.write.writer import Writer, WriterStats

if TYPE_CHECKING:
    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec
    from replay.write.settings import WriterSettings
    from replay.write.sink import Destination

log = logging.getLogger(__name__)
_CLOSE = object()
ENCODE_BATCH = 16  # frames per encoder call: nvJPEG batches them; on the CPU, lanes split them


def _free_slots(n: int) -> queue.Queue[int]:
    """Slots 0..n-1, taken by `append` and given back once encoded, in that order."""
    free: queue.Queue[int] = queue.Queue()
    for slot in range(n):
        free.put(slot)
    return free


@dataclass
class _Pending:
    slot: int
    steps: dict[str, npt.NDArray[Any]]
    layout: Layout | None  # the slot holds the frame's memory block (`replay.codec.pixel_order`)


class ThreadWriter(Writer):
    """A writer whose encoder runs in a background thread of the driver's process.

    The CUDA path (nvImageCodec releases the GIL for the whole nvJPEG encode), and
    ``new_race(writer="thread")`` for CPU frames. `destination` opens the race's sink
    (`replay.write.sink`). `settings` are resolved here (the
    device checked). `ring` and `on_free` are for the
    writer process (`replay.write.process_main`): it hands its shared-memory ring, `post`s the
    slots the driver filled, and learns through `on_free(slot)` when a slot is encoded
    (free again), so frames are never copied out of shared memory.
    """

    def __init__(
        self,
        destination: Destination,
        info: RaceInfo,
        specs: list[StepSpec],
        settings: WriterSettings,
        *,
        ring: npt.NDArray[np.uint8] | None = None,
        on_free: Callable[[int], object] | None = None,
    ) -> None:
        resolved = settings.resolved()
        super().__init__(info, specs, resolved)
        self.pid = os.getpid()
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
        self._codec = info.frame_codec
        self._codec.prepare(self.device, self._gpu)  # now, not on the driver's first frames
        self._sink = destination.open(info, specs, resolved)
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
            written=self._sink.written,
            dropped=self._dropped,
            queue_depth=self._pending.qsize(),
            encode_ms_mean=self._encode_s * 1000 / self._encoded if self._encoded else 0.0,
            encode_ms_p99=float(np.percentile(list(self._encode_recent), 99)) * 1000
            if self._encode_recent
            else 0.0,
            bytes_written=self._sink.nbytes,
            shards_written=self._sink.shards,
            error=None if self._error is None else f"{type(self._error).__name__}: {self._error}",
        )

    def close(self, status: str = fmt.COMPLETE) -> None:
        """Commit what is queued and mark the race `status` (complete); idempotent.

        Raises `WriterFailedError` if the background thread failed (the race is then
        marked aborted; what was committed before the failure stays readable).
        """
        status = fmt.race_ending(status)
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
                self._sink.close(status)
            except (OSError, ReplayError) as e:
                self._error = self._error or e
        if self._error is not None:
            raise WriterFailedError(
                f"race {self.race_id}: background writer failed after {self._sink.written} "
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
            self._sink.fail(e)
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
            self._sink.check()  # the sink failed: stop now, the driver drops from here
            now = time.monotonic()
            if closing or now >= next_flush:
                self._sink.flush(now)
                next_flush = now + self._flush_interval
        self._sink.finish()

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
        for p in batch:
            self._release(p.slot)
        self._sink.add(blobs, [p.steps for p in batch])
