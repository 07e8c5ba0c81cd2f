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
from replay.bench.footprint import psnr
from replay.codec.devices import cuda_available

CHILD = Path(__file__).parents[1] / "writer_child.py"
SMALL = (48, 64, 3)
KINDS = pytest.mark.parametrize("kind", ["thread", "process"])


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


@KINDS
def test_frames_of_any_memory_layout_are_recorded_exactly(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8], kind: str
) -> None:
    store = replay.open_store(tmp_path)
    pictures = real_frames[:7].copy()
    frozen = pictures[1].copy()
    frozen.flags.writeable = False
    rgba = np.zeros((900, 1600, 4), np.uint8)
    rgba[..., :3] = pictures[3]
    frames = (
        pictures[0][::-1].copy()[::-1],  # negative strides
        frozen,
        np.asfortranarray(pictures[2]),
        rgba[..., :3],
        np.ascontiguousarray(pictures[4].transpose(1, 0, 2)).transpose(1, 0, 2),  # pygame
        np.ascontiguousarray(pictures[5].transpose(2, 0, 1)).transpose(1, 2, 0),  # planar
        pictures[6][..., ::-1].copy()[..., ::-1],  # BGR, reversed
    )
    with store.new_race(env="CarRacing-v3", codec="zstd", writer=kind) as writer:
        for frame in frames:
            assert writer.append(frame)
            if frame.flags.writeable:
                frame[...] = 0  # the driver reuses its buffer: the writer took a copy
    race = store.race(writer.race_id)
    for step, expected in enumerate(pictures):
        assert np.array_equal(race.frame(step), expected)


@KINDS
def test_append_after_close_raises(tmp_path: Path, kind: str) -> None:
    store = replay.open_store(tmp_path)
    writer = small_race(store, writer=kind)
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(replay.WriterClosedError, match="after close"):
        writer.append(small_frame(0))
    with pytest.raises(replay.WriterClosedError, match="frame_buffer\\(\\) after close"):
        writer.frame_buffer()


@KINDS
def test_exception_in_with_block_marks_race_aborted(tmp_path: Path, kind: str) -> None:
    store = replay.open_store(tmp_path)

    def drive() -> str:
        with small_race(store, writer=kind) as writer:
            writer.append(small_frame(0))
            raise RuntimeError(f"driver crashed in {writer.race_id}")

    with pytest.raises(RuntimeError, match="driver crashed") as crashed:
        drive()
    race_id = str(crashed.value).rsplit(" ", 1)[-1]
    info = store.race(race_id).info
    assert (info.status, info.length) == ("aborted", 1)


@KINDS
def test_open_shard_is_committed_every_flush_interval(tmp_path: Path, kind: str) -> None:
    store = replay.open_store(tmp_path)
    with small_race(store, shard_size=100, flush_interval=0.1, writer=kind) as writer:
        for i in range(5):
            writer.append(small_frame(i))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and (
            store.race(writer.race_id).length < 5 or writer.stats().written < 5
        ):  # the counters follow the commit
            time.sleep(0.02)
        race = store.race(writer.race_id)
        assert (race.status, race.length) == ("recording", 5)
        assert race.info.lease is not None
        assert race.info.lease["pid"] == writer.pid  # the process that commits
        assert (writer.pid == os.getpid()) == (kind == "thread")
        assert race.frame(4)[0, 0, 0] == 4
        while writer.stats().written < 5 and time.monotonic() < deadline:
            time.sleep(0.01)  # counted just after the length is written
        assert writer.stats().written == 5


@KINDS
def test_drop_policy_drops_and_counts_when_the_ring_is_full(tmp_path: Path, kind: str) -> None:
    store = replay.open_store(tmp_path)
    with store.new_race(env="t", queue_size=1, on_full="drop", writer=kind) as writer:
        frame = np.zeros((900, 1600, 3), np.uint8)
        results = [writer.append(frame) for _ in range(50)]
    stats = writer.stats()
    assert stats.dropped == results.count(False) > 0
    assert stats.appended == results.count(True) == stats.written
    assert store.race(writer.race_id).length == stats.written


@KINDS
def test_block_policy_loses_nothing(tmp_path: Path, kind: str) -> None:
    store = replay.open_store(tmp_path)
    with small_race(store, queue_size=2, shard_size=7, writer=kind) as writer:
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


@KINDS
def test_frames_drawn_in_the_frame_buffer_are_recorded(tmp_path: Path, kind: str) -> None:
    store = replay.open_store(tmp_path)
    with small_race(store, writer=kind, queue_size=3, shard_size=4, codec="zstd") as writer:
        for i in range(20):
            if i % 5 == 4:  # a copied frame between drawn ones
                assert writer.append(small_frame(i), reward=i)
                continue
            frame = writer.frame_buffer()
            assert (frame.shape, frame.dtype) == (SMALL, np.uint8)
            assert writer.frame_buffer() is frame  # the same until it is appended
            frame[...] = small_frame(i)  # drawn in the ring slot
            assert writer.append(frame, reward=i)
        unused = writer.frame_buffer()
        unused[...] = 255
        assert writer.append(small_frame(20), reward=20)  # ends the loan, copied in its slot
    stats = writer.stats()
    assert (stats.appended, stats.written, stats.dropped, stats.error) == (21, 21, 0, None)
    race = store.race(writer.race_id)
    assert race.steps("reward").tolist() == list(range(21))
    for step in range(21):
        assert np.array_equal(race.frame(step), small_frame(step))  # zstd: lossless


@KINDS
def test_frame_buffer_of_a_full_ring_with_drop_lends_a_spare(tmp_path: Path, kind: str) -> None:
    store = replay.open_store(tmp_path)
    taken = []
    with store.new_race(env="t", queue_size=1, on_full="drop", writer=kind) as writer:
        for i in range(50):
            frame = writer.frame_buffer()
            frame[...] = i
            if writer.append(frame, reward=i):
                taken.append(i)
    stats = writer.stats()
    assert stats.dropped == 50 - len(taken) > 0
    assert stats.appended == len(taken) == stats.written
    race = store.race(writer.race_id)
    assert race.steps("reward").tolist() == taken  # each kept frame with its own values
    assert [int(race.frame(step)[450, 800, 0]) for step in range(race.length)] == taken


def test_invalid_writer_settings(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    with pytest.raises(ValueError, match="on_full"):
        small_race(store, on_full="wait")
    if not cuda_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            small_race(store, device="cuda")
    with pytest.raises(ValueError, match="flush_interval"):
        small_race(store, flush_interval=0)
    with pytest.raises(ValueError, match="writer must be 'auto', 'thread' or 'process'"):
        small_race(store, writer="fiber")
    assert store.race_ids() == []  # refused before anything was created


def spawn_writer(store: Path, frames: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(store), str(frames), *args],
        stdout=subprocess.PIPE,
        text=True,
    )


def clean_run(tmp_path: Path, frames_file: Path, writer: str) -> replay.Race:
    """The race a child writes without being killed: the reference bytes of the crash
    tests (the encoder is deterministic)."""
    clean = spawn_writer(
        tmp_path / "clean", frames_file, "--count", "40", "--fps", "1000", "--writer", writer
    )
    clean.communicate(timeout=120)
    assert clean.returncode == 0
    reference = replay.open_store(tmp_path / "clean", mode="r")
    (info,) = reference.races()
    return reference.race(info.race_id)


def test_sigkill_of_a_thread_writer_loses_at_most_the_open_flush_and_never_tears(
    tmp_path: Path, frames_file: Path
) -> None:
    ref = clean_run(tmp_path, frames_file, "thread")

    rng = np.random.default_rng(7)
    for kill_at in rng.integers(3, 30, size=3):
        store_path = tmp_path / f"killed-{kill_at}"
        child = spawn_writer(
            store_path, frames_file, "--count", "40", "--fps", "20", "--writer", "thread"
        )
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


def test_sigkill_of_the_driver_loses_nothing_appended_to_a_process_writer(
    tmp_path: Path, frames_file: Path
) -> None:
    ref = clean_run(tmp_path, frames_file, "process")

    for kill_at in (1, 13, 29):  # mid-shard, a long flush interval: nothing committed yet
        store_path = tmp_path / f"killed-{kill_at}"
        child = spawn_writer(
            store_path, frames_file, "--fps", "1000", "--flush-interval", "30",
            "--writer", "process", "--hang-after", str(kill_at),
        )  # fmt: skip
        assert child.stdout is not None
        race_id = child.stdout.readline().strip()
        assert child.stdout.readline().split() == ["appended", str(kill_at)]
        child.send_signal(signal.SIGKILL)
        child.communicate()
        store = replay.open_store(store_path, mode="r")
        deadline = time.monotonic() + 60
        while store.race(race_id).status == "recording" and time.monotonic() < deadline:
            time.sleep(0.02)  # the writer process commits the ring, then closes the race
        race = store.race(race_id)
        assert (race.status, race.length) == ("aborted", kill_at)
        assert race.info.lease is None
        for step in range(kill_at):
            assert race.frame_bytes(step) == ref.frame_bytes(step)
        assert np.array_equal(race.steps("reward"), np.arange(kill_at))
        assert np.array_equal(race.steps("action")[-1], np.float32([1, 2, 3]) * (kill_at - 1))


def test_races_of_one_driver_share_one_writer_process(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path)
    writers = [store.new_race(env=f"sub-{i}", shard_size=4, writer="process") for i in range(3)]
    assert len({w.pid for w in writers}) == 1
    assert writers[0].pid != os.getpid()
    for step in range(10):  # a vector env: one frame per sub-env per step
        for i, writer in enumerate(writers):
            assert writer.append(real_frames[(step + i) % len(real_frames)], reward=10 * i + step)
    for writer in writers:
        writer.close()
        assert (writer.stats().written, writer.stats().error) == (10, None)
    for i, writer in enumerate(writers):
        race = store.race(writer.race_id)
        assert (race.status, race.length) == ("complete", 10)
        assert race.steps("reward").tolist() == [10 * i + step for step in range(10)]
        assert psnr(race.frame(9), real_frames[(9 + i) % len(real_frames)]) >= 38.0


def test_a_dead_writer_process_is_seen_at_the_next_append(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    writer = small_race(store, writer="process", shard_size=4)
    for i in range(6):
        assert writer.append(small_frame(i))
    os.kill(writer.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while writer.append(small_frame(0)) and time.monotonic() < deadline:
        time.sleep(0.01)  # until the process has exited: then the frame is dropped
    stats = writer.stats()
    assert stats.dropped >= 1
    assert stats.error is not None
    assert f"writer process {writer.pid} exited" in stats.error
    with pytest.raises(replay.WriterFailedError, match="writer process"):
        writer.close()
    # the next race starts a new writer process
    with small_race(store, writer="process") as second:
        assert second.pid != writer.pid
        assert second.append(small_frame(1))
    assert store.race(second.race_id).length == 1


def test_the_writer_process_ignores_ctrl_c_and_commits_everything_on_sigterm(
    tmp_path: Path,
) -> None:
    store = replay.open_store(tmp_path)
    first = small_race(store, writer="process", flush_interval=30)
    for i in range(5):
        assert first.append(small_frame(i), reward=i)
    os.kill(first.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    second = small_race(store, writer="process", flush_interval=30)  # answered: it lives
    assert second.pid == first.pid
    assert second.append(small_frame(7), reward=7)
    os.kill(first.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        store.race(w.race_id).status == "recording" for w in (first, second)
    ):
        time.sleep(0.02)
    assert (store.race(first.race_id).status, store.race(first.race_id).length) == ("aborted", 5)
    assert store.race(first.race_id).steps("reward").tolist() == [0, 1, 2, 3, 4]
    assert (store.race(second.race_id).status, store.race(second.race_id).length) == ("aborted", 1)
    for writer in (first, second):
        with pytest.raises(replay.WriterFailedError, match="stopped \\(SIGTERM\\)"):
            writer.close()


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


@KINDS
def test_step_values_are_copied_at_append(tmp_path: Path, kind: str) -> None:
    """A driver that reuses its action buffer after append does not change what was stored."""
    store = replay.open_store(tmp_path)
    action = np.zeros(3, np.float32)
    with small_race(store, action_shape=(3,), writer=kind) as writer:
        for i in range(5):
            action[:] = i
            writer.append(small_frame(i), action=action)
        action[:] = -1
    stored = store.race(writer.race_id).steps("action")
    assert stored[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_writer_process_unmaps_the_rings_of_finished_races(tmp_path: Path) -> None:
    """A driver recording race after race does not pile up shared memory in its writer
    process (each ring is half a second of frames: 62 MB at 1600x900 and 30 FPS)."""
    store = replay.open_store(tmp_path)
    pids = set()
    for i in range(4):
        with small_race(store, writer="process") as writer:
            writer.append(small_frame(i))
        pids.add(writer.pid)
    (pid,) = pids  # one writer process served every race
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        maps = Path(f"/proc/{pid}/maps").read_text()
        if "replay-ring" not in maps:
            break
        time.sleep(0.05)
    assert "replay-ring" not in maps
