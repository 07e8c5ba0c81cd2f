"""CarRacing at 1600x900: frame layout, the driver staying on the road, no leaked globals."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

# gymnasium's car_racing module comes through capture.carracing, which imports Box2D with its
# SWIG DeprecationWarning silenced; imported directly under filterwarnings=error it segfaults.
from capture.carracing import CarRacingSource, car_racing
from capture.source import Step

#: The road's half-width in world units (CarRacing's TRACK_WIDTH).
ROAD_HALF_WIDTH = 40 / 6


@pytest.fixture(scope="module")
def source() -> Iterator[CarRacingSource]:
    with CarRacingSource() as src:
        yield src


def test_frames_have_the_declared_layout(carracing_frames: list[Step]) -> None:
    assert len(carracing_frames) == 48
    for step in carracing_frames:
        assert step.frame.shape == (900, 1600, 3)
        assert step.frame.dtype == np.uint8
        assert step.frame.flags.c_contiguous
        assert step.action.shape == (3,)
        assert step.action.dtype == np.float32
        assert -1.0 <= step.action[0] <= 1.0
        assert 0.0 <= step.action[1] <= 1.0
        assert 0.0 <= step.action[2] <= 1.0
        assert not step.terminated
    assert carracing_frames[-1].truncated  # the fixture stopped at its step limit
    assert not any(step.truncated for step in carracing_frames[:-1])
    # The camera moves: consecutive frames differ, and they are not blank.
    assert not np.array_equal(carracing_frames[0].frame, carracing_frames[1].frame)
    assert carracing_frames[-1].frame.std() > 10


def test_source_describes_its_races(source: CarRacingSource) -> None:
    assert (source.env, source.map, source.fps) == ("CarRacing-v3", "procedural", 50)
    assert (source.height, source.width, source.action_shape) == (900, 1600, (3,))
    assert "pure-pursuit" in source.policy


def test_driver_stays_on_the_road_and_earns_reward(source: CarRacingSource) -> None:
    total, worst_offset, speeds, road_checks = 0.0, 0.0, [], 0
    for i, step in enumerate(source.race(max_steps=150, seed=3)):
        total += step.reward
        worst_offset = max(worst_offset, source.off_centre())
        speeds.append(source.pose().speed)
        if i >= 60:  # after the one-second zoom-in the car sits at (800, 675), nose up
            ahead = step.frame[590:630, 780:820].astype(int)
            # road is grey (r = g = b); grass is green
            assert np.abs(ahead[..., 1] - ahead[..., 0]).mean() < 12, f"off the road at step {i}"
            road_checks += 1
    assert road_checks == 90
    assert worst_offset < 0.6 * ROAD_HALF_WIDTH
    assert total > 60  # ~3.5 per new tile, -0.1 per step: it drives along the track
    assert max(speeds) > 30


def test_same_seed_same_race(source: CarRacingSource) -> None:
    first = list(source.race(max_steps=3, seed=11))
    again = list(source.race(max_steps=3, seed=11))
    other = list(source.race(max_steps=3, seed=12))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.frame, b.frame)
        np.testing.assert_array_equal(a.action, b.action)
    assert not np.array_equal(first[0].frame, other[0].frame)  # another track


def test_step_limit_truncates(source: CarRacingSource) -> None:
    steps = list(source.race(max_steps=5, seed=0))
    assert len(steps) == 5
    assert [s.truncated for s in steps] == [False] * 4 + [True]
    assert not any(s.terminated for s in steps)


def test_other_carracing_users_keep_the_stock_size(source: CarRacingSource) -> None:
    next(source.race(max_steps=1, seed=0))
    assert (car_racing.WINDOW_W, car_racing.WINDOW_H) == (1000, 800)
    assert (car_racing.VIDEO_W, car_racing.VIDEO_H) == (600, 400)
    stock = car_racing.CarRacing(render_mode="rgb_array")
    try:
        stock.reset(seed=0)
        assert stock.render().shape == (400, 600, 3)
    finally:
        stock.close()


def test_other_sizes_render_natively() -> None:
    with CarRacingSource(width=640, height=360) as small:
        step = next(small.race(max_steps=1, seed=0))
    assert step.frame.shape == (360, 640, 3)
