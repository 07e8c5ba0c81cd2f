"""The typed frame codec (issue 14, item 5): chosen once from a race's ``codec``
attribute, whose stored form is unchanged; an unknown codec or status is damaged
metadata, not a guess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from numcodecs import Zstd
from sampling_helpers import make_store

import replay
from replay.codec.frames import (
    ZSTD_MAGIC,
    JpegFrames,
    ZstdFrames,
    frame_codec,
    frame_nbytes,
    new_frame_codec,
    writer_device,
)
from replay.format import spec as fmt


@pytest.mark.parametrize(
    "attrs",
    [
        {"name": "jpeg", "quality": 90, "subsampling": "420"},
        {"name": "jpeg", "quality": 75, "subsampling": "444"},
        {"name": "zstd", "level": 3},
    ],
)
def test_the_attrs_round_trip_unchanged(attrs: dict[str, Any]) -> None:
    assert frame_codec(attrs).attrs == attrs
    assert frame_codec(frame_codec(attrs).attrs) == frame_codec(attrs)


def test_unknown_or_bad_codecs_are_refused_naming_the_value() -> None:
    with pytest.raises(ValueError, match="'png'"):
        frame_codec({"name": "png"})
    with pytest.raises(ValueError, match="'png'"):
        new_frame_codec("png", 90, "420")
    with pytest.raises(ValueError, match=r"quality .* 0"):
        new_frame_codec("jpeg", 0, "420")
    with pytest.raises(ValueError, match="'411'"):
        new_frame_codec("zstd", 90, "411")
    assert new_frame_codec("zstd", 0, "444") == ZstdFrames()  # quality is JPEG's only


def test_each_codec_decodes_what_it_encodes(real_frames: npt.NDArray[np.uint8]) -> None:
    frames = list(real_frames[:2])
    lossless = ZstdFrames()
    for frame, blob in zip(frames, lossless.encode(frames), strict=True):
        np.testing.assert_array_equal(lossless.decode(blob, 900, 1600), frame)
    lossy = JpegFrames(95, "444")
    for frame, blob in zip(frames, lossy.encode(frames, spare_core=True), strict=True):
        image = lossy.decode(blob, 900, 1600)
        assert image is not None
        assert np.abs(image.astype(int) - frame.astype(int)).mean() < 3
        assert lossy.decode(blob, 900, 1599) is None  # not this race's frame size
    assert lossy.decode(b"not a jpeg", 900, 1600) is None


@pytest.mark.parametrize("codec", ["jpeg", "zstd"])
def test_a_race_gets_its_codec_typed_and_stored_as_before(tmp_path: Path, codec: str) -> None:
    store, (race_id,) = make_store(tmp_path / "s", [3], codec=codec, quality=80)
    info = store.race(race_id).info
    assert isinstance(info.frame_codec, JpegFrames if codec == "jpeg" else ZstdFrames)
    stored = json.loads((tmp_path / "s" / fmt.race_key(race_id) / fmt.METADATA).read_text())
    expected = (
        {"name": "jpeg", "quality": 80, "subsampling": "420"}
        if codec == "jpeg"
        else {"name": "zstd", "level": 3}
    )
    assert stored["attributes"]["codec"] == info.codec == expected


def _set_attr(store_path: Path, race_id: str, **changes: Any) -> None:
    key = store_path / fmt.race_key(race_id) / fmt.METADATA
    doc = json.loads(key.read_text())
    doc["attributes"].update(changes)
    key.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "change", [{"status": "paused"}, {"codec": {"name": "png"}}, {"codec": {"name": "jpeg"}}]
)
def test_an_unknown_status_or_codec_is_damaged_metadata(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    store, (a, b) = make_store(tmp_path / "s", [3, 4])
    _set_attr(tmp_path / "s", b, **change)
    infos, damaged = store.scan()
    assert [i.race_id for i in infos] == [a]
    assert list(damaged) == [b]
    with pytest.raises(replay.CorruptDataError, match="damaged"):
        store.race(b)
    assert [(r.race_id, r.problem) for r in store.verify().races if not r.ok] == [(b, "metadata")]


def test_auto_means_the_cpu_for_a_codec_without_a_gpu_encoder() -> None:
    # Without this rule a GPU machine put zstd races' host frames in a CUDA ring and
    # handed CUDA arrays to numcodecs' zstd, which takes only host buffers.
    jpeg, zstd = new_frame_codec("jpeg", 90, "420"), new_frame_codec("zstd", 90, "420")
    assert (jpeg.gpu_encoder, zstd.gpu_encoder) == (True, False)
    assert writer_device(zstd, "auto") == "cpu"
    assert writer_device(jpeg, "auto") == "auto"
    assert writer_device(zstd, "cuda:1") == "cuda:1"  # CUDA frames: downloaded to encode
    assert writer_device(jpeg, "cpu") == "cpu"


def test_a_zstd_frames_length_is_read_from_its_block_headers(
    real_frames: npt.NDArray[np.uint8],
) -> None:
    """`frame_nbytes` walks the blocks (compressed ones of real frames, RLE ones of a black
    frame, raw ones of noise, with and without a content checksum) without decompressing:
    a whole frame takes its length; one cut short, or followed by other bytes, does not."""
    noise = np.random.default_rng(0).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    images = [*real_frames[:2], np.zeros_like(real_frames[0]), noise]
    blobs = ZstdFrames().encode(images)
    blobs += [bytes(Zstd(level=1, checksum=True).encode(np.ascontiguousarray(noise)))]
    for blob in blobs:
        assert frame_nbytes(blob) == len(blob)
        assert frame_nbytes(blob + b"\x00\x00") == len(blob)  # then other bytes: not one frame
        for cut in (1, 3, len(blob) // 2):
            assert frame_nbytes(blob[:-cut]) != len(blob) - cut
    # by hand: one last raw block of 5 bytes, after a single-segment header of 1 size byte
    made = ZSTD_MAGIC + bytes([0x20, 5]) + ((5 << 3) | 1).to_bytes(3, "little") + b"hello"
    assert bytes(Zstd().decode(made)) == b"hello"  # a real zstd frame
    assert frame_nbytes(made) == len(made)
    reserved = ZSTD_MAGIC + bytes([0x20, 5]) + ((5 << 3) | 0b111).to_bytes(3, "little") + b"hello"
    assert frame_nbytes(reserved) is None  # block type 3 is reserved
    assert frame_nbytes(b"not zstd at all") is None
