"""replay verify: damaged shards and frames are found, named, and only they are lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner

import replay
from replay import format as fmt
from replay.cli import main
from replay.verify import repair, verify_store


@pytest.fixture
def store_path(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> Path:
    store = replay.open_store(tmp_path / "s")
    for n in (20, 6):
        with store.new_race(env="CarRacing-v3", shard_size=8) as writer:
            for frame in real_frames[:n]:
                writer.append(frame, reward=1.0)
    return tmp_path / "s"


def shard_file(store_path: Path, race_id: str, shard: int) -> Path:
    return store_path / fmt.shard_key(race_id, fmt.FRAMES, shard, 4)


def test_clean_store_verifies(store_path: Path) -> None:
    report = verify_store(replay.open_store(store_path, mode="r"))
    assert report.ok
    assert report.frames_checked == 26
    result = CliRunner().invoke(main, ["verify", str(store_path)])
    assert result.exit_code == 0
    assert "26 frames checked: all good" in result.output


def test_bit_flip_in_a_frame_is_found_and_only_that_frame_lost(store_path: Path) -> None:
    store = replay.open_store(store_path)
    race_id = store.races()[0].race_id
    race = store.race(race_id)
    (offset, nbytes) = race.shard_index(1)[3]  # step 11
    path = shard_file(store_path, race_id, 1)
    data = bytearray(path.read_bytes())
    data[offset + nbytes // 2] ^= 0x10
    path.write_bytes(bytes(data))

    with pytest.raises(replay.CorruptDataError, match=f"race {race_id}, shard 1: frame at step 11"):
        race.frame(11)
    assert race.frame(10).shape == (900, 1600, 3)  # the rest of the shard is fine
    report = verify_store(store)
    (damaged,) = [c for c in report.races if not c.ok]
    assert (damaged.race_id, damaged.damaged_shards, damaged.bad_steps) == (race_id, [1], [11])
    result = CliRunner().invoke(main, ["verify", str(store_path)])
    assert result.exit_code == 1
    assert f"race {race_id}, shard 1: frame at step 11" in result.output


def test_truncated_shard_loses_only_that_shard_and_repair_truncates(store_path: Path) -> None:
    store = replay.open_store(store_path)
    race_id = store.races()[0].race_id
    path = shard_file(store_path, race_id, 1)
    path.write_bytes(path.read_bytes()[:-100])  # the index is gone

    race = store.race(race_id)
    with pytest.raises(
        replay.CorruptDataError, match=f"race {race_id}, shard 1: cannot read its index"
    ):
        race.frame(9)
    assert race.frame(7).shape == (900, 1600, 3)  # shard 0 intact
    assert race.frame(16).shape == (900, 1600, 3)  # shard 2 intact

    result = CliRunner().invoke(main, ["verify", str(store_path), "--repair", "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.output)
    (row,) = [r for r in doc["races"] if not r["ok"]]
    assert (row["race_id"], row["damaged_shards"], row["repaired_length"]) == (race_id, [1], 8)
    repaired = replay.open_store(store_path, mode="r").race(race_id)
    assert repaired.length == 8
    assert repaired.attrs["repaired"]["length_before"] == 20
    assert verify_store(replay.open_store(store_path, mode="r")).ok
    assert repair(store, verify_store(store).races[0]) == 8  # nothing more to cut


def test_damaged_step_array_is_reported(store_path: Path) -> None:
    store = replay.open_store(store_path, mode="r")
    race_id = store.races()[1].race_id
    chunk = store_path / fmt.shard_key(race_id, "reward", 0, 1)
    chunk.write_bytes(b"not zstd")
    (_, damaged) = verify_store(store).races
    assert not damaged.ok
    assert "step array 'reward' is damaged" in damaged.errors[0]
