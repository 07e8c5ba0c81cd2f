"""A synthetic source for benchmarks: deterministic moving frames, on the host or the GPU.

Each race scrolls a seeded "landscape" (smooth colour bands, a road, a little
texture noise, so JPEG has something realistic to do) sideways by a few pixels
per step, with a bright square sweeping across it. At JPEG quality 90 its
frames compress about as well as ViZDoom's (~14x vs raw RGB), far worse than
CarRacing's flat colours (~75x), so benchmarks on it are not flattered.

The landscape is built once per race with NumPy; with ``device="cuda"`` it is
uploaded once and every frame is then cut out of it on the GPU, so frames
arrive as CuPy arrays in device memory without a host copy, as they would
from a GPU renderer. Host and device frames of the same seed and step are
identical.

Frames depend only on ``(seed, step)``, so benchmarks and tests can recompute
any frame with `SyntheticSource.frame_at`.

Example::

    with SyntheticSource(device="cuda") as src:
        for step in src.race(max_steps=1000, seed=0):
            writer.append(step.frame, ...)   # a cupy.ndarray on the GPU
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from capture.deps import require
from capture.errors import CaptureError
from capture.source import Source, Step, check_max_steps

__all__ = ["SyntheticSource"]

Device = Literal["cpu", "cuda"]

#: Pixels the view scrolls per step.
SCROLL = 7
#: Side of the sweeping square, pixels.
SQUARE = 96


class SyntheticSource(Source):
    """Deterministic moving-pattern frames and actions, as fast as they can be cut out.

    Args:
        device: ``"cpu"`` yields NumPy frames, ``"cuda"`` CuPy frames made on the GPU
            (needs ``pip install 'replay[gpu]'`` and a CUDA device).
        width: frame width in pixels.
        height: frame height in pixels.
        fps: the nominal frame rate recorded with each race (frames are not paced).
        length: steps after which a race terminates by itself; ``None`` never does.
    """

    def __init__(
        self,
        device: Device = "cpu",
        width: int = 1600,
        height: int = 900,
        fps: int = 30,
        length: int | None = None,
    ) -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if width < SQUARE or height < SQUARE:
            raise ValueError(f"frame size must be at least {SQUARE}x{SQUARE}, got {width}x{height}")
        if fps < 1:
            raise ValueError(f"fps must be at least 1, got {fps}")
        if length is not None and length < 1:
            raise ValueError(f"length must be at least 1 or None, got {length}")
        self.env = "synthetic"
        self.map = "scrolling-landscape"
        self.policy = "sine-v1"
        self.fps = fps
        self.width = width
        self.height = height
        self.action_shape = (3,)
        self.device = device
        self.length = length
        self._xp: ModuleType = np if device == "cpu" else _cupy()

    def race(self, max_steps: int, seed: int | None = None) -> Iterator[Step]:
        """Yield `max_steps` frames of the landscape drawn from `seed` (0 when ``None``)."""
        check_max_steps(max_steps)
        seed = 0 if seed is None else seed
        landscape = self._xp.asarray(_landscape(seed, self.height, self.width))
        for t in range(max_steps):
            terminated = self.length is not None and t == self.length - 1
            yield Step(
                frame=_cut(self._xp, landscape, t),
                action=_action(t),
                reward=float(np.cos(t / 25.0)),
                terminated=terminated,
                truncated=not terminated and t == max_steps - 1,
            )
            if terminated:
                return

    def frame_at(self, seed: int, step: int) -> NDArray[np.uint8]:
        """The host copy of frame `step` of the race drawn from `seed` (for checks)."""
        frame: NDArray[np.uint8] = _cut(np, _landscape(seed, self.height, self.width), step)
        return frame

    def close(self) -> None:
        """Nothing to release: frames are made on demand."""


def _cut(xp: ModuleType, landscape: Any, t: int) -> Any:
    """Frame `t`: a window of `landscape` with the square drawn in, made by `xp` (numpy/cupy)."""
    height, width = landscape.shape[0], landscape.shape[1] // 2
    offset = (t * SCROLL) % width
    frame = xp.ascontiguousarray(landscape[:, offset : offset + width])
    x, y = _square_corner(t, height, width)
    frame[y : y + SQUARE, x : x + SQUARE] = xp.asarray([250, 240, 40], dtype=xp.uint8)
    return frame


def _landscape(seed: int, height: int, width: int) -> NDArray[np.uint8]:
    """A (height, 2*width, 3) seeded scene that tiles horizontally every `width` pixels."""
    rng = np.random.default_rng(seed)
    x = np.arange(width, dtype=np.float32) * (2 * np.pi / width)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    phase = rng.uniform(0, 2 * np.pi, size=3).astype(np.float32)
    img = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):  # smooth colour bands, periodic in x so the scroll wraps seamlessly
        img[..., c] = 110 + 60 * np.sin(x * (c + 1) + phase[c]) * (0.5 + y) + 40 * y
    road_centre = height * (0.65 + 0.1 * np.sin(x + phase[0]))
    rows = np.arange(height, dtype=np.float32)[:, None]
    on_road = np.abs(rows - road_centre[None, :]) < height * 0.08
    img[on_road] = 105.0
    img += rng.normal(0.0, 4.0, size=(height, width, 1)).astype(np.float32)  # texture
    tile = np.clip(img, 0, 255).astype(np.uint8)
    return np.concatenate([tile, tile], axis=1)


def _square_corner(t: int, height: int, width: int) -> tuple[int, int]:
    """Top-left corner of the sweeping square at step `t` (bounces inside the frame)."""
    span_x, span_y = width - SQUARE, height - SQUARE
    x = (t * 11) % (2 * span_x)
    y = (t * 5) % (2 * span_y)
    return (x if x <= span_x else 2 * span_x - x), (y if y <= span_y else 2 * span_y - y)


def _action(t: int) -> NDArray[np.float32]:
    """A smooth deterministic (steer, gas, brake)."""
    return np.array([np.sin(t / 15.0), 0.5 + 0.5 * np.cos(t / 40.0), 0.0], dtype=np.float32)


def _cupy() -> ModuleType:
    """CuPy with a usable CUDA device, or a clear error."""
    cp = require("cupy", source="synthetic")
    try:
        count = int(cp.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDARuntimeError when there is no driver
        raise CaptureError(
            f"synthetic source with device='cuda' found no CUDA device: {exc}"
        ) from exc
    if count == 0:
        raise CaptureError("synthetic source with device='cuda' found no CUDA device")
    return cp
