"""`replay.format.race`: a race of real frames read back through `Race` and `RaceInfo`, bounded by
its committed length; damaged frames and shards named by race, shard and step."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import replay
from replay.format import spec as fmt
from replay.format.race import RaceInfo, decode_frame, read_race_info
from replay.storage.local import LocalStorage

EXTRAS = {"speed": ("float32", ())}


def record(path: Path, frames: npt.NDArray[np.uint8]) -> str:
    """A complete race of `frames` in shards of 4 (reward = step, speed = 2 * step)."""
    store = replay.open_store(path)
    with store.new_race(
        env="CarRacing-v3",
        map="seed-7",
        policy="pursuit",
        shard_size=4,
        extras=EXTRAS,
        meta={"run": 3},
    ) as writer:
        for step, frame in enumerate(frames):
            writer.append(frame, reward=float(step), speed=2.0 * step)
    return writer.race_id


@pytest.fixture(scope="module")
def race(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> replay.Race:
    """Six real frames: shard 0 holds steps 0-3, shard 1 steps 4-5 of 4 slots."""
    path = tmp_path_factory.mktemp("race") / "store"
    race_id = record(path, real_frames[:6])
    return replay.open_store(path, mode="r").race(race_id)


@pytest.fixture
def damageable(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> tuple[Path, str]:
    """A store of its own (path, race id) for a test that damages files."""
    return tmp_path, record(tmp_path, real_frames[:6])


def test_info_is_the_stored_metadata(race: replay.Race) -> None:
    info = race.info
    assert (info.env, info.map, info.policy, info.meta) == (
        "CarRacing-v3",
        "seed-7",
        "pursuit",
        {"run": 3},
    )
    assert (info.status, info.length, info.fps) == ("complete", 6, 30.0)
    assert (info.height, info.width, info.shard_size, info.action_shape) == (900, 1600, 4, (3,))
    assert info.codec == {"name": "jpeg", "quality": 90, "subsampling": "420"}
    assert info.n_shards == 2
    assert info.duration_s == pytest.approx(0.2)
    assert info.raw_frame_nbytes == 900 * 1600 * 3
    assert info.raw_nbytes == info.length * 900 * 1600 * 3
    assert info.step_arrays == [*fmt.STANDARD_STEPS, "speed"]
    assert info.extras == {"speed": {"dtype": "float32", "shape": []}}
    assert RaceInfo.from_attrs(race.race_id, race.attrs) == info
    assert repr(race) == f"Race({race.race_id!r}, status='complete', length=6)"
    with pytest.raises(KeyError, match="env"):
        RaceInfo.from_attrs(race.race_id, {k: v for k, v in race.attrs.items() if k != "env"})


def test_frames_and_steps_read_back(race: replay.Race, real_frames: npt.NDArray[np.uint8]) -> None:
    for step in range(race.length):
        frame = race.frame(step)
        assert (frame.shape, frame.dtype) == ((900, 1600, 3), np.uint8)
        error = np.abs(frame.astype(np.int16) - real_frames[step]).mean()
        assert error < 2.0, (step, error)  # q90: a grey level or so on average
        blob = race.frame_bytes(step)
        assert blob[:2] == b"\xff\xd8"  # the stored JPEG, checksum removed
        decoded = decode_frame(blob, race.info)
        assert decoded is not None
        np.testing.assert_array_equal(decoded, frame)
    np.testing.assert_array_equal(race.frames[5], race.frame(5))  # plain zarr agrees
    assert race.steps("reward").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert race.steps("speed").tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert race.steps("reward", 2, 5).tolist() == [2.0, 3.0, 4.0]  # a window of steps
    assert race.steps("reward", 4, 99).tolist() == [4.0, 5.0]  # bounded by the length
    assert race.steps("reward", 9).tolist() == []
    assert race.steps("terminated").dtype == np.bool_
    full, open_ = race.shard_index(0), race.shard_index(1)
    assert all(r is not None for r in full)
    assert [r is not None for r in open_] == [True, True, False, False]
    assert decode_frame(b"not a jpeg", race.info) is None
    assert (
        decode_frame(
            race.frame_bytes(0), RaceInfo.from_attrs(race.race_id, {**race.attrs, "width": 800})
        )
        is None
    )


def test_steps_outside_the_race_are_refused(race: replay.Race) -> None:
    for step in (-1, 6, 100):
        expected = rf"has 6 committed steps \(0\.\.5\); there is no step {step}$"
        with pytest.raises(IndexError, match=expected):
            race.frame_bytes(step)
    with pytest.raises(replay.StepDataError, match=r"no step array 'sped'; it has \[.*'speed'\]"):
        race.steps("sped")


def test_a_race_reads_only_what_was_committed_when_opened(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path)
    with store.new_race(env="live", shard_size=4, flush_interval=0.02) as writer:
        writer.append(real_frames[0], reward=0.0)
        deadline = time.monotonic() + 10
        while store.race(writer.race_id).length < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        early = store.race(writer.race_id)
        for step in range(1, 3):
            writer.append(real_frames[step], reward=float(step))
    assert (early.status, early.length) == ("recording", 1)
    assert early.steps("reward").tolist() == [0.0]
    with pytest.raises(IndexError):
        early.frame_bytes(1)
    later = store.race(writer.race_id)
    assert (later.status, later.length) == ("complete", 3)


def test_a_flipped_bit_names_its_frame(damageable: tuple[Path, str]) -> None:
    path, race_id = damageable
    race = replay.open_store(path).race(race_id)
    where = race.shard_index(1)[1]  # step 5
    assert where is not None
    offset, nbytes = where
    shard = path / fmt.shard_key(race_id, fmt.FRAMES, 1, 4)
    data = bytearray(shard.read_bytes())
    data[offset + nbytes // 3] ^= 0x08
    shard.write_bytes(bytes(data))
    with pytest.raises(
        replay.CorruptDataError, match=rf"race {race_id}, shard 1: frame at step 5 is damaged"
    ) as e:
        race.frame_bytes(5)
    assert (e.value.race_id, e.value.shard, e.value.step) == (race_id, 1, 5)
    with pytest.raises(replay.CorruptDataError, match="step 5"):
        race.frame(5)
    assert race.frame_bytes(4)[:2] == b"\xff\xd8"  # its neighbours are intact
    assert race.frame(3).shape == (900, 1600, 3)


@pytest.mark.parametrize("keep", [-1, -200, 10])
def test_a_truncated_shard_is_named(damageable: tuple[Path, str], keep: int) -> None:
    path, race_id = damageable
    shard = path / fmt.shard_key(race_id, fmt.FRAMES, 0, 4)
    shard.write_bytes(shard.read_bytes()[:keep])
    race = replay.open_store(path).race(race_id)
    with pytest.raises(
        replay.CorruptDataError, match=rf"race {race_id}, shard 0: cannot read its index"
    ) as e:
        race.frame_bytes(2)
    assert (e.value.shard, e.value.step) == (0, None)
    assert race.frame(4).shape == (900, 1600, 3)  # shard 1 is intact


def test_race_lookup_errors(damageable: tuple[Path, str]) -> None:
    path, race_id = damageable
    storage = LocalStorage(path)
    assert read_race_info(storage, race_id).length == 6
    with pytest.raises(replay.RaceNotFoundError, match=r"'\.\./\.\./etc' is not a race id"):
        read_race_info(storage, "../../etc")
    absent = race_id[:-1] + ("0" if race_id[-1] != "0" else "1")
    with pytest.raises(replay.RaceNotFoundError, match=f"no race {absent}"):
        read_race_info(storage, absent)
    key = path / fmt.race_key(race_id) / fmt.METADATA
    doc = json.loads(key.read_text())
    key.write_text(json.dumps({**doc, "attributes": {}}))  # the writer writes attributes last
    with pytest.raises(replay.RaceNotFoundError, match=f"race {race_id} is being created"):
        read_race_info(storage, race_id)
    key.write_text("[1, 2]")
    with pytest.raises(replay.CorruptDataError, match="is not a JSON object") as e:
        read_race_info(storage, race_id)
    assert (e.value.race_id, e.value.shard) == (race_id, -1)
