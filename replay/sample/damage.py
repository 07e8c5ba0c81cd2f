"""Damaged data a ``skip_corrupt`` sampler has met: never drawn again.

A `Sampler` holds one `Damage`: `mark` remembers a corrupt shard or frame (and says
which items touch it, for the selector to zero), `avoid` redraws the items of a draw
whose windows touch a remembered place, and `state` / `load` carry the places in the
sampler's `state_dict`. It knows windows (`span` steps, `stride` apart), not how to
read or choose.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from replay.errors import CorruptDataError, SamplingError
from replay.read.batch import MAX_REDRAWS, EncodedBatch, SampleKeys, corrupt_frame_error
from replay.read.index import RaceEntry
from replay.sample.items import ItemSpace
from replay.sample.selector_protocol import Draw

__all__ = ["Damage", "Drawn", "Skipped", "frame_errors"]
R = TypeVar("R")


class Skipped(NamedTuple):
    """A damaged place a ``skip_corrupt`` sampler skipped: a whole shard (`step` None), or
    one frame. ``str()`` gives ``race:shard`` or ``race:shard:step``."""

    race_id: str
    shard: int
    step: int | None

    def __str__(self) -> str:
        return f"{self.race_id}:{self.shard}" + ("" if self.step is None else f":{self.step}")


@dataclass(frozen=True)
class Drawn(Generic[R]):
    """One batch clear of damaged data (`Sampler.draw`): its keys, its stored bytes,
    what the decode function made of them, and the damaged places skipped to get it."""

    keys: SampleKeys
    encoded: EncodedBatch
    decoded: R
    skipped: list[Skipped]


def frame_errors(encoded: EncodedBatch, failed: list[int]) -> list[CorruptDataError]:
    """The errors of the frames (flat indices) of `encoded` that did not decode, one per
    damaged place (a frame drawn twice in one batch is one place)."""
    errors: dict[tuple[str, int | None], CorruptDataError] = {}
    for i in failed:
        error = corrupt_frame_error(encoded, i)
        errors.setdefault((error.race_id, error.step), error)
    return list(errors.values())


class Damage:
    """The corrupt shards and frames met so far, and the windows that touch them."""

    def __init__(self, span: int, stride: int) -> None:
        self.span, self.stride = span, stride
        self.shards: set[tuple[str, int]] = set()
        self.frames: set[tuple[str, int]] = set()
        #: places marked (a counter: `SamplerStats.corrupt_skipped`)
        self.skipped = 0

    def __bool__(self) -> bool:
        return bool(self.shards or self.frames)

    def mark(
        self, e: CorruptDataError, shard_size: int, *, whole: bool
    ) -> tuple[Skipped, list[tuple[str, int]]]:
        """Remember the shard (`whole`) or frame of `e`; the place, and the (race, start)
        keys of every window that touches it (sorted)."""
        step = None if whole else e.step  # None: the whole shard
        self.skipped += 1
        if step is None:
            self.shards.add((e.race_id, e.shard))
            steps = range(e.shard * shard_size, (e.shard + 1) * shard_size)
        else:
            self.frames.add((e.race_id, step))
            steps = range(step, step + 1)
        keys = {
            (e.race_id, start)
            for bad in steps
            for start in range(bad - self.span + 1, bad + 1)
            if start >= 0 and (bad - start) % self.stride == 0
        }
        return Skipped(e.race_id, e.shard, step), sorted(keys)

    def touches(self, e: RaceEntry, start: int) -> bool:
        """True if the window of `e` from `start` holds a remembered shard or frame."""
        s = e.info.shard_size
        for step in range(start, start + self.span, self.stride):
            if (e.race_id, step // s) in self.shards or (e.race_id, step) in self.frames:
                return True
        return False

    def avoid(self, space: ItemSpace, d: Draw, redraw: Callable[[int], Draw]) -> Draw:
        """`d` with every item that touches damage replaced by `redraw(k)`'s, until none do."""
        n = len(d.races)
        races, starts = d.races.copy(), d.starts.copy()
        p, w = d.probabilities.copy(), d.weights.copy()
        for _ in range(MAX_REDRAWS):
            bad = [i for i in range(n) if self.touches(space.entries[races[i]], int(starts[i]))]
            if not bad:
                return Draw(races, starts, p, w)
            redo = redraw(len(bad))
            races[bad], starts[bad] = redo.races, redo.starts
            p[bad], w[bad] = redo.probabilities, redo.weights
        raise SamplingError(f"no {n} items clear of corrupt data after {MAX_REDRAWS} tries")

    def state(self) -> dict[str, Any]:
        """The places, for a `state_dict`."""
        return {"bad_shards": sorted(self.shards), "bad_frames": sorted(self.frames)}

    def load(self, state: Mapping[str, Any]) -> None:
        """Take back the places of `state` (missing: none)."""
        self.shards = {(str(r), int(s)) for r, s in state.get("bad_shards", [])}
        self.frames = {(str(r), int(s)) for r, s in state.get("bad_frames", [])}
