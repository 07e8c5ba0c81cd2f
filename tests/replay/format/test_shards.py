"""`replay.format.shards`: hand-built shards of real JPEG frames, their index, the CRC32C of every
frame and of the index, damage and truncation, and zarr-python as the layout oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import zarr
from zarr.codecs import Crc32cCodec

from replay.codec import jpeg
from replay.codec.zarr_jpeg import JpegCodec
from replay.codec.zarr_singleton_dim import SingletonDimCodec
from replay.format import shards
from replay.storage.local import LocalStorage

N = 8  # chunks per shard
KEY = "frames/c/0/0/0/0"


@pytest.fixture(scope="module")
def blobs(real_frames: npt.NDArray[np.uint8]) -> list[bytes]:
    """Five real CarRacing frames as JPEGs (quality 90, 4:2:0), as the writer encodes them."""
    return jpeg.encoder("cpu").encode(list(real_frames[:40:8]), quality=90, subsampling="420")


@pytest.fixture
def storage(tmp_path: Path, blobs: list[bytes]) -> LocalStorage:
    """A LocalStorage holding one shard of the five frames (three slots absent) at KEY."""
    storage = LocalStorage(tmp_path)
    storage.write(KEY, shards.build_shard([shards.with_checksum(b) for b in blobs], N))
    return storage


def frames_array(path: Path) -> Any:
    """A zarr array laid out as a race's frames: the writer's shard inner codec chain."""
    return zarr.create_array(
        str(path),
        shape=(N, 900, 1600, 3),
        chunks=(1, 900, 1600, 3),
        shards=(N, 900, 1600, 3),
        dtype="uint8",
        filters=[SingletonDimCodec()],
        serializer=JpegCodec(quality=90, subsampling="420"),
        compressors=[Crc32cCodec()],
        fill_value=0,
    )


def test_build_and_read_index_round_trip(storage: LocalStorage, blobs: list[bytes]) -> None:
    index = shards.read_index(storage, KEY, N)
    assert index[5:] == [None, None, None]
    stored = [shards.with_checksum(b) for b in blobs]
    starts = np.cumsum([0] + [len(c) for c in stored]).tolist()
    assert index[:5] == [(start, len(c)) for start, c in zip(starts, stored, strict=False)]
    assert storage.size(KEY) == sum(map(len, stored)) + shards.index_nbytes(N)
    chunks = storage.read_ranges(KEY, [r for r in index if r is not None])
    assert [shards.without_checksum(c) for c in chunks] == blobs
    empty = shards.build_shard([], 4)
    assert len(empty) == shards.index_nbytes(4) == 68
    assert shards.parse_index(empty, 4).tolist() == [[2**64 - 1] * 2] * 4


def test_zarr_python_reads_a_hand_built_shard(tmp_path: Path, blobs: list[bytes]) -> None:
    array = frames_array(tmp_path / "frames")
    stored = [shards.with_checksum(b) for b in blobs]
    LocalStorage(tmp_path).write("frames/c/0/0/0/0", shards.build_shard(stored, N))
    read = zarr.open_array(str(tmp_path / "frames"), mode="r")[:]
    assert read.shape == array.shape
    for image, blob in zip(read[:5], blobs, strict=True):
        np.testing.assert_array_equal(image, jpeg.decoder("cpu").decode_one(blob))
    assert not read[5:].any()  # absent chunks read as the fill value


def test_read_index_parses_a_shard_zarr_python_wrote(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    array = frames_array(tmp_path / "frames")
    array[0:3] = real_frames[:3]
    index = shards.read_index(LocalStorage(tmp_path), KEY, N)
    assert index[3:] == [None] * 5
    chunks = LocalStorage(tmp_path).read_ranges(KEY, [r for r in index if r is not None])
    images = jpeg.decoder("cpu").decode([shards.without_checksum(c) for c in chunks])
    for image, expected in zip(images, array[0:3], strict=True):
        np.testing.assert_array_equal(image, expected)


def test_one_flipped_bit_is_caught_in_that_frame_only(
    storage: LocalStorage, blobs: list[bytes]
) -> None:
    clean = storage.read(KEY)
    index = shards.read_index(storage, KEY, N)
    ranges = [r for r in index if r is not None]
    rng = np.random.default_rng(3)
    for slot in (0, 2, 4, 1):
        offset, nbytes = ranges[slot]
        damaged = bytearray(clean)
        damaged[offset + int(rng.integers(nbytes))] ^= 1 << int(rng.integers(8))
        storage.write(KEY, bytes(damaged))
        assert shards.read_index(storage, KEY, N) == index  # the index itself is intact
        for i, chunk in enumerate(storage.read_ranges(KEY, ranges)):
            if i == slot:
                with pytest.raises(ValueError, match="frame checksum mismatch"):
                    shards.without_checksum(chunk)
            else:
                assert shards.without_checksum(chunk) == blobs[i]


def test_a_damaged_index_is_refused(storage: LocalStorage) -> None:
    data = bytearray(storage.read(KEY))
    data[-shards.index_nbytes(N) + 16] ^= 0x04  # the second entry's offset
    storage.write(KEY, bytes(data))
    with pytest.raises(ValueError, match="shard index checksum mismatch"):
        shards.read_index(storage, KEY, N)


@pytest.mark.parametrize(
    "keep",
    [
        lambda n: n - 1,  # the last byte of the index checksum
        lambda n: n - 100,  # into the index
        lambda n: 1000,  # the index and most frames
        lambda n: 10,  # shorter than an index
        lambda n: 0,  # empty
    ],
    ids=["last-byte", "into-index", "no-index", "shorter-than-index", "empty"],
)
def test_a_truncated_shard_is_refused(storage: LocalStorage, keep: Any) -> None:
    data = storage.read(KEY)
    storage.write(KEY, data[: keep(len(data))])
    with pytest.raises((OSError, EOFError, ValueError)):  # as read_index documents
        shards.read_index(storage, KEY, N)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="9 chunks do not fit a shard of 8"):
        shards.build_shard([b"x"] * 9, 8)
    with pytest.raises(ValueError, match="shard index is 10 bytes, expected 132"):
        shards.parse_index(b"\0" * 10, 8)
    for chunk in (b"", b"abc", shards.with_checksum(b"frame")[:-1]):
        with pytest.raises(ValueError, match="checksum mismatch"):
            shards.without_checksum(chunk)
    assert shards.without_checksum(shards.with_checksum(b"")) == b""
