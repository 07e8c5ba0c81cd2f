"""The process writer: the driver copies frames into shared memory, another process encodes.

A writer thread in the driver's interpreter needs the GIL between its GIL-free
calls; a driver that keeps the GIL busy (a pure-Python game loop, a busy-wait for
the next frame) starves it, the ring fills and `append` blocks. `ProcessWriter`
moves all of it out: `append` copies the frame and its step values into a free
slot of a shared-memory `FrameRing` and advances the ring's head, nothing beyond
the copy (a frame drawn in its slot through `frame_buffer` is not even copied). The
writer process (`replay.writer_hub`) looks at the ring every few milliseconds (no
doorbell: waking it from `append` cost the driver 0.1-0.3 ms), encodes the frames
where they lie and records the race with the same `ThreadWriter` as in-process
writers: same encoder lanes, store format, flush interval and lease.

One writer process serves all the races of a driver (one per sub-env of a vector
env): it starts with the first race (a fresh interpreter running
`replay.writer_hub`: fork-safe, and unlike multiprocessing's spawn/forkserver it
never re-imports the driver's main module) and ends when the driver does.

Failure: if the writer process dies, the next `append` sees it (`waitpid`: the
process has exited), drops the frame and says why in `stats().error`; `close()` raises
`WriterFailedError`. If the driver dies (SIGKILL included), the writer process
sees its end of the socket close, commits every frame already posted to the ring
and marks the race aborted.

    with store.new_race(env="CarRacing-v3", writer="process") as writer:  # the default
        writer.append(frame, action=action, reward=reward)
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection, Pipe
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from replay import format as fmt
from replay.errors import WriterClosedError, WriterFailedError
from replay.frame_layout import copy_in
from replay.ring import DONE, STARTING, FrameRing, StepLayout
from replay.writer import QueuePolicy, StepSpec, Writer, WriterStats, check_settings

if TYPE_CHECKING:
    from replay.race import RaceInfo
    from replay.storage import ByteStorage

WriterKind = Literal["auto", "thread", "process"]
EXIT_WAIT_S = 10.0  # at exit, how long the driver waits for its writer process to finish
START_TIMEOUT_S = 60.0  # a fresh interpreter importing replay, on a loaded machine
_POLL_S = 0.0005  # how often a blocked append or a close looks at the ring again

# The writer process imports only the modules it uses: `replay` is registered as
# a bare package (its __init__, which imports the store, zarr and the HTTP client,
# is not run), which halves its start-up (1.0 vs 2.5 s on a loaded 2-core machine).
BOOTSTRAP = (
    "import importlib.util, sys; "
    "sys.modules['replay'] = importlib.util.module_from_spec(importlib.util.find_spec('replay')); "
    "from replay.writer_hub import main; main()"
)
# messages to the writer process: one op byte, then a race number (and a pickle)
OPEN, CLOSE = b"o", b"c"
RACE_NO = struct.Struct("<I")


def resolve_writer_kind(kind: str, device: str) -> Literal["thread", "process"]:
    """``auto``: a process for CPU frames, a thread for CUDA ones (see docs/design notes)."""
    if kind not in ("auto", "thread", "process"):
        raise ValueError(f"writer must be 'auto', 'thread' or 'process', not {kind!r}")
    if device == "cuda":
        if kind == "process":
            raise ValueError(
                "writer='process' encodes on the CPU; a CUDA writer encodes in a thread "
                "(nvImageCodec releases the GIL while nvJPEG runs): use writer='thread'"
            )
        return "thread"
    return "thread" if kind == "thread" else "process"


def no_stats(error: str | None = None) -> WriterStats:
    """The counters of a race nothing was recorded in (yet)."""
    return WriterStats(
        appended=0,
        written=0,
        dropped=0,
        queue_depth=0,
        encode_ms_mean=0.0,
        encode_ms_p99=0.0,
        bytes_written=0,
        shards_written=0,
        error=error,
    )


class WriterProcess:
    """The driver's handle on its writer process: start, post, liveness."""

    def __init__(self) -> None:
        started = time.perf_counter()
        ours, theirs = Pipe(duplex=True)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p or os.getcwd() for p in sys.path))
        self._proc = subprocess.Popen(
            [sys.executable, "-c", BOOTSTRAP, str(theirs.fileno()), str(os.getpid())],
            pass_fds=(theirs.fileno(),),
            env=env,
        )
        theirs.close()
        self._conn: Connection = ours
        self._lock = threading.Lock()
        self._next_race = 0
        self.owner = os.getpid()
        self.pid = self._proc.pid
        self.broken = False
        self._started = started
        self.start_s: float | None = None  # seconds from launch to ready

    def wait_ready(self) -> None:
        """Wait until the process has imported what it needs (once; the caller's lock)."""
        if self.start_s is not None:
            return
        if not self._conn.poll(START_TIMEOUT_S) or self._conn.recv_bytes() != b"ready":
            self._proc.kill()
            self.broken = True
            raise WriterFailedError(f"the writer process did not start in {START_TIMEOUT_S} s")
        self.start_s = time.perf_counter() - self._started

    def stop(self, timeout: float) -> None:
        """Close our end (the process commits what is posted and exits); wait up to `timeout`."""
        self._conn.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout)

    def exit_code(self) -> int | None:
        """None while the process runs, else its exit status (negative: killed by a signal)."""
        return self._proc.poll()

    def send(self, op: bytes, race_no: int, payload: bytes = b"") -> None:
        """One message; OSError once the process is gone."""
        try:
            with self._lock:
                self._conn.send_bytes(op + RACE_NO.pack(race_no) + payload)
        except OSError:
            self.broken = True  # its end is closed, even if it is not reaped yet
            raise

    def open(self, setup: dict[str, Any]) -> int:
        """Hand the process a race to record; returns its number."""
        with self._lock:
            self._next_race += 1
            race_no = self._next_race
        self.send(OPEN, race_no, pickle.dumps(setup))
        return race_no


_shared: WriterProcess | None = None
_shared_lock = threading.Lock()


def shared_writer_process() -> WriterProcess:
    """This driver's writer process, launched on first use (again if it died, or after a
    fork); call `wait_ready` before sending to it (meanwhile, allocate the ring)."""
    global _shared
    with _shared_lock:
        if (
            _shared is None
            or _shared.owner != os.getpid()
            or _shared.broken
            or _shared.exit_code() is not None
        ):
            if _shared is not None and _shared.owner == os.getpid():
                _shared.stop(timeout=EXIT_WAIT_S)  # reap the dead one
            _shared = WriterProcess()
        return _shared


@atexit.register
def _stop_shared_writer_process() -> None:
    """At the driver's exit: let the writer process finish what was posted, for a while."""
    if _shared is not None and _shared.owner == os.getpid():
        _shared.stop(timeout=EXIT_WAIT_S)


class ProcessWriter(Writer):
    """A writer whose encoder runs in the driver's writer process. Use `Store.new_race`."""

    def __init__(
        self,
        storage: ByteStorage,
        info: RaceInfo,
        specs: list[StepSpec],
        *,
        flush_interval: float,
        queue_size: int,
        on_full: QueuePolicy,
        enforce_capacity: bool,
    ) -> None:
        self.device = check_settings(flush_interval, queue_size, on_full, "cpu")
        self.race_id = info.race_id
        self._specs = {s.name: s for s in specs}
        self._shape = (info.height, info.width, 3)
        self._on_full = on_full
        self._slots = queue_size
        layout: StepLayout = {s.name: (s.dtype, s.shape) for s in specs}
        self._process = shared_writer_process()  # it boots while the ring is faulted in
        self.pid = self._process.pid
        self._ring = FrameRing.create(queue_size, self._shape, layout)
        self._head = 0
        self._lent: Any = None  # what frame_buffer lent: the slot at head, or the spare
        self._spare: Any = None  # lent when the ring is full
        self._appended = self._dropped = 0
        self._error: str | None = None
        self._closing = False
        self._final: WriterStats | None = None
        self._lock = threading.Lock()
        setup = {
            "ring": str(self._ring.path),
            "slots": queue_size,
            "shape": self._shape,
            "layout": layout,
            "storage": storage,
            "info": info,
            "specs": specs,
            "flush_interval": flush_interval,
            "enforce_capacity": enforce_capacity,
        }
        try:
            with _shared_lock:
                self._process.wait_ready()
            self._race_no = self._process.open(setup)
            while self._ring.state == STARTING and self._alive():
                time.sleep(_POLL_S)
        except BaseException:
            self._ring.unlink()
            raise
        if self._error is not None or self._ring.failed:
            self._ring.unlink()
            raise WriterFailedError(f"race {self.race_id}: {self.stats().error}")

    def _alive(self) -> bool:
        """False (and the reason in `_error`) once the writer process has died."""
        if self._error is not None:
            return False
        code = self._process.exit_code()
        if code is None:
            return True
        self._died(code)
        return False

    def _died(self, code: int | None) -> None:
        status = "" if code is None else f" with status {code}"
        self._error = self._error or f"WriterProcessDied: writer process {self.pid} exited{status}"

    def frame_buffer(self) -> Any:
        if self._closing:
            raise WriterClosedError(f"race {self.race_id}: frame_buffer() after close()")
        if self._lent is None:
            if self._slot_free():
                self._lent = self._ring.frames[self._head % self._slots]
            else:
                if self._spare is None:
                    self._spare = np.empty(self._shape, np.uint8)
                self._lent = self._spare
        return self._lent

    def append(self, frame: Any, **steps: Any) -> bool:
        if self._closing:
            raise WriterClosedError(f"race {self.race_id}: append() after close()")
        values = self._check_steps(steps)
        ring, slot = self._ring, self._head % self._slots
        # drawn in the slot at head (frame_buffer waited for it): nothing to copy
        drawn = self._lent is not None and frame is self._lent and frame is not self._spare
        if not drawn:
            frame, _ = self._check_frame(frame)
        self._lent = None  # any append ends the loan
        if not (self._alive() and self._slot_free()):
            self._dropped += 1
            return False
        layout = None if drawn else copy_in(ring.frames[slot], frame)
        ring.layouts[slot] = layout.as_row() if layout is not None else 0
        for name, column in ring.steps.items():
            column[slot] = values.get(name, 0)
        self._head = ring.head = self._head + 1
        self._appended += 1
        return True

    def _slot_free(self) -> bool:
        """Whether the slot at head is free, after waiting for it (``on_full="block"``);
        False: drop the frame (the ring is full under "drop", or the writer failed)."""
        ring = self._ring
        while self._error is not None or ring.failed or self._head - ring.tail >= self._slots:
            if self._error is not None or ring.failed or self._on_full == "drop":
                return False
            if self._alive():
                time.sleep(_POLL_S)
        return True

    def stats(self) -> WriterStats:
        if self._final is not None:
            return self._final
        theirs = self._ring.read_stats() or no_stats()
        self._alive()
        return dataclasses.replace(
            theirs,
            appended=self._appended,
            dropped=self._dropped + theirs.dropped,
            queue_depth=self._head - self._ring.tail + theirs.queue_depth,
            error=theirs.error or self._error,
        )

    def close(self, status: str = fmt.COMPLETE) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
        if self._alive():
            with contextlib.suppress(OSError):
                self._process.send(CLOSE, self._race_no, status.encode())
            while self._ring.state != DONE and self._alive():
                time.sleep(_POLL_S)
        self._final = self.stats()
        self._ring.close()
        error = self._final.error
        if error is not None:
            raise WriterFailedError(
                f"race {self.race_id}: writer process failed after {self._final.written} "
                f"committed frames: {error}"
            )
