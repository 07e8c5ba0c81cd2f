"""`replay.protocol`: the binary batch format round-trips, and malformed bodies are refused."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from replay import protocol
from replay.batch import EncodedBatch, SampleKeys
from replay.protocol import ProtocolError

RACE = "01JZ8X6T3N5W2Q7R9B4C1D0E2F"


def make_encoded(b: int = 3, seq: int = 2) -> EncodedBatch:
    rng = np.random.default_rng(0)
    keys = SampleKeys(
        race_ids=[RACE] * b,
        steps=np.arange(b * seq, dtype=np.int64).reshape(b, seq),
        weights=rng.random(b).astype(np.float32),
        probabilities=rng.random(b),
    )
    frames = [
        [bytes(rng.integers(0, 256, 10 + i + j, dtype=np.uint8)) for j in range(seq)]
        for i in range(b)
    ]
    steps = {
        "action": rng.random((b, seq, 3)).astype(np.float32),
        "reward": rng.random((b, seq)).astype(np.float32),
        "terminated": rng.random((b, seq)) > 0.5,
        "t_ns": rng.integers(0, 2**62, (b, seq)),
        "speed": rng.random((b, seq)).astype(np.float16),
    }
    return EncodedBatch(keys, frames, 900, 1600, steps, {"name": "jpeg", "quality": 90}, 64)


def body_of(encoded: EncodedBatch, pixels: np.ndarray | None = None) -> bytes:
    return b"".join(protocol.pack(encoded, pixels))


def test_round_trip() -> None:
    encoded = make_encoded()
    body = body_of(encoded)
    assert body[:4] == b"RPLB"
    back = protocol.unpack(body)
    assert isinstance(back, EncodedBatch)
    assert back.frames == encoded.frames
    assert (back.height, back.width, back.codec, back.shard_size) == (900, 1600, encoded.codec, 64)
    assert back.keys.race_ids == encoded.keys.race_ids
    for name in ("steps", "weights", "probabilities"):
        a, b = getattr(back.keys, name), getattr(encoded.keys, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert back.steps.keys() == encoded.steps.keys()
    for name, value in encoded.steps.items():
        assert back.steps[name].dtype == value.dtype
        np.testing.assert_array_equal(back.steps[name], value)
        assert back.steps[name].flags.writeable


def test_arrays_are_aligned_and_the_header_is_plain_json() -> None:
    body = body_of(make_encoded())
    _magic, n = struct.unpack_from("<4sI", body)
    header = json.loads(body[8 : 8 + n])
    start = 8 + n + (-(8 + n) % 8)
    assert start % 8 == 0
    assert header["version"] == 1
    for ref in [*header["steps"].values(), header["keys"]["steps"]]:
        assert ref["offset"] % 8 == 0
    assert len(body) == start + header["data_nbytes"]
    assert header["frames"]["encoding"] == "stored"


def test_raw_pixels() -> None:
    encoded = make_encoded(2, 1)
    pixels = np.arange(2 * 1 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 1, 4, 5, 3)
    back = protocol.unpack(body_of(encoded, pixels))
    assert isinstance(back, protocol.RawBatch)
    np.testing.assert_array_equal(back.frames, pixels)
    with pytest.raises(ProtocolError, match="uint8"):
        protocol.pack(encoded, pixels.astype(np.float32))


def test_empty_frames_and_big_endian_input() -> None:
    encoded = make_encoded(1, 1)
    steps = {"reward": np.array([[1.5]], dtype=">f4")}
    odd = EncodedBatch(encoded.keys, [[b""]], 1, 1, steps, {"name": "jpeg"})
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
def test_malformed_bodies_are_refused(mangle: object, match: str) -> None:
    body = body_of(make_encoded())
    with pytest.raises(ProtocolError, match=match):
        protocol.unpack(mangle(body))  # type: ignore[operator]


def test_header_must_be_a_json_object() -> None:
    head = b"[1, 2]"
    body = b"RPLB" + struct.pack("<I", len(head)) + head
    with pytest.raises(ProtocolError, match="JSON object"):
        protocol.unpack(body)
    with pytest.raises(ProtocolError, match="UTF-8 JSON"):
        protocol.unpack(b"RPLB" + struct.pack("<I", 2) + b"\xff\xfe")
