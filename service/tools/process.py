"""``replay serve`` in a child process on 127.0.0.1, for benchmarks, soaks and tests.

    with ServerProcess("./replay-data") as server:
        Client(server.url).sample()
        server.peak_rss, server.last_rss      # bytes, sampled every 50 ms

The child is exactly what users run (uvicorn through ``replay serve``), on a free
port unless `port` names one; it is started without a token (loopback only)
unless `env` sets ``REPLAY_TOKEN``, and waited for until ``/v1/health`` answers.
Tests take the other options::

    server = ServerProcess(store, "--access-log", port=port, log_level="debug",
                           env={"REPLAY_TOKEN": token}, stderr=subprocess.STDOUT)
    ...
    server.close(signal.SIGKILL)          # a crash; a new ServerProcess on `port` restarts it
    assert token not in server.output()   # everything it printed (stderr=STDOUT: its log too)
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import httpx
import psutil

from replay.closing import Closing

#: Lines of the child's output that `ServerProcess.output` keeps (the last ones).
OUTPUT_LINES = 10_000


def wait_healthy(url: str, timeout: float = 30.0) -> None:
    """Poll ``GET {url}/v1/health`` until it answers 200; RuntimeError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not become healthy in {timeout} s")
        time.sleep(0.05)


class ServerProcess(Closing):
    """``replay serve STORE ARGS...`` in a child process, its memory sampled in a thread.

    `port` 0 picks a free one; `env` is added to this process's environment (less
    ``REPLAY_TOKEN``); `log_level` is ``replay serve --log-level``. `stderr` is where
    the child's log goes: inherited (None), ``subprocess.DEVNULL``, an open file, or
    ``subprocess.STDOUT`` to collect it with the rest of its output in `output()`.
    Stdout is always read (by a thread, so a chatty child never blocks on a full pipe).
    `run_under` prefixes the command (``setpriv ...``: a server with fewer privileges).
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        *args: str,
        port: int = 0,
        env: Mapping[str, str] | None = None,
        log_level: str = "warning",
        stderr: int | IO[Any] | None = None,
        timeout: float = 30.0,
        run_under: Sequence[str] = (),
    ) -> None:
        if stderr == subprocess.PIPE:
            raise ValueError("stderr=PIPE would never be read; use subprocess.STDOUT")
        environ = {k: v for k, v in os.environ.items() if k != "REPLAY_TOKEN"}
        environ.update(env or {})
        command = [
            *run_under,
            sys.executable,
            "-m",
            "service.cli",
            os.fspath(store),
            "--host",
            "127.0.0.1",
        ]
        command += ["--port", str(port), "--log-level", log_level, *args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=environ
        )
        self._lines: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
        try:
            self.url = self._read_url()
            wait_healthy(self.url, timeout)
        except BaseException:
            self.process.kill()
            self.process.communicate()
            raise
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self._ps = psutil.Process(self.process.pid)
        self.peak_rss = self.last_rss = 0
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def __repr__(self) -> str:
        return f"ServerProcess({self.url!r}, pid={self.process.pid})"

    def _read_url(self) -> str:
        """The URL from the child's ``replay: serving STORE at URL`` line."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)
            if line.startswith("replay: serving") and " at " in line:
                return line.split(" at ")[1].split()[0].rstrip("/")
        raise RuntimeError(f"replay serve did not start: {''.join(self._lines)[-2000:]!r}")

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.last_rss = self.rss()
            except psutil.Error:  # the process ended
                return
            self.peak_rss = max(self.peak_rss, self.last_rss)

    def rss(self) -> int:
        """Resident memory of the server process now, in bytes."""
        return int(self._ps.memory_info().rss)

    def output(self) -> str:
        """What the child printed on stdout (and its log, with ``stderr=STDOUT``), so far."""
        return "".join(self._lines)

    def close(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` (SIGTERM: a clean shutdown; SIGKILL: a crash), wait, return the exit code.

        A child still running 10 s after SIGTERM is killed.
        """
        self._stop.set()
        self._watcher.join()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode
