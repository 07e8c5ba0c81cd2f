"""JPEG chroma subsampling: the names users pass and the factors the Zarr jpeg codec spec spells."""

from __future__ import annotations

from typing import Literal

Subsampling = Literal["444", "422", "420"]

#: Chroma subsampling names and their factors as the Zarr jpeg codec spells them
#: (one ``[h, v]`` pair per component: Y, Cb, Cr).
SUBSAMPLING_FACTORS: dict[Subsampling, list[list[int]]] = {
    "444": [[1, 1], [1, 1], [1, 1]],
    "422": [[2, 1], [1, 1], [1, 1]],
    "420": [[2, 2], [1, 1], [1, 1]],
}


def subsampling_from_factors(factors: object) -> Subsampling:
    """The subsampling name for the codec spec's factor list; ValueError if unsupported."""
    for name, value in SUBSAMPLING_FACTORS.items():
        if factors == value or factors == [tuple(p) for p in value]:
            return name
    raise ValueError(
        f"unsupported JPEG chroma subsampling {factors!r}; "
        f"supported: {list(SUBSAMPLING_FACTORS.values())}"
    )
