"""Frames of every memory layout: copied into a slot as they lie, and read back exactly."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from replay.codec.pixel_order import Layout, contiguous, copy_in, pixels

Frame = npt.NDArray[np.uint8]

#: name -> (how a driver gets the frame from an (H, W, 3) picture, whether it is
#: one dense block of memory that `copy_in` copies whole)
LAYOUTS: dict[str, tuple[Callable[[Frame], Frame], bool]] = {
    "contiguous": (lambda f: f.copy(), False),
    "upside down, flipped back (MuJoCo)": (lambda f: f[::-1].copy()[::-1], True),
    "BGR as a reversed view": (lambda f: f[..., ::-1].copy()[..., ::-1], True),
    "pygame surface, transposed (Gymnasium)": (
        lambda f: np.ascontiguousarray(f.transpose(1, 0, 2)).transpose(1, 0, 2),
        True,
    ),
    "planar CHW, transposed": (
        lambda f: np.ascontiguousarray(f.transpose(2, 0, 1)).transpose(1, 2, 0),
        True,
    ),
    "Fortran order": (np.asfortranarray, True),
    "RGBA, sliced to RGB": (
        lambda f: np.concatenate([f, np.full((*f.shape[:2], 1), 255, np.uint8)], 2)[..., :3],
        False,
    ),
    "a crop of a bigger picture": (
        lambda f: np.pad(f, ((3, 4), (5, 6), (0, 0)))[3:-4, 5:-6],
        False,
    ),
    "every other column": (lambda f: np.repeat(f, 2, axis=1)[:, ::2], False),
}


@pytest.fixture(scope="module")
def picture(real_frames: Frame) -> Frame:
    return real_frames[0]


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_frame_is_read_back_from_its_slot_exactly(picture: Frame, name: str) -> None:
    make, dense = LAYOUTS[name]
    frame = make(picture)
    assert np.array_equal(frame, picture)
    slot = np.zeros_like(picture)
    layout = copy_in(slot, frame)
    assert (layout is not None) == dense
    stored = pixels(slot, layout)
    assert np.array_equal(stored, picture)
    assert not stored.flags.writeable or layout is None
    flat = contiguous(stored)
    assert flat.flags.c_contiguous
    assert np.array_equal(flat, picture)


def test_a_dense_frame_is_copied_as_its_block_and_its_layout_goes_in_a_row() -> None:
    planes = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(3, 2, 3)  # CHW
    frame = planes.transpose(1, 2, 0)[::-1]  # HWC, rows flipped
    slot = np.zeros((2, 3, 3), np.uint8)
    layout = copy_in(slot, frame)
    assert layout == Layout(offset=3, strides=(-3, 1, 6))
    assert slot.reshape(-1).tolist() == planes.reshape(-1).tolist()  # the block, as it lay
    assert Layout.from_row(np.array(layout.as_row())) == layout
    assert Layout.from_row(np.zeros(4, np.int64)) is None
    assert np.array_equal(pixels(slot, layout), frame)
