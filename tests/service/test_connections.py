"""Connection floods against the real server (``replay serve`` in its own process, on
loopback): idle and slowloris connections, slow readers, and more waiting batch
requests than worker threads never keep the probes from answering, and the request
timeout closes what sends no complete request.

A probe must answer within `PROBE_TIMEOUT_S`: Kubernetes' default probe timeout.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from service_helpers import address, batches_drawn, non_reader, sample_request

from service.tools.process import ServerProcess

#: Kubernetes' default `timeoutSeconds` of a probe.
PROBE_TIMEOUT_S = 1.0
#: Connections of each kind in a flood (the issue's 300 idle + 300 partial headers).
FLOOD = 300


@contextlib.contextmanager
def flood(url: str, n: int = FLOOD) -> Iterator[list[socket.socket]]:
    """`n` connections that send nothing and `n` that send half a header (slowloris)."""
    socks: list[socket.socket] = []
    try:
        for i in range(2 * n):
            s = socket.create_connection(address(url), timeout=10)
            if i % 2:
                s.sendall(b"GET /v1/stats HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def probe(url: str) -> float:
    """Seconds the two probes took (both must answer 200 within PROBE_TIMEOUT_S)."""
    started = time.perf_counter()
    for path in ("/v1/live", "/v1/health"):
        r = httpx.get(f"{url}{path}", timeout=PROBE_TIMEOUT_S)
        assert r.status_code == 200, (path, r.status_code, r.text)
    return time.perf_counter() - started


def closed_by_server(s: socket.socket, timeout: float) -> bool:
    """True once the server closed `s` (EOF or reset) within `timeout` seconds."""
    s.settimeout(timeout)
    try:
        while s.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_probes_answer_under_a_flood_of_idle_and_partial_connections(server: ServerProcess) -> None:
    with flood(server.url) as socks:
        worst = max(probe(server.url) for _ in range(5))
        # the service still serves while the flood is open
        assert httpx.get(f"{server.url}/v1/races", timeout=10).status_code == 200
        assert all(s.fileno() >= 0 for s in socks)
    print(f"probes under {2 * FLOOD} idle/partial connections: worst {worst * 1000:.0f} ms")


def test_connections_without_a_complete_request_are_closed(served_store: Path) -> None:
    env = {"REPLAY_TIMEOUT_REQUEST_S": "1", "REPLAY_TIMEOUT_KEEP_ALIVE_S": "1"}
    with ServerProcess(served_store, env=env) as server, flood(server.url, 20) as socks:
        trickle = socket.create_connection(address(server.url))
        trickle.sendall(b"GET /v1/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(10):  # a header byte every 0.3 s: trickling does not extend it
            time.sleep(0.3)
            try:
                trickle.sendall(b"X")
            except OSError:
                break
        # a header sent whole but a body that never comes
        body_missing = socket.create_connection(address(server.url))
        body_missing.sendall(
            b"PUT /v1/priorities HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )
        # an idle keep-alive connection after a full answer
        kept = httpx.Client(base_url=server.url)
        assert kept.get("/v1/live").status_code == 200
        for s in [*socks, trickle, body_missing]:
            assert closed_by_server(s, timeout=10)
        trickle.close()
        body_missing.close()
        time.sleep(1.5)
        assert kept.get("/v1/live").status_code == 200  # a new connection, transparently
        kept.close()
        assert probe(server.url) < 10


def post_and_read(url: str, request: bytes) -> int:
    """Send a raw request and read the whole answer (`Connection: close`); its status."""
    with socket.create_connection(address(url), timeout=120) as s:
        s.sendall(request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
        view = memoryview(bytearray(4 << 20))
        head = b""
        while (n := s.recv_into(view)) > 0:
            head = head or bytes(view[:n])
        return int(head.split(b" ", 2)[1])


def test_probes_answer_while_more_batch_requests_wait_than_worker_threads(
    served_store: Path,
) -> None:
    """AnyIO runs sync routes on 40 worker threads. A client that reads nothing holds
    the one batch slot, 64 requests wait for it, and the readiness probe (which reads
    the store on a worker thread) still answers; once the slot frees, all are served."""
    n = 64
    with ServerProcess(served_store, env={"REPLAY_MAX_BATCHES_IN_FLIGHT": "1"}) as server:
        holder = non_reader(server.url)
        deadline = time.monotonic() + 30
        while batches_drawn(server.url) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        statuses: list[int] = []
        request = sample_request(8)
        threads = [
            threading.Thread(target=lambda: statuses.append(post_and_read(server.url, request)))
            for _ in range(n)
        ]
        for t in threads:
            t.start()
        time.sleep(1.0)  # let them all queue up for the slot
        assert statuses == []
        latencies = [probe(server.url) for _ in range(5)]
        holder.close()  # the slot frees: every waiting request is served
        for t in threads:
            t.join(timeout=120)
    assert statuses.count(200) == n, statuses
    print(f"probes with {n} batch requests waiting: {[round(s * 1000) for s in latencies]} ms")


def test_requests_over_the_limit_are_refused_but_never_the_probes(served_store: Path) -> None:
    env = {"REPLAY_MAX_REQUESTS_IN_FLIGHT": "1"}
    with ServerProcess(served_store, env=env) as server:
        holder = non_reader(server.url, 1)  # one request in progress, for good
        deadline = time.monotonic() + 30
        while (r := httpx.get(f"{server.url}/v1/races", timeout=10)).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert r.status_code == 503
        assert r.json()["error"] == "Busy"
        assert r.headers["Retry-After"] == "1"  # not acted on: safe to retry
        probe(server.url)
        holder.close()
