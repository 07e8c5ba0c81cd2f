"""The client's retries never act twice: an answer lost after the service acted is
answered again from the request id (the same batch; priorities not re-applied), a call
without one is not retried once sent, and the default client rides out a real restart.

`LoseAnswers` is a real transport to the real server that drops the answers of the
first requests after the server has acted on them, as a connection broken at that
moment would (no mock of the service).
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_client import assert_same_batch

import replay
from replay.remote import protocol
from replay.remote.client import Client, ServiceError
from service.tools.process import ServerProcess


class LoseAnswers(httpx.BaseTransport):
    """Sends every request; the answers of the first `n` are read, then lost (ReadError),
    after `then()` has run (to interleave another client's call)."""

    def __init__(self, n: int, then: Callable[[], None] = lambda: None) -> None:
        self.n, self.then = n, then
        self.request_ids: list[str | None] = []
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.request_ids.append(request.headers.get(protocol.REQUEST_ID_HEADER))
        response = self.inner.handle_request(request)
        if len(self.request_ids) > self.n:
            return response
        response.read()
        response.close()
        self.then()
        raise httpx.ReadError("connection reset by peer", request=request)

    def close(self) -> None:
        self.inner.close()


def test_a_lost_batch_is_sent_again_not_drawn_again(url: str, served_store: Path) -> None:
    params = {"batch_size": 8, "seq_len": 2, "seed": 4242}
    lose = LoseAnswers(1)
    with Client(url, transport=lose, backoff=0.01) as client:
        got = [client.sample(**params) for _ in range(2)]  # type: ignore[arg-type]
    with replay.open_store(served_store, mode="r").sampler(**params) as embedded:  # type: ignore[arg-type]
        for a in got:
            assert_same_batch(a, embedded.sample())  # the seeded stream did not skip one
    assert lose.request_ids[0] == lose.request_ids[1]  # a retry carries its call's id
    assert lose.request_ids[1] != lose.request_ids[2]


def test_lost_priorities_are_not_applied_twice(url: str, served_store: Path) -> None:
    races = replay.open_store(served_store, mode="r").races()
    ids = [info.race_id for info in races]
    params = {"kind": "prioritized", "batch_size": 16, "seed": 4343}
    every_item = [(info.race_id, s) for info in races for s in range(info.length)]

    def only(race: str) -> tuple[list[tuple[str, int]], list[float]]:
        """Priority 1 for the items of `race`, 0 for every other item."""
        return every_item, [1.0 if r == race else 0.0 for r, _ in every_item]

    with Client(url) as other:
        other.sample(**params)  # type: ignore[arg-type]  # makes the prioritized sampler

        def meanwhile() -> None:  # another learner's update lands before the retry
            other.update_priorities(*only(ids[1]))

        with Client(url, transport=LoseAnswers(1, then=meanwhile), backoff=0.01) as client:
            assert client.update_priorities(*only(ids[0])) == len(every_item)
            batch = client.sample(**params)  # type: ignore[arg-type]
    # the retry of the first update did not overwrite the second
    assert {r for r, _ in batch.keys} == {ids[1]}


def test_an_acting_call_without_a_request_id_is_not_retried_once_sent(url: str) -> None:
    lose = LoseAnswers(1)
    with (
        Client(url, transport=lose, backoff=0.01) as client,
        pytest.raises(ServiceError, match="not retried"),
    ):
        client.request("POST", "/v1/sample", json={"batch_size": 2})
    assert len(lose.request_ids) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_default_client_rides_out_a_restart(served_store: Path) -> None:
    """SIGKILL, a second with nothing listening, then the time ``replay serve`` takes
    to accept again: a call made meanwhile by a default `Client` succeeds."""
    port = free_port()
    server = ServerProcess(served_store, port=port)
    restarted: list[ServerProcess] = []
    try:
        with Client(f"http://127.0.0.1:{port}") as client:
            assert client.sample(batch_size=2).frames.shape[0] == 2
            server.close(signal.SIGKILL)

            def restart() -> None:
                time.sleep(1.0)
                restarted.append(ServerProcess(served_store, port=port))

            thread = threading.Thread(target=restart)
            thread.start()
            try:
                batch = client.sample(batch_size=2)  # while the service is down
                assert batch.frames.shape[0] == 2
                keys = [(r, 0) for r in {r for r, _ in batch.keys}]
                client.sample(kind="prioritized", batch_size=2)
                assert client.update_priorities(keys, np.ones(len(keys))) == len(keys)
            finally:
                thread.join()
    finally:
        for s in restarted:
            s.close()
