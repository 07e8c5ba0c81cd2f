"""The items a sampler draws from, and what a selector is.

An item is a window of `span` steps inside one race. `ItemSpace` holds, per race of
the index, how many windows fit (and, for selectors that choose by time, a way to
read the steps' times); `Draw` is what a selector chose; `Selector` is the protocol
every selector follows (`replay.selectors`: `Uniform`, `Recent`, `Prioritized`),
with no-op defaults as TorchRL's ``Sampler`` base class has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from replay.errors import SamplingError
from replay.index import RaceEntry

__all__ = ["Draw", "ItemSpace", "Selector", "StepTimes"]

#: A race's ``t_ns`` (time at append) at some of its steps.
StepTimes = Callable[[RaceEntry, npt.NDArray[np.int64]], npt.NDArray[np.int64]]


@dataclass
class ItemSpace:
    """The items a sampler can draw at one moment: per race, how many windows fit."""

    entries: list[RaceEntry]
    counts: npt.NDArray[np.int64]
    span: int
    #: the steps' times, read when a selector asks (`Recent`); None: not available
    step_times: StepTimes | None = None
    ends: npt.NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        self.ends = np.cumsum(self.counts)

    @property
    def total(self) -> int:
        """Items in the space."""
        return int(self.ends[-1]) if len(self.ends) else 0

    def require(self, n: int, where: str, seq_len: int, stride: int) -> None:
        """Raise `SamplingError` saying why, unless `n` items can be drawn (`where`: the
        store and filters, for the message)."""
        if self.total >= n:
            return
        if not self.entries:
            raise SamplingError(f"nothing to sample: no committed frames in {where}")
        longest = max(e.length for e in self.entries)
        if longest < self.span:
            raise SamplingError(
                f"seq_len={seq_len} with stride={stride} needs races of {self.span} "
                f"steps; the longest race in {where} has {longest}"
            )
        raise SamplingError(
            f"batch_size={n} is more than the {self.total} items (windows of {self.span} "
            f"steps) available in {where}"
        )

    def locate(self, items: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], Any]:
        """(race position, start step) of global item numbers."""
        race = np.searchsorted(self.ends, items, side="right")
        before = np.where(race > 0, self.ends[np.maximum(race - 1, 0)], 0)
        return race, items - before


@dataclass(frozen=True)
class Draw:
    """Chosen items: race positions in the space, start steps, probabilities, weights."""

    races: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    probabilities: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float32]


class Selector:
    """What every selector does: `draw`; the rest are no-ops unless a selector keeps state.

    `on_refresh` sees each new `ItemSpace` (after the index changed); `zero` stops
    items from being drawn (corrupt data) where a selector can; `state_dict` is what a
    checkpoint keeps (``{}``: nothing) and `load_state_dict` takes it back.
    """

    #: the sampler ``kind`` that makes this selector
    kind: ClassVar[str]

    def draw(self, space: ItemSpace, rng: np.random.Generator, n: int) -> Draw:
        """`n` items of `space`, their probabilities and importance weights."""
        raise NotImplementedError

    def on_refresh(self, space: ItemSpace) -> None:
        """The index changed: `space` is what can be drawn now."""

    def update_priorities(self, keys: Sequence[tuple[str, int]], priorities: Any) -> None:
        """New priorities of `keys`; refused (`SamplingError`) by a selector without them."""
        raise SamplingError(f"update_priorities needs kind='prioritized', not {self.kind!r}")

    def zero(self, keys: Sequence[tuple[str, int]]) -> None:
        """Never draw these items again, where the selector can tell them apart."""

    def state_dict(self) -> dict[str, Any]:
        """The state worth saving (arrays for np.savez); empty when there is none."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state_dict` output."""
