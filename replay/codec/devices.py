"""Device strings and CUDA devices: which device a frame is encoded or decoded on.

- `parse_device("cuda:1")`: a device string as ``(kind, index)``; "cuda" is GPU 0;
  `device_index` is its GPU number.
- `cuda_available()`: CuPy is installed and sees a CUDA device.
- `on_device(index)`: make GPU `index` current in this thread. CuPy's current device
  and nvImageCodec's default device are per thread, and a background thread starts
  on GPU 0, so every thread that touches the GPU enters this first.

`replay.codec.gpu_check.resolve_device` turns ``"auto"`` into a device by a round trip.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Literal


@functools.cache
def cuda_available() -> bool:
    """True when CuPy is installed and sees at least one CUDA device."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # no cupy, no driver, no device: all mean "no GPU here"
        return False


def parse_device(device: str) -> tuple[str, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cuda"`` -> ("cuda", 0); ``"cuda:N"`` -> ("cuda", N);
    ``"auto"`` -> ("auto", 0). ValueError for anything else."""
    kind, sep, index = device.partition(":")
    if kind in ("cpu", "auto", "cuda") and not sep:
        return kind, 0
    if kind == "cuda" and index.isdigit():
        return "cuda", int(index)
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', not {device!r}")


@contextlib.contextmanager
def on_device(index: int) -> Iterator[None]:
    """Make GPU `index` CuPy's current device in this thread for the block."""
    import cupy

    with cupy.cuda.Device(index):
        yield


Device = Literal["cpu", "cuda"]


def device_index(device: str) -> int:
    """The GPU number of a device string: 1 for ``"cuda:1"``, 0 for anything else."""
    return parse_device(device)[1]
