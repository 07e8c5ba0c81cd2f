"""Rate limiting (`replay.sample.rate_limit`): ``min_size`` and ``samples_per_insert`` on real
frames; a learner started before its writer waits for the writer's first steps."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import replay
from replay.errors import RateLimitedError, SamplingError


def _frames(carracing_frames: list[Any], n: int) -> list[Any]:
    return [carracing_frames[i % len(carracing_frames)].frame for i in range(n)]


def _write(store: replay.Store, frames: list[Any], **kwargs: Any) -> str:
    with store.new_race(env="CarRacing-v3", shard_size=4, **kwargs) as w:
        for i, frame in enumerate(frames):
            w.append(frame, action=np.zeros(3, np.float32), reward=float(i))
    return w.race_id


def test_learner_started_before_its_writer_gets_the_first_batch(
    tmp_path: Path, carracing_frames: list[Any]
) -> None:
    store = replay.open_store(tmp_path / "s")
    sampler = store.sampler(batch_size=4, min_size=8, timeout=120, seed=0, refresh_interval=0)
    got: list[Any] = []
    learner = threading.Thread(target=lambda: got.append(sampler.sample(device="cpu")))
    learner.start()
    while sampler.stats().refreshes < 3:  # the learner is waiting on an empty store
        assert learner.is_alive()
        time.sleep(0.01)
    assert not got
    with store.new_race(env="CarRacing-v3", shard_size=4, flush_interval=0.05) as w:
        for i, frame in enumerate(_frames(carracing_frames, 8)):
            w.append(frame, action=np.zeros(3, np.float32), reward=float(i))
        learner.join(timeout=120)
    assert not learner.is_alive()
    (batch,) = got
    assert batch.frames.shape == (4, 1, 900, 1600, 3)
    assert {race_id for race_id, _ in batch.keys} == {w.race_id}
    sampler.close()


def test_min_size_times_out_with_a_clear_error(tmp_path: Path, carracing_frames: list[Any]) -> None:
    store = replay.open_store(tmp_path / "s")
    with store.sampler(batch_size=2, min_size=5, timeout=0.05) as s:
        with pytest.raises(RateLimitedError, match=r"min_size=5: the store holds 0 committed"):
            s.sample()
        _write(store, _frames(carracing_frames, 3))
        s.refresh()
        with pytest.raises(RateLimitedError, match=r"holds 3 committed steps"):
            s.sample_keys()
        _write(store, _frames(carracing_frames, 3))
        s.refresh()
        assert s.sample_keys().batch_size == 2


def test_without_limits_an_empty_store_still_fails_at_once(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "s")
    with store.sampler(batch_size=2) as s, pytest.raises(SamplingError) as e:
        s.sample_keys()
    assert not isinstance(e.value, RateLimitedError)


def test_a_learner_ahead_of_its_actors_waits(tmp_path: Path, carracing_frames: list[Any]) -> None:
    store = replay.open_store(tmp_path / "s")
    _write(store, _frames(carracing_frames, 10))
    spi = {"samples_per_insert": 2.0, "error_margin": 4, "timeout": 0}
    with store.sampler(batch_size=6, min_size=4, **spi) as s:
        # budget: 2 * (10 - 4) + 4 = 16 items: two batches of 6, not three
        s.sample_keys()
        s.sample_keys()
        with pytest.raises(RateLimitedError, match=r"12 items sampled for 10 steps inserted"):
            s.sample_keys()
        _write(store, _frames(carracing_frames, 1))  # +2 items of budget: 18
        s.refresh()
        s.sample_keys()
        with pytest.raises(RateLimitedError):
            s.sample_keys()


def test_a_learner_behind_its_actors_is_not_held(
    tmp_path: Path, carracing_frames: list[Any]
) -> None:
    store = replay.open_store(tmp_path / "s")
    with store.sampler(batch_size=4, samples_per_insert=0.5, error_margin=0, timeout=0) as s:
        for _ in range(3):  # actors write 8 steps per batch of 4: the learner lags
            _write(store, _frames(carracing_frames, 8))
            s.refresh()
            assert s.sample_keys().batch_size == 4


def test_waiting_learner_resumes_when_actors_insert(
    tmp_path: Path, carracing_frames: list[Any]
) -> None:
    store = replay.open_store(tmp_path / "s")
    _write(store, _frames(carracing_frames, 4))
    s = store.sampler(
        batch_size=4, samples_per_insert=1.0, error_margin=0, timeout=120, refresh_interval=0
    )
    s.sample_keys()  # the whole budget
    got: list[Any] = []
    learner = threading.Thread(target=lambda: got.append(s.sample_keys()))
    learner.start()
    refreshes = s.stats().refreshes
    while s.stats().refreshes < refreshes + 3:
        time.sleep(0.01)
    assert not got
    _write(store, _frames(carracing_frames, 4))
    learner.join(timeout=120)
    assert len(got) == 1
    s.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_size": -1}, "min_size must be"),
        ({"samples_per_insert": 0}, "samples_per_insert must be > 0"),
        ({"samples_per_insert": 1, "error_margin": -1}, "error_margin must be >= 0"),
        ({"timeout": -1}, "timeout must be >= 0"),
    ],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    store = replay.open_store(tmp_path / "s")
    with pytest.raises(ValueError, match=message):
        store.sampler(**kwargs)
