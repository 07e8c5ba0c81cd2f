"""`ChunkSender`: how a race recorded through a service sends its frames, on a thread of its own.

The writer's encoder thread (through `replay.remote.service_sink.ServiceSink`) `put`s
encoded frames (with their step values) at the end of a pending list; this thread sends
them from its head in chunks (`replay.remote.chunks`), one chunk in flight at a time,
and drops a frame once the service acknowledges it (committed). So the encoder keeps
encoding while a chunk is on its way and being committed, instead of waiting for each
answer. A chunk goes when the pending frames fill one (``max_chunk_bytes``), when
`flush_interval` has passed (every frame pending then is sent), and when the encoder has
finished; an empty chunk renews the race's lease after 5 flush intervals without one.
The pending list is bounded in bytes (`PENDING_CHUNKS` chunks): past it `put` waits, the
writer's ring fills and `append` applies ``on_full``.

A chunk whose answer is lost or refused as busy (429/503) is sent again as the same
bytes from the same first step (`RetryPolicy`), so acknowledged always means committed.
The first error of either thread is kept in `error` (`fail`) and stops both.

    sender = ChunkSender(http, race_id, specs, max_chunk_bytes=16 << 20, ...)
    sender.start()
    sender.put(blobs, steps)      # False once the sender has failed
    sender.finish(); sender.join()
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import numpy.typing as npt

from replay.errors import WriterFailedError
from replay.remote.chunks import EXPECTED_STEP_HEADER, MAX_FRAMES, MEDIA_TYPE, Chunk, pack
from replay.remote.retries import RetryPolicy, error_of

if TYPE_CHECKING:
    from replay.format.race_schema import StepSpec

log = logging.getLogger(__name__)
CHUNK_OVERHEAD = 4096  # bytes of a chunk's header beyond PER_STEP_OVERHEAD a step
PER_STEP_OVERHEAD = 24  # a frame's length in the header, the padding of its step values
BUSY = (429, 503)  # answers that mean "not now": the chunk is sent again
#: Encoded frames a writer holds, in chunks: one in flight, the next filling, one spare.
PENDING_CHUNKS = 3
#: Flush intervals without a chunk after which an empty one renews the race's lease.
HEARTBEAT_INTERVALS = 5

Row = tuple[bytes, dict[str, npt.NDArray[Any]]]


class ChunkSender:
    """Sends race `race_id`'s encoded frames through `http` in chunks of at most
    `max_chunk_bytes`, at least every `flush_interval` s; `acked` steps are committed,
    `nbytes` of their frames. `specs` are the race's step arrays (one left out of a
    step is zeros)."""

    def __init__(
        self,
        http: httpx.Client,
        race_id: str,
        specs: dict[str, StepSpec],
        *,
        max_chunk_bytes: int,
        flush_interval: float,
        retry: RetryPolicy,
    ) -> None:
        self._http, self._race_id, self._specs = http, race_id, specs
        #: bytes one step adds to a chunk beyond its frame
        self._step_nbytes = PER_STEP_OVERHEAD + sum(
            s.dtype.itemsize * int(np.prod(s.shape, dtype=np.int64)) for s in specs.values()
        )
        self._max_chunk, self._flush_interval, self._retry = max_chunk_bytes, flush_interval, retry
        self._limit = PENDING_CHUNKS * max_chunk_bytes
        self._cond = threading.Condition()
        self._pending: list[Row] = []  # encoded, not yet acknowledged: from step `acked` on
        self._pending_nbytes = 0
        self._finished = False
        self.error: BaseException | None = None
        self.acked = self.nbytes = 0
        self._thread = threading.Thread(
            target=self._run, name=f"replay-remote-send-{race_id}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def put(self, blobs: list[bytes], steps: list[dict[str, npt.NDArray[Any]]]) -> bool:
        """Add encoded frames after the pending ones, waiting while those fill
        `PENDING_CHUNKS` chunks; False (nothing added) once the sender has failed."""
        with self._cond:
            while self._pending_nbytes >= self._limit and self.error is None:
                self._cond.wait()
            if self.error is not None:
                return False
            self._pending.extend(zip(blobs, steps, strict=True))
            self._pending_nbytes += sum(len(blob) for blob in blobs)
            self._cond.notify_all()
            return True

    def finish(self) -> None:
        """No more frames: the thread sends what is pending, then ends."""
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Keep `error` (the first one) and stop sending and encoding."""
        with self._cond:
            self.error = self.error or error
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # reported through the writer's stats() and close()
            log.exception("race %s: remote writer failed", self._race_id)
            self.fail(e)

    def _loop(self) -> None:
        """Send whenever a chunk is full, `flush_interval` has passed or the encoder has
        finished; `due` frames (those pending at the last flush time) go at once."""
        deadline = time.monotonic() + self._flush_interval
        last_sent, due = time.monotonic(), 0
        while True:
            with self._cond:
                while not self._should_send(deadline, due):
                    self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
                if self.error is not None or (self._finished and not self._pending):
                    return
                now = time.monotonic()
                if now >= deadline:
                    due, deadline = len(self._pending), now + self._flush_interval
                    if not due and now - last_sent < HEARTBEAT_INTERVALS * self._flush_interval:
                        continue
                rows = self._chunk_rows()
            due = max(0, due - self._send(Chunk(self.acked, *self._columns(rows))))
            last_sent = time.monotonic()

    def _should_send(self, deadline: float, due: int) -> bool:
        return (
            self.error is not None
            or self._finished
            or due > 0
            or self._pending_nbytes >= self._max_chunk
            or time.monotonic() >= deadline
        )

    def _chunk_rows(self) -> list[Row]:
        """The pending frames from the head that fit one chunk (none: a heartbeat)."""
        n, size = 0, CHUNK_OVERHEAD
        while n < min(len(self._pending), MAX_FRAMES):
            frame_size = len(self._pending[n][0]) + self._step_nbytes
            if size + frame_size > self._max_chunk:
                break
            size += frame_size
            n += 1
        if n == 0 and self._pending:
            raise WriterFailedError(
                f"race {self._race_id}: a frame of {len(self._pending[0][0])} bytes does not "
                f"fit the service's max_chunk_bytes ({self._max_chunk}); raise "
                "REPLAY_MAX_CHUNK_BYTES on the service"
            )
        return self._pending[:n]

    def _columns(self, rows: list[Row]) -> tuple[list[bytes], dict[str, npt.NDArray[Any]]]:
        """The frames of `rows` and their step values, one array per step spec."""
        steps = {
            name: np.stack([r[1].get(name, np.zeros(s.shape, s.dtype)) for r in rows])
            if rows
            else np.zeros((0, *s.shape), s.dtype)
            for name, s in self._specs.items()
        }
        return [blob for blob, _ in rows], steps

    def _send(self, chunk: Chunk) -> int:
        """POST one chunk until the service acknowledges it, drop what it committed from
        the pending frames; returns how many that was."""
        body = b"".join(pack(chunk))  # packed once: every try sends the same bytes
        path = f"/v1/races/{self._race_id}/chunks"
        response = self.post(path, content=body, headers={"Content-Type": MEDIA_TYPE})
        length = int(response.json()["length"])
        with self._cond:
            if length < chunk.first_step or length > chunk.first_step + len(self._pending):
                raise WriterFailedError(
                    f"race {self._race_id}: the service has {length} steps, but "
                    f"{chunk.first_step} were acknowledged and {len(self._pending)} more "
                    "are pending"
                )
            done = length - chunk.first_step
            nbytes = sum(len(blob) for blob, _ in self._pending[:done])
            del self._pending[:done]
            self._pending_nbytes -= nbytes
            self.nbytes += nbytes
            self.acked = length
            self._cond.notify_all()
        return done

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST, tried again on a broken connection or a busy answer (429, 503: the
        service's chunk bytes in flight are full, or it restarts) for `retry_for` s,
        waiting as ``Retry-After`` asks: the pending frames then fill, the encoder
        waits and `append` applies ``on_full``. A 409 naming the expected step answers
        like an acknowledgement of that length."""
        response = self._retry.call(
            lambda: self._http.post(path, **kwargs),
            where=f"race {self._race_id}: POST {path}",
            retry_on=(httpx.TransportError,),  # every insert call may be repeated
            busy=lambda r: r.status_code in BUSY,
        )
        if response.status_code == 409 and EXPECTED_STEP_HEADER in response.headers:
            return httpx.Response(200, json={"length": int(response.headers[EXPECTED_STEP_HEADER])})
        if response.status_code >= 400:
            raise error_of(response)
        return response
