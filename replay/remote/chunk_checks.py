"""What a chunk from a remote actor must be before any of it is written.

Every frame must be one of the race's: a JPEG whose header says the race's height and
width (read with libjpeg-turbo, no decode), or a zstd frame whose header declares
exactly (height, width, 3) bytes and whose blocks end exactly where the frame's bytes do
(their headers walked, no decompression: a frame cut short or run into the next is
refused; decompressing every frame cost the service about 0.6 ms of its 1.2-1.5 ms a
frame); none may be larger than `max_frame_nbytes`. Every step array must be one the
race declared, in its dtype and per-step shape, with finite values. A failed check
raises `FrameError` or `StepDataError` naming the step and what is wrong (the service
answers 422).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import simplejpeg

from replay.codec.frames import content_size, frame_nbytes
from replay.errors import FrameError, StepDataError

if TYPE_CHECKING:
    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec
    from replay.remote.chunks import Chunk


def max_frame_nbytes(info: RaceInfo) -> int:
    """Largest encoded frame accepted: a raw frame's size plus headroom (zstd's worst case)."""
    return info.raw_frame_nbytes + (info.raw_frame_nbytes >> 7) + 4096


def check_chunk(info: RaceInfo, specs: list[StepSpec], chunk: Chunk) -> dict[str, npt.NDArray[Any]]:
    """The chunk's step arrays, checked, with ``t_ns`` (now) when the chunk has none."""
    for i, blob in enumerate(chunk.frames):
        _check_frame(info, chunk.first_step + i, blob)
    declared = {s.name: s for s in specs}
    unknown = chunk.steps.keys() - declared.keys()
    if unknown:
        raise StepDataError(
            f"race {info.race_id}: unknown step arrays {sorted(unknown)}; "
            f"declared: {sorted(declared)}"
        )
    for name, values in chunk.steps.items():
        spec = declared[name]
        if values.dtype != spec.dtype or values.shape[1:] != spec.shape:
            raise StepDataError(
                f"race {info.race_id}: step array {name!r} must be {spec.dtype} of per-step "
                f"shape {list(spec.shape)}, got {values.dtype} of {list(values.shape[1:])}"
            )
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(1))[0])
            raise StepDataError(
                f"race {info.race_id}: step array {name!r} has a non-finite value at step "
                f"{chunk.first_step + bad}"
            )
    steps = dict(chunk.steps)
    steps.setdefault("t_ns", np.full(chunk.n, time.time_ns(), dtype=np.int64))
    return steps


def _check_frame(info: RaceInfo, step: int, blob: bytes) -> None:
    where = f"race {info.race_id}: frame of step {step}"
    if len(blob) > max_frame_nbytes(info):
        raise FrameError(f"{where} is {len(blob)} bytes, more than {max_frame_nbytes(info)}")
    codec = info.frame_codec.name
    want = (info.height, info.width)
    if codec == "jpeg":
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(blob)
        except ValueError as e:
            raise FrameError(f"{where} is not a JPEG ({e})") from e
        if (height, width) != want:
            raise FrameError(
                f"{where} is a {width}x{height} JPEG; the race's frames are "
                f"{info.width}x{info.height}"
            )
        return
    declared = content_size(blob)
    if declared != info.raw_frame_nbytes:
        raise FrameError(
            f"{where} declares {declared} bytes in its zstd frame header, not "
            f"{info.raw_frame_nbytes} ({info.height}x{info.width}x3 uint8)"
        )
    taken = frame_nbytes(blob)
    if taken != len(blob):
        raise FrameError(
            f"{where} is not one whole zstd frame of {len(blob)} bytes (its blocks take "
            f"{taken}: cut short, or run into other bytes)"
        )
