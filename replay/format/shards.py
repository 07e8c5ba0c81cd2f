"""Zarr shard bytes, assembled and parsed by hand.

zarr-python rewrites a whole shard on every partial write and loses frames when
two writers share one, so the writer builds each shard itself. The layout is
Zarr's ``sharding_indexed`` with ``index_location="end"``: the chunks' bytes one
after another, then the index, ``n`` little-endian ``(offset, nbytes)`` uint64
pairs (``2**64-1`` twice for a chunk that is absent), then the CRC32C of the
index as a little-endian uint32.

Each frame chunk itself ends with the CRC32C of its bytes (the ``crc32c`` codec
after ``jpeg`` in the shard's inner codecs), so a flipped bit in any frame is
detected when it is read, by zarr-python as well as by us.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import crc32c
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from replay.storage.base import ByteStorage

EMPTY = np.uint64(2**64 - 1)


def with_checksum(blob: bytes) -> bytes:
    """A chunk as stored: its bytes then their CRC32C (Zarr's ``crc32c`` codec)."""
    return blob + crc32c.crc32c(blob).to_bytes(4, "little")


def checked_body(chunk: memoryview) -> memoryview:
    """The bytes of a stored chunk (a view into a larger read) after checking its CRC32C,
    not copied; ValueError on a mismatch. The reader hands frames on so: copying a
    batch's JPEGs out of their reads took half its fetch."""
    body, checksum = chunk[:-4], chunk[-4:]
    if len(chunk) < 4 or crc32c.crc32c(body) != int.from_bytes(checksum, "little"):
        raise ValueError("frame checksum mismatch (the stored bytes are damaged)")
    return body


def without_checksum(chunk: bytes) -> bytes:
    """The bytes of a stored chunk after checking its CRC32C; ValueError on a mismatch."""
    return bytes(checked_body(memoryview(chunk)))


def index_nbytes(n_chunks: int) -> int:
    """Size of the index (with its checksum) at the end of a shard of `n_chunks`."""
    return 16 * n_chunks + 4


def build_shard(chunks: Sequence[bytes | None], n_chunks: int) -> bytes:
    """Shard bytes holding `chunks` as its first chunks (None: absent); the rest of
    `n_chunks` absent."""
    if len(chunks) > n_chunks:
        raise ValueError(f"{len(chunks)} chunks do not fit a shard of {n_chunks}")
    index = np.full((n_chunks, 2), EMPTY, dtype="<u8")
    offset = 0
    for i, chunk in enumerate(chunks):
        if chunk is not None:
            index[i] = (offset, len(chunk))
            offset += len(chunk)
    index_bytes = index.tobytes()
    checksum = crc32c.crc32c(index_bytes).to_bytes(4, "little")
    return b"".join([*(c for c in chunks if c is not None), index_bytes, checksum])


def parse_index(tail: bytes, n_chunks: int) -> npt.NDArray[np.uint64]:
    """The (n_chunks, 2) offset/nbytes index from a shard's last `index_nbytes` bytes.

    Raises ValueError when the checksum does not match (a torn or damaged shard).
    """
    if len(tail) != index_nbytes(n_chunks):
        raise ValueError(f"shard index is {len(tail)} bytes, expected {index_nbytes(n_chunks)}")
    body, checksum = tail[:-4], tail[-4:]
    if crc32c.crc32c(body) != int.from_bytes(checksum, "little"):
        raise ValueError("shard index checksum mismatch")
    return np.frombuffer(body, dtype="<u8").reshape(n_chunks, 2).astype(np.uint64)


def read_index(storage: ByteStorage, key: str, n_chunks: int) -> list[tuple[int, int] | None]:
    """(offset, nbytes) of each chunk of the shard at `key`, None for absent ones.

    The tail is read in one request with a negative offset, so it always comes from
    the same version of a shard that a writer may be replacing. Raises OSError,
    EOFError or ValueError (checksum, or an entry outside the shard) for a missing,
    short or damaged shard.
    """
    n = index_nbytes(n_chunks)
    (tail,) = storage.read_ranges(key, [(-n, n)])
    index = parse_index(tail, n_chunks)
    # Size after the tail: a writer only ever replaces a shard by a longer one, so the
    # bound is never tighter than the version the tail came from.
    limit = storage.size(key) - n
    out: list[tuple[int, int] | None] = []
    for slot, (off, nb) in enumerate(index.tolist()):
        if off == int(EMPTY):
            out.append(None)
        elif off + nb > limit:  # a crafted or damaged entry: never allocate for it
            raise ValueError(
                f"shard index entry {slot} ({nb} bytes at {off}) lies outside the "
                f"{limit} bytes of chunk data"
            )
        else:
            out.append((int(off), int(nb)))
    return out


#: How a stored frame chunk starts (JPEG's SOI marker, zstd's frame magic) and how a
#: JPEG ends (EOI, then the chunk's 4-byte CRC): the places `salvage` tries as chunk ends.
CHUNK_STARTS = (b"\xff\xd8\xff", b"\x28\xb5\x2f\xfd")
JPEG_END = b"\xff\xd9"


def salvage(data: bytes, n_chunks: int, wanted: int) -> list[bytes]:
    """The first `wanted` chunks of a shard of `n_chunks` whose index is lost, in order,
    checksum-checked.

    Chunks lie one after another from offset 0, each ending with its CRC32C, so a
    chunk ends where the CRC of the bytes before it matches, at a place where a new
    chunk or the index starts (or, for a JPEG, 4 bytes after its EOI marker).
    Scanning stops at the first chunk that cannot be delimited (its bytes are
    damaged): which slot the frames after it held would be a guess.
    """
    ends = {p for marker in CHUNK_STARTS for p in _find_all(data, marker)}
    ends |= {p + len(JPEG_END) + 4 for p in _find_all(data, JPEG_END)}
    ends |= {len(data), len(data) - index_nbytes(n_chunks)}
    candidates = sorted(e for e in ends if 4 < e <= len(data))
    chunks: list[bytes] = []
    start = 0
    while len(chunks) < wanted:
        end = _chunk_end(data, start, candidates)
        if end is None:
            break
        chunks.append(data[start:end])
        start = end
    return chunks


def _find_all(data: bytes, marker: bytes) -> list[int]:
    out, at = [], data.find(marker)
    while at >= 0:
        out.append(at)
        at = data.find(marker, at + 1)
    return out


def _chunk_end(data: bytes, start: int, ends: Sequence[int]) -> int | None:
    """The first candidate end after `start` where a chunk's CRC32C matches its body."""
    crc, done = 0, start
    for end in ends:
        if end - 4 <= start:
            continue
        crc = crc32c.crc32c(data[done : end - 4], crc)
        done = end - 4
        if int.from_bytes(data[end - 4 : end], "little") == crc:
            return end
    return None
