"""replay.integrations.gym: every episode of a real Gymnasium env recorded as a race.

CarRacing-v3 at 1600x900 is the project's renderer (`capture.carracing`) made through
``gym.make`` with CarRacing's own spec, so the env has its real id and wrappers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("gymnasium", reason="gymnasium is not installed ('replay[capture]')")

import gymnasium as gym

import replay
from replay.errors import FrameError
from replay.integrations.gym import RecordRaces, RecordVectorRaces


def carracing_1600x900(max_episode_steps: int) -> Any:
    """CarRacing-v3 rendering 1600x900 frames, as `replay record` does."""
    from capture.carracing import _HighResCarRacing

    spec = dataclasses.replace(
        gym.spec("CarRacing-v3"),
        entry_point=lambda **_: _HighResCarRacing(1600, 900),
        max_episode_steps=max_episode_steps,
    )
    return gym.make(spec, disable_env_checker=True)


def test_carracing_episodes_become_races(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "store")
    env = RecordRaces(carracing_1600x900(4), store, policy="test-policy", quality=95)
    rng = np.random.default_rng(0)
    sent: list[list[tuple[Any, float, Any]]] = []
    for seed in (1, 2):
        env.reset(seed=seed)
        episode = []
        truncated = False
        while not truncated:
            frame = env.unwrapped.render().copy()  # what the action is chosen on
            action = rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32)
            _, reward, terminated, truncated, _ = env.step(action)
            assert not terminated
            episode.append((frame, float(reward), action))
        sent.append(episode)
    env.close()

    infos = store.races()
    assert [i.race_id for i in infos] == env.race_ids
    for info, episode in zip(infos, sent, strict=True):
        assert (info.env, info.policy, info.fps) == ("CarRacing-v3", "test-policy", 50.0)
        assert (info.height, info.width, info.length, info.status) == (900, 1600, 4, "complete")
        race = store.race(info.race_id)
        np.testing.assert_allclose(race.steps("reward"), [r for _, r, _ in episode], rtol=1e-6)
        np.testing.assert_array_equal(race.steps("action"), np.stack([a for _, _, a in episode]))
        assert race.steps("truncated").tolist() == [False, False, False, True]
        assert not race.steps("terminated").any()
        for step, (frame, _, _) in enumerate(episode):
            assert np.abs(race.frame(step).astype(int) - frame).mean() < 2  # JPEG quality 95


def test_reset_mid_episode_and_close_commit_what_was_played(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "store")
    env = RecordRaces(gym.make("CarRacing-v3", max_episode_steps=50), store, frames="observation")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.reset(seed=1)  # cuts the first episode short
    for _ in range(3):
        env.step(env.action_space.sample())
    env.close()
    assert [(i.length, i.status, i.height) for i in store.races()] == [
        (1, "complete", 96),
        (3, "complete", 96),
    ]


def test_non_image_frames_are_refused(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "store")
    env = RecordRaces(gym.make("CartPole-v1"), store, frames="observation")
    with pytest.raises(FrameError, match="uint8"):
        env.reset(seed=0)
    env.close()
    assert store.races() == []


@pytest.mark.parametrize("mode", ["NEXT_STEP", "SAME_STEP"])
def test_vector_env_records_one_race_per_sub_env_episode(tmp_path: Path, mode: str) -> None:
    store = replay.open_store(tmp_path / "store")
    venv = gym.vector.SyncVectorEnv(
        [
            lambda: gym.make("CarRacing-v3", render_mode="rgb_array", max_episode_steps=3),
            lambda: gym.make("CarRacing-v3", render_mode="rgb_array", max_episode_steps=5),
        ],
        autoreset_mode=getattr(gym.vector.AutoresetMode, mode),
    )
    env = RecordVectorRaces(venv, store, frames="render", map="procedural")
    env.reset(seed=[1, 2])
    actions = np.zeros((2, 3), dtype=np.float32)
    for t in range(8):
        actions[:, 1] = t / 10  # throttle: each step's action is recognisable
        env.step(actions)
    env.close()

    by_sub_env: dict[int, list[tuple[int, str, list[float]]]] = {0: [], 1: []}
    for info in store.races():
        assert (info.env, info.map, info.height, info.width) == (
            "CarRacing-v3",
            "procedural",
            400,
            600,
        )
        throttle = [round(float(x), 3) for x in store.race(info.race_id).steps("action")[:, 1]]
        by_sub_env[info.meta["sub_env"]].append((info.length, info.status, throttle))
    if mode == "NEXT_STEP":  # the step after a done resets that sub-env, its action unused
        assert by_sub_env[0] == [
            (3, "complete", [0.0, 0.1, 0.2]),
            (3, "complete", [0.4, 0.5, 0.6]),
        ]
        assert by_sub_env[1] == [
            (5, "complete", [0.0, 0.1, 0.2, 0.3, 0.4]),
            (2, "complete", [0.6, 0.7]),
        ]
    else:  # the done step's obs already starts the next episode
        assert by_sub_env[0] == [
            (3, "complete", [0.0, 0.1, 0.2]),
            (3, "complete", [0.3, 0.4, 0.5]),
            (2, "complete", [0.6, 0.7]),
        ]
        assert by_sub_env[1] == [
            (5, "complete", [0.0, 0.1, 0.2, 0.3, 0.4]),
            (3, "complete", [0.5, 0.6, 0.7]),
        ]
    assert sorted(env.race_ids) == sorted(i.race_id for i in store.races())
