"""Live refresh: a writer appends in another process while clients list, fetch and sample."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from service_helpers import ThreadServer, write_race

import replay
from replay.codec import jpeg
from replay.errors import SamplingError
from replay.remote.client import Client
from service.settings import Settings

COUNT = 48


@pytest.fixture
def frames_file(tmp_path: Path, frames: list[npt.NDArray[np.uint8]]) -> Path:
    path = tmp_path / "frames.npy"
    np.save(path, np.stack(frames[:8]))
    return path


def test_races_being_written_appear_and_grow(
    tmp_path: Path, frames_file: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    store_path = tmp_path / "store"
    store = replay.open_store(store_path)
    write_race(store, frames[:4], env="Old-v0")  # the service starts on a non-empty store
    with ThreadServer(Settings(store=store_path)) as server, Client(server.url) as client:
        assert len(client.races()) == 1
        child = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).parents[1] / "replay" / "writer_child.py"),
                str(store_path),
                str(frames_file),
                "--count",
                str(COUNT),
                "--fps",
                "40",
                "--shard-size",
                "8",
                "--flush-interval",
                "0.1",
                "--env",
                "Live-v0",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            race_id = child.stdout.readline().strip()
            seen_lengths: list[int] = []
            seen_frames: dict[int, bytes] = {}
            sampled: list[tuple[str, int]] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                live = {info.race_id: info for info in client.races()}
                info = live.get(race_id)
                if info is None:
                    continue
                seen_lengths.append(info.length)
                if info.length:
                    last = info.length - 1  # the newest committed frame
                    seen_frames[last] = client.frame_bytes(race_id, last)
                    try:
                        batch = client.sample(batch_size=4, filters={"race_ids": [race_id]})
                    except SamplingError:  # fewer than 4 frames committed yet
                        pass
                    else:
                        assert batch.frames.shape == (4, 1, 900, 1600, 3)
                        sampled += batch.keys
                if info.status == "complete":
                    break
                time.sleep(0.05)
            assert child.wait(timeout=30) == 0
        finally:
            child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()

        final = replay.open_store(store_path, mode="r").race(race_id)
        assert final.status == "complete"
        assert final.length == COUNT
        assert client.race(race_id).length == COUNT
        # it was seen recording, growing, and then complete: no restart needed
        assert seen_lengths == sorted(seen_lengths)
        assert len(set(seen_lengths)) >= 3
        assert seen_lengths[0] < COUNT
        assert sampled
        # nothing torn: every frame seen while recording is the committed frame, whole
        assert len(seen_frames) >= 3
        decoder = jpeg.decoder("cpu")
        for step, blob in seen_frames.items():
            assert blob == final.frame_bytes(step)
            image = decoder.decode_one(blob)
            assert image is not None
            assert image.shape == (900, 1600, 3)
        for step in range(COUNT):
            assert client.frame_bytes(race_id, step) == final.frame_bytes(step)
