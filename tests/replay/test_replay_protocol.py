"""`replay.protocol` without the service: a batch of real stored JPEGs packed and unpacked
decodes to the same pixels, decoded (raw) frames travel too, cut or padded bodies are
refused. (tests/service/test_protocol.py covers malformed headers field by field; it
runs only where the service extra is installed, and its name is taken.)"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sampling_helpers import write_race

import replay
from replay import protocol
from replay.batch import EncodedBatch, SampleKeys
from replay.decode import decode_batch
from replay.protocol import ProtocolError, RawBatch
from replay.transform import Transform


@pytest.fixture(scope="module")
def encoded(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> EncodedBatch:
    """A (3, 2) batch of real stored frames, fetched as the service fetches it."""
    path: Path = tmp_path_factory.mktemp("protocol") / "store"
    store = replay.open_store(path)
    race_id = write_race(store, real_frames[:10], env="CarRacing-v3", shard_size=4)
    keys = SampleKeys(
        race_ids=[race_id] * 3,
        steps=np.array([[0, 1], [3, 4], [8, 9]], dtype=np.int64),
        weights=np.array([1.0, 0.5, 0.25], dtype=np.float32),
        probabilities=np.array([0.1, 0.2, 0.3]),
    )
    with store.sampler() as sampler:
        return sampler.fetch(keys)


def body_of(encoded: EncodedBatch, pixels: npt.NDArray[np.uint8] | None = None) -> bytes:
    parts = protocol.pack(encoded, pixels)
    body = b"".join(parts)
    assert protocol.packed_nbytes(parts) == len(body)
    return body


def test_stored_frames_round_trip_and_decode_alike(encoded: EncodedBatch) -> None:
    body = body_of(encoded)
    assert body[:4] == protocol.MAGIC
    back = protocol.unpack(body)
    assert isinstance(back, EncodedBatch)
    assert back.frames == encoded.frames  # the stored JPEG bytes, unchanged
    assert (back.height, back.width, back.shard_size) == (900, 1600, 4)
    assert back.codec == encoded.codec
    assert back.keys.race_ids == encoded.keys.race_ids
    for name in ("steps", "weights", "probabilities"):
        mine, theirs = getattr(back.keys, name), getattr(encoded.keys, name)
        assert mine.dtype == theirs.dtype
        np.testing.assert_array_equal(mine, theirs)
    assert back.steps.keys() == encoded.steps.keys()
    for name, value in encoded.steps.items():
        assert back.steps[name].dtype == value.dtype
        np.testing.assert_array_equal(back.steps[name], value)
    np.testing.assert_array_equal(decode_batch(back).frames, decode_batch(encoded).frames)
    for view in (bytearray(body), memoryview(body)):
        again = protocol.unpack(view)
        assert isinstance(again, EncodedBatch)
        assert again.frames == encoded.frames


def test_decoded_frames_travel_raw(encoded: EncodedBatch) -> None:
    pixels = decode_batch(encoded, transform=Transform(size=(225, 400))).frames
    back = protocol.unpack(body_of(encoded, pixels))
    assert isinstance(back, RawBatch)
    assert (back.frames.shape, back.frames.dtype) == ((3, 2, 225, 400, 3), np.uint8)
    np.testing.assert_array_equal(back.frames, pixels)
    assert (back.height, back.width) == (900, 1600)  # the stored size, before the resize
    np.testing.assert_array_equal(back.steps["reward"], encoded.steps["reward"])
    with pytest.raises(ProtocolError, match=r"pixels must be \(B, L, \.\.\.\) uint8"):
        protocol.pack(encoded, pixels[:2])


def test_the_header_is_json_and_arrays_are_aligned(encoded: EncodedBatch) -> None:
    body = body_of(encoded)
    magic, n = struct.unpack_from("<4sI", body)
    header = json.loads(body[8 : 8 + n])
    start = 8 + n + (-(8 + n) % 8)
    assert (magic, header["version"], start % 8) == (b"RPLB", protocol.VERSION, 0)
    assert len(body) == start + header["data_nbytes"]
    refs = [*header["steps"].values(), *(header["keys"][k] for k in ("steps", "weights"))]
    assert all(ref["offset"] % 8 == 0 for ref in refs)
    sizes = header["frames"]["nbytes"]
    assert sizes == [[len(b) for b in row] for row in encoded.frames]
    offset = start + header["frames"]["offset"]
    assert body[offset : offset + sizes[0][0]] == encoded.frames[0][0]
    assert protocol.MEDIA_TYPE == "application/vnd.replay.batch.v1"


def test_cut_or_padded_bodies_are_refused(encoded: EncodedBatch) -> None:
    body = memoryview(body_of(encoded))
    n = struct.unpack_from("<I", body, 4)[0]
    rng = np.random.default_rng(0)
    cuts = {*range(0, 8 + n + 16), *rng.integers(8 + n, len(body), 40).tolist(), len(body) - 1}
    for cut in sorted(cuts):
        with pytest.raises(ProtocolError):
            protocol.unpack(body[:cut])
    with pytest.raises(ProtocolError, match="cut short"):
        protocol.unpack(bytes(body) + b"\0" * 8)
