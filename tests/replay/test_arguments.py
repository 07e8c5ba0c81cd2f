"""Whole-number checks of a caller's sizes (`replay.arguments`)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from replay.arguments import whole, whole_tuple


def test_whole_numbers_are_ints_and_numpy_integers_only() -> None:
    assert whole("n", 3) == 3
    value = whole("n", np.uint16(7))
    assert value == 7
    assert type(value) is int
    for bad in (True, np.True_, 3.0, np.float32(3), "3", None):
        with pytest.raises(ValueError, match=re.escape(f"n must be a whole number, got {bad!r}")):
            whole("n", bad)


def test_a_tuple_of_whole_numbers_has_its_length() -> None:
    assert whole_tuple("size", [np.int64(2), 3], 2) == (2, 3)
    assert whole_tuple("shape", np.array([4, 5])) == (4, 5)
    with pytest.raises(ValueError, match=r"size must have 2 values, got \[1, 2, 3\]"):
        whole_tuple("size", [1, 2, 3], 2)
    for lone in (3, "ab"):
        with pytest.raises(ValueError, match="size must be a tuple of whole numbers"):
            whole_tuple("size", lone)
