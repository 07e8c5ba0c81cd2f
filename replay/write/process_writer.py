"""The process writer: the driver copies frames into shared memory, another process encodes.

A writer thread in the driver's interpreter needs the GIL between its GIL-free
calls; a driver that keeps the GIL busy (a pure-Python game loop, a busy-wait for
the next frame) starves it, the ring fills and `append` blocks. `ProcessWriter`
moves all of it out: `append` copies the frame and its step values into a free
slot of a shared-memory `FrameRing` and advances the ring's head, nothing beyond
the copy (a frame drawn in its slot through `frame_buffer` is not even copied). The
writer process (`replay.write.process_main`) looks at the ring every few milliseconds (no
doorbell: waking it from `append` cost the driver 0.1-0.3 ms), encodes the frames
where they lie and records the race with the same `ThreadWriter` as in-process
writers: same encoder lanes, store format, flush interval and lease.

One writer process serves all the races of a driver (one per sub-env of a vector
env): it starts with the first race (a fresh interpreter running
`replay.write.process_main`: fork-safe, and unlike multiprocessing's spawn/forkserver it
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

import contextlib
import dataclasses
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from replay.codec.pixel_order import copy_in
from replay.errors import WriterClosedError, WriterFailedError
from replay.format import spec as fmt
from replay.write.process_handle import CLOSE, RaceSetup, shared_writer_process
from replay.write.ring import DONE, STARTING, FrameRing, step_table
from replay.write.writer import Writer, WriterStats

if TYPE_CHECKING:
    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec
    from replay.write.settings import WriterSettings
    from replay.write.sink import Destination

_POLL_S = 0.0005  # how often a blocked append or a close looks at the ring again


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


class ProcessWriter(Writer):
    """A writer whose encoder runs in the driver's writer process. Use `Store.new_race`
    (`settings` resolved: CPU frames)."""

    def __init__(
        self,
        destination: Destination,
        info: RaceInfo,
        specs: list[StepSpec],
        settings: WriterSettings,
    ) -> None:
        super().__init__(info, specs, settings)
        steps = step_table(specs)
        self._process = shared_writer_process()  # it boots while the ring is faulted in
        self.pid = self._process.pid
        self._ring = FrameRing.create(self._slots, self._shape, steps)
        self._head = 0
        self._lent: Any = None  # what frame_buffer lent: the slot at head, or the spare
        self._spare: Any = None  # lent when the ring is full
        self._appended = self._dropped = 0
        self._error: str | None = None
        self._closing = False
        self._final: WriterStats | None = None
        self._lock = threading.Lock()
        # the writer process encodes into the ring as it is: its slots, blocking
        theirs = dataclasses.replace(settings, queue_size=self._slots, on_full="block")
        ring = str(self._ring.path)
        setup = RaceSetup(ring, self._shape, steps, destination, info, specs, theirs)
        try:
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
        status = fmt.race_ending(status)
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
