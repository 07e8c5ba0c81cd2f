"""Copying a frame into a writer's ring fast, whatever its memory layout.

NumPy copies an (H, W, 3) uint8 frame whose pixels are not contiguous along its
rows one pixel (3 bytes) per inner-loop call: 14-21 ms at 1600x900 on the 2-core
benchmark machine, against 0.5 ms for a contiguous frame. Such frames are common:
Gymnasium's pygame-drawn envs (CarRacing, the classic-control and Box2D envs)
render a transposed copy of their surface, planar (CHW) arrays are transposed to
HWC, BGR becomes RGB through a reversed view, RGBA captures are sliced to RGB. A
writer's `append` must not pay 20 ms for them, so `copy_in` takes one of two ways:

- a frame that covers a dense block of memory exactly (any transposition or flip of
  a contiguous array: pygame's frames, CHW planes, reversed channels or rows) is
  copied as that block, one memcpy, and its `Layout` (where pixel [0, 0, 0] is and
  the strides) goes with it; the writer's encoder makes the frame contiguous
  (`contiguous`) in the background, off the driver's path;
- any other frame (an RGBA slice, a crop) is copied one channel and 64 rows at a
  time, which NumPy does a row per call: 2-3 ms.

    layout = copy_in(slot, frame)         # slot: a C-contiguous (H, W, 3) ring slot
    image = pixels(slot, layout)          # the frame again, as a view of the slot
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

Frame = npt.NDArray[np.uint8]
ROWS_PER_COPY = 64  # rows per per-channel copy: the source rows stay in cache


@dataclass(frozen=True)
class Layout:
    """Where a frame's pixels lie in the block of bytes a slot holds: pixel [0, 0, 0]
    at byte `offset`, then `strides` bytes per row, column and channel (any sign)."""

    offset: int
    strides: tuple[int, ...]

    def as_row(self) -> tuple[int, ...]:
        """As integers, for a ring's layout column."""
        return (self.offset, *self.strides)

    @classmethod
    def from_row(cls, row: Any) -> Layout | None:
        """The inverse of `as_row`; None for a row of zeros (the slot holds the frame)."""
        offset, *strides = (int(x) for x in row)
        return None if not any(strides) else cls(offset, tuple(strides))


def copy_in(slot: Frame, frame: Frame) -> Layout | None:
    """Copy `frame` into `slot` (C-contiguous, same shape); returns the `Layout` when the
    slot holds the frame's memory block rather than the frame itself (else None)."""
    if frame.flags.c_contiguous:
        np.copyto(slot, frame)
        return None
    block = _dense_block(frame)
    if block is not None:
        start, offset = block
        np.copyto(slot.reshape(-1), as_strided(start, shape=(frame.size,), strides=(1,)))
        return Layout(offset, frame.strides)
    copy_pixels(slot, frame)
    return None


def pixels(slot: Frame, layout: Layout | None) -> Frame:
    """The frame a slot holds, as a read-only view of it (see `copy_in`)."""
    if layout is None:
        return slot
    flat = slot.reshape(-1)
    return as_strided(flat[layout.offset :], slot.shape, layout.strides, writeable=False)


def contiguous(frame: Frame) -> Frame:
    """`frame` as a C-contiguous array: itself, or a copy made the fast way."""
    if frame.flags.c_contiguous:
        return frame
    out = np.empty(frame.shape, np.uint8)
    copy_pixels(out, frame)
    return out


def copy_pixels(dst: Frame, src: Frame) -> None:
    """``dst[...] = src`` for (H, W, C) arrays, without NumPy's pixel-per-call loop."""
    if src.strides[-1] == src.itemsize and src.strides[-2] == src.shape[-1] * src.itemsize:
        np.copyto(dst, src)  # contiguous along each row: a memcpy per row
        return
    for top in range(0, src.shape[0], ROWS_PER_COPY):
        rows = slice(top, top + ROWS_PER_COPY)
        for c in range(src.shape[2]):
            np.copyto(dst[rows, :, c], src[rows, :, c])


def _dense_block(frame: Frame) -> tuple[Frame, int] | None:
    """If `frame` is a transposition or flip of a dense block of memory: a view starting
    at the block's lowest byte, and the offset of pixel [0, 0, 0] in the block."""
    axes = sorted(zip(map(abs, frame.strides), frame.shape, strict=True))
    expected = frame.itemsize
    for stride, n in axes:
        if stride != expected and n > 1:
            return None  # gaps (a slice) or overlaps: not one dense block
        expected *= n
    low = [n - 1 if s < 0 else 0 for n, s in zip(frame.shape, frame.strides, strict=True)]
    start = frame[tuple(slice(i, i + 1) for i in low)]  # the pixel at the lowest address
    offset = -sum(i * s for i, s in zip(low, frame.strides, strict=True))
    return start, offset
