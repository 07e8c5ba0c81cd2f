"""The pure-pursuit driver on hand-made tracks, where the right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from capture.carracing_policy import CarPose, PurePursuit, distance_to_centreline, nearest_index

# A straight road along +y (x = 0), one centreline point per unit.
STRAIGHT = np.stack([np.zeros(200), np.arange(200.0)], axis=1)


def _corner() -> np.ndarray:
    """Straight along +y for 20 units, then a hard right turn onto +x."""
    up = np.stack([np.zeros(20), np.arange(20.0)], axis=1)
    right = np.stack([np.arange(1.0, 100.0), np.full(99, 19.0)], axis=1)
    return np.concatenate([up, right])


def test_steers_back_towards_the_centreline() -> None:
    driver = PurePursuit()
    # angle 0: the car's nose points along +y; +x is to its right.
    left_of_line = driver(CarPose(x=-2.0, y=50.0, angle=0.0, speed=30.0), STRAIGHT)
    right_of_line = driver(CarPose(x=2.0, y=50.0, angle=0.0, speed=30.0), STRAIGHT)
    on_line = driver(CarPose(x=0.0, y=50.0, angle=0.0, speed=30.0), STRAIGHT)
    assert left_of_line[0] > 0.05  # steer right
    assert right_of_line[0] < -0.05  # steer left
    assert abs(on_line[0]) < 1e-6
    assert left_of_line.dtype == np.float32
    assert left_of_line.shape == (3,)


def test_steering_follows_the_heading() -> None:
    # Nose turned 30 degrees to the left (counter-clockwise) on a straight road: steer right.
    action = PurePursuit()(CarPose(0.0, 50.0, math.radians(30), 30.0), STRAIGHT)
    assert action[0] > 0.1


def test_accelerates_when_slow_and_brakes_when_fast() -> None:
    driver = PurePursuit()
    slow = driver(CarPose(0.0, 50.0, 0.0, speed=5.0), STRAIGHT)
    fast = driver(CarPose(0.0, 50.0, 0.0, speed=100.0), STRAIGHT)
    assert slow[1] > 0
    assert slow[2] == 0
    assert fast[1] == 0
    assert fast[2] > 0


def test_slows_down_for_a_corner() -> None:
    driver = PurePursuit()
    pose = CarPose(0.0, 5.0, 0.0, speed=45.0)
    on_straight = driver(pose, STRAIGHT)
    before_corner = driver(pose, _corner())
    assert on_straight[1] > 0
    assert on_straight[2] == 0
    assert before_corner[1] == 0
    assert before_corner[2] > 0


def test_centreline_helpers() -> None:
    assert nearest_index(STRAIGHT, 0.3, 41.8) == 42
    assert distance_to_centreline(STRAIGHT, 3.0, 10.0) == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lookahead": 0.0}, "lookahead"),
        ({"lookahead": 40.0, "preview": 30.0}, "lookahead"),
        ({"corner_speed": 60.0, "max_speed": 50.0}, "corner_speed"),
    ],
)
def test_rejects_inconsistent_settings(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PurePursuit(**kwargs)
