"""A pure-pursuit driver for CarRacing: steer at a point on the centreline ahead.

It reads the car's pose from the simulator rather than the pixels, which is
all a recorder needs: races that look like someone driving, cheaply and
deterministically. Pure pursuit picks the first centreline point at least
`lookahead` away (ahead of the nearest one) and steers by the angle to it;
speed drops before corners, judged by the angle to a point further out.

Conventions are CarRacing's: Box2D world coordinates, the hull's ``angle`` in
radians counter-clockwise, the car's nose along ``(-sin angle, cos angle)``,
and actions ``(steer, gas, brake)`` with steer ``+1`` = full right.

Example::

    driver = PurePursuit()
    action = driver(CarPose(x, y, angle, speed), track_xy)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray


class CarPose(NamedTuple):
    """Where the car is and how fast it goes, in world units (speed: units per second)."""

    x: float
    y: float
    angle: float
    speed: float


@dataclass(frozen=True, slots=True)
class PurePursuit:
    """Steering and throttle from the car's pose and the track's centreline points.

    Attributes:
        lookahead: distance to the steering target, world units (the road is ~13 wide).
        preview: distance to the point that judges how sharp the next corner is.
        wheelbase: the car's axle distance (CarRacing's car: 3.24 units).
        max_speed: target speed on straights, units per second.
        corner_speed: target speed in the sharpest corners.
        gas: throttle while below the target speed (modest: full gas spins the wheels).
        brake: brake while well above the target speed (below 0.9, which locks wheels).
    """

    lookahead: float = 10.0
    preview: float = 30.0
    wheelbase: float = 3.24
    max_speed: float = 55.0
    corner_speed: float = 28.0
    gas: float = 0.35
    brake: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.lookahead <= self.preview:
            raise ValueError(
                f"need 0 < lookahead <= preview, got lookahead={self.lookahead}, "
                f"preview={self.preview}"
            )
        if not 0 < self.corner_speed <= self.max_speed:
            raise ValueError(
                f"need 0 < corner_speed <= max_speed, got corner_speed={self.corner_speed}, "
                f"max_speed={self.max_speed}"
            )

    def __call__(self, pose: CarPose, track_xy: NDArray[np.float64]) -> NDArray[np.float32]:
        """The action ``[steer, gas, brake]`` for `pose` on the closed track `track_xy` (N, 2)."""
        target = _point_ahead(track_xy, pose, self.lookahead)
        far = _point_ahead(track_xy, pose, self.preview)
        alpha = _bearing(pose, target)
        # Pure pursuit: the arc through the target needs this front-wheel angle (rad);
        # CarRacing's steer action is that angle, saturating at the joint limit.
        steer = math.atan2(2.0 * self.wheelbase * math.sin(alpha), self.lookahead)
        sharpness = min(1.0, abs(_bearing(pose, far)) / 0.6)
        target_speed = self.max_speed - (self.max_speed - self.corner_speed) * sharpness
        gas = self.gas if pose.speed < target_speed else 0.0
        brake = self.brake if pose.speed > 1.15 * target_speed else 0.0
        return np.array([np.clip(steer, -1.0, 1.0), gas, brake], dtype=np.float32)


def nearest_index(track_xy: NDArray[np.float64], x: float, y: float) -> int:
    """Index of the centreline point closest to ``(x, y)``."""
    d2 = (track_xy[:, 0] - x) ** 2 + (track_xy[:, 1] - y) ** 2
    return int(np.argmin(d2))


def distance_to_centreline(track_xy: NDArray[np.float64], x: float, y: float) -> float:
    """Distance from ``(x, y)`` to the nearest centreline point (how far off the road's middle)."""
    i = nearest_index(track_xy, x, y)
    return math.hypot(track_xy[i, 0] - x, track_xy[i, 1] - y)


def _point_ahead(
    track_xy: NDArray[np.float64], pose: CarPose, distance: float
) -> tuple[float, float]:
    """The first point after the nearest one that is at least `distance` from the car."""
    n = len(track_xy)
    start = nearest_index(track_xy, pose.x, pose.y)
    for k in range(1, n):
        px, py = track_xy[(start + k) % n]
        if math.hypot(px - pose.x, py - pose.y) >= distance:
            return float(px), float(py)
    px, py = track_xy[(start + 1) % n]
    return float(px), float(py)


def _bearing(pose: CarPose, point: tuple[float, float]) -> float:
    """Angle from the car's nose to `point`, radians, positive to the right."""
    dx, dy = point[0] - pose.x, point[1] - pose.y
    forward = dx * -math.sin(pose.angle) + dy * math.cos(pose.angle)
    right = dx * math.cos(pose.angle) + dy * math.sin(pose.angle)
    return math.atan2(right, forward)
