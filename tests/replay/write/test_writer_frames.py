"""How `Writer.append` takes frames from other libraries: torch tensors (through DLPack,
the path a CUDA writer takes with ``cupy``) and their dtypes. Runs on the CPU; the
CUDA twin of these tests is tests/replay/test_writer_gpu.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import replay
from replay.write.writer import _is_cuda_array, device_array

torch = pytest.importorskip("torch", reason="needs torch (pip install 'replay[torch]')")


def test_dlpack_gives_an_array_with_a_numpy_dtype_and_no_copy() -> None:
    tensor = torch.arange(24, dtype=torch.uint8).reshape(2, 4, 3)
    array = device_array(tensor, np)  # a CUDA writer calls this with cupy
    assert isinstance(array.dtype, np.dtype)
    assert array.dtype == np.uint8  # not torch.uint8, which np.dtype() refuses
    assert array.shape == (2, 4, 3)
    assert np.shares_memory(array, tensor.numpy())
    assert device_array(tensor.float(), np).dtype == np.float32
    with pytest.raises(replay.FrameError, match=r"race r1: .*got a Tensor of dtype torch.bfloat16"):
        device_array(tensor.to(torch.bfloat16), np, "r1")  # NumPy has no bfloat16
    plain = np.zeros((2, 2, 3), np.uint8)
    assert device_array(plain, np) is plain  # an array of the module already: as it is


def test_torch_cpu_tensors_are_host_frames() -> None:
    assert not _is_cuda_array(torch.zeros((2, 2, 3), dtype=torch.uint8))
    assert not _is_cuda_array(np.zeros((2, 2, 3), np.uint8))


def test_a_cpu_writer_records_torch_frames_and_names_a_wrong_dtype(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path)
    frames = real_frames[:3, :64, :96]
    with store.new_race(env="e", height=64, width=96, device="cpu") as writer:
        for frame in frames:
            assert writer.append(torch.from_numpy(np.ascontiguousarray(frame)))
        with pytest.raises(replay.FrameError, match=r"got \(64, 96, 3\) float32"):
            writer.append(torch.zeros((64, 96, 3), dtype=torch.float32))
    race = store.race(writer.race_id)
    assert race.length == 3
    assert np.abs(race.frame(2).astype(int) - frames[2]).mean() < 4  # JPEG, quality 90
