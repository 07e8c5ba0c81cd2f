"""Selectors: which items (windows of steps) a batch holds, and nothing else.

The selector part of TorchRL's Storage/Sampler/Writer split: `Uniform`, `Recent`
and `Prioritized` only choose item numbers from an `ItemSpace` (the windows the
index's races allow) and say how likely each was; `replay.samplers.Sampler`
composes one with the index and the reader. They read no storage: `Recent` takes
step times from the space (`ItemSpace.step_times`, the sampler's reader behind it).

All three are `Selector`s (`replay.items`): one protocol with no-op defaults, as
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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.errors import SamplingError
from replay.index import RaceEntry
from replay.items import Draw, ItemSpace, Selector, StepTimes
from replay.sumtree import SumTree

__all__ = [
    "Draw",
    "ItemSpace",
    "Prioritized",
    "Recent",
    "Selector",
    "StepTimes",
    "Uniform",
    "make_selector",
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


#: Removed races' leaves a prioritized sum tree may keep before it is compacted (at
#: least; beyond that, as many as it has live leaves).
COMPACT_MIN_LEAVES = 1024


class Prioritized(Selector):
    """Proportional prioritized replay (Schaul et al. 2016) over a sum tree.

    P(i) = p_i^alpha / sum_j p_j^alpha; importance weights (N P(i))^-beta are
    divided by the batch's largest. New items enter at the largest priority seen
    so far (1.0 at first). Priorities are kept per (race, start step), so they
    survive restarts through `state_dict` / `load_state_dict`.
    """

    kind = "prioritized"

    def __init__(self, *, alpha: float, beta: float) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.alpha, self.beta = alpha, beta
        self.tree = SumTree()
        self.max_priority = 1.0
        # per race: list of (first start, first leaf, count), starts contiguous from 0
        self._segments: dict[str, list[tuple[int, int, int]]] = {}
        self._allocated: dict[str, int] = {}
        self._leaf_race: list[str] = []  # per segment, parallel to the two arrays below
        self._leaf_lo: list[int] = []
        self._leaf_start: list[int] = []
        self._lo_array = self._start_array = np.zeros(0, dtype=np.int64)  # the two, for draw
        self._restored: dict[str, npt.NDArray[np.float64]] = {}
        self._space: ItemSpace | None = None
        self._seg_race = np.zeros(0, dtype=np.int64)

    def sync(self, space: ItemSpace) -> None:
        """Give new items leaves, and free the leaves of races no longer present.

        A removed race's leaves are zeroed at once (never drawn again); once they
        outnumber the live leaves, `compact` rebuilds the tree from the live ones,
        so the tree holds at most about twice the live items however many races
        eviction churns through (amortised O(1) per removed leaf).
        """
        if space is self._space:
            return
        present = {e.race_id for e in space.entries}
        for race_id in [r for r in self._allocated if r not in present]:
            for _, leaf, count in self._segments.pop(race_id):
                self.tree.set(np.arange(leaf, leaf + count), np.zeros(count))
            del self._allocated[race_id]
        live = sum(self._allocated.values())
        if len(self.tree) - live > max(live, COMPACT_MIN_LEAVES):
            self.compact()
        for e, count in zip(space.entries, space.counts.tolist(), strict=True):
            have = self._allocated.get(e.race_id, 0)
            if count <= have:
                continue
            raw = np.full(count - have, self.max_priority)
            restored = self._restored.get(e.race_id)
            if restored is not None:
                m = max(0, min(count, len(restored)) - have)
                raw[:m] = restored[have : have + m]
            leaf = self.tree.append(raw**self.alpha)
            segs = self._segments.setdefault(e.race_id, [])
            if (
                segs
                and segs[-1][1] + segs[-1][2] == leaf
                and self._leaf_race
                and self._leaf_race[-1] == e.race_id
            ):
                start, lo, c = segs[-1]
                segs[-1] = (start, lo, c + count - have)
            else:
                segs.append((have, leaf, count - have))
                self._leaf_race.append(e.race_id)
                self._leaf_lo.append(leaf)
                self._leaf_start.append(have)
            self._allocated[e.race_id] = count
        self._space = space
        pos = {e.race_id: i for i, e in enumerate(space.entries)}
        # each segment's race position in `space` (-1: a removed race, its leaves are 0)
        self._seg_race = np.array([pos.get(r, -1) for r in self._leaf_race], dtype=np.int64)
        self._lo_array = np.asarray(self._leaf_lo, dtype=np.int64)
        self._start_array = np.asarray(self._leaf_start, dtype=np.int64)

    def compact(self) -> None:
        """Rebuild the tree from the live races' leaves only (one segment per race).

        Priorities are kept; the leaves of removed races are dropped and the tree's
        capacity shrinks to fit. Called by `sync` when removed leaves outnumber live ones.
        """
        races = list(self._allocated)
        parts = [
            self.tree.get(np.arange(leaf, leaf + count))
            for r in races
            for _, leaf, count in self._segments[r]
        ]
        values = np.concatenate(parts) if parts else np.zeros(0)
        self.tree = SumTree(capacity=max(1, len(values)))
        self.tree.append(values)
        self._segments, self._leaf_race, self._leaf_lo, self._leaf_start = {}, [], [], []
        leaf = 0
        for r in races:
            self._segments[r] = [(0, leaf, self._allocated[r])]
            self._leaf_race.append(r)
            self._leaf_lo.append(leaf)
            self._leaf_start.append(0)
            leaf += self._allocated[r]
        self._space = None  # the segment arrays are rebuilt at the next sync

    def draw(self, space: ItemSpace, rng: np.random.Generator, n: int) -> Draw:
        """`n` items drawn in proportion to priority ** alpha, with importance weights."""
        self.sync(space)
        total = self.tree.total
        if not total > 0:
            raise SamplingError("every item has priority 0; update some priorities above 0")
        leaves = self.tree.find(rng.random(n) * total)
        values = self.tree.get(leaves)
        seg = np.searchsorted(self._lo_array, leaves, side="right") - 1
        races = self._seg_race[seg]
        starts = self._start_array[seg] + leaves - self._lo_array[seg]
        p = values / total
        w = (space.total * p) ** -self.beta
        w = (w / w.max()).astype(np.float32)
        return Draw(races, starts.astype(np.int64), p, w)

    def leaves(self, keys: Sequence[tuple[str, int]]) -> tuple[list[int], list[int]]:
        """Leaf of each key that has one, and the positions of those keys."""
        out, where = [], []
        for i, (race_id, start) in enumerate(keys):
            segs = self._segments.get(race_id)
            if not segs or not 0 <= start < self._allocated[race_id]:
                continue
            j = bisect.bisect_right(segs, start, key=lambda seg: seg[0]) - 1
            first, leaf, _ = segs[j]
            out.append(leaf + start - first)
            where.append(i)
        return out, where

    def on_refresh(self, space: ItemSpace) -> None:
        """Give the new space's items leaves (`sync`)."""
        self.sync(space)

    def update_priorities(self, keys: Sequence[tuple[str, int]], priorities: Any) -> None:
        """Set the priorities of `keys` (`update`); nothing to do for none."""
        if len(keys) or np.size(priorities):
            self.update(keys, priorities)

    def update(self, keys: Sequence[tuple[str, int]], priorities: Any) -> int:
        """Set the priorities of `keys`; returns how many keys were known."""
        p = np.asarray(priorities, dtype=np.float64).reshape(-1)
        if len(p) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(p)} priorities")
        if not np.all(np.isfinite(p)) or np.any(p < 0):
            bad = p[~(np.isfinite(p) & (p >= 0))]
            raise ValueError(f"priorities must be finite and >= 0, got {bad[:4].tolist()}")
        leaves, where = self.leaves(keys)
        if leaves:
            self.tree.set(np.asarray(leaves), p[where] ** self.alpha)
            self.max_priority = max(self.max_priority, float(p[where].max()))
        return len(leaves)

    def zero(self, keys: Sequence[tuple[str, int]]) -> None:
        """Never draw these items again (corrupt frames)."""
        leaves, _ = self.leaves(keys)
        if leaves:
            self.tree.set(np.asarray(leaves), np.zeros(len(leaves)))

    def state_dict(self) -> dict[str, Any]:
        """The priorities (`state`) and `alpha`."""
        return {**self.state(), "alpha": np.float64(self.alpha)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output (`load_state`)."""
        self.load_state(state)

    def state(self) -> dict[str, Any]:
        """Raw priorities per race (start 0..n-1), as arrays for np.savez."""
        races = sorted(self._allocated)
        counts = np.array([self._allocated[r] for r in races], dtype=np.int64)
        values = np.zeros(int(counts.sum()), dtype=np.float64)
        at = 0
        for r, n in zip(races, counts.tolist(), strict=True):
            for first, leaf, c in self._segments[r]:
                v = self.tree.get(np.arange(leaf, leaf + c))
                values[at + first : at + first + c] = v ** (1 / self.alpha) if self.alpha else 1.0
            at += n
        for r, v in self._restored.items():  # races not seen this run keep their priorities
            if r not in self._allocated:
                races.append(r)
                counts = np.append(counts, len(v))
                values = np.concatenate([values, v])
        return {
            "race_ids": np.array(races, dtype="U26"),
            "counts": counts,
            "priorities": values,
            "max_priority": np.float64(self.max_priority),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore priorities saved by `state` (applied as races are synced)."""
        races = [str(r) for r in np.asarray(state["race_ids"]).tolist()]
        counts = np.asarray(state["counts"], dtype=np.int64)
        values = np.asarray(state["priorities"], dtype=np.float64)
        if len(races) != len(counts) or int(counts.sum()) != len(values):
            raise ValueError("priority state is inconsistent (race_ids, counts, priorities)")
        ends = np.cumsum(counts)
        bounds = zip(races, counts.tolist(), ends.tolist(), strict=True)
        self._restored = {r: values[e - c : e] for r, c, e in bounds}
        self.max_priority = float(state["max_priority"])
        self.tree = SumTree()
        self._segments, self._allocated = {}, {}
        self._leaf_race, self._leaf_lo, self._leaf_start = [], [], []
        self._space = None


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
