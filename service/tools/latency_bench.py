"""Latency benchmarks of ``replay serve`` that report ratios measured in the same run:

    python -m service.tools.latency_bench ./replay-data
    waiters(store)      # an unrelated batch with 0 / 8 / 64 rate-limited requests waiting
    round_trip(store)   # a small request on a reused connection, vs plain uvicorn

`waiters`: N clients loop ``POST /v1/sample {"min_size": 10**12}`` (learners waiting
for their actors); meanwhile another client draws small batches on one kept-alive
connection, and its median latency is compared with none waiting. `round_trip`:
``GET /v1/live`` on one kept-alive connection, against the same route of a bare
FastAPI app under plain ``uvicorn`` (its defaults) on the same machine. The servers
run in child processes on 127.0.0.1; `checkout` serves the code of another checkout
of the project (run from there, on its ``PYTHONPATH``), to measure before a change.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import click
import httpx
from fastapi import FastAPI

from service.tools.process import ServerProcess, wait_healthy

#: A bare app for plain uvicorn: the baseline of `round_trip`.
plain_app = FastAPI()


@plain_app.get("/v1/live")
def _live() -> dict[str, str]:
    return {"status": "ok"}


@plain_app.get("/v1/health")
def _health() -> dict[str, str]:
    return {"status": "ok"}


def _server(store: str | os.PathLike[str], checkout: str | None) -> ServerProcess:
    """``replay serve`` of this code, or of `checkout` (run from there: ``python -m``
    puts the working directory first on the path)."""
    if checkout is None:
        return ServerProcess(store)
    where = os.path.abspath(checkout)
    return ServerProcess(
        os.path.abspath(store), env={"PYTHONPATH": where}, run_under=["env", f"--chdir={where}"]
    )


def _median_ms(call: Callable[[], object], n: int) -> float:
    call()  # warm
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


def _hold(url: str, stop: threading.Event) -> None:
    """One waiting learner: asks for a batch the rate limit holds, again and again."""
    body = {"batch_size": 4, "min_size": 10**12, "timeout": 2}
    with httpx.Client(base_url=url, timeout=120) as http:
        while not stop.is_set():
            try:
                http.post("/v1/sample", json=body)
            except httpx.TransportError:  # the server is going away
                return


@contextlib.contextmanager
def _holders(url: str, n: int) -> Iterator[None]:
    """`n` waiting learners, all waiting (after a second) while the block runs."""
    stop = threading.Event()
    threads = [threading.Thread(target=_hold, args=(url, stop)) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0 if n else 0.0)
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()


def waiters(
    store: str | os.PathLike[str],
    counts: tuple[int, ...] = (0, 8, 64),
    batches: int = 20,
    checkout: str | None = None,
) -> dict[str, float]:
    """Median latency (ms) of a 4-frame batch with each count of waiters, and the
    ratios to none (``ratio_64`` is the one the target is for: <= 2)."""
    out: dict[str, float] = {}
    with (
        _server(store, checkout) as server,
        httpx.Client(base_url=server.url, timeout=120) as http,
    ):
        seeds = iter(range(10**9))

        def batch() -> None:
            http.post("/v1/sample", json={"batch_size": 4, "seed": next(seeds)}).raise_for_status()

        for n in counts:
            with _holders(server.url, n):
                out[f"ms_{n}"] = _median_ms(batch, batches)
    for n in counts[1:]:
        out[f"ratio_{n}"] = round(out[f"ms_{n}"] / out[f"ms_{counts[0]}"], 2)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def round_trip(
    store: str | os.PathLike[str], n: int = 200, checkout: str | None = None
) -> dict[str, float]:
    """Median ms of ``GET /v1/live`` on a reused connection: ``replay serve`` and plain
    uvicorn, and their ratio."""
    with _server(store, checkout) as server, httpx.Client(base_url=server.url) as http:
        served = _median_ms(lambda: http.get("/v1/live").raise_for_status(), n)
    port = _free_port()
    app = "service.tools.latency_bench:plain_app"
    command = [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--log-level", "warning"]
    plain = subprocess.Popen(command)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url)
        with httpx.Client(base_url=url) as http:
            bare = _median_ms(lambda: http.get("/v1/live").raise_for_status(), n)
    finally:
        plain.terminate()
        plain.wait(10)
    return {"serve_ms": served, "plain_uvicorn_ms": bare, "ratio": round(served / bare, 2)}


@click.command()
@click.argument("store")
@click.option("--checkout", default=None, help="Serve the code of this checkout instead.")
@click.option("--batches", default=20, show_default=True, help="Timed batches per count.")
def main(store: str, checkout: str | None, batches: int) -> None:
    """Print both benchmarks as JSON."""
    result = {
        "waiters": waiters(store, batches=batches, checkout=checkout),
        "round_trip": round_trip(store, checkout=checkout),
    }
    click.echo(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
