"""The source registry, `Step`, and the errors for unknown names and missing packages."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

import capture
from capture import (
    DEFAULT_SOURCE,
    SOURCES,
    MissingDependencyError,
    Step,
    UnknownSourceError,
    make_source,
)
from capture.deps import require
from capture.synthetic import SyntheticSource
from replay.errors import ReplayError


def test_registry_names_and_default() -> None:
    assert set(SOURCES) == {"carracing", "vizdoom", "screen", "synthetic"}
    assert DEFAULT_SOURCE == "carracing"


def test_unknown_source_names_the_known_ones() -> None:
    with pytest.raises(UnknownSourceError) as info:
        make_source("carrace")
    message = str(info.value)
    assert "'carrace'" in message
    for name in SOURCES:
        assert name in message
    assert isinstance(info.value, ReplayError)
    assert isinstance(info.value, ValueError)


def test_make_source_passes_arguments() -> None:
    with make_source("synthetic", width=320, height=180, fps=12) as source:
        assert isinstance(source, SyntheticSource)
        assert (source.height, source.width, source.fps) == (180, 320, 12)
        step = next(source.race(max_steps=1, seed=0))
    assert step.frame.shape == (180, 320, 3)


def test_make_source_defaults_to_carracing() -> None:
    with make_source() as source:
        assert source.env == "CarRacing-v3"
        assert (source.height, source.width) == (900, 1600)


def test_step_is_frozen() -> None:
    step = Step(
        frame=np.zeros((2, 2, 3), np.uint8),
        action=np.zeros(3, np.float32),
        reward=0.0,
        terminated=False,
        truncated=False,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.reward = 1.0  # type: ignore[misc]


def test_race_rejects_a_nonpositive_step_limit() -> None:
    with make_source("synthetic") as source, pytest.raises(ValueError, match="max_steps"):
        next(source.race(max_steps=0))


def test_missing_package_names_the_capture_extra() -> None:
    with pytest.raises(MissingDependencyError) as info:
        require("replay_test_no_such_package", source="screen")
    message = str(info.value)
    assert "'screen'" in message
    assert "replay_test_no_such_package" in message
    assert "pip install 'replay[capture]'" in message
    assert isinstance(info.value, ReplayError)
    assert isinstance(info.value, ImportError)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="cupy is installed")
def test_missing_cupy_names_the_gpu_extra() -> None:
    with pytest.raises(MissingDependencyError, match=r"pip install 'replay\[gpu\]'"):
        make_source("synthetic", device="cuda")


def test_package_exports() -> None:
    assert sorted(capture.__all__) == sorted(
        [
            "DEFAULT_SOURCE",
            "SOURCES",
            "CaptureError",
            "MissingDependencyError",
            "Source",
            "Step",
            "UnknownSourceError",
            "make_source",
        ]
    )
    for name in capture.__all__:
        assert hasattr(capture, name)
