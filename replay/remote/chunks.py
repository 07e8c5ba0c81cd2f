"""The binary chunk format of ``POST /v1/races/{race}/chunks``: ``application/vnd.replay.chunk.v1``.

A chunk carries consecutive steps of one race, from `first_step` on: the encoded
frames (JPEG or zstd bytes, as the race stores them, without the stored CRC32C)
and the step arrays. The framing is the batch format's (`replay.remote.protocol`),
with its own magic; docs/protocol.md ("Recording over HTTP") is the full
specification, enough for a driver in any language::

    offset   size   field
    0        4      magic  b"RPLC"
    4        4      header length N, uint32 little-endian
    8        N      header, UTF-8 JSON object (below)
    8+N      pad    zero bytes up to a multiple of 8: the data section starts at D
    D        ...    data section, `data_nbytes` long

    {"version": 1, "first_step": 120, "n": 3, "data_nbytes": ...,
     "frames": {"offset": 0, "nbytes": [51234, 50987, 51003]},
     "steps": {"reward": {"dtype": "<f4", "shape": [3], "offset": 155224, "nbytes": 12}, ...}}

The frames lie one after another from ``frames.offset``; each step array is
(n, *per-step shape) in its race's dtype, little-endian, C order, 8-byte aligned.
Step arrays left out are zeros (``t_ns``: the time the service received the chunk).

    body = b"".join(pack(Chunk(first_step=0, frames=blobs, steps={"reward": r})))
    chunk = unpack(body)      # ProtocolError for anything malformed; never reads out of bounds
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Final

import numpy.typing as npt

from replay.remote.protocol import ALIGN, PREFIX, ProtocolError, _array, _Layout, read_header

MEDIA_TYPE: Final = "application/vnd.replay.chunk.v1"
MAGIC: Final = b"RPLC"
VERSION: Final = 1
#: Most frames one chunk may carry (a service refuses more).
MAX_FRAMES: Final = 4096
#: Response header of a 409 answer to a chunk that leaves a gap: the step the race expects.
EXPECTED_STEP_HEADER: Final = "Replay-Expected-Step"


@dataclass(frozen=True)
class Chunk:
    """Steps ``first_step .. first_step + n - 1`` of one race: encoded frames and step arrays."""

    first_step: int
    frames: list[bytes]
    steps: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Steps in the chunk."""
        return len(self.frames)


def pack(chunk: Chunk) -> list[bytes | memoryview]:
    """The message of `chunk`, as buffers to send one after another."""
    data = _Layout()
    offset = data.size
    for blob in chunk.frames:
        data.add(blob, align=False)
    steps = {name: data.array(values) for name, values in chunk.steps.items()}
    header = {
        "version": VERSION,
        "first_step": chunk.first_step,
        "n": chunk.n,
        "frames": {"offset": offset, "nbytes": [len(b) for b in chunk.frames]},
        "steps": steps,
        "data_nbytes": data.size,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    pad = b"\0" * (-(PREFIX.size + len(head)) % ALIGN)
    return [PREFIX.pack(MAGIC, len(head)), head, pad, *data.parts]


def unpack(body: bytes | bytearray | memoryview) -> Chunk:
    """Read a chunk message; `ProtocolError` (naming what is wrong) for anything malformed:
    magic, version, header, lengths that do not add up, arrays whose first axis is not n."""
    view, header, start = read_header(body, MAGIC, "chunk", VERSION)
    try:
        return _read(header, view, start)
    except (KeyError, TypeError, ValueError, struct.error) as e:
        if isinstance(e, ProtocolError):
            raise
        raise ProtocolError(f"malformed chunk header: {type(e).__name__}: {e}") from e


def _read(header: dict[str, Any], view: memoryview, start: int) -> Chunk:
    data_nbytes = int(header["data_nbytes"])
    if data_nbytes < 0 or start + data_nbytes != len(view):
        raise ProtocolError(
            f"chunk is {len(view)} bytes; its header says {start + data_nbytes} (cut short?)"
        )
    data = view[start:]
    first, n = int(header["first_step"]), int(header["n"])
    if first < 0:
        raise ProtocolError(f"first_step must be >= 0, got {first}")
    if not 0 <= n <= MAX_FRAMES:
        raise ProtocolError(f"n must be in 0..{MAX_FRAMES}, got {n}")
    sizes = [int(s) for s in header["frames"]["nbytes"]]
    if len(sizes) != n:
        raise ProtocolError(f"{len(sizes)} frame lengths for n={n} frames")
    offset = int(header["frames"]["offset"])
    frames = []
    for i, size in enumerate(sizes):
        if size <= 0 or offset < 0 or offset + size > len(data):
            raise ProtocolError(f"frame {i}: {size} bytes at {offset} lie outside the data section")
        frames.append(bytes(data[offset : offset + size]))
        offset += size
    steps = {}
    for name, ref in dict(header.get("steps", {})).items():
        values = _array(ref, data)
        if values.ndim == 0 or values.shape[0] != n:
            raise ProtocolError(
                f"step array {name!r} has shape {list(values.shape)}, not (n={n}, ...)"
            )
        steps[str(name)] = values
    return Chunk(first, frames, steps)
