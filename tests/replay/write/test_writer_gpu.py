"""The CUDA path of the writer: CuPy/torch frames, GPU JPEG encode (skipped without CUDA)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import replay
from replay.bench.footprint import psnr
from replay.codec import jpeg
from replay.codec.devices import cuda_available
from replay.codec.gpu_check import gpu_check
from replay.write.thread_writer import ThreadWriter

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device"),
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


def test_torch_frames_drawn_on_a_side_stream_are_waited_for(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    """DLPack makes CuPy's stream wait for the stream torch drew the frame on."""
    torch = pytest.importorskip("torch")
    store = replay.open_store(tmp_path)
    side = torch.cuda.Stream()
    with store.new_race(env="CarRacing-v3", device="cuda:0") as writer:
        for i in range(4):
            with torch.cuda.stream(side):
                upload = torch.from_numpy(real_frames[i]).to("cuda", non_blocking=True)
                frame = (upload.int() + 0).to(torch.uint8)  # kernels on the side stream
                assert writer.append(frame)
    race = store.race(writer.race_id)
    for i in range(4):
        assert psnr(race.frame(i), real_frames[i]) >= 38.0


def test_wrong_device_frames_are_refused_with_their_dtype(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    store = replay.open_store(tmp_path)
    with store.new_race(env="e", height=8, width=8, device="cuda") as writer:
        with pytest.raises(replay.FrameError, match=r"got \(8, 8, 3\) float32"):
            writer.append(torch.zeros((8, 8, 3), device="cuda"))
        with pytest.raises(replay.FrameError, match="bfloat16"):
            writer.append(torch.zeros((8, 8, 3), device="cuda", dtype=torch.bfloat16))


def test_the_last_gpu_is_used_when_named(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    import cupy

    last = cupy.cuda.runtime.getDeviceCount() - 1
    store = replay.open_store(tmp_path)
    with store.new_race(env="CarRacing-v3", device=f"cuda:{last}") as writer:
        assert writer._ring.device.id == last
        assert jpeg.encoder("cuda", last).index == last
        with cupy.cuda.Device(last):
            writer.append(cupy.asarray(real_frames[0]))
    assert psnr(store.race(writer.race_id).frame(0), real_frames[0]) >= 38.0


def test_auto_takes_the_gpu_after_its_round_trip(tmp_path: Path) -> None:
    check = gpu_check(0)
    assert check.ok, check.detail
    assert "decoded with the" in check.detail
    store = replay.open_store(tmp_path)
    with store.new_race(env="e", height=8, width=8, device="auto") as writer:
        assert writer.device == "cuda"


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


def test_frames_drawn_in_a_cuda_writer_s_frame_buffer(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    import cupy

    store = replay.open_store(tmp_path)
    with store.new_race(env="CarRacing-v3", device="cuda") as writer:
        for step, frame in enumerate(real_frames[:20]):
            target = writer.frame_buffer()
            assert isinstance(target, cupy.ndarray)
            assert target.shape == frame.shape
            target[...] = cupy.asarray(frame)  # a kernel on the current stream draws it
            assert writer.append(target, reward=step)
    race = store.race(writer.race_id)
    assert race.steps("reward").tolist() == list(range(20))
    for step in (0, 19):
        assert psnr(race.frame(step), real_frames[step]) >= 38.0


def test_a_zstd_race_on_auto_writes_on_the_cpu_and_on_cuda_downloads_its_frames(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    # zstd has no GPU encoder: "auto" keeps host frames on the host (no upload and
    # download), and CUDA frames on device="cuda" are downloaded to compress, bit-exact.
    import cupy

    store = replay.open_store(tmp_path)
    with store.new_race(env="CarRacing-v3", codec="zstd", device="auto") as on_auto:
        assert on_auto.device == "cpu"
        for frame in real_frames[:3]:
            on_auto.append(frame)
    with store.new_race(env="CarRacing-v3", codec="zstd", device="cuda", shard_size=2) as on_gpu:
        assert on_gpu.device == "cuda"
        for frame in real_frames[:3]:
            on_gpu.append(cupy.asarray(frame))
        on_gpu.append(real_frames[3])  # a host frame, uploaded to the ring
    for writer, n in ((on_auto, 3), (on_gpu, 4)):
        assert writer.stats().error is None
        race = store.race(writer.race_id)
        for step in range(n):
            assert np.array_equal(race.frame(step), real_frames[step])
