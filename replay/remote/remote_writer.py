"""`RemoteWriter`: a `Writer` on an actor that records into a replay service over HTTP.

Made by `replay.Client.new_race`, it has the local writer's interface (`append`,
`frame_buffer`, `stats`, `close`, context manager: an exception marks the race
aborted). `append` checks the frame and steps, copies the frame and enqueues it
(bounded by `queue_size`, by default half a second of frames as a local writer's
ring; when full, ``on_full="block"`` waits and ``"drop"`` drops, counted in
`stats().dropped`). An encoder thread encodes frames with the race's codec
(`replay.codec.frames`, the local writer's encoders: nvJPEG on a CUDA writer,
libjpeg-turbo or zstd on the CPU), so raw frames never cross the network, and hands
them to a sender thread (`replay.remote.chunk_sender`), which sends them in chunks
(`replay.remote.chunks`) at least every `flush_interval`, each at most the
service's ``max_chunk_bytes``, one at a time: the encoder goes on encoding while a
chunk is on its way. A chunk counts as written once the service acknowledges it: it
is then committed to the store.

A chunk whose answer is lost (a broken connection, the service restarting) or
refused for back-pressure (429: this race's chunk bytes in flight are full, 503: the
service's) is sent again, the same bytes from the same first step, after the answer's
``Retry-After``, for up to `retry_for` seconds (then the writer fails: `close` raises
`WriterFailedError`): the service acknowledges a chunk it already committed without
applying it twice. While the sender waits, its encoded frames fill (a few chunks'
worth), the encoder waits, the queue fills and `append` applies ``on_full``, as a local
writer does when its disk is slow: the driver is never held longer than by a local
writer's full ring. When nothing is appended for 5 flush intervals an empty chunk
renews the race's lease.

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
from replay.remote.chunk_sender import ChunkSender
from replay.remote.retries import RetryPolicy
from replay.write.settings import WriterSettings
from replay.write.writer import Writer, WriterStats

if TYPE_CHECKING:
    from replay.codec.frames import FrameCodec
    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec

log = logging.getLogger(__name__)
_CLOSE = object()
ENCODE_BATCH = 16  # frames per encoder call (libjpeg-turbo lanes split them)


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
        self._shard_size = info.shard_size
        self._codec = codec
        self._sender = ChunkSender(
            http,
            self.race_id,
            self._specs,
            max_chunk_bytes=max_chunk_bytes,
            flush_interval=settings.flush_interval,
            retry=RetryPolicy(deadline_s=retry_for, backoff=0.05, max_backoff=2.0),
        )
        self._queue: queue.Queue[Any] = queue.Queue(self._slots)
        self._lent: npt.NDArray[np.uint8] | None = None
        self._closed = self._close_seen = False
        self._lock = threading.Lock()
        self._appended = self._dropped = 0
        self._encode_s, self._encoded = 0.0, 0
        self._encode_recent: deque[float] = deque(maxlen=4096)
        self._thread = threading.Thread(
            target=self._run, name=f"replay-remote-{self.race_id}", daemon=True
        )
        if self.device == "cuda":
            codec.prepare(self.device, self._gpu)  # now, not on the driver's first frames
        self._sender.start()
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
        if self._sender.error is not None:
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
        error = self._sender.error
        return WriterStats(
            appended=self._appended,
            written=self._sender.acked,
            dropped=self._dropped,
            queue_depth=self._queue.qsize(),
            encode_ms_mean=self._encode_s * 1000 / self._encoded if self._encoded else 0.0,
            encode_ms_p99=float(np.percentile(recent, 99)) * 1000 if recent else 0.0,
            bytes_written=self._sender.nbytes,
            shards_written=self._sender.acked // self._shard_size,
            error=None if error is None else f"{type(error).__name__}: {error}",
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
        self._thread.join()  # every frame encoded (or the writer failed) ...
        self._sender.join()  # ... and sent
        self._lent = None
        failed = self._sender.error is not None
        try:
            path = f"/v1/races/{self.race_id}/close"
            self._sender.post(path, json={"status": fmt.ABORTED if failed else status})
        except (httpx.HTTPError, ReplayError) as e:
            self._sender.fail(e)  # kept unless an earlier error is: stats() shows it
        error = self._sender.error
        if error is not None:
            raise WriterFailedError(
                f"race {self.race_id}: remote writer failed after {self._sender.acked} "
                f"acknowledged steps: {error}"
            ) from error

    # -- encoder thread ---------------------------------------------------------------

    def _run(self) -> None:
        try:  # a new thread starts on GPU 0, not the writer's
            with on_device(self._gpu) if self.device == "cuda" else contextlib.nullcontext():
                self._loop()
        except BaseException as e:  # reported through stats() and close()
            log.exception("race %s: remote writer failed", self.race_id)
            self._sender.fail(e)
        if not self._close_seen:  # the sender failed, or this thread did
            while self._queue.get() is not _CLOSE:
                pass  # unblock a waiting driver, until close()
        self._sender.finish()

    def _loop(self) -> None:
        """Encode the queued frames in batches of up to ENCODE_BATCH (fewer when the queue
        holds fewer: they are sent by time, not held for company) and hand them to the
        sender, until close() or the sender fails."""
        while True:
            batch: list[tuple[Any, dict[str, npt.NDArray[Any]], Any]] = []
            item = self._queue.get()
            with contextlib.suppress(queue.Empty):
                while item is not _CLOSE:
                    batch.append(item)
                    if len(batch) == ENCODE_BATCH:
                        break
                    item = self._queue.get_nowait()
            self._close_seen = item is _CLOSE
            if (batch and not self._encode(batch)) or self._close_seen:
                return

    def _encode(self, batch: list[tuple[Any, dict[str, Any], Any]]) -> bool:
        """Encode `batch` and hand it to the sender: False if the sender has failed."""
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
        return self._sender.put(blobs, [values for _, values, _ in batch])
