"""A store written before the package moved into wings opens unchanged.

tests/replay/fixtures/store-0d9c61a was written by commit 0d9c61a (the last commit of
the flat package) with its thread writer: one JPEG race and one zstd race of the first
10 CarRacing frames (seed 7), shrunk to 90x160 to keep the fixture small, 4 frames a
shard. Stores name their codecs ("jpeg", "singleton_dim", "zstd"), not modules, so the
move must not change how they read; this test and plain zarr-python say it did not.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

import replay

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-0d9c61a"
JPEG_RACE = "01M96H4JZB0Q0NJA0KPWA5MEJD"
ZSTD_RACE = "01M96H4KBWQ2ZK59QEJGJXHAD0"
#: sha256 of the 10 frames as written (uint8, (10, 90, 160, 3)), from the writing script
ZSTD_FRAMES_SHA256 = "412684156ad557dd695066909b93dc3c593293298d542fad0ee1828b9e12fbd2"


@pytest.fixture
def old_store(tmp_path: Path) -> replay.Store:
    copy = tmp_path / "store"
    shutil.copytree(FIXTURE, copy)  # opening for writing may fill in documents
    return replay.open_store(copy)


def test_races_and_their_attributes_read_as_written(old_store: replay.Store) -> None:
    races = {info.race_id: info for info in old_store.races()}
    assert set(races) == {JPEG_RACE, ZSTD_RACE}
    for info in races.values():
        assert (info.length, info.height, info.width, info.status) == (10, 90, 160, "complete")
        assert (info.env, info.map, info.policy, info.fps) == (
            "CarRacing-v3",
            "seed-7",
            "fixture",
            50,
        )
    assert races[JPEG_RACE].frame_codec.name == "jpeg"
    assert races[ZSTD_RACE].frame_codec.name == "zstd"


def test_lossless_frames_are_byte_exact_and_jpeg_frames_close(old_store: replay.Store) -> None:
    zstd = np.stack([old_store.race(ZSTD_RACE).frame(i) for i in range(10)])
    assert hashlib.sha256(zstd.tobytes()).hexdigest() == ZSTD_FRAMES_SHA256
    jpeg = np.stack([old_store.race(JPEG_RACE).frame(i) for i in range(10)])
    error = np.abs(jpeg.astype(np.int16) - zstd.astype(np.int16))
    # q90 JPEG of these decimated (high-detail) frames: mean error 3.5; a wrong decode
    # (channels swapped, rows shifted, a different frame) is off by tens
    assert error.mean() < 6.0


def test_plain_zarr_reads_what_replay_reads(old_store: replay.Store) -> None:
    group = zarr.open_group(str(old_store.storage.root), mode="r")
    for race_id in (JPEG_RACE, ZSTD_RACE):
        frames = group["races"][race_id]["frames"]
        assert frames.shape == (10, 90, 160, 3)
        np.testing.assert_array_equal(frames[3], old_store.race(race_id).frame(3))
    rewards = group["races"][ZSTD_RACE]["reward"][:]
    np.testing.assert_array_equal(rewards, old_store.race(ZSTD_RACE).steps("reward"))


def test_a_sampler_draws_from_the_old_store(old_store: replay.Store) -> None:
    with old_store.sampler(batch_size=4, seq_len=2, seed=0, filters={"race_ids": [ZSTD_RACE]}) as s:
        batch = s.sample()
    assert batch.frames.shape == (4, 2, 90, 160, 3)
