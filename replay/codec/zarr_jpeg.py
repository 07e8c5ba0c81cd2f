"""The ``jpeg`` codec: one (H, W, 3) uint8 chunk <-> one baseline JPEG.

Configuration (all explicit, as the extension spec requires)::

    {"quality": 90, "encoded_color_space": "ycbcr", "subsampling": [[2, 2], [1, 1], [1, 1]]}

Encoding and decoding go through libjpeg-turbo (simplejpeg, `replay.codec.jpeg`'s CPU
encoder and decoder) here: this codec is the per-chunk path zarr-python uses; the
writer and the samplers batch frames themselves, on the GPU with nvJPEG where asked.
A chunk that does not decode raises ValueError naming its shape.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import JSON, parse_named_configuration

from replay.codec import jpeg
from replay.codec.subsampling import SUBSAMPLING_FACTORS, Subsampling, subsampling_from_factors

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer

NAME = "jpeg"


def is_quality(value: object) -> bool:
    """True for a JPEG quality setting: an integer (not a bool) in 1..100."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 100


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """Serializer storing each (H, W, 3) uint8 chunk as a JPEG (lossy, ~15-100x smaller)."""

    is_fixed_size = False
    quality: int
    subsampling: Subsampling
    encoded_color_space: str

    def __init__(
        self,
        *,
        quality: int = 90,
        encoded_color_space: str = "ycbcr",
        subsampling: object = "420",
    ) -> None:
        if not is_quality(quality):
            raise ValueError(f"jpeg: quality must be an integer in 1..100, got {quality!r}")
        if encoded_color_space != "ycbcr":
            raise ValueError(
                f"jpeg: only encoded_color_space='ycbcr' is supported, got {encoded_color_space!r}"
            )
        if isinstance(subsampling, str) and subsampling in SUBSAMPLING_FACTORS:
            name: Subsampling = subsampling
        else:
            name = subsampling_from_factors(subsampling)
        object.__setattr__(self, "quality", quality)
        object.__setattr__(self, "subsampling", name)
        object.__setattr__(self, "encoded_color_space", encoded_color_space)

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, config = parse_named_configuration(data, NAME)
        return cls(**config)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        factors: list[JSON] = [list(p) for p in SUBSAMPLING_FACTORS[self.subsampling]]
        return {
            "name": NAME,
            "configuration": {
                "quality": self.quality,
                "encoded_color_space": self.encoded_color_space,
                "subsampling": factors,
            },
        }

    def evolve_from_array_spec(self, array_spec: ArraySpec) -> Self:
        # Called with the chunk spec before filters apply, so only the dtype is checked
        # here; the (H, W, 3) layout is checked on encode and decode.
        if array_spec.dtype.to_native_dtype() != np.uint8:
            raise ValueError(f"jpeg: only uint8 arrays can be stored, got {array_spec.dtype}")
        return self

    def encode_image(self, image: np.ndarray) -> bytes:
        """One (H, W, 3) uint8 image to JPEG bytes with this codec's settings."""
        (blob,) = jpeg.encoder("cpu").encode(
            [np.ascontiguousarray(image)], quality=self.quality, subsampling=self.subsampling
        )
        return blob

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        image = jpeg.decoder("cpu").decode_one(chunk_bytes.to_bytes())
        if image is None or image.shape != chunk_spec.shape:
            got = "undecodable bytes" if image is None else f"shape {image.shape}"
            raise ValueError(f"jpeg: chunk of shape {chunk_spec.shape} decoded to {got}")
        return chunk_spec.prototype.nd_buffer.from_numpy_array(image)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        # In a worker thread, as zarr's own compressors do: a frame takes milliseconds
        # and zarr's event loop serves every other read and write meanwhile.
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        image = np.asarray(chunk_array.as_numpy_array())
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"jpeg: chunks must be (H, W, 3) uint8 (add singleton_dim to drop leading "
                f"axes), got shape {image.shape}"
            )
        blob = self.encode_image(image)
        return chunk_spec.prototype.buffer.from_bytes(blob)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, _input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("jpeg output size depends on the image")
