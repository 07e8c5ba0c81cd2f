"""Small stores for the index, sampler, reader and loader tests.

Frames are small (90x160) where pixels do not matter, so statistical tests
that only draw keys stay fast; the reader tests use real CarRacing frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import replay
from replay.read.batch import SampleKeys

H, W = 90, 160


def small_frames(n: int, seed: int = 0, h: int = H, w: int = W) -> npt.NDArray[np.uint8]:
    """`n` smooth synthetic frames (compress like images, not like noise)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, h)[:, None, None]
    x = np.linspace(0, 1, w)[None, :, None]
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for i in range(n):
        c = rng.random(3)
        out[i] = (255 * (0.5 + 0.5 * np.sin(6 * (c * x + (1 - c) * y) + i / 3))).astype(np.uint8)
    return out


def write_race(
    store: replay.Store,
    frames: npt.NDArray[np.uint8],
    *,
    t0_ns: int | None = None,
    dt_ns: int = 33_333_333,
    **kwargs: Any,
) -> str:
    """Record `frames` as one race; reward = step, action = (step, 2*step, 3*step)."""
    kwargs.setdefault("env", "test")
    kwargs.setdefault("shard_size", 8)
    h, w = frames.shape[1:3]
    with store.new_race(height=h, width=w, **kwargs) as writer:
        for step, frame in enumerate(frames):
            steps: dict[str, Any] = {
                "action": np.array([1, 2, 3], dtype=np.float32) * step,
                "reward": float(step),
                "terminated": step == len(frames) - 1,
            }
            if t0_ns is not None:
                steps["t_ns"] = t0_ns + step * dt_ns
            writer.append(frame, **steps)
    return writer.race_id


def make_store(
    path: Path, lengths: Sequence[int], *, seed: int = 0, **kwargs: Any
) -> tuple[replay.Store, list[str]]:
    """A store at `path` with one race per length."""
    store = replay.open_store(path)
    ids = [
        write_race(store, small_frames(n, seed=seed + i), **kwargs) for i, n in enumerate(lengths)
    ]
    return store, ids


def chi_square(counts: npt.NDArray[np.int64], expected: npt.NDArray[np.float64]) -> float:
    """Pearson's statistic for observed `counts` against `expected` counts."""
    return float(np.sum((counts - expected) ** 2 / expected))


#: 99.9% quantiles of the chi-square distribution by degrees of freedom (scipy.stats.chi2.ppf).
CHI2_999 = {6: 22.46, 9: 27.88, 13: 34.53, 19: 43.82, 21: 46.80, 39: 72.05}


def keys_of(race_id: str, starts: list[int], seq_len: int = 1) -> SampleKeys:
    """Keys of windows of `seq_len` steps at `starts` of one race (weights 0.5..1)."""
    steps = np.array([[s + i for i in range(seq_len)] for s in starts], dtype=np.int64)
    return SampleKeys(
        race_ids=[race_id] * len(starts),
        steps=steps,
        weights=np.linspace(0.5, 1, len(starts)).astype(np.float32),
        probabilities=np.full(len(starts), 1 / 12),
    )
