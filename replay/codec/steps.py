"""How a race stores its step arrays (action, reward, ... and the extras): zstd, always.

Every step array's chunks are little-endian values compressed by zstd at `ZSTD_LEVEL`;
`step_compressors` is their Zarr codec chain and `encode_steps` one stored chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numcodecs import Zstd
from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import ZstdCodec

#: The zstd level of lossless frames and of every step array.
ZSTD_LEVEL = 3


def step_compressors() -> list[BytesBytesCodec]:
    """The compressors of every step array (action, reward, ... and the extras)."""
    return [ZstdCodec(level=ZSTD_LEVEL)]


def encode_steps(values: npt.NDArray[Any]) -> bytes:
    """One stored chunk of a step array: little-endian values, zstd-compressed."""
    little = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"))
    return bytes(Zstd(level=ZSTD_LEVEL).encode(little))
