"""The store on an S3-compatible object store: a real SeaweedFS server on loopback.

Races are written with the `Writer` into ``s3://``, read back by plain zarr-python
(``zarr.storage.ObjectStore`` over its own obstore client), by the race reader and
by a sampler, served by the service, and survive a SIGKILLed writer. `ObjectStorage`
runs the shared `ByteStorage` contract (storage_contract.py), as `LocalStorage` does.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from storage_contract import ByteStorageContract

import replay
from replay.bench.seaweedfs import SeaweedFS
from replay.errors import ReadOnlyStoreError, StoreError
from replay.storage.base import ByteStorage
from replay.storage.local import TEMP_PREFIX

pytestmark = pytest.mark.s3
CHILD = Path(__file__).parents[1] / "writer_child.py"


def write_race(store: replay.Store, frames: Any, shard_size: int = 16) -> str:
    with store.new_race(env="CarRacing-v3", map="seed-0", shard_size=shard_size) as writer:
        for step, frame in enumerate(frames):
            writer.append(frame, action=[0.1 * step, 0.5, 0.0], reward=float(step))
    return writer.race_id


def relative_keys(storage: ByteStorage, race_id: str) -> list[str]:
    return sorted(k.replace(race_id, "<race>") for k, _ in storage.walk_sizes(""))


def plain_zarr_group(s3_server: SeaweedFS, url: str) -> Any:
    """The store opened by zarr-python over an obstore client of its own: no replay code."""
    import zarr
    from obstore.store import S3Store

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    client = S3Store(
        bucket,
        prefix=prefix,
        endpoint=s3_server.endpoint,
        access_key_id=s3_server.access_key,
        secret_access_key=s3_server.secret_key,
        region=s3_server.region,
        client_options={"allow_http": True},
    )
    return zarr.open_group(store=zarr.storage.ObjectStore(client, read_only=True), mode="r")


# -- the ByteStorage contract, on S3 (tests/replay/test_storage.py runs it on disk) ----------


class TestObjectStorage(ByteStorageContract):
    @pytest.fixture
    def storage(self, s3_url: str) -> ByteStorage:
        from replay.storage.s3 import ObjectStorage

        return ObjectStorage(s3_url)


def test_read_only_object_storage_refuses_writes(s3_url: str) -> None:
    from replay.storage.s3 import ObjectStorage

    storage = ObjectStorage(s3_url, read_only=True)
    for attempt in (
        lambda: storage.write("k", b"1"),
        lambda: storage.delete("k"),
        lambda: storage.delete_tree(""),
    ):
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            attempt()


# -- opening stores ------------------------------------------------------------------------


def test_open_store_on_s3_creates_and_checks(s3_url: str) -> None:
    with pytest.raises(StoreError, match="not a replay store"):
        replay.open_store(s3_url, mode="r")
    store = replay.open_store(s3_url)
    assert store.root == s3_url
    assert store.races() == []
    assert json.loads(store.storage.read("zarr.json"))["attributes"] == {"replay_format": 1}
    again = replay.open_store(s3_url, mode="r")
    assert again.races() == []
    with pytest.raises(ReadOnlyStoreError):
        again.new_race(env="x")
    from replay.storage.s3 import ObjectStorage

    ObjectStorage(f"{s3_url}-other").write("data/file.bin", b"not a store")
    with pytest.raises(StoreError, match="holds objects but is not a replay store"):
        replay.open_store(f"{s3_url}-other")


def test_bad_urls_credentials_and_buckets_give_clear_errors(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(StoreError, match="path segment"):
        replay.open_store("s3://bucket/a//b")
    with pytest.raises(StoreError, match="NoSuchBucket"):
        replay.open_store("s3://no-such-bucket/x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StoreError, match="access denied"):
        replay.open_store(s3_url)


# -- races through the writer, read back every way ---------------------------------------


@pytest.fixture(scope="module")
def local_twin(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> tuple[replay.Store, str]:
    """The same race written to disk: the reference for bytes and layout."""
    store = replay.open_store(tmp_path_factory.mktemp("twin") / "store")
    return store, write_race(store, real_frames)


@pytest.fixture(scope="module")
def s3_race(
    s3_server: SeaweedFS,
    s3_env: dict[str, str],
    real_frames: npt.NDArray[np.uint8],
) -> tuple[str, str]:
    """(url, race id) of the real frames written into S3 once for this module."""
    url = f"s3://{s3_server.bucket}/module-race"
    return url, write_race(replay.open_store(url), real_frames)


def test_race_round_trip_through_s3(
    s3_server: SeaweedFS,
    s3_race: tuple[str, str],
    local_twin: tuple[replay.Store, str],
    real_frames: npt.NDArray[np.uint8],
) -> None:
    url, race_id = s3_race
    store = replay.open_store(url, mode="r")
    race = store.race(race_id)
    assert (race.status, race.length) == ("complete", len(real_frames))

    local, local_id = local_twin
    twin = local.race(local_id)
    # the same objects under the same keys as on disk, byte for byte
    assert relative_keys(store.storage, race_id) == relative_keys(local.storage, local_id)
    for step in range(race.length):
        assert race.frame_bytes(step) == twin.frame_bytes(step)

    # plain zarr-python, over its own client, reads every frame and step array
    group = plain_zarr_group(s3_server, url)[f"races/{race_id}"]
    assert group.attrs["length"] == len(real_frames)
    decoded = group["frames"][:]
    assert decoded.shape == real_frames.shape
    assert np.array_equal(decoded, twin.frames[:])
    assert np.array_equal(group["reward"][:], np.arange(len(real_frames)))
    # and the race reader decodes to the same pixels
    for step in (0, 17, len(real_frames) - 1):
        assert np.array_equal(race.frame(step), decoded[step])
    assert np.array_equal(race.steps("reward"), np.arange(len(real_frames)))
    # sizes differ only in metadata and t_ns (times): frame shards are the same
    assert abs(store.race_nbytes(race_id) - local.race_nbytes(local_id)) < 1000


def test_sampler_over_s3_matches_the_frames(
    s3_race: tuple[str, str], local_twin: tuple[replay.Store, str]
) -> None:
    url, race_id = s3_race
    local, local_id = local_twin
    twin = local.race(local_id)
    sampler = replay.open_store(url, mode="r").sampler(batch_size=6, seq_len=3, seed=1)
    try:
        batch = sampler.sample()
    finally:
        sampler.close()
    assert batch.frames.shape == (6, 3, *twin.frames.shape[1:])
    for i, (rid, start) in enumerate(batch.keys):
        assert rid == race_id
        for j in range(3):
            assert np.array_equal(batch.frames[i, j], twin.frame(start + j))
        assert np.array_equal(batch.steps["reward"][i], np.arange(start, start + 3))


def test_inspect_cli_reads_an_s3_store(s3_race: tuple[str, str]) -> None:
    from click.testing import CliRunner

    from replay.cli.main import main

    url, race_id = s3_race
    result = CliRunner().invoke(main, ["inspect", url, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["store"] == url
    assert [r["race_id"] for r in doc["races"]] == [race_id]


# -- a writer killed mid-race --------------------------------------------------------------


def spawn_writer(url: str, frames_file: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), url, str(frames_file), *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_sigkilled_writer_leaves_only_committed_frames(
    s3_url: str, frames_file: Path, tmp_path: Path
) -> None:
    clean = spawn_writer(str(tmp_path / "clean"), frames_file, "--count", "40", "--fps", "1000")
    clean.communicate(timeout=120)
    assert clean.returncode == 0
    reference = replay.open_store(tmp_path / "clean", mode="r")
    ref = reference.race(reference.races()[0].race_id)

    child = spawn_writer(s3_url, frames_file, "--count", "40", "--fps", "20")
    assert child.stdout is not None
    race_id = child.stdout.readline().strip()
    store = replay.open_store(s3_url, mode="r")
    kill_at, deadline = 13, time.monotonic() + 60
    seen = []  # lengths a live reader saw while the race grew
    while (length := store.race(race_id).length) < kill_at and time.monotonic() < deadline:
        seen.append(length)
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.communicate()

    race = store.race(race_id)
    assert race.status == "recording"  # the writer died: never marked complete
    assert kill_at <= race.length < 40
    assert seen == sorted(seen)
    for step in range(race.length):
        assert race.frame_bytes(step) == ref.frame_bytes(step)
    assert race.frames.shape[0] >= race.length  # shapes grow before length
    assert np.array_equal(race.frames[: race.length], ref.frames[: race.length])
    assert np.array_equal(race.steps("reward"), np.arange(race.length))
    assert not [k for k, _ in store.storage.walk_sizes("") if TEMP_PREFIX in k]


# -- served from S3 ------------------------------------------------------------------------


@pytest.fixture
def service_url(s3_race: tuple[str, str]) -> Iterator[str]:
    """The service app over the S3 store, on uvicorn in a thread on 127.0.0.1."""
    pytest.importorskip("fastapi", reason="the service extra is not installed")
    import uvicorn

    from service.app import create_app
    from service.settings import Settings

    url, _ = s3_race
    # model_copy skips validation: Settings types `store` as a Path, which folds "s3://" to "s3:/"
    settings = Settings(store=Path(".")).model_copy(update={"store": url})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def test_service_serves_an_s3_store(
    service_url: str, s3_race: tuple[str, str], local_twin: tuple[replay.Store, str]
) -> None:
    from replay.remote.client import Client

    _, race_id = s3_race
    local, local_id = local_twin
    twin = local.race(local_id)
    with Client(service_url, retries=0) as client:
        assert client.health()
        assert [r.race_id for r in client.races()] == [race_id]
        assert client.frame_bytes(race_id, 5) == twin.frame_bytes(5)
        batch = client.sample(batch_size=4, seed=3)
        for i, (rid, step) in enumerate(batch.keys):
            assert rid == race_id
            assert np.array_equal(batch.frames[i, 0], twin.frame(step))


def test_weed_server_listens_on_loopback_only(s3_server: SeaweedFS) -> None:
    psutil = pytest.importorskip("psutil")
    listening = [
        c.laddr
        for c in psutil.Process(s3_server.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert listening
    assert {addr.ip for addr in listening} == {"127.0.0.1"}


def test_a_writer_process_started_before_the_credentials_were_set_writes_to_s3(
    tmp_path: Path,
    s3_url: str,
    s3_env: dict[str, str],
    real_frames: npt.NDArray[np.uint8],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The writer process is started once per driver, with the environment of that
    moment; the storage carries its settings, so a later S3 race still reaches the
    server (it asked the cloud metadata address for credentials before)."""
    with monkeypatch.context() as mp:
        for name in s3_env:
            mp.delenv(name)
        # if the bug came back, credentials would be asked here: loopback, not the cloud's
        mp.setenv("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        with replay.open_store(tmp_path / "local").new_race(env="e", writer="process") as w:
            w.append(real_frames[0])  # the writer process now runs, without AWS_* variables
    store = replay.open_store(s3_url)
    with store.new_race(env="e", writer="process") as writer:
        for frame in real_frames[:3]:
            writer.append(frame)
    assert writer.pid == w.pid  # the same writer process
    assert store.race(writer.race_id).length == 3
