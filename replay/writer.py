"""The background writer beside the driver: the `Writer` interface and `ThreadWriter`.

`ThreadWriter` encodes in a thread of the driver's process (the CUDA path, and
``new_race(writer="thread")``); for CPU frames the default is the process writer
(`replay.writer_process`), which runs a `ThreadWriter` in a writer process fed
through shared memory. docs/writer.md says which and why.

`Writer.append` validates a frame, copies it into a preallocated ring slot and
returns: the driver never waits on encoding or disk. A background thread takes
frames in batches, JPEG-encodes them (nvImageCodec's nvJPEG on the GPU for a
CUDA writer, libjpeg-turbo otherwise), assembles whole shards and commits them
(`replay.format` describes the protocol). The open shard is re-committed every
`flush_interval` seconds, so a crash loses at most that much.

    with store.new_race(env="CarRacing-v3") as writer:       # complete on exit,
        for frame, action, reward in driver():                # aborted on exception
            writer.append(frame, action=action, reward=reward)
    print(writer.stats())

When the ring is full, ``on_full="block"`` waits for a slot and ``"drop"`` drops
the frame (counted in `WriterStats.dropped`). If the background thread fails
(a full disk, say), `append` keeps the driver alive by dropping frames, the error
shows in `stats().error`, and `close()` raises `WriterFailedError`. So does a race
taken over by a process that judged the writer dead (`replay.lease`): the writer
stops at its next commit rather than write to an aborted or removed race.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from replay import format as fmt
from replay import gpu, jpeg, shards
from replay.errors import (
    FrameError,
    RaceTakenOverError,
    ReplayError,
    StepDataError,
    WriterClosedError,
    WriterFailedError,
)
from replay.frame_codec import encode_steps
from replay.lease import check_owner, new_lease, update_race

if TYPE_CHECKING:
    from replay.race import RaceInfo
    from replay.storage import ByteStorage

QueuePolicy = Literal["block", "drop"]
log = logging.getLogger(__name__)
_CLOSE = object()
MAINTENANCE_S = 10.0  # seconds between capacity checks by a writer
ENCODE_BATCH = 16  # frames per encoder call: nvJPEG batches them; on the CPU, lanes split them


@dataclass(frozen=True)
class StepSpec:
    """One per-step array of a race: its name, dtype and per-step shape."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class WriterStats:
    """Counters of a writer; `written` frames are committed (durable and visible).

    `encode_ms_mean` is the encode time per frame over the race so far and
    `encode_ms_p99` its 99th percentile over the last frames (frames are encoded in
    batches: each frame of a batch counts the batch's time over its size).
    """

    appended: int
    written: int
    dropped: int
    queue_depth: int
    encode_ms_mean: float
    encode_ms_p99: float
    bytes_written: int
    shards_written: int
    error: str | None


@dataclass
class _Pending:
    slot: int
    steps: dict[str, npt.NDArray[Any]]


def check_settings(
    flush_interval: float, queue_size: int, on_full: str, device: str
) -> jpeg.Device:
    """Refuse bad writer settings (before a race is created); returns the device to use."""
    if flush_interval <= 0:
        raise ValueError(f"flush_interval must be positive, got {flush_interval}")
    if queue_size < 1:
        raise ValueError(f"queue_size must be at least 1, got {queue_size}")
    if on_full not in ("block", "drop"):
        raise ValueError(f"on_full must be 'block' or 'drop', not {on_full!r}")
    return jpeg.resolve_device(device)


def _is_cuda_array(obj: object) -> bool:
    return hasattr(obj, "__cuda_array_interface__") or (
        hasattr(obj, "__dlpack_device__") and obj.__dlpack_device__()[0] in (2, 13)
    )


def device_array(frame: Any, xp: Any, race_id: str = "") -> Any:
    """A device frame as an array of module `xp` (CuPy), without a copy.

    DLPack first: torch, JAX and CuPy export it, and the exporter makes the consumer's
    current stream wait for its own (torch's ``__cuda_array_interface__`` carries no
    stream, so CuPy would not wait for the kernel that drew the frame). Objects with
    only ``__cuda_array_interface__`` go through ``xp.asarray``. The result has a NumPy
    dtype whatever the producer's dtype type (``torch.uint8`` is not a NumPy dtype);
    a dtype `xp` cannot hold (bfloat16) raises `FrameError`.
    """
    if isinstance(frame, xp.ndarray):
        return frame  # already one (a CuPy frame: the common case, kept cheap)
    try:
        if hasattr(frame, "__dlpack__"):
            return xp.from_dlpack(frame)
        return xp.asarray(frame)
    except (BufferError, RuntimeError, TypeError, ValueError) as e:
        raise FrameError(
            f"race {race_id}: frames must be (H, W, 3) uint8, got a {type(frame).__name__} "
            f"of dtype {getattr(frame, 'dtype', '?')} ({e})"
        ) from e


class Writer:
    """Records one race. Create it with `Store.new_race`, not directly.

    Two kinds share this interface: `ThreadWriter` (encodes in a thread of the
    driver's process; the CUDA path) and `replay.writer_process.ProcessWriter`
    (encodes in a separate writer process fed through a shared-memory ring; the
    default for CPU frames). `pid` is the process that encodes and commits (the
    race's lease holder).
    """

    race_id: str
    device: jpeg.Device
    pid: int
    _gpu: int  # the CUDA device a CUDA writer's frames live on
    _specs: dict[str, StepSpec]
    _shape: tuple[int, int, int]

    def append(self, frame: Any, **steps: Any) -> bool:
        """Queue one frame and its step data; returns False if the frame was dropped.

        `frame` is (H, W, 3) uint8: a NumPy array (any strides, read-only is fine) or,
        on a CUDA writer, a CUDA array (CuPy, torch, anything with
        ``__cuda_array_interface__``). `steps` are the race's step arrays: ``action``,
        ``reward``, ``terminated``, ``truncated``, ``t_ns`` (default: now) and the
        declared extras; missing ones are zero.
        """
        raise NotImplementedError

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        raise NotImplementedError

    def close(self, status: str = fmt.COMPLETE) -> None:
        """Commit what is queued and mark the race `status` (complete); idempotent.

        Raises `WriterFailedError` if the background writer failed (the race is then
        marked aborted; what was committed before the failure stays readable).
        """
        raise NotImplementedError

    def _check_frame(self, frame: Any) -> tuple[Any, bool]:
        """The frame as an array, and whether it is on the GPU; FrameError if it is wrong."""
        on_device = _is_cuda_array(frame)
        if on_device and self.device != "cuda":
            raise FrameError(
                f"race {self.race_id}: got a CUDA frame but this writer encodes on the CPU "
                "(open the race with device='cuda', or pass a host array)"
            )
        if on_device:
            import cupy

            with gpu.on_device(self._gpu):
                frame = device_array(frame, cupy, self.race_id)
        else:
            frame = np.asarray(frame)
        shape, dtype = tuple(frame.shape), np.dtype(frame.dtype)
        if shape != self._shape or dtype != np.uint8:
            raise FrameError(
                f"race {self.race_id}: frames must be {self._shape} uint8, got {shape} {dtype}"
            )
        return frame, on_device

    def _check_steps(self, steps: dict[str, Any]) -> dict[str, npt.NDArray[Any]]:
        unknown = steps.keys() - self._specs.keys()
        if unknown:
            raise StepDataError(
                f"race {self.race_id}: unknown step data {sorted(unknown)}; "
                f"declared: {sorted(self._specs)} (declare more with new_race(extras=...))"
            )
        values: dict[str, npt.NDArray[Any]] = {}
        for name, value in steps.items():
            spec = self._specs[name]
            try:
                # a copy: the caller may reuse its array (an action buffer) after append
                array = np.array(value, dtype=spec.dtype)
            except (TypeError, ValueError, OverflowError) as e:  # OverflowError: t_ns=2**70
                raise StepDataError(f"race {self.race_id}: {name}={value!r}: {e}") from e
            if array.shape != spec.shape:
                raise StepDataError(
                    f"race {self.race_id}: {name} must have shape {spec.shape}, got {array.shape}"
                )
            values[name] = array
        values.setdefault("t_ns", np.asarray(time.time_ns(), dtype=np.int64))
        return values

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close(status=fmt.ABORTED)
        except ReplayError:  # the driver's own exception is the one to see
            log.exception("race %s: writer failed while aborting", self.race_id)


class ThreadWriter(Writer):
    """A writer whose encoder runs in a background thread of the driver's process.

    The CUDA path (nvImageCodec releases the GIL for the whole nvJPEG encode), and
    ``new_race(writer="thread")`` for CPU frames.
    """

    def __init__(
        self,
        storage: ByteStorage,
        info: RaceInfo,
        specs: list[StepSpec],
        *,
        flush_interval: float,
        queue_size: int,
        on_full: QueuePolicy,
        device: str,
        on_shard: Callable[[], object] | None = None,
    ) -> None:
        self.device: jpeg.Device = check_settings(flush_interval, queue_size, on_full, device)
        self._gpu = jpeg.device_index(device) if self.device == "cuda" else 0
        self.race_id = info.race_id
        self.pid = os.getpid()
        self._info = info
        self._storage = storage
        self._specs = {s.name: s for s in specs}
        self._shape = (info.height, info.width, 3)
        self._flush_interval = flush_interval
        self._on_full = on_full
        self._on_shard = on_shard  # store maintenance (capacity), run after full shards
        self._last_maintenance = 0.0
        self._ring = self._allocate_ring(queue_size)
        self._slots = queue_size
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(queue_size):
            self._free.put(slot)
        self._pending: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        # counters (written by the background thread, read by stats())
        self._appended = self._dropped = self._written = 0
        self._bytes = self._shards = 0
        self._encode_s, self._encoded = 0.0, 0
        self._encode_recent: deque[float] = deque(maxlen=4096)  # seconds per frame
        self._error: BaseException | None = None
        # the open shard
        self._shard = 0
        self._chunks: list[bytes] = []
        self._step_buf = {
            s.name: np.zeros((info.shard_size, *s.shape), dtype=s.dtype) for s in specs
        }
        self._array_docs = {
            name: json.loads(storage.read(f"{fmt.race_key(self.race_id)}/{name}/{fmt.METADATA}"))
            for name in [fmt.FRAMES, *self._specs]
        }
        self._lease = new_lease(flush_interval)
        self._codec = info.frame_codec
        self._codec.prepare(self.device, self._gpu)  # now, not on the driver's first frames
        self._write_attrs()  # takes the lease
        self._thread = threading.Thread(
            target=self._run, name=f"replay-writer-{self.race_id}", daemon=True
        )
        self._thread.start()

    # -- driver side ---------------------------------------------------------------

    def _allocate_ring(self, n: int) -> Any:
        if self.device == "cuda":
            import cupy

            with gpu.on_device(self._gpu):
                self._events = [cupy.cuda.Event(disable_timing=True) for _ in range(n)]
                return cupy.empty((n, *self._shape), dtype=cupy.uint8)
        ring = np.empty((n, *self._shape), dtype=np.uint8)
        ring.fill(0)  # fault the pages in now, not on the driver's first appends
        return ring

    def append(self, frame: Any, **steps: Any) -> bool:
        if self._closed:
            raise WriterClosedError(f"race {self.race_id}: append() after close()")
        values = self._check_steps(steps)
        frame, on_device = self._check_frame(frame)
        if self._error is not None:
            self._dropped += 1
            return False
        try:
            slot = self._free.get(block=self._on_full == "block")
        except queue.Empty:
            self._dropped += 1
            return False
        if slot < 0:  # the background thread failed while we waited
            self._dropped += 1
            return False
        self._copy_in(slot, frame, on_device)
        self._appended += 1
        self._pending.put(_Pending(slot, values))
        return True

    def _copy_in(self, slot: int, frame: Any, on_device: bool) -> None:
        if self.device == "cuda":
            import cupy

            with gpu.on_device(self._gpu):
                self._ring[slot][...] = cupy.asarray(frame)  # device copy, or upload from host
                self._events[slot].record()
        else:
            np.copyto(self._ring[slot], frame)

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        return WriterStats(
            appended=self._appended,
            written=self._written,
            dropped=self._dropped,
            queue_depth=self._pending.qsize(),
            encode_ms_mean=self._encode_s * 1000 / self._encoded if self._encoded else 0.0,
            encode_ms_p99=float(np.percentile(list(self._encode_recent), 99)) * 1000
            if self._encode_recent
            else 0.0,
            bytes_written=self._bytes,
            shards_written=self._shards,
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
        if self._error is not None:
            status = fmt.ABORTED
        if not isinstance(self._error, RaceTakenOverError):  # then the race is not ours
            try:
                self._write_attrs(status=status, ended_at=fmt.utc_now(), lease=False)
            except (OSError, ReplayError) as e:
                self._error = self._error or e
        if self._error is not None:
            raise WriterFailedError(
                f"race {self.race_id}: background writer failed after {self._written} "
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
                with gpu.on_device(self._gpu):
                    self._loop()
            else:
                self._loop()
        except BaseException as e:  # reported through stats() and close()
            log.exception("race %s: background writer failed", self.race_id)
            self._error = e
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
            now = time.monotonic()
            if closing or now >= next_flush:
                if len(self._chunks) > self._written - self._shard * self._info.shard_size:
                    self._commit()  # only when frames came since the last commit
                    last_lease = now
                elif now - last_lease >= 5 * self._flush_interval:
                    self._write_attrs()
                    last_lease = now
                next_flush = now + self._flush_interval

    def _encode(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        images = [self._ring[p.slot] for p in batch]
        if self.device == "cuda":
            for p in batch:
                self._events[p.slot].synchronize()
        # Leave a core to the driver (encoding on every core makes its appends wait
        # for a time slice: p99 11 ms instead of < 1 ms on 2 cores), unless it is
        # waiting for us anyway: a backlog, the ring more than half full.
        backlog = self._slots - self._free.qsize() > self._slots // 2
        blobs = self._codec.encode(
            images, device=self.device, gpu=self._gpu, spare_core=not backlog
        )
        took = time.perf_counter() - started
        self._encode_s += took
        self._encoded += len(batch)
        self._encode_recent.extend([took / len(batch)] * len(batch))
        for p, blob in zip(batch, blobs, strict=True):
            self._free.put(p.slot)
            i = len(self._chunks)
            for name, buf in self._step_buf.items():
                buf[i] = p.steps.get(name, 0)
            self._chunks.append(shards.with_checksum(blob))
            if len(self._chunks) == self._info.shard_size:
                self._commit()
                self._maintain()
                self._shard += 1
                self._chunks = []
                for buf in self._step_buf.values():
                    buf[...] = 0

    def _maintain(self) -> None:
        """Run the store's maintenance at most every MAINTENANCE_S; never fail the race on it."""
        now = time.monotonic()
        if self._on_shard is None or now - self._last_maintenance < MAINTENANCE_S:
            return
        self._last_maintenance = now
        try:
            self._on_shard()
        except Exception:
            log.exception("race %s: store maintenance (capacity) failed", self.race_id)

    def _commit(self) -> None:
        """Write the open shard whole, then its step chunks, then shapes, then length."""
        race, k, n = self.race_id, self._shard, len(self._chunks)
        s = self._info.shard_size
        check_owner(self._storage, race, self._lease)  # never recreate a removed race
        blob = shards.build_shard(self._chunks, s)
        self._storage.write(fmt.frames_key(race, k), blob)
        written = len(blob)
        for name, buf in self._step_buf.items():
            chunk = encode_steps(buf)
            self._storage.write(fmt.shard_key(race, name, k, buf.ndim), chunk)
            written += len(chunk)
        length = k * s + n
        for name, doc in self._array_docs.items():
            doc["shape"][0] = length
            self._storage.write(
                f"{fmt.race_key(race)}/{name}/{fmt.METADATA}", json.dumps(doc).encode()
            )
        self._write_attrs(length=length)
        self._written = length
        self._bytes += written
        self._shards += n == s

    def _write_attrs(self, lease: bool = True, **changes: Any) -> None:
        """Update the race's attributes (`replay.lease.update_race`): renews the lease, or
        gives it up (`lease=False`); RaceTakenOverError if the race is no longer ours."""
        if not lease:
            changes["lease"] = None
        update_race(
            self._storage, self.race_id, lambda attrs: attrs.update(changes), writer=self._lease
        )
