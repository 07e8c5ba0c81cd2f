"""`RemoteWriter`: a `Writer` on an actor that records into a replay service over HTTP.

Made by `replay.Client.new_race`, it has the local writer's interface (`append`,
`frame_buffer`, `stats`, `close`, context manager: an exception marks the race
aborted). `append` checks the frame and steps, copies the frame and enqueues it
(bounded by `queue_size`, by default half a second of frames as a local writer's
ring; when full, ``on_full="block"`` waits and ``"drop"`` drops, counted in
`stats().dropped`). A background thread encodes frames with the race's codec
(`replay.codec.frames`, the local writer's encoders: nvJPEG on a CUDA writer,
libjpeg-turbo or zstd on the CPU), so raw frames never cross the network, and sends them in chunks
(`replay.remote.chunks`) at least every `flush_interval`, each at most the
service's ``max_chunk_bytes``. A chunk counts as written once the service
acknowledges it: it is then committed to the store.

A chunk whose answer is lost (a broken connection, the service restarting) or
refused for back-pressure (429: this race's chunk bytes in flight are full, 503: the
service's) is sent again, the same bytes from the same first step, after the answer's
``Retry-After``, for up to `retry_for` seconds (then the writer fails: `close` raises
`WriterFailedError`): the service acknowledges a chunk it already committed without
applying it twice. While the background thread waits, the queue fills and `append`
applies ``on_full``, as a local writer does when its disk is slow: the driver is never
held longer than by a local writer's full ring. When nothing is appended for 5 flush
intervals an empty chunk renews the race's lease.

    with Client(url).new_race(env="CarRacing-v3", codec="zstd") as writer:
        writer.append(frame, action=a, reward=r)
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import numpy.typing as npt

from replay.codec.devices import on_device
from replay.errors import ReplayError, WriterClosedError, WriterFailedError
from replay.format import spec as fmt
from replay.remote.chunks import EXPECTED_STEP_HEADER, MAX_FRAMES, MEDIA_TYPE, Chunk, pack
from replay.remote.retries import RetryPolicy, error_of
from replay.write.settings import WriterSettings
from replay.write.writer import Writer, WriterStats

if TYPE_CHECKING:
    from replay.codec.frames import FrameCodec
    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec

log = logging.getLogger(__name__)
_CLOSE = object()
ENCODE_BATCH = 16  # frames per encoder call (libjpeg-turbo lanes split them)
CHUNK_OVERHEAD = 4096  # bytes of a chunk's header beyond PER_STEP_OVERHEAD a step
PER_STEP_OVERHEAD = 24  # a frame's length in the header, the padding of its step values
BUSY = (429, 503)  # answers that mean "not now": the chunk is sent again


#: `Client.new_race` arguments that configure the writer, not the race.
WRITER_OPTIONS = ("queue_size", "on_full", "retry_for")


def writer_options(options: dict[str, Any]) -> tuple[WriterSettings, float]:
    """Take the writer's settings and `retry_for` out of `new_race`'s `options` (checked:
    ValueError naming the value); ``flush_interval`` stays there too (the service's lease
    needs it)."""
    writer = {k: options.pop(k) for k in WRITER_OPTIONS if k in options}
    retry_for = writer.pop("retry_for", 60.0)
    if isinstance(retry_for, bool) or not isinstance(retry_for, int | float) or retry_for < 0:
        raise ValueError(f"retry_for must be a number of seconds >= 0, got {retry_for!r}")
    settings = WriterSettings(  # validated when made: ValueError naming the bad value
        flush_interval=options.setdefault("flush_interval", 1.0),
        device=options.pop("device", "auto"),
        writer="thread",
        **writer,
    )
    return settings, float(retry_for)


class RemoteWriter(Writer):
    """Records one race through a replay service; create it with `Client.new_race`.

    `info` is the race as the service created it; `http` the client's connection pool
    (its base URL and token); `settings` are the writer's, resolved (``device`` "cpu" or
    "cuda:N": a CUDA writer takes CUDA frames, keeps its queue in device memory and
    encodes JPEG with nvJPEG, as a local CUDA writer); the queue holds
    `settings.slots(fps)` frames, as a local writer's ring. `max_chunk_bytes` is the
    service's largest chunk; a chunk is sent again for `retry_for` seconds
    (`replay.remote.retries.RetryPolicy`).
    """

    def __init__(
        self,
        http: httpx.Client,
        info: RaceInfo,
        codec: FrameCodec,
        specs: list[StepSpec],
        settings: WriterSettings,
        *,
        max_chunk_bytes: int,
        retry_for: float = 60.0,
    ) -> None:
        super().__init__(info, specs, settings)
        self.pid = os.getpid()
        self._http = http
        #: bytes one step adds to a chunk beyond its frame
        self._step_nbytes = PER_STEP_OVERHEAD + sum(
            s.dtype.itemsize * int(np.prod(s.shape, dtype=np.int64)) for s in specs
        )
        self._shard_size = info.shard_size
        self._max_chunk = max_chunk_bytes
        self._codec = codec
        self._flush_interval = settings.flush_interval
        self._retry = RetryPolicy(deadline_s=retry_for, backoff=0.05, max_backoff=2.0)
        self._queue: queue.Queue[Any] = queue.Queue(self._slots)
        self._lent: npt.NDArray[np.uint8] | None = None
        self._closed = self._close_seen = False
        self._lock = threading.Lock()
        self._appended = self._dropped = self._acked = self._bytes = 0
        self._encode_s, self._encoded = 0.0, 0
        self._encode_recent: deque[float] = deque(maxlen=4096)
        self._error: BaseException | None = None
        # encoded, not yet acknowledged: (blob, steps) from step `_acked` on
        self._pending: list[tuple[bytes, dict[str, npt.NDArray[Any]]]] = []
        self._thread = threading.Thread(
            target=self._run, name=f"replay-remote-{self.race_id}", daemon=True
        )
        if self.device == "cuda":
            codec.prepare(self.device, self._gpu)  # now, not on the driver's first frames
        self._thread.start()

    # -- driver side -------------------------------------------------------------------

    def frame_buffer(self) -> Any:
        if self._closed:
            raise WriterClosedError(f"race {self.race_id}: frame_buffer() after close()")
        if self._lent is None:
            self._lent = self._copy(None)
        return self._lent

    def append(self, frame: Any, **steps: Any) -> bool:
        if self._closed:
            raise WriterClosedError(f"race {self.race_id}: append() after close()")
        values = self._check_steps(steps)
        lent, self._lent = self._lent, None
        if frame is not lent or lent is None:
            frame = self._copy(self._check_frame(frame)[0])
        ready = self._drawn()
        if self._error is not None:
            self._dropped += 1
            return False
        try:
            self._queue.put((frame, values, ready), block=self._on_full == "block")
        except queue.Full:
            self._dropped += 1
            return False
        self._appended += 1
        return True

    def _copy(self, frame: Any) -> Any:
        """A copy of `frame` the background thread owns (an empty frame for None): in
        device memory on a CUDA writer (host frames uploaded), else on the host."""
        if self.device != "cuda":
            if frame is None:
                return np.empty(self._shape, dtype=np.uint8)
            return np.array(frame, order="C", copy=True)
        import cupy

        with on_device(self._gpu):
            return cupy.empty(self._shape, cupy.uint8) if frame is None else cupy.array(frame)

    def _drawn(self) -> Any:
        """On a CUDA writer, an event past the work that drew or copied the frame on the
        current stream: the encoder waits for it, the driver does not."""
        if self.device != "cuda":
            return None
        import cupy

        with on_device(self._gpu):
            event = cupy.cuda.Event(disable_timing=True)
            event.record()
        return event

    def stats(self) -> WriterStats:
        """A snapshot of the counters: `written` steps are acknowledged (committed)."""
        recent = list(self._encode_recent)
        return WriterStats(
            appended=self._appended,
            written=self._acked,
            dropped=self._dropped,
            queue_depth=self._queue.qsize(),
            encode_ms_mean=self._encode_s * 1000 / self._encoded if self._encoded else 0.0,
            encode_ms_p99=float(np.percentile(recent, 99)) * 1000 if recent else 0.0,
            bytes_written=self._bytes,
            shards_written=self._acked // self._shard_size,
            error=None if self._error is None else f"{type(self._error).__name__}: {self._error}",
        )

    def close(self, status: str = fmt.COMPLETE) -> None:
        """Send what is queued, then mark the race `status` (complete); idempotent.

        Raises `WriterFailedError` if sending failed (the race is then marked aborted;
        what was acknowledged stays in the store)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(_CLOSE)
        self._thread.join()
        self._lent = None
        if self._error is not None:
            status = fmt.ABORTED
        try:
            self._post(f"/v1/races/{self.race_id}/close", json={"status": status})
        except (httpx.HTTPError, ReplayError) as e:
            self._error = self._error or e
        if self._error is not None:
            raise WriterFailedError(
                f"race {self.race_id}: remote writer failed after {self._acked} acknowledged "
                f"steps: {self._error}"
            ) from self._error

    # -- background thread -------------------------------------------------------------

    def _run(self) -> None:
        try:  # a new thread starts on GPU 0, not the writer's
            with on_device(self._gpu) if self.device == "cuda" else contextlib.nullcontext():
                self._loop()
        except BaseException as e:  # reported through stats() and close()
            log.exception("race %s: remote writer failed", self.race_id)
            self._error = e
            while not self._close_seen and self._queue.get() is not _CLOSE:
                pass  # unblock a waiting driver, until close()

    def _loop(self) -> None:
        next_flush = time.monotonic() + self._flush_interval
        last_sent = time.monotonic()
        closing = False
        while not closing:
            closing = self._take(timeout=max(0.0, next_flush - time.monotonic()))
            now = time.monotonic()
            if closing or now >= next_flush or self._pending_nbytes() >= self._max_chunk:
                if self._pending or now - last_sent >= 5 * self._flush_interval:
                    self._send_pending()
                    last_sent = now
                next_flush = now + self._flush_interval

    def _take(self, timeout: float) -> bool:
        """Encode the frames queued, waiting up to `timeout` s for the first one; True once
        close() was seen. Up to a queue's worth: the next chunk then carries every frame
        that came while the last one was on its way (taking one encoder batch capped a
        writer at ENCODE_BATCH frames per round trip, so a slow link dropped frames)."""
        batch: list[tuple[Any, dict[str, npt.NDArray[Any]], Any]] = []
        taken = 0
        try:
            item = self._queue.get(timeout=timeout)
            while True:
                if item is _CLOSE:
                    self._close_seen = True
                    break
                batch.append(item)
                if len(batch) == ENCODE_BATCH:
                    self._encode(batch)
                    taken, batch = taken + len(batch), []
                    if taken >= self._queue.maxsize or self._pending_nbytes() >= self._max_chunk:
                        break
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if batch:
            self._encode(batch)
        return self._close_seen

    def _encode(self, batch: list[tuple[Any, dict[str, Any], Any]]) -> None:
        started = time.perf_counter()
        for _, _, ready in batch:
            if ready is not None:
                ready.synchronize()
        frames = [frame for frame, _, _ in batch]
        blobs = self._codec.encode(frames, device=self.device, gpu=self._gpu, spare_core=True)
        took = time.perf_counter() - started
        self._encode_s += took
        self._encoded += len(batch)
        self._encode_recent.extend([took / len(batch)] * len(batch))
        steps = [values for _, values, _ in batch]
        self._pending.extend(zip(blobs, steps, strict=True))

    def _pending_nbytes(self) -> int:
        return sum(len(blob) for blob, _ in self._pending)

    def _send_pending(self) -> None:
        """Send every pending frame in chunks of at most ``max_chunk_bytes`` (an empty
        chunk when there is none: a heartbeat)."""
        while True:
            n, size = 0, CHUNK_OVERHEAD
            while n < min(len(self._pending), MAX_FRAMES):
                frame_size = len(self._pending[n][0]) + self._step_nbytes
                if size + frame_size > self._max_chunk:
                    break
                size += frame_size
                n += 1
            if n == 0 and self._pending:
                raise WriterFailedError(
                    f"race {self.race_id}: a frame of {len(self._pending[0][0])} bytes does not "
                    f"fit the service's max_chunk_bytes ({self._max_chunk}); raise "
                    "REPLAY_MAX_BODY_BYTES on the service"
                )
            rows = self._pending[:n]
            steps = {
                name: np.stack([r[1].get(name, np.zeros(s.shape, s.dtype)) for r in rows])
                if rows
                else np.zeros((0, *s.shape), s.dtype)
                for name, s in self._specs.items()
            }
            self._send(Chunk(self._acked, [blob for blob, _ in rows], steps))
            if not self._pending:
                return

    def _send(self, chunk: Chunk) -> None:
        """POST one chunk until the service acknowledges it; then drop what it committed."""
        body = b"".join(pack(chunk))
        path = f"/v1/races/{self.race_id}/chunks"
        response = self._post(path, content=body, headers={"Content-Type": MEDIA_TYPE})
        length = int(response.json()["length"])
        if length < chunk.first_step or length > chunk.first_step + len(self._pending):
            raise WriterFailedError(
                f"race {self.race_id}: the service has {length} steps, but {chunk.first_step} "
                f"were acknowledged and {len(self._pending)} more are pending"
            )
        done = length - chunk.first_step
        self._bytes += sum(len(blob) for blob, _ in self._pending[:done])
        del self._pending[:done]
        self._acked = length

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST, tried again on a broken connection or a busy answer (429, 503: the
        service's chunk bytes in flight are full, or it restarts) for `retry_for` s,
        waiting as ``Retry-After`` asks: the background thread waits, the queue fills and
        `append` applies ``on_full``. A 409 naming the expected step answers like an
        acknowledgement of that length."""
        response = self._retry.call(
            lambda: self._http.post(path, **kwargs),
            where=f"race {self.race_id}: POST {path}",
            retry_on=(httpx.TransportError,),  # every insert call may be repeated
            busy=lambda r: r.status_code in BUSY,
        )
        if response.status_code == 409 and EXPECTED_STEP_HEADER in response.headers:
            return httpx.Response(200, json={"length": int(response.headers[EXPECTED_STEP_HEADER])})
        if response.status_code >= 400:
            raise error_of(response)
        return response
