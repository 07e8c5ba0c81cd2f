"""The writer process itself, seen from the driver: started once, shared by every race.

One writer process serves all the races of a driver (one per sub-env of a vector
env): `shared_writer_process()` starts it with the first race (a fresh interpreter
running `replay.write.process_main`: fork-safe, and unlike multiprocessing's
spawn/forkserver it never re-imports the driver's main module) and it ends when the
driver does. `WriterProcess.send` is the one way to talk to it: an op byte (`OPEN`,
`CLOSE`), a race number, and for `OPEN` a pickled `RaceSetup`; `parse` reads a message
back in the writer process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, Pipe
from typing import TYPE_CHECKING

from replay.errors import WriterFailedError

if TYPE_CHECKING:
    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec
    from replay.write.ring import StepTable
    from replay.write.settings import WriterSettings
    from replay.write.sink import Destination


EXIT_WAIT_S = 10.0  # at exit, how long the driver waits for its writer process to finish

START_TIMEOUT_S = 60.0  # a fresh interpreter importing replay, on a loaded machine

# The writer process imports only the modules it uses: `replay` is registered as
# a bare package (its __init__, which imports the store, zarr and the HTTP client,
# is not run), which halves its start-up (1.0 vs 2.5 s on a loaded 2-core machine).
BOOTSTRAP = (
    "import importlib.util, sys; "
    "sys.modules['replay'] = importlib.util.module_from_spec(importlib.util.find_spec('replay')); "
    "from replay.write.process_main import main; main()"
)

# messages to the writer process: one op byte, then a race number (and a pickle)
OPEN, CLOSE = b"o", b"c"

RACE_NO = struct.Struct("<I")


@dataclass(frozen=True)
class RaceSetup:
    """What the writer process needs to record a race (the payload of `OPEN`): the ring's
    path and shape, where and what to write (`destination`: a store's storage, or a
    replay service), and the writer's settings (with `queue_size` the ring's slots)."""

    ring: str
    shape: tuple[int, int, int]
    steps: StepTable
    destination: Destination
    info: RaceInfo
    specs: list[StepSpec]
    settings: WriterSettings


def parse(message: bytes) -> tuple[bytes, int, bytes]:
    """A message as sent by `WriterProcess.send`: (op, race number, payload)."""
    return message[:1], RACE_NO.unpack_from(message, 1)[0], message[1 + RACE_NO.size :]


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
        self._ready_lock = threading.Lock()
        self._next_race = 0
        self.owner = os.getpid()
        self.pid = self._proc.pid
        self.broken = False
        self._started = started
        self.start_s: float | None = None  # seconds from launch to ready

    def wait_ready(self) -> None:
        """Wait until the process has imported what it needs (the first caller waits for
        its "ready"; races opened meanwhile from other threads wait for that one)."""
        with self._ready_lock:
            self._wait_ready()

    def _wait_ready(self) -> None:
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

    def open(self, setup: RaceSetup) -> int:
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
