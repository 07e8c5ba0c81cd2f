"""``replay serve`` in a child process on 127.0.0.1, for benchmarks and soaks.

    with ServerProcess("./replay-data") as server:
        Client(server.url).sample()
        server.peak_rss, server.last_rss      # bytes, sampled every 50 ms

The child is exactly what users run (uvicorn through ``replay serve``), on a free
port; it is started without a token (loopback only) and waited for until healthy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from types import TracebackType

import httpx
import psutil


class ServerProcess:
    """``replay serve`` in a child process, with its memory sampled in a thread."""

    def __init__(self, store: str) -> None:
        command = [sys.executable, "-m", "service.cli", store, "--host", "127.0.0.1"]
        self.process = subprocess.Popen(
            [*command, "--port", "0", "--log-level", "warning"],
            stdout=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "REPLAY_TOKEN"},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if " at " not in line:
            self.process.kill()
            raise RuntimeError(f"replay serve did not start: {line!r}")
        self.url = line.split(" at ")[1].split()[0].rstrip("/")
        self._wait_healthy(timeout=30)
        self._ps = psutil.Process(self.process.pid)
        self.peak_rss = self.last_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.process.kill()
                raise RuntimeError(f"{self.url} did not become healthy in {timeout} s")
            time.sleep(0.05)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.last_rss = int(self._ps.memory_info().rss)
            except Exception:  # the process ended
                return
            self.peak_rss = max(self.peak_rss, self.last_rss)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
