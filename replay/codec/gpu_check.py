"""The GPU path's self-check: a one-frame round trip that decides what ``device="auto"`` takes.

`gpu_check(index)` encodes and decodes `probe_frame()` on GPU `index` and launches the
fused transform kernel on it, once per process (cached), and says which part failed;
`resolve_device` maps a device string to ``"cuda"`` or ``"cpu"`` with it, warning once
when a visible GPU fails its check.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

from replay.codec.devices import Device, cuda_available, on_device, parse_device
from replay.codec.jpeg import decoder, encoder, probe_frame, same_picture


def resolve_device(device: str) -> Device:
    """Map a device string to ``"cuda"`` or ``"cpu"`` (`device_index` gives the GPU).

    ``"auto"`` is ``"cuda"`` when GPU 0 passes `gpu_check` (a one-frame round trip,
    once per process), else ``"cpu"``, with one warning when a GPU is visible but its
    path fails. ``"cuda"`` / ``"cuda:N"`` need that GPU: RuntimeError otherwise.
    """
    kind, index = parse_device(device)
    if kind == "auto":
        return "cuda" if cuda_available() and gpu_check(0).ok else "cpu"
    if kind == "cpu":
        return "cpu"
    if not cuda_available():
        raise RuntimeError(f"device={device!r} was asked for, but no CUDA device is visible")
    import cupy

    count = int(cupy.cuda.runtime.getDeviceCount())
    if index >= count:
        raise RuntimeError(f"device={device!r} was asked for, but only {count} GPU(s) are visible")
    return "cuda"


@dataclass(frozen=True)
class GpuCheck:
    """The result of `gpu_check`: does a frame survive encode and decode on this GPU?"""

    ok: bool
    detail: str  # what failed, or which decoder backend worked


@functools.cache
def gpu_check(index: int = 0) -> GpuCheck:
    """Encode one frame with nvJPEG on GPU `index`, decode it there and run the fused
    kernel on it (once per process): `sample(device="cuda")` needs all three.

    `resolve_device("auto")` takes the GPU only when this passes; when a GPU is visible
    and it fails, one RuntimeWarning says why and that the CPU path is used.
    """
    if not cuda_available():
        return GpuCheck(False, "no CUDA device is visible (CuPy missing, or no driver/GPU)")
    frame = probe_frame()
    try:
        import cupy

        with on_device(index):
            (blob,) = encoder("cuda", index).encode(
                [cupy.asarray(frame)], quality=90, subsampling="420"
            )
            dec = decoder("cuda", index)
            image = dec.decode_one(blob)
        if image is None or not same_picture(image, frame):
            raise RuntimeError("the decoded frame does not match the encoded one")
        from replay.codec.fused import check_on_device

        check_on_device(image, index)
        check = GpuCheck(True, f"decoded with the {dec.backend} backend; the fused kernel ran")
    except Exception as e:  # any failure on the GPU path means: use the CPU
        check = GpuCheck(False, f"{type(e).__name__}: {e}")
        warnings.warn(
            f"replay: GPU {index} is visible but its JPEG path failed a one-frame round trip "
            f"({check.detail}); device='auto' uses the CPU. Run `replay doctor` for details.",
            RuntimeWarning,
            stacklevel=2,
        )
    return check
