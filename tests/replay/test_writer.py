"""The background writer: input checks, policies, counters, and crash safety."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import replay
from replay import jpeg

CHILD = Path(__file__).with_name("writer_child.py")
SMALL = (48, 64, 3)


def small_frame(i: int) -> npt.NDArray[np.uint8]:
    return np.full(SMALL, i % 256, dtype=np.uint8)


def small_race(store: replay.Store, **kwargs: object) -> replay.Writer:
    return store.new_race(env="test", height=SMALL[0], width=SMALL[1], **kwargs)  # type: ignore[arg-type]


def test_wrong_frames_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    with small_race(store) as writer:
        with pytest.raises(replay.FrameError, match=r"\(48, 64, 3\) uint8, got \(48, 64\) uint8"):
            writer.append(np.zeros(SMALL[:2], np.uint8))
        with pytest.raises(replay.FrameError, match="float32"):
            writer.append(np.zeros(SMALL, np.float32))
        with pytest.raises(replay.FrameError, match=r"got \(64, 48, 3\)"):
            writer.append(np.zeros((64, 48, 3), np.uint8))
        writer.append(small_frame(1))
    assert writer.stats().appended == 1
    assert store.race(writer.race_id).length == 1


def test_non_contiguous_and_read_only_frames_are_accepted(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path)
    flipped = real_frames[0][:, ::-1]  # negative strides
    frozen = real_frames[1].copy()
    frozen.flags.writeable = False
    fortran = np.asfortranarray(real_frames[2])
    bigger = np.zeros((900, 1600, 4), np.uint8)
    bigger[..., :3] = real_frames[3]
    with store.new_race(env="CarRacing-v3", codec="zstd") as writer:
        for frame in (flipped, frozen, fortran, bigger[..., :3]):
            assert writer.append(frame)
    race = store.race(writer.race_id)
    for step, expected in enumerate((flipped, frozen, fortran, real_frames[3])):
        assert np.array_equal(race.frame(step), expected)


def test_append_after_close_raises(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    writer = small_race(store)
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(replay.WriterClosedError, match="after close"):
        writer.append(small_frame(0))


def test_exception_in_with_block_marks_race_aborted(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)

    def drive() -> str:
        with small_race(store) as writer:
            writer.append(small_frame(0))
            raise RuntimeError(f"driver crashed in {writer.race_id}")

    with pytest.raises(RuntimeError, match="driver crashed") as crashed:
        drive()
    race_id = str(crashed.value).rsplit(" ", 1)[-1]
    info = store.race(race_id).info
    assert (info.status, info.length) == ("aborted", 1)


def test_open_shard_is_committed_every_flush_interval(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    with small_race(store, shard_size=100, flush_interval=0.1) as writer:
        for i in range(5):
            writer.append(small_frame(i))
        deadline = time.monotonic() + 5
        while store.race(writer.race_id).length < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        race = store.race(writer.race_id)
        assert (race.status, race.length) == ("recording", 5)
        assert race.info.lease is not None
        assert race.info.lease["pid"] == os.getpid()
        assert race.frame(4)[0, 0, 0] == 4
        while writer.stats().written < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # counted just after the length is written
        assert writer.stats().written == 5


def test_drop_policy_drops_and_counts_when_the_ring_is_full(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    with store.new_race(env="t", queue_size=1, on_full="drop") as writer:
        frame = np.zeros((900, 1600, 3), np.uint8)
        results = [writer.append(frame) for _ in range(50)]
    stats = writer.stats()
    assert stats.dropped == results.count(False) > 0
    assert stats.appended == results.count(True) == stats.written
    assert store.race(writer.race_id).length == stats.written


def test_block_policy_loses_nothing(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    with small_race(store, queue_size=2, shard_size=7) as writer:
        for i in range(100):
            writer.append(small_frame(i), reward=i)
    stats = writer.stats()
    assert (stats.appended, stats.written, stats.dropped) == (100, 100, 0)
    assert stats.shards_written == 14
    assert stats.bytes_written > 0
    assert stats.error is None
    assert 0 < stats.encode_ms_mean <= stats.encode_ms_p99  # per frame, not a running total
    race = store.race(writer.race_id)
    assert race.steps("reward").tolist() == list(range(100))
    assert [int(race.frame(i)[0, 0, 0]) for i in (0, 6, 7, 99)] == [0, 6, 7, 99]


def test_invalid_writer_settings(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    with pytest.raises(ValueError, match="on_full"):
        small_race(store, on_full="wait")
    if not jpeg.cuda_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            small_race(store, device="cuda")
    with pytest.raises(ValueError, match="flush_interval"):
        small_race(store, flush_interval=0)
    assert store.race_ids() == []  # refused before anything was created


def spawn_writer(store: Path, frames: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(store), str(frames), *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_sigkill_loses_at_most_the_open_flush_and_never_tears(
    tmp_path: Path, frames_file: Path
) -> None:
    # A clean run gives the reference bytes (the encoder is deterministic).
    clean_store = tmp_path / "clean"
    clean = spawn_writer(clean_store, frames_file, "--count", "40", "--fps", "1000")
    clean.communicate(timeout=120)
    assert clean.returncode == 0
    reference = replay.open_store(clean_store, mode="r")
    (ref_info,) = reference.races()
    ref = reference.race(ref_info.race_id)

    rng = np.random.default_rng(7)
    for kill_at in rng.integers(3, 30, size=3):
        store_path = tmp_path / f"killed-{kill_at}"
        child = spawn_writer(store_path, frames_file, "--count", "40", "--fps", "20")
        assert child.stdout is not None
        race_id = child.stdout.readline().strip()
        store = replay.open_store(store_path, mode="r")
        deadline = time.monotonic() + 60
        while store.race(race_id).length < kill_at and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
        child.communicate()
        race = store.race(race_id)
        assert race.status == "recording"  # not complete: the writer died
        assert kill_at <= race.length < 40
        for step in range(race.length):
            assert race.frame_bytes(step) == ref.frame_bytes(step)
        assert np.array_equal(race.frames[: race.length], ref.frames[: race.length])
        assert np.array_equal(race.steps("reward"), np.arange(race.length))


def test_two_processes_write_two_races_at_once(tmp_path: Path, frames_file: Path) -> None:
    store_path = tmp_path / "shared"
    replay.open_store(store_path)
    children = [
        spawn_writer(store_path, frames_file, "--count", "30", "--fps", "60", "--env", f"w{i}")
        for i in range(2)
    ]
    for child in children:
        child.communicate(timeout=120)
        assert child.returncode == 0
    races = replay.open_store(store_path, mode="r").races()
    assert sorted(r.env for r in races) == ["w0", "w1"]
    assert all((r.status, r.length) == ("complete", 30) for r in races)


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[None]:
    """Make `path` unwritable, even for root (who ignores mode bits): chattr +i."""
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        try:
            yield
        finally:
            os.chmod(path, 0o755)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip(
            "running as root on a filesystem without chattr +i: cannot make a read-only dir"
        )
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_directory_gives_a_clear_error(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "store")
    with read_only_dir(tmp_path / "store"), read_only_dir(tmp_path / "store" / "races"):
        with pytest.raises(replay.ReadOnlyStoreError, match="cannot write"):
            store.new_race(env="e")
        with pytest.raises(replay.ReadOnlyStoreError, match="cannot create"):
            replay.open_store(tmp_path / "store" / "inner")
    assert store.races() == []
    listing = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert listing == ["races", "samplers", "zarr.json"]
    assert sorted(p.name for p in (tmp_path / "store" / "races").iterdir()) == ["zarr.json"]


def test_an_idle_writer_does_not_rewrite_its_open_shard(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    with small_race(store, shard_size=100, flush_interval=0.05) as writer:
        for i in range(3):
            writer.append(small_frame(i))
        deadline = time.monotonic() + 5
        while store.race(writer.race_id).length < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        shard = tmp_path / "races" / writer.race_id / "frames" / "c" / "0" / "0" / "0" / "0"

        def version() -> tuple[int, int]:  # each commit renames a new file into place
            st = shard.stat()
            return st.st_ino, st.st_mtime_ns

        before = version()
        time.sleep(0.4)  # eight flush intervals with nothing new
        assert version() == before
        writer.append(small_frame(3))
        deadline = time.monotonic() + 5
        while store.race(writer.race_id).length < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert version() != before
