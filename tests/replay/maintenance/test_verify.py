"""replay verify: damaged shards and frames are found, named, and only they are lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner

import replay
from replay.cli.main import main
from replay.format import spec as fmt


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
    report = replay.open_store(store_path, mode="r").verify()
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
    report = store.verify()
    (damaged,) = [c for c in report.races if not c.ok]
    assert (damaged.race_id, damaged.damaged_shards, damaged.bad_steps) == (race_id, [1], [11])
    result = CliRunner().invoke(main, ["verify", str(store_path)])
    assert result.exit_code == 1
    assert f"race {race_id}, shard 1: frame at step 11" in result.output


def frames_of(store_path: Path, race_id: str) -> list[bytes | None]:
    """Every committed frame's stored bytes (None where it cannot be read)."""
    race = replay.open_store(store_path, mode="r").race(race_id)
    out: list[bytes | None] = []
    for step in range(race.length):
        try:
            out.append(race.frame_bytes(step))
        except replay.CorruptDataError:
            out.append(None)
    return out


def test_truncated_shard_is_rebuilt_from_its_intact_frames(store_path: Path) -> None:
    store = replay.open_store(store_path)
    race_id = store.races()[0].race_id
    before = frames_of(store_path, race_id)
    path = shard_file(store_path, race_id, 1)
    path.write_bytes(path.read_bytes()[:-100])  # the index is gone, the frames are not

    race = store.race(race_id)
    with pytest.raises(
        replay.CorruptDataError, match=f"race {race_id}, shard 1: cannot read its index"
    ):
        race.frame(9)
    assert race.frame(7).shape == (900, 1600, 3)  # shard 0 intact
    assert race.frame(16).shape == (900, 1600, 3)  # shard 2 intact

    result = CliRunner().invoke(main, ["verify", str(store_path), "--repair", "--json"])
    assert result.exit_code == 0  # everything found was repaired
    doc = json.loads(result.output)
    (row,) = [r for r in doc["races"] if not r["ok"]]
    assert (row["race_id"], row["damaged_shards"]) == (race_id, [1])
    assert (row["repair"]["kept"], row["repair"]["lost"]) == (20, 0)
    repaired = replay.open_store(store_path, mode="r").race(race_id)
    assert repaired.length == 20
    assert frames_of(store_path, race_id) == before  # every frame kept, bit for bit
    assert repaired.attrs["lost_steps"] == []
    assert replay.open_store(store_path, mode="r").verify().ok
    assert store.repair(store.verify().races[0]).lost == 0  # nothing more to do


def test_flipped_byte_in_a_shard_index_loses_no_frame(store_path: Path) -> None:
    """Issue 13: one flipped byte in shard 0's index left 0 of the race's frames."""
    store = replay.open_store(store_path)
    race_id = store.races()[0].race_id
    before = frames_of(store_path, race_id)
    path = shard_file(store_path, race_id, 0)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0x01  # inside the index
    path.write_bytes(bytes(data))
    assert frames_of(store_path, race_id)[:8] == [None] * 8

    (check, _) = store.verify().races
    assert check.damaged_shards == [0]
    result = store.repair(check)
    assert (result.kept, result.lost, result.refused) == (20, 0, None)
    assert frames_of(store_path, race_id) == before
    assert store.verify().ok


def test_bit_flip_repair_drops_only_that_frame_and_reclaims_its_bytes(
    store_path: Path,
) -> None:
    store = replay.open_store(store_path)
    race_id = store.races()[0].race_id
    before = frames_of(store_path, race_id)
    (offset, nbytes) = store.race(race_id).shard_index(1)[3]  # step 11
    path = shard_file(store_path, race_id, 1)
    data = bytearray(path.read_bytes())
    data[offset + nbytes // 2] ^= 0x10
    path.write_bytes(bytes(data))
    size = path.stat().st_size

    (check, _) = store.verify().races
    result = store.repair(check)
    assert (result.kept, result.lost) == (19, 1)
    assert path.stat().st_size <= size - nbytes  # the damaged frame's bytes are gone
    race = replay.open_store(store_path, mode="r").race(race_id)
    assert (race.length, race.info.lost_steps) == (20, ((11, 12),))
    assert race.attrs["lost_steps"] == [[11, 12]]
    after = frames_of(store_path, race_id)
    assert after[11] is None
    assert after[:11] + after[12:] == before[:11] + before[12:]
    with pytest.raises(replay.CorruptDataError, match="step 11 was lost to damage"):
        race.frame(11)
    assert store.verify().ok  # a known, recorded loss is not damage any more
    # plain zarr reads the removed frame as zeros and every other frame as written
    frames = replay.open_store(store_path, mode="r").zarr[f"races/{race_id}/frames"]
    assert not frames[11].any()
    assert frames[10].any()
    # a sampler that skips damaged data never serves it
    sampler = store.sampler(
        batch_size=8, seed=0, skip_corrupt=True, filters={"race_ids": [race_id]}
    )
    served = {step for _ in range(5) for _, step in sampler.sample().keys}
    sampler.close()
    assert 11 not in served
    assert len(served) > 10


def test_damaged_step_chunk_is_a_clear_error_and_repair_repairs(store_path: Path) -> None:
    store = replay.open_store(store_path)
    race_id = store.races()[1].race_id
    chunk = store_path / fmt.shard_key(race_id, "reward", 0, 1)
    chunk.write_bytes(b"not zstd")
    race = store.race(race_id)
    with pytest.raises(
        replay.CorruptDataError, match=rf"race {race_id}, shard 0: step array 'reward' is damaged"
    ):
        race.steps("reward")
    assert race.steps("action").shape == (6, 3)  # the other arrays read fine
    result = CliRunner().invoke(main, ["inspect", str(store_path), race_id])
    assert result.exit_code == 1
    assert "step array 'reward' is damaged" in result.output
    assert "Traceback" not in result.output

    (_, check) = store.verify().races
    assert check.damaged_arrays == {"reward": [0]}
    assert "step array 'reward' is damaged" in check.errors[0]
    result = CliRunner().invoke(main, ["verify", str(store_path), "--repair"])
    assert result.exit_code == 0
    assert "repaired: 0 steps intact, 6 lost" in result.output
    repaired = replay.open_store(store_path, mode="r").race(race_id)
    assert repaired.info.lost_steps == ((0, 6),)
    assert repaired.steps("reward").tolist() == [0.0] * 6  # lost values read as zero
    assert repaired.frame(3).shape == (900, 1600, 3)  # its frames are kept
    assert store.verify().ok


def test_torn_step_array_document_is_rebuilt(store_path: Path) -> None:
    store = replay.open_store(store_path)
    race_id = store.races()[0].race_id
    doc = store_path / fmt.race_key(race_id) / "reward" / fmt.METADATA
    doc.write_text(doc.read_text()[:40])
    assert store.race(race_id).steps("reward").tolist() == [1.0] * 20  # replay's reads cope
    (check, _) = store.verify().races
    assert check.damaged_arrays == {"reward": [-1]}
    result = store.repair(check)
    assert (result.kept, result.lost) == (20, 0)
    assert store.verify().ok
    reward = replay.open_store(store_path, mode="r").zarr[f"races/{race_id}/reward"]
    assert reward[:].tolist() == [1.0] * 20  # plain zarr reads it again


def test_repair_refuses_a_race_whose_writer_is_alive(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path / "s")
    with store.new_race(env="e", shard_size=4, flush_interval=0.05) as writer:
        for frame in real_frames[:8]:
            writer.append(frame)
        while store.race(writer.race_id).length < 8:
            pass
        path = shard_file(tmp_path / "s", writer.race_id, 0)
        data = bytearray(path.read_bytes())
        data[100] ^= 0x01
        path.write_bytes(bytes(data))
        (check,) = store.verify().races
        assert not check.ok
        result = store.repair(check)
        assert result.refused is not None
        assert "live writer" in result.refused
        assert path.read_bytes() == bytes(data)  # untouched
        assert store.race(writer.race_id).attrs.get("lost_steps") is None
        cli = CliRunner().invoke(main, ["verify", str(tmp_path / "s"), "--repair"])
        assert cli.exit_code == 1  # damage left unrepaired
        assert "not repaired" in cli.output
