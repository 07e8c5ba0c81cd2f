"""`replay.codec.fused`: the one-kernel transform. Its source is compiled for the CPU (the host
twin) and compared with `replay.codec.transform.apply`'s NumPy path on real frames, for every
output kind; the GPU test compares the CUDA kernel with the twin."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from replay.codec import fused
from replay.codec import transform as tf
from replay.codec.devices import cuda_available
from replay.codec.transform import Transform

CASES = {
    "identity": Transform(),
    "float32-nchw-norm": Transform(dtype="float32", layout="NCHW", mean=0.5, std=0.25),
    "float16-per-channel": Transform(
        dtype="float16", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    ),
    # float16 beyond its range (inf) and below its normal range (subnormals)
    "float16-overflow": Transform(dtype="float16", mean=0.5, std=5e-6),
    "float16-subnormal": Transform(dtype="float16", mean=0.25, std=3e4),
    "bfloat16-nchw": Transform(dtype="bfloat16", layout="NCHW", mean=0.5, std=0.5),
    "grey-crop-uint8": Transform(crop=(8, 16, 40, 64), grey=True),
    "area-quarter-float": Transform(size=(18, 32), dtype="float32", dct_scaling=False),
    "area-crop-grey-nchw": Transform(
        crop=(0, 8, 48, 80), size=(24, 40), grey=True, dtype="float32", layout="NCHW"
    ),
    "bilinear-uint8": Transform(size=(29, 50)),
    "bilinear-float-norm": Transform(size=(50, 70), dtype="float32", mean=0.1, std=0.9),
    "bilinear-grey-bf16": Transform(size=(37, 41), grey=True, dtype="bfloat16"),
}


@pytest.fixture(scope="module")
def frames(real_frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Four real frames cut to 72x128, in a buffer with padded rows (as nvImageCodec's)."""
    padded = np.zeros((4, 72, 136, 3), np.uint8)
    padded[:, :, :128] = real_frames[[0, 10, 20, 47], 300:372, 700:828]
    return padded[:, :, :128]


def reference(frames: npt.NDArray[np.uint8], t: Transform) -> npt.NDArray[np.generic]:
    """The NumPy path, in the kernel's output dtype (bfloat16 as torch rounds it)."""
    with np.errstate(over="ignore"):  # float16-overflow: inf on purpose
        ref = tf.apply(np.ascontiguousarray(frames), t, np)
    if t.dtype != "bfloat16":
        return ref  # type: ignore[no-any-return]
    torch = pytest.importorskip("torch")
    bits = torch.from_numpy(ref).bfloat16().view(torch.int16).numpy()
    return bits.view(np.uint16)


@pytest.mark.parametrize("name", CASES)
def test_the_host_twin_matches_the_numpy_path(frames: npt.NDArray[np.uint8], name: str) -> None:
    t = CASES[name]
    assert frames.strides[1] == 136 * 3  # padded rows reach the kernel as they are
    got = fused.host_twin(t, 72, 128)(frames)
    want = reference(frames, t)
    assert got.dtype == fused.output_dtype(t)
    assert got.shape == want.shape == (4, *t.output_shape(72, 128))
    # the same float32 operations in the same order: equal, bit for bit
    np.testing.assert_array_equal(got, want)


def test_the_source_is_specialised_and_free_of_temporaries() -> None:
    src = fused.kernel_source(CASES["float32-nchw-norm"], 900, 1600)
    assert 'extern "C" __global__ void replay_fused' in src
    assert "void replay_fused_host" in src
    assert "#include <cuda" not in src  # NVRTC needs no header
    assert "int ox = (int)(i % 1600)" in src  # NCHW: x fastest
    assert f"(v * {float(np.float32(1 / 255)).hex()}f - mean) / std" in src  # exact float32
    area = fused.kernel_source(Transform(size=(225, 400)), 900, 1600)
    assert "dy < 4" in area
    assert "dx < 4" in area
    assert "floorf" in fused.kernel_source(CASES["bilinear-uint8"], 900, 1600)


def test_bfloat16_bits_become_a_torch_bfloat16_batch(frames: npt.NDArray[np.uint8]) -> None:
    """The kernel writes bfloat16 as uint16 bits; `make_batch` views them, no copy."""
    torch = pytest.importorskip("torch")
    from sampling_helpers import keys_of

    from replay.read.tensors import make_batch

    t = CASES["bfloat16-nchw"]
    bits = fused.host_twin(t, 72, 128)(frames).reshape(4, 1, 3, 72, 128)
    batch = make_batch(keys_of("r", [0, 1, 2, 3]), bits, {}, out="torch", transform=t)
    assert batch.frames.dtype == torch.bfloat16
    assert batch.frames.data_ptr() == bits.ctypes.data  # a view of the kernel's output
    want = torch.from_numpy(tf.apply(np.ascontiguousarray(frames), t, np)).bfloat16()
    assert torch.equal(batch.frames.reshape(4, 3, 72, 128), want)


def test_bad_frames_are_refused(frames: npt.NDArray[np.uint8]) -> None:
    twin = fused.host_twin(Transform(), 72, 128)
    with pytest.raises(ValueError, match="uint8"):
        twin(frames.astype(np.float32))
    with pytest.raises(ValueError, match="packed"):
        twin(frames[:, :, ::2])
    with pytest.raises(ValueError, match="for 72x128 frames, got 72x64"):
        twin(np.ascontiguousarray(frames[:, :, :64]))


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")
@pytest.mark.parametrize("name", CASES)
def test_the_cuda_kernel_matches_the_numpy_path(frames: npt.NDArray[np.uint8], name: str) -> None:
    """Against NumPy, not the twin: the GPU machine may have no C compiler, and the twin
    equals the NumPy path bit for bit (the test above)."""
    import cupy

    t = CASES[name]
    padded = cupy.asarray(frames.base if frames.base is not None else frames)
    on_gpu = padded[:, :, :128]
    assert on_gpu.strides[1] == 136 * 3
    got = cupy.asnumpy(fused.fused(on_gpu, t))
    np.testing.assert_array_equal(got, reference(frames, t))
