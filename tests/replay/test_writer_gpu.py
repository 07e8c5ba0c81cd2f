"""The CUDA path of the writer: CuPy/torch frames, GPU JPEG encode (skipped without CUDA)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import replay
from replay import jpeg
from replay.bench.footprint import psnr
from replay.writer import ThreadWriter

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not jpeg.cuda_available(), reason="needs CuPy and a CUDA device"),
]


def test_cupy_frames_are_encoded_on_the_gpu(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    import cupy

    store = replay.open_store(tmp_path)
    with store.new_race(env="CarRacing-v3", device="cuda") as writer:
        assert writer.device == "cuda"
        for frame in real_frames[:16]:
            assert writer.append(cupy.asarray(frame), reward=1.0)
    race = store.race(writer.race_id)
    assert race.length == 16
    for step in (0, 15):
        assert psnr(race.frame(step), real_frames[step]) >= 38.0  # decoded on the CPU


def test_torch_cuda_and_host_frames_on_a_gpu_writer(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    torch = pytest.importorskip("torch")
    store = replay.open_store(tmp_path)
    with store.new_race(env="CarRacing-v3", device="cuda") as writer:
        writer.append(torch.from_numpy(real_frames[0]).cuda())
        writer.append(real_frames[1])  # host frames are uploaded
    race = store.race(writer.race_id)
    assert psnr(race.frame(0), real_frames[0]) >= 38.0
    assert psnr(race.frame(1), real_frames[1]) >= 38.0


def test_cpu_writer_refuses_cuda_frames(tmp_path: Path) -> None:
    import cupy

    store = replay.open_store(tmp_path)
    writer = store.new_race(env="e", height=8, width=8, device="cpu")
    with writer, pytest.raises(replay.FrameError, match="CUDA frame"):
        writer.append(cupy.zeros((8, 8, 3), cupy.uint8))
    assert store.race(writer.race_id).length == 0


def test_a_cuda_writer_encodes_in_a_thread_beside_a_busy_driver(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    # The CUDA path stays a thread of the driver (docs/writer.md): nvImageCodec
    # releases the GIL for the whole nvJPEG encode, and device frames stay on the GPU.
    import cupy

    store = replay.open_store(tmp_path)
    with pytest.raises(ValueError, match="writer='process' encodes on the CPU"):
        store.new_race(env="e", device="cuda", writer="process")
    with store.new_race(env="CarRacing-v3", device="cuda", shard_size=8) as writer:
        assert isinstance(writer, ThreadWriter)
        assert writer.pid == os.getpid()
        start = time.perf_counter()
        for step, frame in enumerate(real_frames[:40]):
            assert writer.append(cupy.asarray(frame), reward=step)
            while time.perf_counter() < start + (step + 1) / 30:  # a busy-wait holds the GIL
                pass
    stats = writer.stats()
    assert (stats.written, stats.dropped, stats.error) == (40, 0, None)
    race = store.race(writer.race_id)
    assert race.steps("reward").tolist() == list(range(40))
    assert psnr(race.frame(39), real_frames[39]) >= 38.0
