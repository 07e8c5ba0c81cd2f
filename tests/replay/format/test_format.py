"""`replay.format.spec`: race ids, keys that are where the writer put the files and where
zarr-python looks for them, standard step dtypes, times and the lease ttl."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import zarr
from ulid import ULID

import replay
from replay.format import spec as fmt


@pytest.fixture(scope="module")
def store(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, replay.Race]:
    """A store of one race: 5 real frames in shards of 2, with a scalar and a vector extra."""
    path = tmp_path_factory.mktemp("format") / "store"
    extras = {"speed": ("float32", ()), "pose": ("float32", (2,))}
    with replay.open_store(path).new_race(env="CarRacing-v3", shard_size=2, extras=extras) as w:
        for step, frame in enumerate(real_frames[:5]):
            w.append(frame, reward=float(step), speed=2.0 * step, pose=[step, -step])
    return path, replay.open_store(path, mode="r").race(w.race_id)


def test_race_ids_are_ulids_and_never_paths(store: tuple[Path, replay.Race]) -> None:
    _, race = store
    assert fmt.is_race_id(race.race_id)
    fresh = [str(ULID()) for _ in range(3)]
    assert all(fmt.is_race_id(r) for r in fresh)
    assert str(ULID.from_timestamp(0)) < race.race_id < str(ULID())  # ids sort by time
    valid = race.race_id
    for bad in (
        valid.lower(),
        valid[:-1],
        valid + "0",
        "I" + valid[1:],  # Crockford base32 has no I, L, O, U
        "U" + valid[1:],
        "../" + valid[3:],
        valid[:10] + "/" + valid[11:],
        "",
    ):
        assert not fmt.is_race_id(bad), bad


def test_a_trailing_newline_is_not_a_race_id(store: tuple[Path, replay.Race]) -> None:
    _, race = store
    assert not fmt.is_race_id(race.race_id + "\n")


def test_keys_are_where_the_files_are(store: tuple[Path, replay.Race]) -> None:
    path, race = store
    race_dir = path / fmt.race_key(race.race_id)
    assert (race_dir / fmt.METADATA).is_file()
    assert (path / fmt.METADATA).is_file()
    arrays = {"frames": 4, "action": 2, "reward": 1, "t_ns": 1, "speed": 1, "pose": 2}
    for name, ndim in arrays.items():
        meta = json.loads((race_dir / name / fmt.METADATA).read_text())
        assert len(meta["shape"]) == ndim
        for shard in range(3):  # 5 steps in shards of 2
            key = fmt.shard_key(race.race_id, name, shard, ndim)
            assert (path / key).is_file(), key
        assert not (path / fmt.shard_key(race.race_id, name, 3, ndim)).exists()


def test_shard_keys_match_zarr_chunk_key_encoding(store: tuple[Path, replay.Race]) -> None:
    path, race = store
    group = zarr.open_group(str(path), mode="r")
    for name in ("frames", "action", "reward", "pose"):
        array: Any = group[f"{fmt.race_key(race.race_id)}/{name}"]
        ndim = len(array.shape)
        for shard in (0, 2):
            coords = (shard,) + (0,) * (ndim - 1)
            expected = (
                f"{fmt.race_key(race.race_id)}/{name}/{array.metadata.encode_chunk_key(coords)}"
            )
            assert fmt.shard_key(race.race_id, name, shard, ndim) == expected


def test_standard_steps_have_the_declared_dtypes(store: tuple[Path, replay.Race]) -> None:
    _, race = store
    assert list(fmt.STANDARD_STEPS) == race.info.step_arrays[:5]
    for name, dtype in fmt.STANDARD_STEPS.items():
        assert race.steps(name).dtype == np.dtype(dtype), name
    assert race.steps("action").shape == (5, 3)


def test_defaults_and_format_attribute(tmp_path: Path, store: tuple[Path, replay.Race]) -> None:
    path, race = store
    root = json.loads((path / fmt.METADATA).read_text())
    assert root["attributes"] == {fmt.FORMAT_ATTR: fmt.FORMAT_VERSION}
    assert race.info.codec["quality"] == fmt.DEFAULT_QUALITY
    with replay.open_store(tmp_path / "s").new_race(env="e", height=16, width=16) as writer:
        pass
    info = replay.open_store(tmp_path / "s").race(writer.race_id).info
    assert info.shard_size == fmt.DEFAULT_SHARD_SIZE
    assert (info.status, info.length) == (fmt.COMPLETE, 0)
    assert {fmt.RECORDING, fmt.COMPLETE, fmt.ABORTED} == {"recording", "complete", "aborted"}


def test_times_are_utc_milliseconds(store: tuple[Path, replay.Race]) -> None:
    now = fmt.utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", now)
    assert abs(fmt.parse_time(now) - time.time()) < 2
    assert fmt.parse_time("1970-01-01T00:00:01.500+00:00") == 1.5
    _, race = store
    assert race.info.ended_at is not None
    assert fmt.parse_time(race.info.started_at) <= fmt.parse_time(race.info.ended_at)
    started = dt.datetime.fromisoformat(race.info.started_at)
    assert started.utcoffset() == dt.timedelta(0)


def test_lease_ttl() -> None:
    assert fmt.lease_ttl(0.05) == 30.0  # never shorter than 30 s
    assert fmt.lease_ttl(1.0) == 30.0
    assert fmt.lease_ttl(10.0) == 100.0  # ten flush intervals
    intervals = [0.01, 0.5, 2.9, 3.0, 3.1, 7.0, 60.0]
    ttls = [fmt.lease_ttl(i) for i in intervals]
    assert ttls == sorted(ttls)
    assert all(ttl >= 10 * i for ttl, i in zip(ttls, intervals, strict=True))
