"""Prioritized replay: items drawn in proportion to a priority the learner updates.

`Prioritized` (Schaul et al.'s proportional variant) keeps one float64 sum tree over
the items of its `ItemSpace` (16 bytes per item, leaves and nodes): new items start
at the highest priority seen, `update_priorities` sets them from the learner's TD
errors (``priority ** alpha``), and each draw gives importance weights
``(N * P(i)) ** -beta``, normalised by their maximum. Races that leave the space
(evicted, filtered out) are compacted away; `state_dict` is what a sampler saves in
the store (`replay.sample.checkpoints`).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.arguments import whole
from replay.errors import SamplingError
from replay.format.spec import is_race_id
from replay.sample.items import ItemSpace
from replay.sample.selector_protocol import Draw, Selector
from replay.sample.sumtree import SumTree

#: Removed races' leaves a prioritized sum tree may keep before it is compacted (at
#: least; beyond that, as many as it has live leaves).
COMPACT_MIN_LEAVES = 1024
#: The largest priority taken: the sum tree's total of a billion items at it, raised to
#: any `alpha` <= 1, stays finite (1e308 at alpha 1 overflowed it, and every weight
#: came out NaN).
MAX_PRIORITY = 1e30


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
        good = np.isfinite(p) & (p >= 0) & (p <= MAX_PRIORITY)
        if not np.all(good):
            raise ValueError(
                f"priorities must be finite, >= 0 and <= {MAX_PRIORITY:g}, "
                f"got {p[~good][:4].tolist()}"
            )
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


def item_keys(keys: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """`update_priorities`' keys as (race id, first step) pairs of str and int; ValueError
    for a malformed id or a step that is not a whole number >= 0 (2.5 was taken as 2,
    "3" as 3). Well-formed keys of races not (or no longer) in the store pass: they are
    ignored, as keys of evicted races must be."""
    out = []
    for race_id, step in keys:
        if not isinstance(race_id, str) or not is_race_id(race_id):
            raise ValueError(f"key {(race_id, step)!r}: {race_id!r} is not a race id")
        first = whole(f"key {(race_id, step)!r}: its step", step)
        if first < 0:
            raise ValueError(f"key {(race_id, step)!r}: its step is negative")
        out.append((race_id, first))
    return out
