"""Gymnasium's CarRacing-v3, rendered at 1600x900 and driven by `PurePursuit`.

CarRacing draws into a pygame surface whose size is read from module globals
(``WINDOW_W``/``WINDOW_H``/``VIDEO_W``/``VIDEO_H``) on every render. Rather than
change them for every other user of the module, `_HighResCarRacing` sets them
only for the duration of its own ``_render`` calls (under a lock) and puts the
originals back. It also renders once per step instead of twice: stock
CarRacing draws the full window for its 96x96 observation inside ``step`` and
again for ``render()``; here ``step`` draws the full-resolution frame, keeps
it for ``render()``, and scales the observation from the same surface (so the
observation also shows skid marks, which stock observations omit).

Tracks are procedural: each race draws a new one from its seed, so `map` is
``"procedural"`` and the seed identifies the track.

Example::

    with CarRacingSource() as src:
        for step in src.race(max_steps=300, seed=1):
            ...
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from capture.carracing_policy import CarPose, PurePursuit, distance_to_centreline
from capture.deps import require
from capture.errors import MissingDependencyError
from capture.source import Source, Step, check_max_steps

require("gymnasium", source="carracing")
require("pygame", source="carracing")
with warnings.catch_warnings():
    # Box2D's SWIG module warns while it initialises; with warnings turned into
    # errors (pytest's filterwarnings=error, python -W error) that warning makes
    # the extension's init fail and the interpreter segfault. Ignore it here.
    warnings.filterwarnings(
        "ignore", message=r"builtin type \w+ has no __module__", category=DeprecationWarning
    )
    require("Box2D", source="carracing")
    try:
        from gymnasium.envs.box2d import car_racing
    except Exception as exc:  # gymnasium's DependencyNotInstalled is not an ImportError
        raise MissingDependencyError(
            f"source 'carracing' cannot load gymnasium's CarRacing ({exc}): "
            "pip install 'replay[capture]'"
        ) from exc
import pygame  # noqa: E402  (after the dependency checks above)

__all__ = ["CarRacingSource"]

_GLOBALS_LOCK = threading.RLock()


@contextmanager
def _window_size(width: int, height: int) -> Iterator[None]:
    """Set CarRacing's window and video size globals, restoring them on exit."""
    names = ("WINDOW_W", "WINDOW_H", "VIDEO_W", "VIDEO_H")
    with _GLOBALS_LOCK:
        saved = {name: getattr(car_racing, name) for name in names}
        car_racing.WINDOW_W = car_racing.VIDEO_W = width
        car_racing.WINDOW_H = car_racing.VIDEO_H = height
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(car_racing, name, value)


class _HighResCarRacing(car_racing.CarRacing):
    """CarRacing that renders `width` x `height` frames, once per step."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__(render_mode="rgb_array")
        self._size = (width, height)
        self._frame: NDArray[np.uint8] | None = None

    def _render(self, mode: str) -> Any:
        with _window_size(*self._size):
            if mode == "state_pixels":  # inside step(): draw the full frame once
                self._frame = super()._render("rgb_array")
                if self._frame is None:  # before reset() nothing is drawn
                    return None
                size = (car_racing.STATE_W, car_racing.STATE_H)
                return super()._create_image_array(self.surf, size)  # type: ignore[no-untyped-call]
            if mode == "rgb_array" and self._frame is not None:
                return self._frame
            return super()._render(mode)

    def _create_image_array(self, screen: pygame.Surface, size: tuple[int, int]) -> Any:
        if screen.get_size() != tuple(size):
            return super()._create_image_array(screen, size)  # type: ignore[no-untyped-call]
        # Native size: one copy, row-major RGB, instead of scale + transpose + copy.
        width, height = size
        data = bytearray(pygame.image.tobytes(screen, "RGB"))
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


class CarRacingSource(Source):
    """CarRacing-v3 races at full resolution, driven along the track by pure pursuit.

    Args:
        width: frame width in pixels (default 1600).
        height: frame height in pixels (default 900).
        driver: the policy; the default drives at a modest pace and brakes for corners.
    """

    def __init__(
        self, width: int = 1600, height: int = 900, driver: PurePursuit | None = None
    ) -> None:
        if width < 16 or height < 16:
            raise ValueError(f"frame size must be at least 16x16, got {width}x{height}")
        self.env = "CarRacing-v3"
        self.map = "procedural"
        # Flat colours: zstd keeps every pixel in about half of JPEG q90's bytes
        # (docs/benchmarks.md) and decodes faster on the CPU.
        self.codec = "zstd"
        self.policy = "pure-pursuit-v1"
        self.fps = int(car_racing.FPS)
        self.width = width
        self.height = height
        self.action_shape = (3,)
        self.driver = driver or PurePursuit()
        self._env: _HighResCarRacing | None = _HighResCarRacing(width, height)

    def race(self, max_steps: int, seed: int | None = None) -> Iterator[Step]:
        """Play one race on the track drawn from `seed`; see `Source.race`."""
        check_max_steps(max_steps)
        env = self._require_env()
        env.reset(seed=seed)
        track = _track_xy(env)
        for i in range(max_steps):
            frame = env.render()  # type: ignore[no-untyped-call]
            action = self.driver(self.pose(), track)
            _, reward, terminated, truncated, _ = env.step(action)
            yield Step(
                frame=frame,
                action=action,
                reward=float(reward),
                terminated=bool(terminated),
                truncated=bool(truncated) or (i == max_steps - 1 and not terminated),
            )
            if terminated or truncated:
                return

    def pose(self) -> CarPose:
        """The car's current position, heading and speed (what the driver sees)."""
        car = self._require_env().car
        if car is None:
            raise RuntimeError("no car yet: pose() is defined during a race")
        hull = car.hull
        vx, vy = hull.linearVelocity
        x, y = hull.position
        return CarPose(float(x), float(y), float(hull.angle), math.hypot(vx, vy))

    def off_centre(self) -> float:
        """Distance from the car to the centreline, world units (the road's half-width is 6.7)."""
        pose = self.pose()
        return distance_to_centreline(_track_xy(self._require_env()), pose.x, pose.y)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()  # type: ignore[no-untyped-call]
            self._env = None

    def _require_env(self) -> _HighResCarRacing:
        if self._env is None:
            raise RuntimeError("this CarRacingSource is closed")
        return self._env


def _track_xy(env: _HighResCarRacing) -> NDArray[np.float64]:
    """The current track's centreline points, (N, 2) world coordinates, in driving order."""
    return np.array([(p[2], p[3]) for p in env.track], dtype=np.float64)
