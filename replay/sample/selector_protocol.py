"""What a selector is: the protocol every selector follows, and what a draw gives.

The selector part of TorchRL's Storage/Sampler/Writer split: a selector only chooses
item numbers from an `ItemSpace` (`replay.sample.items`) and says how likely each
was (`Draw`). `Selector`'s hooks have no-op defaults, as TorchRL's ``Sampler`` base
class has: `on_refresh`, `zero`, `state_dict` and `load_state_dict` do nothing and
`update_priorities` refuses, unless a selector keeps priorities; the sampler never asks
which selector it holds. The selectors are in `replay.sample.selectors` (`Uniform`,
`Recent`, `make_selector`) and `replay.sample.prioritized`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from replay.errors import SamplingError
from replay.sample.items import ItemSpace


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
