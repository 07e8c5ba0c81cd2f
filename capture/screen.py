"""An X11 screen region as a source: record whatever a person or program plays there.

Grabs a region of the X display with `mss` (X shared memory where available)
at a steady frame rate. Nothing is steered from here, so every action is
zeros and every reward 0.0; a race is simply `max_steps` frames, marked
``truncated`` at the end. The race's `env` and `map` are labels you give
(``ScreenSource(env="TrackMania", map="A01")``), since the screen cannot say.

Example::

    with ScreenSource(left=0, top=0, width=1600, height=900, display=":0") as src:
        for step in src.race(max_steps=30 * 60):   # one minute at 30 fps
            ...
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from capture.deps import require
from capture.errors import CaptureError
from capture.source import Source, Step, check_max_steps

mss = require("mss", source="screen")

__all__ = ["ScreenSource"]


class ScreenSource(Source):
    """Frames of one screen region, paced at `fps`.

    Args:
        left: region's left edge, pixels from the display's left.
        top: region's top edge.
        width: region width (default 1600).
        height: region height (default 900).
        fps: capture rate; grabs are spaced 1/fps apart (a slow grab is not made up for).
        display: X display such as ``":1"``; ``None`` uses ``$DISPLAY``.
        env: label for what is on screen, stored with each race.
        map: label for the map or track, stored with each race.
        action_size: length of the (all-zero) action vectors.
    """

    def __init__(
        self,
        left: int = 0,
        top: int = 0,
        width: int = 1600,
        height: int = 900,
        fps: int = 30,
        display: str | None = None,
        env: str = "screen",
        map: str = "unknown",
        action_size: int = 3,
    ) -> None:
        if width < 1 or height < 1 or left < 0 or top < 0:
            raise ValueError(f"bad screen region {width}x{height}+{left}+{top}")
        if fps < 1:
            raise ValueError(f"fps must be at least 1, got {fps}")
        if action_size < 1:
            raise ValueError(f"action_size must be at least 1, got {action_size}")
        self.env = env
        self.map = map
        self.policy = "human"
        self.fps = fps
        self.width = width
        self.height = height
        self.action_shape = (action_size,)
        self.region = {"left": left, "top": top, "width": width, "height": height}
        where = display or "$DISPLAY"
        try:
            self._grabber: Any = _open(display)
        except mss.ScreenShotError as exc:
            raise CaptureError(f"cannot open X display {where}: {exc}") from exc
        screen = self._grabber.monitors[0]
        if left + width > screen["width"] or top + height > screen["height"]:
            self.close()
            raise CaptureError(
                f"region {width}x{height}+{left}+{top} does not fit display {where} "
                f"of {screen['width']}x{screen['height']}"
            )

    def grab(self) -> NDArray[np.uint8]:
        """One frame of the region now, (height, width, 3) uint8 RGB."""
        if self._grabber is None:
            raise RuntimeError("this ScreenSource is closed")
        try:
            shot = self._grabber.grab(self.region)
        except mss.ScreenShotError as exc:
            raise CaptureError(f"screen grab of {self.region} failed: {exc}") from exc
        bgra = np.frombuffer(shot.raw, dtype=np.uint8).reshape(self.height, self.width, 4)
        # A view, not a copy: a writer's append copies a strided frame per channel (5-10 ms
        # at 1600x900, NumPy's own copy 18-20 ms), so the RGB frame is copied once, there.
        return bgra[:, :, 2::-1]

    def race(self, max_steps: int, seed: int | None = None) -> Iterator[Step]:
        """Capture `max_steps` frames at `fps`; `seed` is ignored (the screen is not seeded)."""
        check_max_steps(max_steps)
        period = 1.0 / self.fps
        due = time.monotonic()
        for i in range(max_steps):
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:  # running late: restart the schedule rather than burst to catch up
                due = time.monotonic()
            due += period
            yield Step(
                frame=self.grab(),
                action=np.zeros(self.action_shape, dtype=np.float32),
                reward=0.0,
                terminated=False,
                truncated=i == max_steps - 1,
            )

    def close(self) -> None:
        grabber, self._grabber = getattr(self, "_grabber", None), None
        if grabber is not None:
            grabber.close()


def _open(display: str | None) -> Any:
    """An mss grabber on `display`, with the constructor the installed mss prefers."""
    version = tuple(int(p) for p in mss.__version__.split(".")[:2])
    factory = mss.MSS if version >= (10, 2) else mss.mss  # mss.mss is deprecated from 10.2
    return factory(display=display) if display is not None else factory()
