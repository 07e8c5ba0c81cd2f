"""The binary batch format of ``POST /v1/sample``: ``application/vnd.replay.batch.v1``.

One body carries one batch: a small JSON header, then the buffers it points
at. docs/protocol.md is the full specification (enough for a reader in any
language)::

    offset   size   field
    0        4      magic  b"RPLB"
    4        4      header length N, uint32 little-endian
    8        N      header, UTF-8 JSON object
    8+N      pad    zero bytes up to a multiple of 8: the data section starts at D
    D        ...    data section; every buffer at header-given `offset` from D
                    (numeric arrays 8-byte aligned), `data_nbytes` long in all

Numeric arrays are described as ``{"dtype": "<f4", "shape": [...], "offset": o,
"nbytes": n}`` (NumPy ``dtype.str``: explicit little-endian, C order). Frames
are either the stored chunks (``"encoding": "stored"``, JPEG bytes for JPEG
races, one after another in (b, l) row-major order, sizes in ``nbytes``) or
decoded pixels (``"encoding": "raw"``, one uint8 array (B, L, h, w, c)).
An ``n_step`` batch adds an optional ``"nstep"`` object (returns, discount,
next_steps arrays; stored ``next_frames`` when asked); readers that do not know
it skip it, and a message without it reads as before.

    parts = pack(encoded)                  # service: list of buffers, join or stream
    batch = unpack(body)                   # client: EncodedBatch (or RawBatch)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from replay.errors import ReplayError
from replay.read.batch import Blob, EncodedBatch, FrameFormat, NStepArrays, SampleKeys

MEDIA_TYPE: Final = "application/vnd.replay.batch.v1"
#: Response headers of ``POST /v1/sample`` with ``skip_corrupt``: how many damaged
#: shards and frames the service skipped for the batch, and which
#: (``race:shard`` for a whole shard, ``race:shard:step`` for one frame).
CORRUPT_SKIPPED_HEADER: Final = "Replay-Corrupt-Skipped"
CORRUPT_WHERE_HEADER: Final = "Replay-Corrupt-Where"
#: Request header naming one call of ``POST /v1/sample`` or ``PUT /v1/priorities``
#: (the same on each of its tries): the service answers a repeat as it answered the
#: first, without drawing or applying again, so a client may retry it safely.
REQUEST_ID_HEADER: Final = "Replay-Request-Id"
MAGIC: Final = b"RPLB"
VERSION: Final = 1
PREFIX: Final = struct.Struct("<4sI")
#: Largest header a reader accepts (a batch of 65536 keys needs ~3 MB).
MAX_HEADER: Final = 64 << 20
ALIGN: Final = 8
#: dtypes a buffer may have (little-endian or byte-sized; no objects, no strings).
DTYPES: Final = frozenset(
    ["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"]
)


class ProtocolError(ReplayError, ValueError):
    """A body that is not a valid batch message (wrong magic, version, bounds or dtype)."""


@dataclass(frozen=True)
class RawBatch:
    """A batch whose frames the service decoded (the ``raw`` frame encoding).

    Attributes:
        keys: the `SampleKeys` of the batch.
        frames: (B, L, h, w, c) uint8 pixels (after the view the request asked for).
        steps: per-step arrays, each (B, L, ...).
        height, width: the stored frames' size (before any crop or resize).
        codec: the races' codec attributes.
        nstep: n-step values of an ``n_step`` batch (no bootstrap frames), else None.
    """

    keys: SampleKeys
    frames: npt.NDArray[np.uint8]
    steps: dict[str, npt.NDArray[Any]]
    height: int
    width: int
    codec: dict[str, Any]
    nstep: NStepArrays | None = None


class _Layout:
    """Accumulates buffers of the data section with their offsets."""

    def __init__(self) -> None:
        self.parts: list[bytes | memoryview] = []
        self.size = 0

    def add(self, data: bytes | memoryview, align: bool) -> int:
        if align and self.size % ALIGN:
            pad = ALIGN - self.size % ALIGN
            self.parts.append(b"\0" * pad)
            self.size += pad
        offset = self.size
        self.parts.append(data)
        self.size += len(data)
        return offset

    def array(self, value: npt.NDArray[Any]) -> dict[str, Any]:
        a = np.ascontiguousarray(value)
        a = a.astype(a.dtype.newbyteorder("<")) if a.dtype.byteorder == ">" else a
        if a.dtype.str not in DTYPES:
            raise ProtocolError(f"cannot send an array of dtype {a.dtype}")
        data = a.reshape(-1).view(np.uint8).data if a.size else b""
        offset = self.add(data, align=True)
        return {"dtype": a.dtype.str, "shape": list(a.shape), "offset": offset, "nbytes": a.nbytes}


def pack(
    encoded: EncodedBatch, pixels: npt.NDArray[np.uint8] | None = None
) -> list[bytes | memoryview]:
    """The message of a batch, as buffers to send one after another.

    With `pixels` ((B, L, h, w, c) uint8) the frames travel decoded (``raw``)
    instead of as the stored bytes.
    """
    keys = encoded.keys
    data = _Layout()
    key_arrays = {
        "steps": data.array(keys.steps.astype(np.int64, copy=False)),
        "weights": data.array(keys.weights.astype(np.float32, copy=False)),
        "probabilities": data.array(keys.probabilities.astype(np.float64, copy=False)),
    }
    steps = {name: data.array(value) for name, value in encoded.steps.items()}
    frames: dict[str, Any]
    if pixels is None:
        sizes = [[len(blob) for blob in row] for row in encoded.frames]
        offset = data.size
        for row in encoded.frames:
            for blob in row:
                data.add(blob, align=False)
        frames = {"encoding": "stored", "offset": offset, "nbytes": sizes}
    else:
        if pixels.dtype != np.uint8 or pixels.shape[:2] != keys.steps.shape:
            raise ProtocolError(
                f"pixels must be (B, L, ...) uint8, got {pixels.shape} {pixels.dtype}"
            )
        frames = {"encoding": "raw", **data.array(pixels)}
    nstep = None if encoded.nstep is None else _pack_nstep(encoded.nstep, data, pixels is None)
    header = {
        "version": VERSION,
        "batch_size": keys.batch_size,
        "seq_len": keys.seq_len,
        "height": encoded.height,
        "width": encoded.width,
        "codec": encoded.codec,
        "shard_size": encoded.shard_size,
        **(
            {"formats": {r: vars(f) for r, f in encoded.formats.items()}} if encoded.formats else {}
        ),
        "keys": {"race_ids": keys.race_ids, **key_arrays},
        "steps": steps,
        "frames": frames,
        **({} if nstep is None else {"nstep": nstep}),
        "data_nbytes": data.size,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    pad = -(PREFIX.size + len(head)) % ALIGN
    return [PREFIX.pack(MAGIC, len(head)), head, b"\0" * pad, *data.parts]


def _formats(encoded: EncodedBatch) -> dict[str, Any]:
    """The optional ``formats`` header entry: each race's codec and frame size, sent only
    when the races of the batch differ in them."""
    if not encoded.formats:
        return {}
    return {"formats": {r: vars(f) for r, f in encoded.formats.items()}}


def _pack_nstep(nstep: NStepArrays, data: _Layout, stored: bool) -> dict[str, Any]:
    """The ``nstep`` header object; bootstrap frames go with stored frames only."""
    out: dict[str, Any] = {
        "returns": data.array(nstep.returns.astype(np.float32, copy=False)),
        "discount": data.array(nstep.discount.astype(np.float32, copy=False)),
        "next_steps": data.array(nstep.next_steps.astype(np.int64, copy=False)),
    }
    if nstep.next_frames is not None:
        if not stored:
            raise ProtocolError("bootstrap frames travel as stored frames only")
        offset = data.size
        for row in nstep.next_frames:
            for blob in row:
                data.add(blob, align=False)
        out["next_frames"] = {
            "offset": offset,
            "nbytes": [[len(b) for b in r] for r in nstep.next_frames],
        }
    return out


def packed_nbytes(parts: list[bytes | memoryview]) -> int:
    """Total size of a packed message."""
    return sum(len(p) for p in parts)


def unpack(body: bytes | bytearray | memoryview) -> EncodedBatch | RawBatch:
    """Read a message: an `EncodedBatch` (stored frames) or a `RawBatch` (decoded ones).

    Raises `ProtocolError` for anything malformed; never reads out of bounds.
    """
    view, header, start = read_header(body, MAGIC, "batch")
    try:
        return _read(header, view, start)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, ProtocolError):
            raise
        raise ProtocolError(f"malformed header: {type(e).__name__}: {e}") from e


def read_header(
    body: bytes | bytearray | memoryview, magic: bytes, kind: str, version: int = VERSION
) -> tuple[memoryview, dict[str, Any], int]:
    """The framing every message of ours shares (the batch, a recorded chunk): the
    message as bytes, its JSON header (of `version`) and where its buffers start.

    Raises `ProtocolError` naming what is wrong; never reads out of bounds.
    """
    view = memoryview(body).cast("B")
    if len(view) < PREFIX.size:
        raise ProtocolError(f"a {kind} message is at least {PREFIX.size} bytes, got {len(view)}")
    found, n = PREFIX.unpack_from(view)
    if found != magic:
        raise ProtocolError(f"not a {kind} message (magic {bytes(found)!r}, expected {magic!r})")
    if n > MAX_HEADER or PREFIX.size + n > len(view):
        raise ProtocolError(f"header length {n} does not fit a {len(view)}-byte message")
    try:
        header = json.loads(bytes(view[PREFIX.size : PREFIX.size + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"header is not UTF-8 JSON: {e}") from e
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    if header.get("version") != version:
        raise ProtocolError(
            f"{kind} message version {header.get('version')!r}; this reader reads {version}"
        )
    return view, header, PREFIX.size + n + (-(PREFIX.size + n) % ALIGN)


def _read(header: Mapping[str, Any], view: memoryview, start: int) -> EncodedBatch | RawBatch:
    data_nbytes = int(header["data_nbytes"])
    if start + data_nbytes != len(view):
        raise ProtocolError(
            f"message is {len(view)} bytes; header says {start + data_nbytes} (cut short?)"
        )
    data = view[start:]
    b, seq = int(header["batch_size"]), int(header["seq_len"])
    k = header["keys"]
    race_ids = [str(r) for r in k["race_ids"]]
    if len(race_ids) != b:
        raise ProtocolError(f"{len(race_ids)} race ids for batch_size {b}")
    keys = SampleKeys(
        race_ids=race_ids,
        steps=_array(k["steps"], data, "<i8", (b, seq)),
        weights=_array(k["weights"], data, "<f4", (b,)),
        probabilities=_array(k["probabilities"], data, "<f8", (b,)),
    )
    steps = {str(name): _array(ref, data) for name, ref in header["steps"].items()}
    for name, value in steps.items():
        if value.shape[:2] != (b, seq):
            raise ProtocolError(f"step array {name} is {value.shape}, not ({b}, {seq}, ...)")
    height, width = int(header["height"]), int(header["width"])
    codec = dict(header["codec"])
    nstep = _read_nstep(header.get("nstep"), data, b, seq)
    frames = header["frames"]
    if frames["encoding"] == "raw":
        pixels = _array(frames, data, "|u1")
        if pixels.ndim != 5 or pixels.shape[:2] != (b, seq):
            raise ProtocolError(f"raw frames are {pixels.shape}, not ({b}, {seq}, h, w, c)")
        if nstep is not None and nstep.next_frames is not None:
            raise ProtocolError("bootstrap frames travel as stored frames only")
        return RawBatch(keys, pixels, steps, height, width, codec, nstep)
    if frames["encoding"] != "stored":
        raise ProtocolError(f"unknown frame encoding {frames['encoding']!r}")
    rows = _blobs(frames, data, b, seq)
    return EncodedBatch(
        keys=keys,
        frames=rows,
        height=height,
        width=width,
        steps=steps,
        codec=codec,
        shard_size=int(header.get("shard_size", 0)),
        nstep=nstep,
        formats={
            str(r): FrameFormat(dict(f["codec"]), int(f["height"]), int(f["width"]))
            for r, f in header.get("formats", {}).items()
        },
    )


def _blobs(ref: Mapping[str, Any], data: memoryview, b: int, seq: int) -> list[list[Blob]]:
    """B x L stored frames at ``ref["offset"]``, sizes ``ref["nbytes"]``, bounds checked
    (views into `data`: nothing is copied)."""
    sizes = ref["nbytes"]
    if len(sizes) != b or any(len(row) != seq for row in sizes):
        raise ProtocolError(f"frame sizes are not {b} x {seq}")
    offset = int(ref["offset"])
    rows: list[list[Blob]] = []
    for row in sizes:
        out: list[Blob] = []
        for size in row:
            size = int(size)
            if size < 0 or offset < 0 or offset + size > len(data):
                raise ProtocolError(f"frame bytes {offset}+{size} past the data section")
            out.append(data[offset : offset + size])
            offset += size
        rows.append(out)
    return rows


def _read_nstep(ref: Any, data: memoryview, b: int, seq: int) -> NStepArrays | None:
    """The optional ``nstep`` object of a header."""
    if ref is None:
        return None
    if not isinstance(ref, dict):
        raise ProtocolError("nstep is not a JSON object")
    nxt = ref.get("next_frames")
    return NStepArrays(
        returns=_array(ref["returns"], data, "<f4", (b, seq)),
        discount=_array(ref["discount"], data, "<f4", (b, seq)),
        next_steps=_array(ref["next_steps"], data, "<i8", (b, seq)),
        next_frames=None if nxt is None else _blobs(nxt, data, b, seq),
    )


def _array(
    ref: Mapping[str, Any],
    data: memoryview,
    dtype: str | None = None,
    shape: tuple[int, ...] | None = None,
) -> npt.NDArray[Any]:
    """A copy of one array of the data section, checked against its declaration."""
    dt = str(ref["dtype"])
    if dt not in DTYPES or (dtype is not None and dt != dtype):
        raise ProtocolError(f"array dtype {dt!r} is not allowed here")
    want_shape = tuple(int(n) for n in ref["shape"])
    if any(n < 0 for n in want_shape) or (shape is not None and want_shape != shape):
        raise ProtocolError(f"array shape {list(want_shape)} is not {shape}")
    offset, nbytes = int(ref["offset"]), int(ref["nbytes"])
    itemsize = np.dtype(dt).itemsize
    if nbytes != itemsize * int(np.prod(want_shape, dtype=np.int64)):
        raise ProtocolError(f"array of shape {list(want_shape)} {dt} cannot be {nbytes} bytes")
    if offset < 0 or offset + nbytes > len(data):
        raise ProtocolError(f"array bytes {offset}+{nbytes} past the data section")
    native = np.dtype(dt).newbyteorder("=")
    if nbytes == 0:
        return np.zeros(want_shape, dtype=native)
    out = np.frombuffer(data, dtype=np.dtype(dt), count=nbytes // itemsize, offset=offset)
    return out.reshape(want_shape).astype(native, copy=True)
