"""Decoded frames and step arrays as the batch a learner asked for: NumPy, torch, CuPy.

`make_batch` wraps decoded frames (host or device) and host step arrays as a `Batch`
of kind ``out``: NumPy as they are, torch zero-copy from NumPy or through DLPack from
CuPy (which carries the stream), CuPy uploaded to the batch's GPU, or a
`tensordict.TensorDict` (`replay.read.tensordicts`). `to_numpy` takes priorities back
from any of them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from replay.codec.transform import Transform
from replay.read.batch import Batch, NStepArrays, Out, Sampled, SampleKeys
from replay.read.tensordicts import to_tensordict

if TYPE_CHECKING:
    pass


#: What each kind of `out` imports, and how a user gets it
_OUT_NEEDS = {
    "torch": (("torch",), "pip install 'replay[torch]' (or torch alone)"),
    "tensordict": (("torch", "tensordict"), "pip install 'replay[torch]'"),
    "cupy": (("cupy",), "pip install 'replay[gpu]' on a machine with CUDA"),
}


def check_out(out: str) -> None:
    """Refuse an `out` that is not a kind of batch (ValueError), or whose library does not
    import here (ImportError saying what to install), when a sampler or client is made
    rather than at its first batch."""
    if out not in ("numpy", "torch", "cupy", "tensordict"):
        raise ValueError(f"out must be 'numpy', 'torch', 'cupy' or 'tensordict', not {out!r}")
    modules, hint = _OUT_NEEDS.get(out, ((), ""))
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"out={out!r} needs {module}, which is not installed: {hint}")


def make_batch(
    keys: SampleKeys,
    frames: Any,
    steps: dict[str, npt.NDArray[Any]],
    *,
    out: Out,
    transform: Transform | None,
    nstep: NStepArrays | None = None,
) -> Sampled:
    """Wrap decoded frames and host step arrays as a `Batch` of kind `out` (a TensorDict
    for ``out="tensordict"``). With `nstep` bootstrap frames, `frames` is (B, 2L, ...):
    each window, then its bootstrap frames (`replay.read.nstep.with_next_frames`)."""
    on_cuda = not isinstance(frames, np.ndarray)
    check_out(out)
    if out == "tensordict":
        torch_batch = make_batch(keys, frames, steps, out="torch", transform=transform, nstep=nstep)
        assert isinstance(torch_batch, Batch)
        return to_tensordict(torch_batch, keys)
    bf16 = transform is not None and transform.dtype == "bfloat16"
    if bf16 and out != "torch":
        raise ValueError("dtype='bfloat16' needs out='torch' (NumPy and CuPy have no bfloat16)")
    convert = _converter(out, on_cuda, frames.device.id if on_cuda else 0)
    frames_out = convert(frames)
    if bf16:  # float32 from the CPU path; bfloat16 bits (uint16) from the CUDA kernel
        bits = str(frames_out.dtype) == "torch.uint16"
        frames_out = frames_out.view(torch_bf16()) if bits else frames_out.bfloat16()
    next_frames = None
    if nstep is not None and nstep.next_frames is not None:
        seq = keys.seq_len
        frames_out, next_frames = frames_out[:, :seq], frames_out[:, seq:]
    if transform is not None and transform.layout == "stacked":  # (B, L, C, H, W) -> (B, L*C, H, W)
        frames_out = _stacked(frames_out)
        next_frames = None if next_frames is None else _stacked(next_frames)
    return Batch(
        frames=frames_out,
        keys=keys.keys,
        weights=convert(keys.weights),
        steps={name: convert(value) for name, value in steps.items()},
        returns=None if nstep is None else convert(nstep.returns),
        discount=None if nstep is None else convert(nstep.discount),
        next_steps=None if nstep is None else convert(nstep.next_steps),
        next_frames=next_frames,
    )


def _stacked(frames: Any) -> Any:
    """A window's frames as channels: (B, L, C, H, W) -> (B, L*C, H, W) (a view when the
    frames are contiguous, as decoded ones are; a copy for the split n-step halves)."""
    b, seq, c, h, w = frames.shape
    return frames.reshape(b, seq * c, h, w)


def torch_bf16() -> Any:
    """torch.bfloat16 (imported when asked: torch is an optional dependency)."""
    import torch

    return torch.bfloat16


def _converter(out: Out, on_cuda: bool, gpu: int = 0) -> Callable[[Any], Any]:
    """Converts the batch's arrays to `out`; host arrays of a CUDA batch go to GPU `gpu`."""
    if out == "numpy":
        if not on_cuda:
            return lambda a: a
        import cupy

        return lambda a: a if isinstance(a, np.ndarray) else cupy.asnumpy(a)
    if out == "torch":
        import torch

        if not on_cuda:
            from_numpy: Callable[[Any], Any] = torch.from_numpy
            return from_numpy
        from torch.utils.dlpack import from_dlpack

        return lambda a: (
            torch.as_tensor(a, device=f"cuda:{gpu}")
            if isinstance(a, np.ndarray)
            else from_dlpack(a)
        )
    import cupy

    def upload(a: Any) -> Any:  # uploads host arrays; no-op for CuPy ones
        with cupy.cuda.Device(gpu):
            return cupy.asarray(a)

    return upload


def to_numpy(values: Any) -> npt.NDArray[np.float64]:
    """Priorities from NumPy, torch (any device) or CuPy."""
    if hasattr(values, "detach"):  # torch
        values = values.detach().cpu().numpy()
    elif hasattr(values, "get") and hasattr(values, "__cuda_array_interface__"):  # cupy
        values = values.get()
    return np.asarray(values, dtype=np.float64)
