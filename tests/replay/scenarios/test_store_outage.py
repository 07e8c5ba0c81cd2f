"""A store that stops answering for a while: the writer rides it out and loses nothing.

On S3 the real SeaweedFS server is SIGKILLed mid-race and started again on the same
port; on disk, writes answer EIO while a flag file exists (a real disk cannot be made
to fail on demand without root). Either way every frame the driver was told was
accepted is committed, bit exact where the codec is lossless; past the outage budget
the writer fails with an error that names the outage.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import replay
from replay.bench.seaweedfs import SeaweedFS
from replay.storage.local import LocalStorage

FRAME = (96, 128, 3)


class FlakyDisk(LocalStorage):
    """The real disk storage, whose writes answer EIO while the file `down` exists (in
    any process: the writer process gets a pickled copy); each refusal adds a byte to
    `refusals`, so the test sees that the outage happened."""

    def __init__(self, root: Path, down: Path, outage_timeout: float) -> None:
        super().__init__(root, outage_timeout=outage_timeout)
        self.down = down
        self.refusals = down.with_suffix(".refusals")

    def write(self, key: str, data: bytes) -> None:
        if self.down.exists():
            with self.refusals.open("ab") as f:
                f.write(b".")
            raise OSError(errno.EIO, os.strerror(errno.EIO), key)
        super().write(key, data)


def frames(n: int) -> list[npt.NDArray[np.uint8]]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, FRAME, dtype=np.uint8) for _ in range(n)]


def record_through_eio(tmp_path: Path, up_after: float | None, budget: float) -> replay.Writer:
    """Record 60 frames; the disk fails from frame 20, for `up_after` seconds (None: for good)."""
    replay.open_store(tmp_path / "store")
    down = tmp_path / "down"
    store = replay.Store(FlakyDisk(tmp_path / "store", down, budget), read_only=False)
    writer = store.new_race(
        env="e", height=FRAME[0], width=FRAME[1], shard_size=4, codec="zstd", flush_interval=0.2
    )
    for step, frame in enumerate(frames(60)):
        if step == 20:
            while writer.stats().written < 16:  # 4 shards committed before the outage
                time.sleep(0.01)
            down.touch()
            if up_after is not None:
                threading.Timer(up_after, down.unlink).start()
        accepted = writer.append(frame, reward=step)  # on_full="block": the driver waits
        assert accepted or up_after is None  # frames are dropped once the writer failed
    return writer


def test_a_disk_answering_eio_for_a_while_loses_nothing(tmp_path: Path) -> None:
    writer = record_through_eio(tmp_path, up_after=1.5, budget=60.0)
    writer.close()
    assert (tmp_path / "down.refusals").stat().st_size > 0  # the writes were refused
    race = replay.open_store(tmp_path / "store", mode="r").race(writer.race_id)
    assert race.status == "complete"
    assert race.length == 60
    assert race.steps("reward").tolist() == list(range(60))
    for step, frame in enumerate(frames(60)):
        assert np.array_equal(race.frame(step), frame)


def test_an_outage_past_the_budget_fails_naming_it(tmp_path: Path) -> None:
    writer = record_through_eio(tmp_path, up_after=None, budget=1.0)
    with pytest.raises(replay.WriterFailedError, match=r"unreachable .* outage budget of 1s"):
        writer.close()
    assert "REPLAY_OUTAGE_TIMEOUT" in (writer.stats().error or "")
    (tmp_path / "down").unlink()
    race = replay.open_store(tmp_path / "store", mode="r").race(writer.race_id)
    assert 16 <= race.length <= 20  # what was committed before the outage stays readable
    assert race.steps("reward").tolist() == list(range(race.length))


def test_a_bad_outage_budget_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="outage_timeout must be a number of seconds >= 0"):
        LocalStorage(tmp_path, outage_timeout=-1)
    monkeypatch.setenv("REPLAY_OUTAGE_TIMEOUT", "soon")
    with pytest.raises(ValueError, match=r"REPLAY_OUTAGE_TIMEOUT .* got 'soon'"):
        replay.open_store(tmp_path / "store")
    monkeypatch.setenv("REPLAY_OUTAGE_TIMEOUT", "120")
    assert replay.open_store(tmp_path / "store").storage.outage_timeout == 120


# -- S3: the real server killed and started again on the same port -----------------------


def race_through_outage(
    server: SeaweedFS,
    url: str,
    frame_source: npt.NDArray[np.uint8],
    *,
    outage_s: float,
    on_full: str,
    fps: float = 30.0,
    before_s: float = 2.0,
    after_s: float = 2.0,
) -> dict[str, Any]:
    """Record at `fps` for `before_s`, SIGKILL the server, start it again `outage_s` later
    (same port, same data), record `after_s` more; returns the counts, and checks that
    every accepted frame is committed, in order."""
    store = replay.open_store(url)
    h, w = frame_source.shape[1:3]
    writer = store.new_race(env="e", height=h, width=w, on_full=on_full, shard_size=32)  # type: ignore[arg-type]
    accepted: list[int] = []
    outage: dict[str, float] = {}

    def kill_and_restart() -> None:
        outage["down"] = time.monotonic()
        server.stop(crash=True)
        time.sleep(outage_s)
        server.start()
        outage["up"] = time.monotonic()

    killer = threading.Timer(before_s, kill_and_restart)
    started = time.monotonic()
    killer.start()
    step = 0
    while "up" not in outage or time.monotonic() < outage["up"] + after_s:
        if writer.append(frame_source[step % len(frame_source)], reward=step):
            accepted.append(step)
        step += 1
        time.sleep(max(0.0, started + step / fps - time.monotonic()))
    killer.join()
    writer.close()
    race = replay.open_store(url, mode="r").race(writer.race_id)
    assert race.status == "complete"
    assert race.steps("reward").tolist() == accepted  # every accepted frame, in order
    return {
        "outage_s": round(outage["up"] - outage["down"], 1),
        "on_full": on_full,
        "offered": step,
        "appended": len(accepted),
        "dropped": step - len(accepted),
        "committed": race.length,
        "lost": len(accepted) - race.length,
    }


@pytest.fixture
def own_s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A SeaweedFS server of this test's own (the session's must not be killed)."""
    pytest.importorskip("obstore")
    with SeaweedFS(tmp_path / "seaweedfs") as server:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.parametrize("on_full", ["block", "drop"])
def test_an_s3_outage_of_5_s_ends_no_race(
    own_s3_server: SeaweedFS, real_frames: npt.NDArray[np.uint8], on_full: str
) -> None:
    small = np.ascontiguousarray(real_frames[:8, ::4, ::4])  # (225, 400): encodes at 30 FPS
    url = f"s3://{own_s3_server.bucket}/outage-{on_full}"
    counts = race_through_outage(own_s3_server, url, small, outage_s=5.0, on_full=on_full)
    print(counts)
    assert counts["outage_s"] >= 5.0
    assert counts["lost"] == 0
    assert counts["committed"] == counts["appended"] > 0
    if on_full == "drop":  # the ring (32 slots, about 1 s) filled while the store was away
        assert counts["dropped"] > 0
    else:  # the driver waited instead
        assert counts["dropped"] == 0


def main(argv: list[str]) -> None:
    """The figures of docs/reliability.md for longer outages than CI waits for:
    ``python tests/replay/scenarios/test_store_outage.py 30 block drop`` (seconds, then
    the ``on_full`` policies); one JSON line of counts per race."""
    import json
    import tempfile

    from capture.carracing import CarRacingSource

    with CarRacingSource() as source:
        frames = np.stack([step.frame for step in source.race(max_steps=8, seed=0)])
    small = np.ascontiguousarray(frames[:, ::4, ::4])
    with tempfile.TemporaryDirectory() as work, SeaweedFS(Path(work)) as server:
        os.environ.update(server.env())
        for i, on_full in enumerate(argv[1:]):
            url = f"s3://{server.bucket}/outage-{i}"
            counts = race_through_outage(
                server, url, small, outage_s=float(argv[0]), on_full=on_full
            )
            print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
