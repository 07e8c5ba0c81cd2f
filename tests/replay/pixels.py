"""How close a GPU decode must come to libjpeg-turbo's (the CPU path) to count as the
same picture: bounds on the mean and the 99.9th percentile of the difference, in levels.

Why not a bound on the maximum: two correct JPEG decoders differ by their IDCT's
rounding, a level or two on most pixels and a few more on rare ones, so a maximum
either fails a correct decoder or is loose enough to pass a wrong one. Measured on 48
real CarRacing frames (q90, 4:2:0, `tests/replay/read/test_decode.py` recomputes them):

- another IDCT (libjpeg-turbo's fast integer one against its exact one, the kind of
  difference nvJPEG's IDCT makes): mean 0.84, p99.9 3, max 8 levels;
- simple (replicated) chroma upsampling, nvJPEG's default, against libjpeg-turbo's
  fancy (interpolating) one: mean 0.19, p99.9 16, max 111 levels.

So p99.9 <= 6 passes any IDCT and fails the wrong upsampling; mean < 1.5 fails a
shifted or mis-converted picture whose outliers are few.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MEAN_LEVELS = 1.5
P999_LEVELS = 6.0


def assert_same_decode(got: Any, want: Any, level: float = 1.0) -> None:
    """Assert `got` and `want` (host arrays) are one decoded picture; `level` is one
    uint8 step in their units (1/255/std after a normalising transform)."""
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)) / level
    mean, p999 = float(diff.mean()), float(np.percentile(diff, 99.9))
    why = (
        f"GPU and CPU decodes differ by mean {mean:.2f}, p99.9 {p999:.1f}, "
        f"max {diff.max():.0f} levels (bounds: mean < {MEAN_LEVELS}, p99.9 <= {P999_LEVELS})"
    )
    assert mean < MEAN_LEVELS, why
    assert p999 <= P999_LEVELS, why
