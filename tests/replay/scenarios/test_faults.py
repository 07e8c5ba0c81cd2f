"""Fault injection: full disks and I/O errors during commits never lose committed frames
and never take the driver down."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from mounts import tmpfs

import replay
from replay.storage.local import LocalStorage

FRAME = (96, 128, 3)


class FailingStorage(LocalStorage):
    """The real disk storage, failing every write after the first `ok_writes` with `error`."""

    def __init__(self, root: Path, ok_writes: int, error: int) -> None:
        super().__init__(root, outage_timeout=1.0)  # EIO is ridden out for 1 s, then fails
        self.ok_writes = ok_writes
        self.error = error

    def write(self, key: str, data: bytes) -> None:
        if self.ok_writes <= 0:
            raise OSError(self.error, os.strerror(self.error), key)
        self.ok_writes -= 1
        super().write(key, data)


def frames(n: int) -> list[npt.NDArray[np.uint8]]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, FRAME, dtype=np.uint8) for _ in range(n)]


def record_until_failure(
    store: replay.Store, shard_size: int = 4
) -> tuple[replay.Writer, list[bool]]:
    writer = store.new_race(
        env="e", height=FRAME[0], width=FRAME[1], shard_size=shard_size, codec="zstd"
    )
    accepted = [writer.append(frame, reward=i) for i, frame in enumerate(frames(200))]
    return writer, accepted


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_write_errors_keep_the_driver_alive_and_committed_frames_intact(
    tmp_path: Path, error: int
) -> None:
    store = replay.open_store(tmp_path)
    # race creation and the first commits succeed, then every write fails
    store.storage = FailingStorage(tmp_path, ok_writes=12 + 2 * 14, error=error)
    writer, accepted = record_until_failure(store)  # never raises in the driver
    assert not all(accepted)  # frames are dropped once the writer has failed
    stats = writer.stats()
    assert stats.error is not None
    assert os.strerror(error) in stats.error
    with pytest.raises(replay.WriterFailedError, match=os.strerror(error)):
        writer.close()
    race = replay.open_store(tmp_path, mode="r").race(writer.race_id)
    assert race.length == stats.written > 0
    expected = frames(race.length)
    for step in range(race.length):  # lossless codec: committed frames are bit exact
        assert np.array_equal(race.frame(step), expected[step])
    assert race.steps("reward").tolist() == list(range(race.length))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB filesystem (tmpfs), to fill up; skipped where mounting is not allowed."""
    with tmpfs(tmp_path / "small", "2m") as mount:
        yield mount


def test_a_really_full_disk(small_disk: Path) -> None:
    store = replay.open_store(small_disk / "store")
    writer, accepted = record_until_failure(store, shard_size=8)
    assert not all(accepted)
    assert "No space left on device" in (writer.stats().error or "")
    with pytest.raises(replay.WriterFailedError, match="No space left"):
        writer.close()
    race = replay.open_store(small_disk / "store", mode="r").race(writer.race_id)
    assert race.length > 0
    expected = frames(race.length)
    for step in range(race.length):
        assert np.array_equal(race.frame(step), expected[step])
    # no temp files are left behind by the failed writes
    assert not [p for p in (small_disk / "store").rglob(".tmp-*")]
