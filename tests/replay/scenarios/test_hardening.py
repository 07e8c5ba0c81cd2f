"""Adversarial inputs to the store (issue 13, item 14): a crafted shard index, a failed
new_race, non-finite numbers, an overflowing t_ns, S3 without credentials."""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
from pathlib import Path
from typing import Any

import crc32c
import numpy as np
import pytest
from mounts import tmpfs
from sampling_helpers import make_store

import replay
from replay.format import shards
from replay.format import spec as fmt


def test_a_crafted_shard_index_with_a_valid_crc_is_corrupt_data_not_memory(
    tmp_path: Path,
) -> None:
    store, (race_id,) = make_store(tmp_path / "s", [8])
    path = tmp_path / "s" / fmt.frames_key(race_id, 0)
    data = bytearray(path.read_bytes())
    n = shards.index_nbytes(8)
    index = np.frombuffer(bytes(data[-n:-4]), dtype="<u8").reshape(8, 2).copy()
    index[3] = (0, 2**35)  # 32 GiB "frame"
    body = index.tobytes()
    data[-n:] = body + crc32c.crc32c(body).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    race = store.race(race_id)
    with pytest.raises(replay.CorruptDataError, match=r"outside the .* bytes of chunk data"):
        race.frame(3)
    sampler = store.sampler(batch_size=8, seed=0)
    with pytest.raises(replay.CorruptDataError, match=f"race {race_id}, shard 0"):
        sampler.sample()
    sampler.close()
    assert replay.open_store(tmp_path / "s", mode="r").race(race_id).length != 0


def test_a_new_race_that_runs_out_of_memory_leaves_no_race(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    with pytest.raises(MemoryError):  # a ring of 10**7 full-HD frames: a real MemoryError
        store.new_race(env="e", queue_size=10**7)
    assert store.races() == []
    assert [p.name for p in (tmp_path / "races").iterdir()] == ["zarr.json"]


def test_a_new_race_on_a_full_disk_leaves_no_race(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "64k") as disk:
        store = replay.open_store(disk / "s")
        free = 64 * 1024
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while free > 0:  # fill the disk to its last few kB
                f.write(b"\0" * 1024)
                f.flush()
                free -= 1024
        with filler.open("r+b") as f:
            f.truncate(max(0, filler.stat().st_size - 6 * 1024))  # room for a few documents
        with pytest.raises(replay.StoreError, match="No space left on device"):
            store.new_race(env="e", extras={f"x{i}": ("float32", (64,)) for i in range(16)})
        assert store.races() == []
        assert [p.name for p in (disk / "s" / "races").iterdir()] == ["zarr.json"]


@pytest.mark.parametrize("fps", [math.nan, math.inf, -math.inf, 0])
def test_non_finite_fps_is_refused(tmp_path: Path, fps: float) -> None:
    store = replay.open_store(tmp_path)
    with pytest.raises(ValueError, match=f"fps must be a positive finite number, got {fps}"):
        store.new_race(env="e", fps=fps)
    assert store.races() == []


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_meta_is_refused(tmp_path: Path, value: float) -> None:
    store = replay.open_store(tmp_path)
    with pytest.raises(ValueError, match="meta must hold finite numbers only"):
        store.new_race(env="e", meta={"lap": {"best": value}})
    assert store.races() == []


def test_an_overflowing_t_ns_is_a_step_data_error(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    with store.new_race(env="e", height=8, width=8) as writer:
        with pytest.raises(replay.StepDataError, match=r"t_ns=1180591620717411303424"):
            writer.append(np.zeros((8, 8, 3), np.uint8), t_ns=2**70)
        writer.append(np.zeros((8, 8, 3), np.uint8), t_ns=5)
    assert store.race(writer.race_id).steps("t_ns").tolist() == [5]


class Listener:
    """A TCP listener on loopback that counts the connections it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def test_s3_without_credentials_never_asks_the_metadata_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cloud metadata address is pointed at a loopback listener: it must get nothing.

    The S3 endpoint is a closed loopback port, so nothing leaves the machine either way.
    """
    pytest.importorskip("obstore")
    metadata, closed = Listener(), socket.socket()
    closed.bind(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()  # nothing listens there: requests are refused at once
    for name in list(__import__("os").environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_METADATA_ENDPOINT", f"http://127.0.0.1:{metadata.port}")
    try:
        with pytest.raises(replay.StoreError, match="cannot open the store"):
            replay.open_store("s3://bucket/prefix", mode="r")
    finally:
        metadata.close()
    assert metadata.connections == 0


def test_new_race_takes_numpy_integers_and_refuses_bools_floats_and_huge_frames(
    tmp_path: Path,
) -> None:
    """Sizes from `frame.shape` or NumPy pass; a bool, a float or a side past
    `MAX_SIDE` (JPEG stops at 65,500; the ring would ask for GiBs) is a ValueError
    before anything is written."""
    store = replay.open_store(tmp_path)
    with store.new_race(
        env="e",
        height=np.int64(8),
        width=np.int32(16),
        fps=np.float32(30),
        shard_size=np.int16(4),
        action_shape=(np.int64(2),),
        quality=np.int64(80),
    ) as writer:
        writer.append(np.zeros((8, 16, 3), np.uint8), action=np.zeros(2))
    info = store.race(writer.race_id).info
    assert (info.height, info.width, info.shard_size, info.fps) == (8, 16, 4, 30.0)
    assert info.action_shape == (2,)
    attrs = json.loads((tmp_path / "races" / writer.race_id / "zarr.json").read_text())
    assert type(attrs["attributes"]["height"]) is int
    bad: list[tuple[dict[str, Any], str]] = [
        ({"height": True}, "height must be a whole number, got True"),
        ({"width": 64.0}, "width must be a whole number, got 64.0"),
        (
            {"width": 70_000, "codec": "jpeg"},
            r"height and width must be in 1..16384, got 900x70000",
        ),
        ({"action_shape": 3}, "action_shape must be a tuple of whole numbers, got 3"),
        ({"env": None}, "env must be a string, got None"),
        ({"fps": True}, "fps must be a positive finite number, got True"),
        ({"extras": {"reward": ("float32", ())}}, "'reward' is reserved"),
        ({"extras": {"../x": ("float32", ())}}, "'../x' is not an identifier"),
        ({"extras": {"name": ("U10", ())}}, "dtype <U10 is not a number or bool"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            store.new_race(**{"env": "e", **kwargs})
    assert [r.race_id for r in store.races()] == [writer.race_id]


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_race_ends_complete_or_aborted_and_nothing_else(tmp_path: Path, kind: str) -> None:
    """`close("bogus")` wrote the status, and the race could no longer be read."""
    store = replay.open_store(tmp_path)
    writer = store.new_race(env="e", height=8, width=8, writer=kind)
    writer.append(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="a race ends 'complete' or 'aborted', not 'bogus'"):
        writer.close("bogus")
    writer.append(np.ones((8, 8, 3), np.uint8))  # still open
    writer.close("aborted")
    race = store.race(writer.race_id)
    assert (race.info.status, race.length) == ("aborted", 2)


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_nan_step_value_is_refused_at_append_and_the_race_goes_on(
    tmp_path: Path, kind: str
) -> None:
    """As the service refuses them; a remote race lost every step at close before."""
    store = replay.open_store(tmp_path)
    frame = np.zeros((8, 8, 3), np.uint8)
    with store.new_race(env="e", height=8, width=8, writer=kind) as writer:
        writer.append(frame, reward=1.0)
        for bad in ({"reward": math.nan}, {"action": [0.0, math.inf, 0.0]}):
            with pytest.raises(replay.StepDataError, match="is not finite"):
                writer.append(frame, **bad)
        writer.append(frame, reward=2.0)
    race = store.race(writer.race_id)
    assert race.length == 2
    assert race.steps("reward").tolist() == [1.0, 2.0]
