"""The synthetic benchmark source: deterministic frames on the host, and on the GPU."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from capture.errors import CaptureError
from capture.synthetic import SyntheticSource


def test_frames_have_the_declared_layout() -> None:
    with SyntheticSource() as source:
        steps = list(source.race(max_steps=4, seed=0))
    assert (source.env, source.height, source.width, source.action_shape) == (
        "synthetic",
        900,
        1600,
        (3,),
    )
    for step in steps:
        assert isinstance(step.frame, np.ndarray)
        assert step.frame.shape == (900, 1600, 3)
        assert step.frame.dtype == np.uint8
        assert step.frame.flags.c_contiguous
        assert step.action.shape == (3,)
        assert step.action.dtype == np.float32
    assert [s.truncated for s in steps] == [False, False, False, True]
    assert not np.array_equal(steps[0].frame, steps[1].frame)  # it moves
    assert steps[0].frame.std() > 20  # and it is not flat


def test_frames_depend_only_on_seed_and_step() -> None:
    source = SyntheticSource(width=320, height=180)
    a = [s.frame for s in source.race(max_steps=5, seed=3)]
    b = [s.frame for s in source.race(max_steps=5, seed=3)]
    c = [s.frame for s in source.race(max_steps=5, seed=4)]
    for t in range(5):
        np.testing.assert_array_equal(a[t], b[t])
        np.testing.assert_array_equal(a[t], source.frame_at(3, t))
    assert not np.array_equal(a[0], c[0])


def test_length_terminates_the_race() -> None:
    source = SyntheticSource(width=320, height=180, length=3)
    steps = list(source.race(max_steps=10, seed=0))
    assert len(steps) == 3
    assert steps[-1].terminated
    assert not steps[-1].truncated


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"device": "tpu"}, "device"),
        ({"width": 10}, "frame size"),
        ({"fps": 0}, "fps"),
        ({"length": 0}, "length"),
    ],
)
def test_rejects_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticSource(**kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(importlib.util.find_spec("cupy") is None, reason="cupy is not installed")
def test_cuda_without_a_device_is_a_clear_error() -> None:
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a CUDA device is present")
    except cupy.cuda.runtime.CUDARuntimeError:
        pass
    with pytest.raises(CaptureError, match="no CUDA device"):
        SyntheticSource(device="cuda")


@pytest.mark.gpu
def test_cuda_frames_are_made_on_the_gpu_and_match_the_host() -> None:
    cupy = pytest.importorskip("cupy", reason="cupy is not installed (pip install 'replay[gpu]')")
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            pytest.skip("no CUDA device")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        pytest.skip(f"no CUDA device: {exc}")
    source = SyntheticSource(device="cuda")
    steps = list(source.race(max_steps=3, seed=5))
    for t, step in enumerate(steps):
        assert isinstance(step.frame, cupy.ndarray)
        assert step.frame.shape == (900, 1600, 3)
        assert step.frame.dtype == cupy.uint8
        assert step.frame.flags.c_contiguous
        np.testing.assert_array_equal(cupy.asnumpy(step.frame), source.frame_at(5, t))
