"""An actor on a GPU machine records through the service: CUDA frames, nvJPEG on the
actor, the same bytes as a local CUDA writer's (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from service_helpers import ThreadServer

import replay
from replay.codec.devices import cuda_available
from service.settings import Settings

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device"),
]


def test_cuda_frames_are_encoded_by_nvjpeg_on_the_actor(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    import cupy

    few = frames[:12]
    store = replay.open_store(tmp_path / "s")
    with store.new_race(env="CarRacing-v3", codec="jpeg", device="cuda") as local:
        for frame in few:
            local.append(cupy.asarray(frame))
    with ThreadServer(Settings(store=tmp_path / "s")) as server, replay.Client(server.url) as c:
        remote = c.new_race(env="CarRacing-v3", codec="jpeg", device="cuda", shard_size=4)
        assert remote.device == "cuda"
        for step, frame in enumerate(few):
            target = remote.frame_buffer() if step % 2 else None
            if target is None:
                assert remote.append(cupy.asarray(frame), reward=step)
            else:  # drawn into the writer's own device buffer, as a renderer would
                assert isinstance(target, cupy.ndarray)
                target[...] = cupy.asarray(frame)
                assert remote.append(target, reward=step)
        remote.close()
    assert remote.stats().written == len(few)
    store = replay.open_store(tmp_path / "s", mode="r")
    here, there = store.race(local.race_id), store.race(remote.race_id)
    assert there.steps("reward").tolist() == list(range(len(few)))
    for step in range(len(few)):  # nvJPEG on the actor: the local CUDA writer's pixels
        np.testing.assert_array_equal(there.frame(step), here.frame(step))


def test_cuda_frames_into_a_zstd_race_read_back_byte_exact(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    import cupy

    few = frames[:6]
    replay.open_store(tmp_path / "s")
    with ThreadServer(Settings(store=tmp_path / "s")) as server, replay.Client(server.url) as c:
        with c.new_race(env="CarRacing-v3", codec="zstd", device="auto") as on_auto:
            assert on_auto.device == "cpu"  # zstd has no GPU encoder
            for frame in few:
                on_auto.append(frame)
        with c.new_race(env="CarRacing-v3", codec="zstd", device="cuda") as on_gpu:
            for frame in few:
                on_gpu.append(cupy.asarray(frame))  # downloaded to compress
    store = replay.open_store(tmp_path / "s", mode="r")
    for writer in (on_auto, on_gpu):
        race = store.race(writer.race_id)
        for step, frame in enumerate(few):
            np.testing.assert_array_equal(race.frame(step), frame)
