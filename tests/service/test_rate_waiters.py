"""Rate-limited requests wait without a batch slot or a worker thread (issue 23,
item 3), and their number is bounded on its own. How fast an unrelated batch is
while they wait is a benchmark (`service.tools.latency_bench`, docs/benchmarks.md)."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
from service_helpers import ThreadServer

from service.settings import Settings
from service.state import ServiceState

WAITER = {"batch_size": 4, "min_size": 10**12, "timeout": 30}


def _wait_for(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _waiters(pool: ThreadPoolExecutor, url: str, n: int) -> list[Future[httpx.Response]]:
    def wait() -> httpx.Response:
        return httpx.post(f"{url}/v1/sample", json=WAITER, timeout=60)

    return [pool.submit(wait) for _ in range(n)]


def test_64_waiters_hold_no_slot_and_an_unrelated_batch_is_served(served_store: Path) -> None:
    settings = Settings(store=served_store, max_rate_wait_s=3.0, max_batches_in_flight=8)
    with ThreadServer(settings) as server, ThreadPoolExecutor(64) as pool:
        state: ServiceState = server.app.state.replay
        waiting = _waiters(pool, server.url, 64)
        _wait_for(lambda: state.rate_waiters == 64, "64 waiting requests")
        assert state.batch_slots.free == 8  # waiting takes no batch slot
        for seed in range(3):  # nor worker threads: these need both
            r = httpx.post(f"{server.url}/v1/sample", json={"batch_size": 4, "seed": seed})
            assert r.status_code == 200, r.text
        assert state.rate_waiters == 64  # still waiting
        for future in waiting:
            r = future.result()
            assert r.status_code == 429, r.text  # past max_rate_wait_s
            assert r.json()["error"] == "RateLimitedError"
            assert "min_size=1000000000000" in r.json()["detail"]
            assert int(r.headers["Retry-After"]) >= 1
        assert (state.rate_waiters, state.batch_slots.free) == (0, 8)


def test_waiters_past_the_bound_are_503_with_retry_after(served_store: Path) -> None:
    settings = Settings(store=served_store, max_rate_wait_s=3.0, max_rate_waiters=4)
    with ThreadServer(settings) as server, ThreadPoolExecutor(4) as pool:
        state: ServiceState = server.app.state.replay
        waiting = _waiters(pool, server.url, 4)
        _wait_for(lambda: state.rate_waiters == 4, "4 waiting requests")
        r = httpx.post(f"{server.url}/v1/sample", json=WAITER, timeout=30)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        assert "max_rate_waiters=4" in r.json()["detail"]
        assert all(f.result().status_code == 429 for f in waiting)
