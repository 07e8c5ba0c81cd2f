"""The service's rate limiters (``min_size``, ``samples_per_insert``) count the steps of
races recorded through it as they count a local writer's: a learner's sample request
waits for a remote actor's steps. Real uvicorn, a real store, real CarRacing frames."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from service_helpers import ThreadServer

import replay
from replay.write.writer import Writer
from service.settings import Settings
from service.state import ServiceState

#: longer than the service's index refresh (1 s): a waiting request has seen the store
SEEN_S = 1.5


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def _actor_and_learner(path: Path) -> Iterator[tuple[ServiceState, Writer, replay.Client]]:
    """A service on a new store, an actor's remote race in it, and a learner's client."""
    replay.open_store(path)
    settings = Settings(store=path, max_chunk_bytes=16 << 20, max_rate_wait_s=1.0)
    with (
        ThreadServer(settings) as server,
        replay.Client(server.url) as actor,
        replay.Client(server.url) as learner,
    ):
        writer = actor.new_race(env="CarRacing-v3", codec="zstd", flush_interval=0.05)
        with writer:
            yield server.app.state.replay, writer, learner


def _append(writer: Writer, frames: list[npt.NDArray[np.uint8]], n: int) -> None:
    """Append `n` more frames and wait until the service has committed them."""
    start = writer.stats().appended
    for step in range(start, start + n):
        assert writer.append(frames[step], reward=step)
    _wait_for(lambda: writer.stats().written == start + n, f"{start + n} committed steps")


def _waiting(state: ServiceState, batch: Future[Any]) -> bool:
    """True when `batch` is held by the rate limit, after the service has seen the store."""
    _wait_for(lambda: state.rate_waiters >= 1 or batch.done(), "a waiting sample request")
    time.sleep(SEEN_S)
    return not batch.done()


def test_min_size_waits_for_the_steps_of_a_remote_race(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    with (
        _actor_and_learner(tmp_path / "s") as (state, writer, learner),
        ThreadPoolExecutor(1) as pool,
    ):
        _append(writer, frames, 10)
        batch = pool.submit(learner.sample, batch_size=4, min_size=20, timeout=60, seed=0)
        assert _waiting(state, batch)  # 10 committed steps: below min_size
        _append(writer, frames, 14)
        keys = batch.result(timeout=60).keys
    assert {race for race, _ in keys} == {writer.race_id}
    assert all(0 <= step < 24 for _, step in keys)


def test_samples_per_insert_holds_a_learner_to_the_remote_inserts(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    # one sampler (the same parameters, seed included): one rate limiter counts for both
    params = {"batch_size": 4, "min_size": 10, "samples_per_insert": 1.0, "error_margin": 0}
    with (
        _actor_and_learner(tmp_path / "s") as (state, writer, learner),
        ThreadPoolExecutor(1) as pool,
    ):
        _append(writer, frames, 10)
        for k in range(2):  # each batch of 4 waits for 4 more inserted steps
            batch = pool.submit(learner.sample, timeout=60, seed=0, **params)
            assert _waiting(state, batch), f"batch {k} was drawn ahead of the inserts"
            _append(writer, frames, 4)
            assert len(batch.result(timeout=60).keys) == 4
