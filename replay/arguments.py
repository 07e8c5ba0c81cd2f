"""Checks of a caller's arguments that every wing shares: sizes are whole numbers.

NumPy's integers are whole numbers too (``frame.shape[0]`` or ``np.int64(84)`` pass);
a bool, a float or text is refused with a ValueError naming the argument, before it
reaches a file or a kernel as the wrong type.

    height = whole("height", np.int64(900))        # 900
    crop = whole_tuple("crop", [0, 0, 8, 8], 4)   # (0, 0, 8, 8)
"""

from __future__ import annotations

import operator

import numpy as np


def whole(name: str, value: object) -> int:
    """`value` as an int: an int or a NumPy integer; ValueError for a bool, a float, text."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None


def whole_tuple(name: str, value: object, length: int | None = None) -> tuple[int, ...]:
    """A sequence of whole numbers (of `length` of them, when given) as a tuple of ints;
    ValueError for a lone number, text or a wrong length."""
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a tuple of whole numbers, got {value!r}")
    values = tuple(whole(name, v) for v in value)
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} values, got {value!r}")
    return values
