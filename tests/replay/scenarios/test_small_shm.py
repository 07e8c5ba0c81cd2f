"""A small /dev/shm (issue 23, item 6): Docker and Kubernetes give containers 64 MiB.

Each test mounts a real tmpfs of the size at hand and points the rings there
(``REPLAY_SHM_DIR``); real CarRacing frames (1600x900: 4.3 MB each) are recorded. When
the ring a race needs does not fit, the race is recorded anyway, with a smaller ring or
by the thread writer, and one warning says what was needed, what was free and the fix.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from mounts import tmpfs

import replay
from replay.write.ring import SHM_DIR_ENV

WARNING = r"needs 61\.8 MiB of shared memory in .*, \d+\.\d MiB is free; recording with "


def record(store: replay.Store, frames: npt.NDArray[np.uint8]) -> replay.Writer:
    with store.new_race(env="CarRacing-v3", fps=30) as writer:
        for i, frame in enumerate(frames):
            writer.append(frame, reward=float(i))
    return writer


def unmapped(shm: Path, pids: set[int]) -> bool:
    """Whether no ring in `shm` is mapped by the driver or its writer process any more
    (the writer process unmaps a ring just after the race is closed): wait a while."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not any(str(shm) in Path(f"/proc/{pid}/maps").read_text() for pid in pids):
            return True
        time.sleep(0.05)
    return False


def shm_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "shared memory" in r.getMessage()]


def test_a_ring_that_does_not_fit_becomes_a_smaller_one_with_one_warning(
    tmp_path: Path,
    real_frames: npt.NDArray[np.uint8],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """30 FPS: a ring of 15 frames (61.8 MiB); 48 MiB holds 11 of them."""
    with tmpfs(tmp_path / "shm", "48m") as shm:
        monkeypatch.setenv(SHM_DIR_ENV, str(shm))
        store = replay.open_store(tmp_path / "store")
        with caplog.at_level(logging.WARNING):
            writers = [record(store, real_frames[:24]) for _ in range(2)]
        (warning,) = shm_warnings(caplog)  # one, for both races
        assert "a ring of 11 frames instead" in warning
        assert "--shm-size" in warning
        assert SHM_DIR_ENV in warning
        assert re.search(WARNING, warning)
        for writer in writers:
            assert writer.pid != os.getpid()  # still the process writer
            race = store.race(writer.race_id)
            assert (race.status, race.length, writer.stats().dropped) == ("complete", 24, 0)
            assert race.steps("reward").tolist() == list(range(24))
        assert list(shm.iterdir()) == []  # no ring left behind
        assert unmapped(shm, {os.getpid(), *(w.pid for w in writers)})


def test_where_not_even_a_small_ring_fits_the_thread_writer_records(
    tmp_path: Path,
    real_frames: npt.NDArray[np.uint8],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with tmpfs(tmp_path / "shm", "16m") as shm:  # 3 frames: fewer than MIN_SLOTS
        monkeypatch.setenv(SHM_DIR_ENV, str(shm))
        store = replay.open_store(tmp_path / "store")
        with caplog.at_level(logging.WARNING):
            writer = record(store, real_frames[:20])
        (warning,) = shm_warnings(caplog)
        assert "recording with the thread writer instead" in warning
        assert writer.pid == os.getpid()
        race = store.race(writer.race_id)
        assert (race.status, race.length) == ("complete", 20)
        assert np.array_equal(race.steps("reward"), np.arange(20, dtype=np.float32))


def test_a_ring_size_asked_for_that_does_not_fit_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tmpfs(tmp_path / "shm", "16m") as shm:
        monkeypatch.setenv(SHM_DIR_ENV, str(shm))
        store = replay.open_store(tmp_path / "store")
        with pytest.raises(MemoryError) as raised:
            store.new_race(env="e", queue_size=32)
        message = str(raised.value)
        assert "a ring of 32 frames of (900, 1600, 3) needs 131.8 MiB" in message
        assert f"in {shm}, 16.0 MiB is free" in message
        assert "--shm-size" in message
        assert store.races() == []
        assert list(shm.iterdir()) == []


def test_replay_record_on_a_64_mib_shm_records_with_one_warning_line(tmp_path: Path) -> None:
    """The real command, as a container runs it: 64 MiB, already half taken by another
    recorder's ring; 3 races of 1600x900 frames."""
    with tmpfs(tmp_path / "shm", "64m") as shm:
        (shm / "other-ring").write_bytes(b"\0" * (30 << 20))
        env = dict(os.environ, **{SHM_DIR_ENV: str(shm)})
        python = [sys.executable, "-c", "from replay.cli.main import main; main()"]
        args = ["--source", "synthetic", "--races", "3", "--steps", "20"]
        done = subprocess.run(
            [*python, "record", str(tmp_path / "store"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stderr.splitlines() if "shared memory" in line]
        assert len(lines) == 1, done.stderr
        assert "recording with a ring of 8 frames instead" in lines[0]
        assert "Traceback" not in done.stderr
        assert "Error" not in done.stderr
        store = replay.open_store(tmp_path / "store", mode="r")
        assert [(r.status, r.length) for r in store.races()] == [("complete", 20)] * 3
