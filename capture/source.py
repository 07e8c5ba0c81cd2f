"""What a frame source is: one `Step` per frame, and the `Source` interface.

A source plays races (episodes) with its own built-in policy and yields, for
every step, the frame the policy saw, the action it took, the reward that
action earned and whether the race ended there. That is the row layout the
store keeps, so recording is a plain loop::

    with make_source("carracing") as src:
        for step in src.race(max_steps=300, seed=0):
            writer.append(step.frame, action=step.action, reward=step.reward,
                          terminated=step.terminated, truncated=step.truncated)

The frame after the last step is not yielded: a race of N steps has N frames.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from replay.closing import Closing


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a race: the observed frame and what happened after it.

    Attributes:
        frame: the frame the policy saw, ``(height, width, 3)`` uint8 RGB. Host sources
            give a NumPy array; the synthetic source with ``device="cuda"`` gives a CuPy
            array of the same shape and dtype (the writer accepts both).
        action: the action taken on that frame, float32 of the source's `action_shape`.
        reward: the reward that action earned.
        terminated: the race ended by its own rules (lap done, crash, death).
        truncated: the race was cut short (step limit, time limit); the state was
            not terminal, so a learner should bootstrap from it.
    """

    frame: NDArray[np.uint8]
    action: NDArray[np.float32]
    reward: float
    terminated: bool
    truncated: bool


class Source(Closing, abc.ABC):
    """A game, simulator or screen that plays races and yields `Step`s.

    The attributes describe every race the source plays; `replay record` passes
    them to ``store.new_race`` unchanged. Subclasses set them in ``__init__``,
    implement `race` and `close`, and open their game lazily enough that
    creating a source is the only expensive call.

    Use it as a context manager so the game process or display connection is
    released even when recording fails.
    """

    #: Environment name, e.g. ``"CarRacing-v3"``.
    env: str
    #: Map, track or scenario name; ``"procedural"`` where every race draws a new one.
    map: str
    #: Name and version of the built-in policy that chooses the actions.
    policy: str
    #: Steps per second of game time (what a replay viewer should play at).
    fps: int
    #: Frame height in pixels.
    height: int
    #: Frame width in pixels.
    width: int
    #: Shape of every `Step.action`.
    action_shape: tuple[int, ...]
    #: How `replay record` stores this source's frames unless told (``--codec``): the
    #: smaller on disk. Flat-shaded games compress better losslessly (see
    #: docs/benchmarks.md, "Quality and size").
    codec: Literal["jpeg", "zstd"] = "jpeg"

    @abc.abstractmethod
    def race(self, max_steps: int, seed: int | None = None) -> Iterator[Step]:
        """Play one race and yield its steps.

        Stops after `max_steps` steps (the last one is marked ``truncated``) or
        when the race ends by itself (``terminated``, or ``truncated`` by the
        game's own time limit). The same `seed` plays the same race where the
        game is deterministic; ``None`` picks a fresh one.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the game, window or device; calling it twice is harmless."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(env={self.env!r}, map={self.map!r}, policy={self.policy!r}, "
            f"{self.width}x{self.height} @ {self.fps} fps, action_shape={self.action_shape})"
        )


def check_max_steps(max_steps: int) -> int:
    """Reject a non-positive step limit at once, naming the value."""
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    return max_steps
