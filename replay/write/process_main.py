"""The writer process: records the races of one driver from its shared-memory rings.

Started by `replay.write.process_writer` (``python -c BOOTSTRAP FD PARENT_PID``, FD:
its end of a socket to the driver; ``python -m replay.write.process_main FD PARENT_PID``
works too). For each race the driver opens, a
`ThreadWriter` (the in-process writer: encoder lanes, shards, flush interval,
lease) records it, and a feeder thread looks at the race's `FrameRing` every
`FEED_POLL_S` while frames come or wait, less often when the ring is idle (the
driver rings no doorbell: waking this process cost its `append` 0.1-0.3 ms), posts
the new slots to that writer, which encodes the frames where they lie in shared
memory (no copy) and frees each slot (advances `tail`) once encoded, and publishes
the writer's stats back into the ring.

The main thread reads the driver's messages. When the socket closes (the driver
exited or was killed) or the parent pid changes, every open race gets all frames
already posted to its ring, is closed as aborted, and the process exits: a
driver that dies loses nothing it appended.

It ignores SIGINT (Ctrl-C reaches the whole process group; the driver closes its
races) and takes SIGTERM as the driver's end: it commits what was posted and exits.

The process runs at a lower priority (nice 10) so that, on a machine with few
cores, the driver wins the CPU whenever both want it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

from replay.codec.pixel_order import Layout
from replay.errors import WriterFailedError
from replay.format import spec as fmt
from replay.write.process_handle import CLOSE, OPEN, RaceSetup, parse
from replay.write.process_writer import no_stats
from replay.write.ring import DONE, RUNNING, FrameRing
from replay.write.thread_writer import ThreadWriter

log = logging.getLogger(__name__)
PARENT_CHECK_S = 0.5  # how often the parent pid is checked besides the socket
PUBLISH_S = 0.05  # stats are published at least this often while a race is open
# How often a feeder looks for new frames: a frame waits up to this long before its
# encode starts, a small part of the ring's time to fill (32 slots: 1 s at 30 FPS).
# The wait doubles each time no frame came and none waits for its encode (a driver
# blocked on a full ring waits for the next look), up to IDLE_POLL_S: 8 idle races
# cost the writer process 3.6-4% of a core, not 12% (4.4% with the first version's
# doorbell).
FEED_POLL_S = 0.005
IDLE_POLL_S = 0.08


class RaceFeeder:
    """One race in the writer process: its ring, its `ThreadWriter` and a feeder thread."""

    def __init__(self, setup: RaceSetup) -> None:
        self._slots = setup.settings.slots(setup.info.fps)  # the ring's (queue_size)
        self.ring = FrameRing.attach(Path(setup.ring), self._slots, setup.shape, setup.steps)
        self._posted = 0  # frames handed to the writer (`ring.tail`: frames encoded)
        self._status: str | None = None
        self._wake = threading.Event()
        self._failure: str | None = None
        self.writer: ThreadWriter | None = None
        try:
            self.writer = ThreadWriter(
                setup.destination,
                setup.info,
                setup.specs,
                setup.settings,
                ring=self.ring.frames,  # encoded where the driver put them
                on_free=self._freed,
            )
        except Exception as e:  # the driver raises it from new_race
            log.exception("writer process: cannot start race %s", setup.info.race_id)
            self.ring.publish(no_stats(f"{type(e).__name__}: {e}"), failed=True)
            self.ring.state = DONE
            self.ring.close()
            return
        self._thread = threading.Thread(target=self._run, name="replay-feeder")
        self._thread.start()
        self.ring.state = RUNNING

    def finish(self, status: str, reason: str | None = None) -> None:
        """Commit what is posted, close the race as `status`, and end the feeder thread;
        `reason` (the writer process ended the race itself) becomes the driver's error."""
        self._failure = self._failure or reason
        self._status = status
        self._wake.set()

    def join(self) -> None:
        if self.writer is not None:
            self._thread.join()

    def _run(self) -> None:
        status = fmt.ABORTED
        published, poll = 0.0, FEED_POLL_S
        try:
            while True:
                self._wake.wait(poll)
                self._wake.clear()
                finish = self._status
                taken = self._drain()
                busy = taken or self.ring.tail < self._posted
                poll = FEED_POLL_S if busy else min(2 * poll, IDLE_POLL_S)
                now = time.monotonic()
                if taken or finish is not None or now - published >= PUBLISH_S:
                    self._publish()
                    published = now
                if finish is not None:
                    status = finish
                    break
        except Exception as e:  # never leave the driver waiting on a dead feeder
            log.exception("writer process: feeding race %s failed", self.ring.path.name)
            self._failure = f"{type(e).__name__}: {e}"
        self._close(status)

    def _drain(self) -> int:
        """Hand the frames posted since the last call to the writer; returns how many."""
        assert self.writer is not None
        ring = self.ring
        head = ring.head
        for n in range(self._posted, head):
            slot = n % self._slots
            steps = {name: column[slot].copy() for name, column in ring.steps.items()}
            layout = Layout.from_row(ring.layouts[slot])
            if not self.writer.post(slot, steps, layout):  # failed: tell the driver now
                self._publish()
        taken, self._posted = head - self._posted, head
        return taken

    def _freed(self, slot: int) -> None:
        """The writer encoded the frame in `slot` (slots are freed in order)."""
        self.ring.tail += 1

    def _publish(self) -> None:
        assert self.writer is not None
        stats = self.writer.stats()
        if self._failure is not None:
            stats = dataclasses.replace(stats, error=stats.error or self._failure)
        self.ring.publish(stats, failed=stats.error is not None)

    def _close(self, status: str) -> None:
        assert self.writer is not None
        try:
            self.writer.close(status)
        except WriterFailedError:
            pass  # the error is in the stats published below
        except Exception:
            log.exception("writer process: closing race %s failed", self.writer.race_id)
        self._publish()
        self.ring.state = DONE
        # Unmap now: the driver reads the last stats through its own mapping, and a
        # driver that records race after race must not pile up one ring per race here.
        self.ring.close()

    @property
    def done(self) -> bool:
        return self.writer is None or not self._thread.is_alive()


def serve(conn: Connection, parent: int, stop: threading.Event) -> None:
    """Record the races the driver opens until the driver is gone (or `stop` is set)."""
    races: dict[int, RaceFeeder] = {}
    closing: list[RaceFeeder] = []
    while not stop.is_set():
        try:
            if not conn.poll(PARENT_CHECK_S):
                if os.getppid() != parent:
                    break
                continue
            message = conn.recv_bytes()
        except (EOFError, OSError):
            break
        op, race_no, payload = parse(message)
        if op == OPEN:
            races[race_no] = RaceFeeder(pickle.loads(payload))
        elif op == CLOSE:
            feeder = races.pop(race_no)
            feeder.finish(payload.decode())
            closing = [f for f in closing if not f.done]  # forget the races that ended
            closing.append(feeder)
    reason = "the writer process was stopped (SIGTERM)" if stop.is_set() else "the driver died"
    for feeder in races.values():  # keep everything the driver appended
        feeder.finish(fmt.ABORTED, f"WriterProcessStopped: {reason}; race closed as aborted")
    for feeder in [*closing, *races.values()]:
        feeder.join()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="replay writer process: %(message)s")
    fd, parent = int(sys.argv[1]), int(sys.argv[2])
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 10)  # threads started from now on inherit it
    # Ctrl-C in a terminal reaches the whole process group: the driver handles it (its
    # with-block closes the race); SIGTERM commits what was posted, then exits.
    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    conn = Connection(fd)
    conn.send_bytes(b"ready")
    serve(conn, parent, stop)


if __name__ == "__main__":
    main()
