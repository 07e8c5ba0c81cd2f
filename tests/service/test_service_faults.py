"""Faults around the service: a restart while learners sample, clients that hang up
mid-response, and secrets that must never reach the logs."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from replay.remote.client import Client
from service.tools.process import ServerProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(store: Path, port: int, *args: str, **options: Any) -> ServerProcess:
    """``replay serve`` on a fixed port (to restart on it), its log collected in `output()`."""
    return ServerProcess(store, *args, port=port, stderr=subprocess.STDOUT, **options)


def test_service_restart_during_sampling_is_invisible_to_the_client(served_store: Path) -> None:
    port = free_port()
    server = serve(served_store, port)
    batches: list[float] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def learner() -> None:
        with Client(f"http://127.0.0.1:{port}", retries=8, backoff=0.1) as client:
            while not done.is_set():
                try:
                    batch = client.sample(batch_size=4)
                    assert batch.frames.shape == (4, 1, 900, 1600, 3)
                    batches.append(time.monotonic())
                except BaseException as e:  # collected, asserted below
                    errors.append(e)
                    return

    thread = threading.Thread(target=learner)
    thread.start()
    try:
        while len(batches) < 3:
            time.sleep(0.05)
        server.close(signal.SIGKILL)  # crash, mid-sampling
        killed_at = time.monotonic()
        time.sleep(0.3)
        server = serve(served_store, port)
        deadline = time.monotonic() + 30
        while not [t for t in batches if t > killed_at] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        thread.join(timeout=60)
        server.close()
    assert errors == []
    assert [t for t in batches if t > killed_at], "no batch after the restart"


def test_clients_hanging_up_mid_response_leave_the_service_healthy(served_store: Path) -> None:
    port = free_port()
    server = serve(served_store, port)
    try:
        body = b'{"kind": "uniform", "batch_size": 32}'
        request = (
            f"POST /v1/sample HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        for _ in range(20):  # more than the batches the service holds at once
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(request)
                assert sock.recv(1024).startswith(b"HTTP/1.1 200")
            # closed after the first KB of a ~1.7 MB batch
        with Client(f"http://127.0.0.1:{port}") as client:
            batch = client.sample(batch_size=16)
            assert batch.frames.shape[0] == 16
            assert client.health()["status"] == "ok"
    finally:
        server.close()
    assert "Traceback" not in server.output()


def test_the_token_never_reaches_the_logs(served_store: Path) -> None:
    token = "s3cr3t-token-4c1e9b"
    port = free_port()
    server = serve(
        served_store, port, "--access-log", log_level="debug", env={"REPLAY_TOKEN": token}
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert (
            httpx.get(f"{url}/v1/races", headers={"Authorization": f"Bearer {token}"}).status_code
            == 200
        )
        assert (
            httpx.get(f"{url}/v1/races", headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )
        assert (
            httpx.get(f"{url}/v1/races?token={token}").status_code == 401
        )  # not a query parameter
        with Client(url, token=token) as client:
            client.sample(batch_size=2)
    finally:
        server.close()
    output = server.output()
    assert "GET /v1/races" in output  # the access log did run
    assert token not in output
