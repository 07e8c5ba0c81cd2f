"""How a race stores its frames, as one typed value: `JpegFrames` or `ZstdFrames`.

A race's ``codec`` attribute (docs/format.md) is read once into a `FrameCodec`
(`RaceInfo.frame_codec`), which then encodes the writer's frames, decodes one stored
frame, and gives the Zarr codec chain of the race's frames array; its `attrs` are the
attribute as stored. The step arrays (action, reward, ... and the extras) are always
little-endian values compressed by zstd at `ZSTD_LEVEL`: `step_compressors` is their
Zarr codec chain and `encode_steps` one stored chunk.

    codec = frame_codec({"name": "jpeg", "quality": 90, "subsampling": "420"})
    blobs = codec.encode(images)               # one stored chunk per (H, W, 3) frame
    image = codec.decode(blobs[0], height, width)
    assert frame_codec(codec.attrs) == codec
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import numpy as np
import numpy.typing as npt
from numcodecs import Zstd
from zarr.abc.codec import ArrayArrayCodec, ArrayBytesCodec, BytesBytesCodec
from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

from replay.codec import jpeg
from replay.codec.devices import Device, on_device
from replay.codec.pixel_order import contiguous
from replay.codec.subsampling import SUBSAMPLING_FACTORS, Subsampling
from replay.codec.zarr_jpeg import JpegCodec, is_quality
from replay.codec.zarr_singleton_dim import SingletonDimCodec

CodecName = Literal["jpeg", "zstd"]
Image = npt.NDArray[np.uint8]

#: The zstd level of lossless frames and of every step array.
ZSTD_LEVEL = 3


def step_compressors() -> list[BytesBytesCodec]:
    """The compressors of every step array (action, reward, ... and the extras)."""
    return [ZstdCodec(level=ZSTD_LEVEL)]


def encode_steps(values: npt.NDArray[Any]) -> bytes:
    """One stored chunk of a step array: little-endian values, zstd-compressed."""
    little = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<"))
    return bytes(Zstd(level=ZSTD_LEVEL).encode(little))


@dataclass(frozen=True)
class ZarrChain:
    """The Zarr codecs of a frames array: filters, serializer, compressors."""

    filters: list[ArrayArrayCodec] | None
    serializer: ArrayBytesCodec
    compressors: list[BytesBytesCodec]


class FrameCodec(ABC):
    """How a race's frames are stored (chosen at `Store.new_race`, read from attrs)."""

    name: ClassVar[CodecName]
    #: whether `encode` runs on the GPU for ``device="cuda"`` (nvJPEG); a codec without
    #: a GPU encoder takes ``device="auto"`` as the CPU (`writer_device`)
    gpu_encoder: ClassVar[bool] = False

    @property
    @abstractmethod
    def attrs(self) -> dict[str, Any]:
        """The race's ``codec`` attribute, as stored (`frame_codec` reads it back)."""

    @abstractmethod
    def zarr_chain(self) -> ZarrChain:
        """The codecs of the race's frames array (its ``zarr.json``)."""

    @abstractmethod
    def encode(
        self, images: Sequence[Any], *, device: str = "cpu", gpu: int = 0, spare_core: bool = False
    ) -> list[bytes]:
        """Encode (H, W, 3) uint8 frames (CUDA arrays on ``device="cuda"`` for JPEG);
        `spare_core` leaves a core to the caller (a game driver beside the writer)."""

    @abstractmethod
    def decode(self, blob: bytes | memoryview, height: int, width: int) -> Image | None:
        """One stored frame on the host; None if it does not decode to (height, width, 3)."""

    def prepare(self, device: str = "cpu", gpu: int = 0) -> None:
        """Create the encoder now rather than on the first frames (no-op by default)."""
        del device, gpu  # nothing to create


@dataclass(frozen=True)
class JpegFrames(FrameCodec):
    """Lossy: each frame one baseline JPEG (`quality` 1-100, chroma `subsampling`)."""

    name: ClassVar[CodecName] = "jpeg"
    gpu_encoder: ClassVar[bool] = True
    quality: int
    subsampling: Subsampling

    def __post_init__(self) -> None:
        if not is_quality(self.quality):
            raise ValueError(f"quality must be an integer in 1..100, got {self.quality!r}")
        if self.subsampling not in SUBSAMPLING_FACTORS:
            raise ValueError(f"subsampling must be '420', '422' or '444', got {self.subsampling!r}")

    @property
    def attrs(self) -> dict[str, Any]:
        return {"name": self.name, "quality": self.quality, "subsampling": self.subsampling}

    def zarr_chain(self) -> ZarrChain:
        serializer = JpegCodec(quality=self.quality, subsampling=self.subsampling)
        return ZarrChain([SingletonDimCodec()], serializer, [Crc32cCodec()])

    def prepare(self, device: str = "cpu", gpu: int = 0) -> None:
        jpeg.encoder(cast(Device, device), gpu)

    def encode(
        self, images: Sequence[Any], *, device: str = "cpu", gpu: int = 0, spare_core: bool = False
    ) -> list[bytes]:
        encoder = jpeg.encoder(cast(Device, device), gpu)
        lanes = max(1, encoder.max_lanes - 1) if spare_core else encoder.max_lanes
        return encoder.encode(
            images, quality=self.quality, subsampling=self.subsampling, lanes=lanes
        )

    def decode(self, blob: bytes | memoryview, height: int, width: int) -> Image | None:
        image = jpeg.decoder("cpu").decode_one(blob)
        return image if image is not None and image.shape == (height, width, 3) else None


@dataclass(frozen=True)
class ZstdFrames(FrameCodec):
    """Lossless: each frame's raw (H, W, 3) bytes, zstd-compressed."""

    name: ClassVar[CodecName] = "zstd"
    level: int = ZSTD_LEVEL

    @property
    def attrs(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level}

    def zarr_chain(self) -> ZarrChain:
        return ZarrChain(None, BytesCodec(), [ZstdCodec(level=self.level), Crc32cCodec()])

    def encode(
        self, images: Sequence[Any], *, device: str = "cpu", gpu: int = 0, spare_core: bool = False
    ) -> list[bytes]:
        if device != "cpu":  # CUDA frames (a CUDA writer's ring): zstd runs on the host
            import cupy

            with on_device(gpu):
                images = [cupy.asnumpy(image) for image in images]
        zstd = Zstd(level=self.level)
        return [bytes(zstd.encode(contiguous(image))) for image in images]

    def decode(self, blob: bytes | memoryview, height: int, width: int) -> Image | None:
        image = np.empty((height, width, 3), dtype=np.uint8)
        return image if self.decode_into(blob, image) else None

    def decode_into(self, blob: bytes | memoryview, out: npt.NDArray[np.uint8]) -> bool:
        """Decode one stored frame straight into `out` (C-contiguous (H, W, 3) uint8: a
        batch's slot, or a reused buffer), so no frame-sized allocation is made (and
        page-faulted) per frame; False if it does not decode to exactly that size."""
        if content_size(blob) != out.nbytes:
            return False
        try:
            _ZSTD.decode(blob, out=out.reshape(-1))
        except (RuntimeError, ValueError):
            return False
        return True


#: Decodes any level (zstd's level is the encoder's only); stateless, thread-safe.
_ZSTD = Zstd()
_FCS_BYTES = (0, 2, 4, 8)  # Frame_Content_Size field sizes by its flag (RFC 8878 3.1.1.1.1)
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _content_size_field(blob: bytes | memoryview) -> tuple[int, int] | None:
    """Where a zstd frame header's Frame_Content_Size field lies: (start, size in bytes,
    0 if absent); None if `blob` is not a zstd frame."""
    if len(blob) < 6 or blob[:4] != ZSTD_MAGIC:
        return None
    descriptor = blob[4]
    single_segment = (descriptor >> 5) & 1
    size = _FCS_BYTES[descriptor >> 6] or single_segment  # flag 0: 1 byte in a single segment
    return 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3], size


def content_size(blob: bytes | memoryview) -> int | None:
    """The decompressed size a zstd frame's header declares (None if it declares none or
    is not a zstd frame): numcodecs fills a larger `out` without saying how much it
    wrote, so a short frame would pass for a whole one; a chunk's frames are checked by
    it before they are stored (`replay.remote.chunk_checks`)."""
    field = _content_size_field(blob)
    if field is None or field[1] == 0 or len(blob) < field[0] + field[1]:
        return None
    start, size = field
    value = int.from_bytes(blob[start : start + size], "little")
    return value + 256 if size == 2 else value


def frame_nbytes(blob: bytes) -> int | None:
    """The bytes the zstd frame at the start of `blob` takes, from its header and its
    blocks' headers (RFC 8878 3.1.1.2), without decompressing it: a frame cut short, or
    followed by other bytes, does not take ``len(blob)``. None if `blob` is not a zstd
    frame, its blocks run past its end or use the reserved type."""
    field = _content_size_field(blob)
    if field is None:
        return None
    at = field[0] + field[1]
    while at + 3 <= len(blob):
        header = int.from_bytes(blob[at : at + 3], "little")
        kind, size = (header >> 1) & 3, header >> 3
        if kind == 3:
            return None
        at += 3 + (1 if kind == 1 else size)  # an RLE block is one byte, repeated
        if header & 1:  # the last block, then the content checksum if the frame has one
            end = at + (4 if (blob[4] >> 2) & 1 else 0)
            return end if end <= len(blob) else None
    return None


def writer_device(codec: FrameCodec, device: str) -> str:
    """The device a writer of `codec` frames asks for: `device`, except ``"auto"``
    for a codec with no GPU encoder, which is the CPU (a GPU would only add an upload
    and a download; CUDA frames then need ``device="cuda"``, downloaded to encode)."""
    return "cpu" if device == "auto" and not codec.gpu_encoder else device


def frame_codec(attrs: Mapping[str, Any]) -> FrameCodec:
    """The codec a race's ``codec`` attribute names; ValueError (naming it) if unknown."""
    name = attrs.get("name")
    if name == JpegFrames.name:
        return JpegFrames(int(attrs["quality"]), attrs["subsampling"])
    if name == ZstdFrames.name:
        return ZstdFrames(int(attrs.get("level", ZSTD_LEVEL)))
    raise ValueError(f"unknown frame codec {name!r} (expected 'jpeg' or 'zstd')")


def new_frame_codec(name: str, quality: int, subsampling: str) -> FrameCodec:
    """The codec `Store.new_race` asked for; ValueError naming a bad argument."""
    if name == JpegFrames.name:
        return JpegFrames(quality, cast(Subsampling, subsampling))  # checks both
    if name != ZstdFrames.name:
        raise ValueError(f"codec must be 'jpeg' or 'zstd', got {name!r}")
    if subsampling not in SUBSAMPLING_FACTORS:  # checked for zstd too, as always
        raise ValueError(f"subsampling must be '420', '422' or '444', got {subsampling!r}")
    return ZstdFrames()
