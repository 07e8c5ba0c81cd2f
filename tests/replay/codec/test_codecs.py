"""`replay.codec` (jpeg, singleton_dim): zarr-python in this process writes and reads real
frames through them, their JSON configurations round-trip, bad settings are refused."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import zarr
import zarr.api.asynchronous
from zarr.registry import get_codec_class

from replay.bench.footprint import psnr
from replay.codec import jpeg
from replay.codec.zarr_jpeg import JpegCodec
from replay.codec.zarr_singleton_dim import SingletonDimCodec

H, W = 900, 1600


def frames_array(path: Path, n: int, jpeg_codec: JpegCodec, **kwargs: Any) -> Any:
    """(n, H, W, 3) uint8, one frame per chunk, four per shard, [singleton_dim, jpeg] inside."""
    kwargs.setdefault("shards", (4, H, W, 3))
    return zarr.create_array(
        str(path),
        shape=(n, H, W, 3),
        chunks=(1, H, W, 3),
        dtype="uint8",
        filters=[SingletonDimCodec()],
        serializer=jpeg_codec,
        compressors=None,
        fill_value=0,
        **kwargs,
    )


def test_zarr_python_round_trips_real_frames(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    frames = real_frames[:6]
    array = frames_array(tmp_path / "frames", 6, JpegCodec(quality=95, subsampling="444"))
    array[:] = frames
    doc = json.loads((tmp_path / "frames" / "zarr.json").read_text())
    (sharding,) = doc["codecs"]
    assert sharding["name"] == "sharding_indexed"
    assert sharding["configuration"]["codecs"] == [
        {"name": "singleton_dim", "configuration": {"operations": [{"remove": 0}]}},
        {
            "name": "jpeg",
            "configuration": {
                "quality": 95,
                "encoded_color_space": "ycbcr",
                "subsampling": [[1, 1], [1, 1], [1, 1]],
            },
        },
    ]
    again = zarr.open_array(str(tmp_path / "frames"), mode="r")  # codecs found by name
    read = again[:]
    assert (read.shape, read.dtype) == (frames.shape, np.uint8)
    for image, frame in zip(read, frames, strict=True):
        assert psnr(image, frame) >= 40.0
    np.testing.assert_array_equal(again[4, 100:200, 300:500], read[4, 100:200, 300:500])
    assert get_codec_class("jpeg") is JpegCodec
    assert get_codec_class("singleton_dim") is SingletonDimCodec


def test_a_stored_chunk_is_one_plain_jpeg(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    codec = JpegCodec(quality=90)
    array = frames_array(tmp_path / "frames", 1, codec, shards=None)
    array[0] = real_frames[7]
    blob = (tmp_path / "frames" / "c" / "0" / "0" / "0" / "0").read_bytes()
    assert blob[:2] == b"\xff\xd8"
    assert blob == codec.encode_image(real_frames[7])
    np.testing.assert_array_equal(array[0], jpeg.decoder("cpu").decode_one(blob))


def test_an_undecodable_chunk_is_a_clear_error(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    array = frames_array(tmp_path / "frames", 1, JpegCodec(), shards=None)
    array[0] = real_frames[0]
    chunk = tmp_path / "frames" / "c" / "0" / "0" / "0" / "0"
    chunk.write_bytes(b"\0" * chunk.stat().st_size)
    with pytest.raises(ValueError, match=r"jpeg: chunk of shape \(900, 1600, 3\) decoded to undec"):
        array[0]


def test_jpeg_needs_uint8_hwc_chunks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only uint8 arrays"):
        zarr.create_array(
            str(tmp_path / "f"),
            shape=(1, 8, 8, 3),
            chunks=(1, 8, 8, 3),
            dtype="float32",
            filters=[SingletonDimCodec()],
            serializer=JpegCodec(),
        )
    without_filter = zarr.create_array(
        str(tmp_path / "u"),
        shape=(2, 8, 8, 3),
        chunks=(1, 8, 8, 3),
        dtype="uint8",
        serializer=JpegCodec(),
        compressors=None,
    )
    with pytest.raises(ValueError, match=r"add singleton_dim .* got shape \(1, 8, 8, 3\)"):
        without_filter[0] = np.full((8, 8, 3), 7, np.uint8)  # (all fill values: not encoded)


@pytest.mark.parametrize(
    "codec",
    [
        JpegCodec(),
        JpegCodec(quality=1, subsampling="444"),
        JpegCodec(quality=100, subsampling=[[2, 1], [1, 1], [1, 1]]),
        SingletonDimCodec(),
        SingletonDimCodec(operations=[{"remove": 0}, {"add": 2}, {"add": 0}]),
    ],
    ids=repr,
)
def test_configurations_round_trip_through_json(codec: JpegCodec | SingletonDimCodec) -> None:
    doc = json.loads(json.dumps(codec.to_dict()))
    assert set(doc) == {"name", "configuration"}
    assert type(codec).from_dict(doc) == codec
    assert get_codec_class(doc["name"]).from_dict(doc) == codec


def test_jpeg_configuration_spells_out_the_spec() -> None:
    doc = JpegCodec(quality=85, subsampling="422").to_dict()
    assert doc == {
        "name": "jpeg",
        "configuration": {
            "quality": 85,
            "encoded_color_space": "ycbcr",
            "subsampling": [[2, 1], [1, 1], [1, 1]],
        },
    }
    codec = JpegCodec.from_dict(doc)  # type: ignore[arg-type]
    assert (codec.quality, codec.subsampling) == (85, "422")


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"quality": 0}, "quality must be an integer in 1..100, got 0"),
        ({"quality": 101}, "got 101"),
        ({"quality": 90.0}, "got 90.0"),
        ({"quality": "90"}, "got '90'"),
        ({"encoded_color_space": "rgb"}, "only encoded_color_space='ycbcr'.*'rgb'"),
        ({"subsampling": "411"}, "unsupported JPEG chroma subsampling '411'"),
        ({"subsampling": [[4, 1], [1, 1], [1, 1]]}, r"unsupported .*\[\[4, 1\]"),
    ],
)
def test_bad_jpeg_settings_are_refused(settings: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        JpegCodec(**settings)


@pytest.mark.parametrize(
    "operations",
    [[], {"remove": 0}, [{"remove": -1}], [{"squeeze": 0}], [{"remove": 0, "add": 1}], ["x"]],
)
def test_bad_singleton_dim_operations_are_refused(operations: Any) -> None:
    with pytest.raises(ValueError, match="singleton_dim: "):
        SingletonDimCodec(operations=operations)


def test_singleton_dim_axes_are_checked_against_the_chunk(tmp_path: Path) -> None:
    unsharded = r"axis 1 of chunk shape \(1, 5, 6\) is not length 1"
    with pytest.raises(ValueError, match=unsharded):
        zarr.create_array(
            str(tmp_path / "a0"),
            shape=(4, 5, 6),
            chunks=(1, 5, 6),
            dtype="uint8",
            filters=[SingletonDimCodec(operations=[{"remove": 1}])],
        )
    # inside sharding zarr shows the codec the chunk only when it writes one
    sharded = zarr.create_array(
        str(tmp_path / "a"),
        shape=(4, 5, 6),
        chunks=(1, 5, 6),
        shards=(4, 5, 6),
        dtype="uint8",
        filters=[SingletonDimCodec(operations=[{"remove": 1}])],
    )
    with pytest.raises(ValueError, match=unsharded):
        sharded[:] = 1
    with pytest.raises(ValueError, match=r"cannot add axis 5 to chunk shape \(5, 6\)"):
        zarr.create_array(
            str(tmp_path / "b"),
            shape=(4, 5, 6),
            chunks=(1, 5, 6),
            shards=(4, 5, 6),
            dtype="uint8",
            filters=[SingletonDimCodec(operations=[{"remove": 0}, {"add": 5}])],
        )
    ok = zarr.create_array(
        str(tmp_path / "c"),
        shape=(4, 5, 6),
        chunks=(1, 5, 6),
        shards=(4, 5, 6),
        dtype="uint8",
        filters=[SingletonDimCodec(operations=[{"remove": 0}, {"add": 2}, {"add": 0}])],
    )
    values = np.arange(120, dtype=np.uint8).reshape(4, 5, 6)
    ok[:] = values
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "c"), mode="r")[:], values)


def test_singleton_dim_works_without_sharding(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    array = frames_array(tmp_path / "frames", 2, JpegCodec(), shards=None)
    array[:] = real_frames[:2]
    read = zarr.open_array(str(tmp_path / "frames"), mode="r")[:]
    assert min(psnr(a, b) for a, b in zip(read, real_frames[:2], strict=True)) >= 38.0


def test_a_boolean_quality_is_refused() -> None:
    with pytest.raises(ValueError, match="quality must be an integer"):
        JpegCodec(quality=True)


class _LoopProbe:
    """Tells whether another task of the event loop ran while a frame was being coded."""

    def __init__(self) -> None:
        self.coding = threading.Event()
        self.loop_ran = threading.Event()
        self.seen: list[bool] = []

    def wait_for_the_loop(self) -> None:
        """Called inside the codec's work: waits (bounded) for a task on the loop to run."""
        self.coding.set()
        self.seen.append(self.loop_ran.wait(timeout=5))  # False: the loop was blocked
        self.coding.clear()
        self.loop_ran.clear()

    async def watch(self, task: asyncio.Task[Any]) -> None:
        """Another task on the loop: notes each moment it runs while a frame is coded."""
        while not task.done():
            if self.coding.is_set():
                self.loop_ran.set()
            await asyncio.sleep(0)


class _ProbedJpegCodec(JpegCodec):
    """The real JPEG codec, whose work first waits for the probe."""

    probe = _LoopProbe()

    def _encode_sync(self, chunk_array: Any, chunk_spec: Any) -> Any:
        self.probe.wait_for_the_loop()
        return super()._encode_sync(chunk_array, chunk_spec)

    def _decode_sync(self, chunk_bytes: Any, chunk_spec: Any) -> Any:
        self.probe.wait_for_the_loop()
        return super()._decode_sync(chunk_bytes, chunk_spec)


def test_jpeg_work_does_not_block_zarrs_event_loop(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    """A frame encodes and decodes in a worker thread, as zarr's own compressors do, so
    other tasks of zarr's event loop (other reads and writes) run meanwhile."""
    probe = _ProbedJpegCodec.probe = _LoopProbe()  # fresh for each run

    async def write_and_read() -> npt.NDArray[np.uint8]:
        array = await zarr.api.asynchronous.create_array(
            str(tmp_path / "frames"),
            shape=(1, H, W, 3),
            chunks=(1, H, W, 3),
            dtype="uint8",
            filters=[SingletonDimCodec()],
            serializer=_ProbedJpegCodec(),
            compressors=None,
            fill_value=0,
        )
        write = asyncio.ensure_future(array.setitem(0, real_frames[3]))
        await asyncio.gather(write, probe.watch(write))
        read = asyncio.ensure_future(array.getitem(0))
        await asyncio.gather(read, probe.watch(read))
        return np.asarray(read.result())

    image = asyncio.run(write_and_read())
    assert probe.seen == [True, True]  # [encode, decode]: the loop ran during each
    assert psnr(image, real_frames[3]) >= 38.0
