"""Fixtures for the replay package tests: real frames as arrays and as a file (the S3
server fixtures, shared with the service tests, are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest


@pytest.fixture(scope="session")
def real_frames(carracing_frames: list[Any]) -> npt.NDArray[np.uint8]:
    """Real CarRacing frames, (N, 900, 1600, 3) uint8."""
    return np.stack([step.frame for step in carracing_frames])


@pytest.fixture(scope="session")
def frames_file(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The real frames saved as .npy, for writers in child processes."""
    path = tmp_path_factory.mktemp("frames") / "frames.npy"
    np.save(path, real_frames)
    return path
