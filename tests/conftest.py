"""Fixtures shared by all tests: real game frames from the capture sources.

`carracing_frames` is what the store, writer and reader tests use as "real
game frames": the first 48 steps of a CarRacing-v3 race at 1600x900, played
by the pure-pursuit driver from a fixed seed (the race's first second, while
the camera zooms in on the car). The frames are made read-only because the
list is shared by the whole session; copy a frame before changing it.
"""

from __future__ import annotations

import pytest

from capture.source import Step

CARRACING_SEED = 7
CARRACING_STEPS = 48
VIZDOOM_SEED = 7
VIZDOOM_STEPS = 16


def _frozen(steps: list[Step]) -> list[Step]:
    for step in steps:
        step.frame.flags.writeable = False
    return steps


@pytest.fixture(scope="session")
def carracing_frames() -> list[Step]:
    """48 consecutive CarRacing `Step`s: (900, 1600, 3) uint8 RGB frames, float32 (3,) actions."""
    from capture.carracing import CarRacingSource

    with CarRacingSource() as source:
        steps = list(source.race(max_steps=CARRACING_STEPS, seed=CARRACING_SEED))
    assert len(steps) == CARRACING_STEPS
    return _frozen(steps)


@pytest.fixture(scope="session")
def vizdoom_frames() -> list[Step]:
    """16 consecutive ViZDoom `Step`s of ``defend_the_center`` at 1600x900 (skipped without
    the vizdoom package)."""
    pytest.importorskip(
        "vizdoom", reason="vizdoom is not installed (pip install 'replay[capture]')"
    )
    from capture.vizdoom import ViZDoomSource

    with ViZDoomSource(scenario="defend_the_center") as source:
        steps = list(source.race(max_steps=VIZDOOM_STEPS, seed=VIZDOOM_SEED))
    assert len(steps) == VIZDOOM_STEPS
    return _frozen(steps)
