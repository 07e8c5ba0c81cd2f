"""`replay.remote.protocol`: a batch of real stored JPEGs packed and unpacked decodes to the
same pixels, decoded (raw) frames travel too, odd arrays are normalised, and cut,
padded or malformed bodies are refused field by field."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sampling_helpers import write_race

import replay
from replay.codec.transform import Transform
from replay.read.batch import EncodedBatch, SampleKeys
from replay.read.decode import decode_batch
from replay.remote import protocol
from replay.remote.protocol import ProtocolError, RawBatch


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
    with pytest.raises(ProtocolError, match="uint8"):
        protocol.pack(encoded, pixels.astype(np.float32))


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


def test_empty_frames_and_big_endian_input(encoded: EncodedBatch) -> None:
    keys = SampleKeys(
        race_ids=encoded.keys.race_ids[:1],
        steps=encoded.keys.steps[:1, :1],
        weights=encoded.keys.weights[:1],
        probabilities=encoded.keys.probabilities[:1],
    )
    steps = {"reward": np.array([[1.5]], dtype=">f4")}
    odd = EncodedBatch(keys, [[b""]], 1, 1, steps, {"name": "jpeg"})
    back = protocol.unpack(body_of(odd))
    assert back.frames == [[b""]]  # type: ignore[union-attr]
    assert back.steps["reward"].dtype == np.float32
    assert back.steps["reward"][0, 0] == 1.5


def corrupt(body: bytes, **changes: object) -> bytes:
    n = struct.unpack_from("<I", body, 4)[0]
    header = json.loads(body[8 : 8 + n])
    data = body[8 + n + (-(8 + n) % 8) :]
    for path, value in changes.items():
        node = header
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    head = json.dumps(header).encode()
    return b"RPLB" + struct.pack("<I", len(head)) + head + b"\0" * (-(8 + len(head)) % 8) + data


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda b: b[:5], "at least 8 bytes"),
        (lambda b: b"XXXX" + b[4:], "magic"),
        (lambda b: b[:4] + struct.pack("<I", 2**31) + b[8:], "header length"),
        (lambda b: b[:-1], "cut short"),
        (lambda b: b + b"\0", "cut short"),
        (lambda b: corrupt(b, version=2), "version"),
        (lambda b: corrupt(b, data_nbytes=1), "cut short"),
        (lambda b: corrupt(b, keys__steps__offset=10**9), "past the data section"),
        (lambda b: corrupt(b, keys__steps__dtype="|O"), "dtype"),
        (lambda b: corrupt(b, keys__weights__dtype="<f8"), "dtype"),
        (lambda b: corrupt(b, keys__steps__shape=[3, 3]), "shape"),
        (lambda b: corrupt(b, steps__reward__nbytes=3), "cannot be 3 bytes"),
        (lambda b: corrupt(b, steps__reward__shape=[-1, 2]), "shape"),
        (lambda b: corrupt(b, frames__nbytes=[[1, 2]]), "frame sizes"),
        (lambda b: corrupt(b, frames__nbytes=[[10**9, 1], [1, 1], [1, 1]]), "past the data"),
        (lambda b: corrupt(b, frames__encoding="png"), "encoding"),
        (lambda b: corrupt(b, keys__race_ids=["x"]), "race ids"),
        (lambda b: corrupt(b, keys=None), "malformed header"),
    ],
)
def test_malformed_bodies_are_refused(encoded: EncodedBatch, mangle: object, match: str) -> None:
    body = body_of(encoded)
    with pytest.raises(ProtocolError, match=match):
        protocol.unpack(mangle(body))  # type: ignore[operator]


def test_header_must_be_a_json_object() -> None:
    head = b"[1, 2]"
    body = b"RPLB" + struct.pack("<I", len(head)) + head
    with pytest.raises(ProtocolError, match="JSON object"):
        protocol.unpack(body)
    with pytest.raises(ProtocolError, match="UTF-8 JSON"):
        protocol.unpack(b"RPLB" + struct.pack("<I", 2) + b"\xff\xfe")
