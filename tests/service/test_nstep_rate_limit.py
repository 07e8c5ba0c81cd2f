"""n-step returns, rate limits and TensorDict batches over HTTP: the service's
/v1/sample and `replay.remote.client.Client` against the embedded sampler, on real frames."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from service_helpers import ThreadServer, write_race

import replay
from replay.errors import RateLimitedError
from replay.remote import protocol
from replay.remote.client import Client
from service.settings import Settings


@pytest.fixture(scope="module")
def server(served_store: Path) -> Iterator[ThreadServer]:
    with ThreadServer(Settings(store=served_store)) as s:
        yield s


def test_nstep_batches_equal_embedded_ones(server: ThreadServer, served_store: Path) -> None:
    params: dict[str, Any] = {
        "batch_size": 8,
        "seq_len": 2,
        "seed": 11,
        "n_step": 3,
        "gamma": 0.9,
        "next_frames": True,
    }
    store = replay.open_store(served_store, mode="r")
    with store.sampler(**params) as embedded, Client(server.url) as client:
        for _ in range(2):
            want, got = embedded.sample(device="cpu"), client.sample(**params, device="cpu")
            assert got.keys == want.keys
            for name in ("returns", "discount", "next_steps", "next_frames", "frames"):
                np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
            assert got.next_keys == want.next_keys


def test_nstep_with_a_decoded_view(server: ThreadServer, served_store: Path) -> None:
    store = replay.open_store(served_store, mode="r")
    with store.sampler(batch_size=4, seed=12, n_step=2) as embedded, Client(server.url) as c:
        want = embedded.sample(device="cpu")
        got = c.sample_decoded(batch_size=4, seed=12, n_step=2, size=(90, 160))
    assert got.frames.shape == (4, 1, 90, 160, 3)
    np.testing.assert_array_equal(got.returns, want.returns)
    np.testing.assert_array_equal(got.discount, want.discount)


def test_requests_without_the_new_fields_get_the_old_message(server: ThreadServer) -> None:
    body = {"batch_size": 2, "seed": 0}
    r = httpx.post(f"{server.url}/v1/sample", json=body, timeout=60)
    assert r.status_code == 200
    message = protocol.unpack(r.content)
    assert message.nstep is None  # type: ignore[union-attr]
    assert b'"nstep"' not in r.content[:4096]


def test_bad_nstep_requests_are_422(server: ThreadServer) -> None:
    for body in (
        {"next_frames": True},
        {"n_step": 2, "next_frames": True, "decoded": {"size": [90, 160]}},
        {"n_step": 0},
        {"gamma": 2},
    ):
        r = httpx.post(f"{server.url}/v1/sample", json=body, timeout=60)
        assert r.status_code == 422, body


def test_rate_limited_answer_is_429_with_retry_after(tmp_path: Path) -> None:
    replay.open_store(tmp_path / "s")
    with ThreadServer(Settings(store=tmp_path / "s", max_rate_wait_s=0.05)) as server:
        r = httpx.post(f"{server.url}/v1/sample", json={"min_size": 10}, timeout=60)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"] == "RateLimitedError"
        assert "min_size=10" in r.json()["detail"]
        with Client(server.url) as client, pytest.raises(RateLimitedError, match="min_size=10"):
            client.sample(batch_size=2, min_size=10, timeout=0.1)


def test_learner_started_before_its_writer_over_http(tmp_path: Path, frames: list[Any]) -> None:
    store = replay.open_store(tmp_path / "s")
    with ThreadServer(Settings(store=tmp_path / "s", max_rate_wait_s=0.05)) as server:
        got: list[Any] = []
        errors: list[BaseException] = []
        seen_429 = threading.Event()

        def learn() -> None:
            with Client(server.url) as client:
                try:
                    got.append(client.sample(batch_size=4, min_size=6, timeout=120, device="cpu"))
                except BaseException as e:
                    errors.append(e)

        learner = threading.Thread(target=learn)
        learner.start()
        while not seen_429.is_set():  # the learner has been told to wait at least once
            assert learner.is_alive(), errors
            time.sleep(0.01)
            stats = httpx.get(f"{server.url}/v1/stats", timeout=60).json()
            if stats["errors"] >= 1:
                seen_429.set()
        assert not got
        race_id = write_race(store, frames[:6])
        learner.join(timeout=120)
    assert not errors
    (batch,) = got
    assert {r for r, _ in batch.keys} == {race_id}


def test_samples_per_insert_over_http(tmp_path: Path, frames: list[Any]) -> None:
    store = replay.open_store(tmp_path / "s")
    write_race(store, frames[:8])
    with ThreadServer(Settings(store=tmp_path / "s", max_rate_wait_s=0.05)) as server:
        limits = {"batch_size": 4, "samples_per_insert": 1.0, "error_margin": 0, "seed": 1}
        with Client(server.url) as client:
            client.sample_encoded(**limits, timeout=0)
            client.sample_encoded(**limits, timeout=0)
            with pytest.raises(RateLimitedError, match="8 items sampled for 8 steps inserted"):
                client.sample_encoded(**limits, timeout=0)
            write_race(store, frames[:4])
            assert client.sample_encoded(**limits, timeout=60).keys.batch_size == 4


def test_tensordict_over_http(server: ThreadServer, served_store: Path) -> None:
    pytest.importorskip("tensordict")
    from replay.read.tensordicts import keys_of

    params: dict[str, Any] = {"batch_size": 4, "seq_len": 2, "seed": 13, "n_step": 2}
    store = replay.open_store(served_store, mode="r")
    with store.sampler(**params) as embedded, Client(server.url) as client:
        want = embedded.sample(device="cpu")
        td = client.sample(**params, device="cpu", out="tensordict")
    assert tuple(td.batch_size) == (4, 2)
    np.testing.assert_array_equal(td["frames"].numpy(), want.frames)
    np.testing.assert_array_equal(td["returns"].numpy(), want.returns)
    assert keys_of(td) == want.keys


def test_next_frames_count_against_the_frame_limit(tmp_path: Path, served_store: Path) -> None:
    with ThreadServer(Settings(store=served_store, max_batch_frames=16)) as server:
        body = {"batch_size": 8, "n_step": 2, "next_frames": True}
        r = httpx.post(f"{server.url}/v1/sample", json=body, timeout=60)
        assert r.status_code == 200
        r = httpx.post(f"{server.url}/v1/sample", json={**body, "batch_size": 9}, timeout=60)
        assert r.status_code == 422
        assert "next_frames" in r.json()["detail"]
