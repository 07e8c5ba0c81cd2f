"""`replay.remote.client.Client` against the real server: the embedded sampler's batches, errors,
prefetch, priorities, retries."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import replay
from replay.codec.transform import Transform
from replay.errors import RaceNotFoundError, SamplingError
from replay.read.batch import Batch
from replay.remote.client import Client
from replay.remote.retries import ServiceError

seeds = itertools.count(1000)  # every test its own seeded stream on the shared server


def assert_same_batch(a: Batch, b: Batch) -> None:
    assert a.keys == b.keys
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.frames.shape == b.frames.shape
    assert a.frames.dtype == b.frames.dtype
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.steps.keys() == b.steps.keys()
    for name in a.steps:
        np.testing.assert_array_equal(a.steps[name], b.steps[name])


@pytest.fixture
def client(url: str) -> Any:
    with Client(url) as c:
        yield c


@pytest.mark.parametrize(
    ("kind", "seq_len", "stride"),
    [("uniform", 1, 1), ("uniform", 3, 2), ("recent", 2, 1), ("prioritized", 1, 1)],
)
def test_client_batches_equal_embedded_batches(
    client: Client, served_store: Path, kind: str, seq_len: int, stride: int
) -> None:
    seed = next(seeds)
    params: dict[str, Any] = {
        "kind": kind,
        "batch_size": 8,
        "seq_len": seq_len,
        "stride": stride,
        "seed": seed,
    }
    store = replay.open_store(served_store, mode="r")
    with store.sampler(**params) as embedded:
        for _ in range(2):  # a seeded stream continues from one request to the next
            assert_same_batch(client.sample(**params), embedded.sample())


def test_client_transform_and_filters(client: Client, served_store: Path) -> None:
    t = Transform(size=(225, 400), dtype="float32", layout="NCHW")
    seed = next(seeds)
    filters = {"env": "CarRacing-v3", "map": ["track-b"]}
    store = replay.open_store(served_store, mode="r")
    with store.sampler(batch_size=4, seed=seed, filters=filters) as embedded:
        remote = client.sample(batch_size=4, seed=seed, filters=filters, transform=t)
        assert remote.frames.shape == (4, 1, 3, 225, 400)
        assert_same_batch(remote, embedded.sample(transform=t))
    assert {race_id for race_id, _ in remote.keys} == {store.race_ids()[1]}


def test_one_filter_rule_for_the_race_list_and_samples(client: Client, served_store: Path) -> None:
    """`replay.Filters` decides for the embedded sampler, the HTTP sampler and the list."""
    filters: dict[str, Any] = {"contains": "RACK", "min_length": 25, "status": ["complete"]}
    store = replay.open_store(served_store, mode="r")
    wanted = {i.race_id for i in store.races() if replay.Filters.of(filters).matches(i)}
    assert wanted == {store.race_ids()[1]}  # track-b, 32 steps
    listed = client.races(q="RACK", min_length=25, status=["complete"])
    assert {info.race_id for info in listed} == wanted
    seed = next(seeds)
    with store.sampler(batch_size=8, seed=seed, filters=filters) as embedded:
        remote = client.sample(batch_size=8, seed=seed, filters=filters)
        assert_same_batch(remote, embedded.sample())
    assert {race_id for race_id, _ in remote.keys} == wanted


def test_client_decoded_by_the_service(client: Client, served_store: Path) -> None:
    seed = next(seeds)
    store = replay.open_store(served_store, mode="r")
    with store.sampler(batch_size=2, seed=seed) as embedded:
        expected = embedded.sample(transform=Transform(size=(225, 400)))
    got = client.sample_decoded(batch_size=2, seed=seed, size=(225, 400))
    assert_same_batch(got, expected)


def test_prefetching_batches(client: Client, served_store: Path) -> None:
    seed = next(seeds)
    store = replay.open_store(served_store, mode="r")
    with store.sampler(batch_size=4, seq_len=2, seed=seed) as embedded:
        expected = [embedded.sample() for _ in range(4)]
    got = list(client.batches(batch_size=4, seq_len=2, seed=seed, limit=4))
    assert len(got) == 4
    for a, b in zip(got, expected, strict=True):
        assert_same_batch(a, b)
    # leaving the loop early stops the prefetch thread
    for i, _ in enumerate(client.batches(batch_size=2, prefetch=3)):
        if i == 1:
            break


def test_update_priorities(client: Client, served_store: Path) -> None:
    ids = replay.open_store(served_store, mode="r").race_ids()
    seed = next(seeds)
    batch = client.sample(kind="prioritized", batch_size=16, seed=seed)
    assert client.update_priorities(batch.keys, np.zeros(len(batch))) == 16
    keys = [(r, s) for r in ids[1:] for s in range(48)]
    client.update_priorities(keys, [0.0] * len(keys))
    again = client.sample(kind="prioritized", batch_size=16, seed=seed)
    assert {r for r, _ in again.keys} == {ids[0]}


def test_races_and_frames(client: Client, served_store: Path) -> None:
    store = replay.open_store(served_store, mode="r")
    infos = client.races()
    assert [i.race_id for i in infos] == store.race_ids()[::-1]
    assert client.races(env="Other-v0")[0].race_id == store.race_ids()[2]
    first = store.race_ids()[0]
    info = client.race(first)
    assert info == store.race(first).info
    assert client.frame_bytes(first, 5) == store.race(first).frame_bytes(5)
    assert client.health()["status"] == "ok"
    assert client.stats()["races"] == 3


def test_errors_are_replay_errors(client: Client) -> None:
    with pytest.raises(RaceNotFoundError, match="0000"):
        client.race("0" * 26)
    with pytest.raises(RaceNotFoundError, match="not a race id"):
        client.frame_bytes("../../etc/passwd", 0)
    with pytest.raises(SamplingError, match="nothing to sample"):
        client.sample(filters={"env": "Nope-v0"})
    with pytest.raises(ServiceError, match="422") as e:
        client.sample(batch_size=100_000)
    assert e.value.status == 422
    with pytest.raises(ServiceError, match="404"):
        client.frame_bytes(client.races()[0].race_id, 10_000)


class FlakyTransport(httpx.BaseTransport):
    """Fails the first `failures` requests as a dropped connection, then passes them on."""

    def __init__(self, failures: int, status: int | None = None) -> None:
        self.failures = failures
        self.status = status
        self.calls = 0
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.failures:
            if self.status is not None:
                return httpx.Response(self.status, json={"error": "Busy", "detail": "busy"})
            raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_retries_with_backoff(url: str) -> None:
    flaky = FlakyTransport(failures=2)
    with Client(url, transport=flaky, retries=3, backoff=0.01) as client:
        assert client.health()["status"] == "ok"
    assert flaky.calls == 3
    busy = FlakyTransport(failures=1, status=503)
    with Client(url, transport=busy, retries=1, backoff=0.01) as client:
        assert client.sample(batch_size=2).frames.shape == (2, 1, 900, 1600, 3)
    down = FlakyTransport(failures=100)
    with (
        Client(url, transport=down, retries=2, backoff=0.01) as client,
        pytest.raises(ServiceError, match="no answer after 3 tries"),
    ):
        client.health()


def test_unreachable_service() -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        Client(f"http://127.0.0.1:{port}", retries=1, backoff=0.01) as client,
        pytest.raises(ServiceError, match="no answer"),
    ):
        client.health()


def test_client_argument_checks(url: str) -> None:
    with pytest.raises(ValueError, match="retries"):
        Client(url, retries=-1)
    with pytest.raises(ValueError, match="backoff"):
        Client(url, max_backoff=-1)
    with Client(url) as client, pytest.raises(ValueError, match="prefetch"):
        next(iter(client.batches(prefetch=0)))


def test_public_names() -> None:
    assert replay.Client is Client
    assert replay.ServiceError is ServiceError
    assert issubclass(replay.ProtocolError, replay.ReplayError)
    assert {"Client", "ServiceError", "ProtocolError"} <= set(replay.__all__)
