"""The ``singleton_dim`` codec: drop (or add) length-1 axes of a chunk.

Configuration: ``{"operations": [{"remove": 0}]}``; each operation is
``{"remove": axis}`` (the axis must have length 1) or ``{"add": axis}``,
applied in order when encoding and undone in reverse when decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from zarr.abc.codec import ArrayArrayCodec
from zarr.core.array_spec import ArraySpec
from zarr.core.chunk_grids import ChunkGrid, RegularChunkGrid
from zarr.core.common import JSON, parse_named_configuration

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.buffer import NDBuffer
    from zarr.core.dtype import ZDType

NAME = "singleton_dim"


def _parse_operations(data: object) -> tuple[tuple[str, int], ...]:
    if not isinstance(data, list | tuple) or not data:
        raise ValueError(f"singleton_dim: 'operations' must be a non-empty list, got {data!r}")
    ops = []
    for op in data:
        if not isinstance(op, dict) or len(op) != 1:
            raise ValueError(
                f"singleton_dim: each operation is {{'remove'|'add': axis}}, got {op!r}"
            )
        ((kind, axis),) = op.items()
        if kind not in ("remove", "add") or not isinstance(axis, int) or axis < 0:
            raise ValueError(f"singleton_dim: bad operation {op!r}")
        ops.append((kind, axis))
    return tuple(ops)


def _apply(
    shape: tuple[int, ...], kind: str, axis: int, *, lengths: bool = True
) -> tuple[int, ...]:
    if kind == "remove":
        if axis >= len(shape) or (lengths and shape[axis] != 1):
            raise ValueError(f"singleton_dim: axis {axis} of chunk shape {shape} is not length 1")
        return shape[:axis] + shape[axis + 1 :]
    if axis > len(shape):
        raise ValueError(f"singleton_dim: cannot add axis {axis} to chunk shape {shape}")
    return (*shape[:axis], 1, *shape[axis:])


@dataclass(frozen=True)
class SingletonDimCodec(ArrayArrayCodec):
    """Removes/adds length-1 axes, e.g. (1, H, W, 3) frame chunks -> (H, W, 3) images."""

    is_fixed_size = True
    operations: tuple[tuple[str, int], ...]

    def __init__(self, *, operations: object = ({"remove": 0},)) -> None:
        object.__setattr__(
            self, "operations", _parse_operations(list(cast("list[object]", operations)))
        )

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, config = parse_named_configuration(data, NAME)
        return cls(**config)

    def to_dict(self) -> dict[str, JSON]:
        ops: list[JSON] = [{kind: axis} for kind, axis in self.operations]
        return {"name": NAME, "configuration": {"operations": ops}}

    def _shape(self, shape: tuple[int, ...], *, lengths: bool = True) -> tuple[int, ...]:
        for kind, axis in self.operations:
            shape = _apply(shape, kind, axis, lengths=lengths)
        return shape

    def resolve_metadata(self, chunk_spec: ArraySpec) -> ArraySpec:
        return ArraySpec(
            shape=self._shape(chunk_spec.shape),
            dtype=chunk_spec.dtype,
            fill_value=chunk_spec.fill_value,
            config=chunk_spec.config,
            prototype=chunk_spec.prototype,
        )

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        # zarr passes the array's spec here (the chunk's only inside sharding_indexed),
        # so only the number of axes can be checked; `validate` checks the lengths.
        self._shape(array_spec.shape, lengths=False)
        return self

    def validate(
        self, *, shape: tuple[int, ...], dtype: ZDType[Any, Any], chunk_grid: ChunkGrid
    ) -> None:
        # As an array's own filter the chunks are the grid's; inside sharding_indexed
        # zarr does not call this, and a length mismatch is an error on the first write.
        if isinstance(chunk_grid, RegularChunkGrid):
            self._shape(chunk_grid.chunk_shape)  # raises on a mismatch

    # A reshape is a view (no pixel is touched), so it runs on zarr's event loop, as
    # zarr's own transpose does; a worker thread would cost more than the work.
    def _decode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return chunk_array.reshape(chunk_spec.shape)

    async def _decode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_array, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer | None:
        return chunk_array.reshape(self._shape(chunk_spec.shape))

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> NDBuffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        return input_byte_length
