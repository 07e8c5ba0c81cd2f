"""Selectors: which items (windows of steps) a batch holds, and nothing else.

The selector part of TorchRL's Storage/Sampler/Writer split: `Uniform`, `Recent`
and `Prioritized` only choose item numbers from an `ItemSpace` (the windows the
index's races allow) and say how likely each was; `replay.sample.sampler.Sampler`
composes one with the index and the reader. They read no storage: `Recent` takes
step times from the space (`ItemSpace.step_times`, the sampler's reader behind it).

All three are `Selector`s (`replay.sample.items`): one protocol with no-op defaults, as
TorchRL's ``Sampler`` base class has. `Selector.on_refresh`, `Selector.zero`,
`Selector.state_dict` and `Selector.load_state_dict` do nothing and
`Selector.update_priorities` refuses, unless a selector keeps priorities; the
sampler never asks which selector it holds.
`make_selector` builds one from a sampler's ``kind``.

Memory: `Uniform` and `Recent` keep nothing per item; `Prioritized` keeps 16 bytes
per item (a float64 sum tree, leaves and nodes).
"""

from __future__ import annotations

import bisect

import numpy as np
import numpy.typing as npt

from replay.errors import SamplingError
from replay.read.index import RaceEntry
from replay.sample.items import ItemSpace, StepTimes
from replay.sample.prioritized import Prioritized
from replay.sample.selector_protocol import Draw, Selector

__all__ = [
    "Draw",
    "ItemSpace",
    "Recent",
    "Selector",
    "StepTimes",
    "Uniform",
]


class Uniform(Selector):
    """Every committed window equally likely (with replacement)."""

    kind = "uniform"

    def draw(self, space: ItemSpace, rng: np.random.Generator, n: int) -> Draw:
        """`n` items, each with probability 1 / items."""
        items = rng.integers(0, space.total, size=n)
        races, starts = space.locate(items)
        p = np.full(n, 1.0 / space.total)
        return Draw(races, starts, p, np.ones(n, dtype=np.float32))


class Recent(Selector):
    """A `fraction` of each batch from the newest `seconds` of experience, the rest uniform.

    "Newest" is measured on the steps' ``t_ns`` (wall-clock time at append, unless the
    recorder set it), back from the newest committed step of the sampled races, so
    an old store still has a newest minute. Weights are ones; `probabilities` are
    the true per-item draw probabilities.
    """

    kind = "recent"

    def __init__(self, *, seconds: float, fraction: float) -> None:
        if seconds <= 0:
            raise ValueError(f"recent_seconds must be positive, got {seconds}")
        if not 0 <= fraction <= 1:
            raise ValueError(f"recent_fraction must be in [0, 1], got {fraction}")
        self.window_ns = int(seconds * 1e9)
        self.fraction = fraction
        self._last_t: dict[str, tuple[int, int]] = {}  # race -> (length, t_ns of last step)
        self._space: ItemSpace | None = None
        self._recent = ItemSpace([], np.zeros(0, np.int64), 1)
        self._lo = np.zeros(0, np.int64)

    def recent_space(self, space: ItemSpace) -> tuple[ItemSpace, npt.NDArray[np.int64]]:
        """The recent items as their own space, and each race's first recent start."""
        if space is self._space:
            return self._recent, self._lo
        times = space.step_times
        if times is None:
            raise SamplingError("kind='recent' needs the steps' times (ItemSpace.step_times)")
        last = np.array([self._last_step_time(times, e) for e in space.entries], dtype=np.int64)
        cutoff = int(last.max()) - self.window_ns if len(last) else 0
        lo = np.array(
            [
                _first_at(times, e, cutoff) if t >= cutoff else e.length
                for e, t in zip(space.entries, last, strict=True)
            ],
            dtype=np.int64,
        )
        counts = np.maximum(space.counts - lo, 0)
        self._space, self._lo = space, lo
        self._recent = ItemSpace(space.entries, counts, space.span)
        return self._recent, lo

    def _last_step_time(self, times: StepTimes, e: RaceEntry) -> int:
        cached = self._last_t.get(e.race_id)
        if cached is not None and cached[0] == e.length:
            return cached[1]
        t = int(times(e, np.array([e.length - 1]))[0])
        self._last_t[e.race_id] = (e.length, t)
        return t

    def draw(self, space: ItemSpace, rng: np.random.Generator, n: int) -> Draw:
        """`n` items: the first round(fraction * n) recent, the rest uniform."""
        recent, lo = self.recent_space(space)
        k = round(self.fraction * n) if recent.total else 0
        r_items = rng.integers(0, recent.total, size=k) if k else np.zeros(0, np.int64)
        r_races, r_off = recent.locate(r_items)
        r_starts = lo[r_races] + r_off
        u_races, u_starts = space.locate(rng.integers(0, space.total, size=n - k))
        races = np.concatenate([r_races, u_races])
        starts = np.concatenate([r_starts, u_starts])
        is_recent = starts >= lo[races]
        f = self.fraction if recent.total else 0.0
        p = (1 - f) / space.total + np.where(is_recent, f / max(recent.total, 1), 0.0)
        return Draw(races, starts, p, np.ones(n, dtype=np.float32))


def _first_at(times: StepTimes, e: RaceEntry, cutoff: int) -> int:
    """First step of a race with t_ns >= cutoff (t_ns grows along a race)."""

    def t_ns(step: int) -> int:
        return int(times(e, np.array([step]))[0])

    return bisect.bisect_left(range(e.length), cutoff, key=t_ns)


def make_selector(
    kind: str, alpha: float, beta: float, recent_seconds: float, recent_fraction: float
) -> Selector:
    """The selector of a sampler ``kind``: "uniform", "recent" or "prioritized"."""
    if kind == "uniform":
        return Uniform()
    if kind == "recent":
        return Recent(seconds=recent_seconds, fraction=recent_fraction)
    if kind == "prioritized":
        return Prioritized(alpha=alpha, beta=beta)
    raise ValueError(f"kind must be 'uniform', 'prioritized' or 'recent', not {kind!r}")
