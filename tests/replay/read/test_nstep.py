"""n-step returns (`replay.read.nstep`): checked against a plain Python computation on the
stored rewards of real CarRacing races, one terminated, one not (its last steps
have no committed successor), one terminated early."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import replay
from replay.read.nstep import compute

SHARD = 8


def reference(
    rewards: list[float], terminated: list[bool], t: int, n: int, gamma: float
) -> tuple[float, float, int]:
    """The n-step values of step `t` of one race, one step at a time."""
    total, m, done = 0.0, 0, False
    for k in range(n):
        s = t + k
        if s >= len(rewards) or (not terminated[s] and s + 1 >= len(rewards)):
            break  # no reward, or no frame to bootstrap from after it
        total += gamma**k * rewards[s]
        m = k + 1
        if terminated[s]:
            done = True
            break
    return total, 0.0 if done else gamma**m, min(t + m, len(rewards) - 1)


def _record(store: replay.Store, steps: list[Any], *, end: str) -> str:
    with store.new_race(env="CarRacing-v3", shard_size=SHARD) as w:
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            w.append(
                step.frame,
                action=step.action,
                reward=step.reward,
                terminated=last and end == "terminated",
                truncated=last and end == "truncated",
            )
    return w.race_id


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, carracing_frames: list[Any]) -> replay.Store:
    store = replay.open_store(tmp_path_factory.mktemp("nstep") / "store")
    _record(store, carracing_frames, end="terminated")
    _record(store, carracing_frames[:30], end="none")
    _record(store, carracing_frames[:13], end="terminated")
    _record(store, carracing_frames[:20], end="truncated")
    return store


def _stored(store: replay.Store, race_id: str) -> tuple[list[float], list[bool]]:
    race = store.race(race_id)
    return race.steps("reward").tolist(), race.steps("terminated").tolist()


@pytest.mark.parametrize(("n", "gamma", "seq_len"), [(1, 0.9, 1), (3, 0.99, 1), (5, 0.5, 4)])
def test_returns_match_a_plain_python_computation(
    store: replay.Store, n: int, gamma: float, seq_len: int
) -> None:
    stored = {r: _stored(store, r) for r in store.race_ids()}
    assert any(abs(r) > 1 for rewards, _ in stored.values() for r in rewards)  # tile rewards
    with store.sampler(batch_size=64, seq_len=seq_len, seed=0, n_step=n, gamma=gamma) as s:
        for _ in range(4):
            batch = s.sample(device="cpu")
            assert batch.returns.shape == batch.discount.shape == (64, seq_len)
            assert batch.returns.dtype == batch.discount.dtype == np.float32
            for b, (race_id, first) in enumerate(batch.keys):
                rewards, terminated = stored[race_id]
                for pos in range(seq_len):
                    want = reference(rewards, terminated, first + pos, n, gamma)
                    assert batch.returns[b, pos] == pytest.approx(want[0], rel=1e-5, abs=1e-5)
                    assert batch.discount[b, pos] == pytest.approx(want[1], rel=1e-6)
                    assert batch.next_steps[b, pos] == want[2]
            assert batch.next_keys == [
                (r, int(s)) for (r, _), s in zip(batch.keys, batch.next_steps[:, 0], strict=True)
            ]


def test_every_step_of_every_race(store: replay.Store) -> None:
    """All steps at once through the vectorised `compute`: the ends of races included."""
    for race_id in store.race_ids():
        rewards, terminated = _stored(store, race_id)
        length = len(rewards)
        steps = np.arange(length, dtype=np.int64)[:, None]
        at = np.minimum(steps[..., None] + np.arange(4), length - 1)
        got = compute(
            np.asarray(rewards)[at],
            np.asarray(terminated)[at],
            steps,
            np.full(length, length, np.int64),
            0.9,
        )
        for t in range(length):
            want = reference(rewards, terminated, t, 4, 0.9)
            assert got[0][t, 0] == pytest.approx(want[0], rel=1e-5, abs=1e-5)
            assert got[1][t, 0] == pytest.approx(want[1], rel=1e-6)
            assert got[2][t, 0] == want[2]
        if terminated[-1]:
            assert got[1][-1, 0] == 0.0
            assert got[2][-1, 0] == length - 1
        else:  # no committed successor: nothing summed, bootstrap from the step itself
            assert (got[0][-1, 0], got[1][-1, 0], got[2][-1, 0]) == (0.0, 1.0, length - 1)


def test_next_frames_are_the_bootstrap_frames(store: replay.Store) -> None:
    with store.sampler(batch_size=6, seq_len=2, seed=3, n_step=3, next_frames=True) as s:
        batch = s.sample(device="cpu")
    assert batch.next_frames.shape == batch.frames.shape
    for b, (race_id, _) in enumerate(batch.keys):
        race = store.race(race_id)
        for pos in range(2):
            want = race.frame(int(batch.next_steps[b, pos]))
            assert np.array_equal(batch.next_frames[b, pos], want)
            assert np.array_equal(batch.frames[b, pos], race.frame(int(batch.keys[b][1]) + pos))


def test_one_read_for_window_and_bootstrap(store: replay.Store) -> None:
    """The bootstrap frames come in the same batched read (no second pass over shards)."""
    with store.sampler(batch_size=1, seq_len=1, seed=0, n_step=2, next_frames=True) as s:
        s.sample(device="cpu")
        assert s.reader.stats().frames == 2
        reads = s.reader.stats().reads
    assert reads <= 2  # the two frames' shards; one coalesced read when they share one


def test_torch_out(store: replay.Store) -> None:
    pytest.importorskip("torch")
    with store.sampler(batch_size=4, seed=0, n_step=2, out="torch") as s:
        batch = s.sample(device="cpu")
    assert str(batch.returns.dtype) == "torch.float32"
    assert batch.next_keys is not None
    assert len(batch.next_keys) == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_step": 0}, "n_step must be a positive integer"),
        ({"n_step": 3, "gamma": 1.5}, "gamma must be in"),
        ({"next_frames": True}, "next_frames=True needs n_step"),
    ],
)
def test_bad_parameters(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    store = replay.open_store(tmp_path / "s")
    with pytest.raises(ValueError, match=message):
        store.sampler(**kwargs)
