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
    from replay.storage import ByteStorage

EMPTY = np.uint64(2**64 - 1)


def with_checksum(blob: bytes) -> bytes:
    """A chunk as stored: its bytes then their CRC32C (Zarr's ``crc32c`` codec)."""
    return blob + crc32c.crc32c(blob).to_bytes(4, "little")


def without_checksum(chunk: bytes) -> bytes:
    """The bytes of a stored chunk after checking its CRC32C; ValueError on a mismatch."""
    body, checksum = chunk[:-4], chunk[-4:]
    if len(chunk) < 4 or crc32c.crc32c(body) != int.from_bytes(checksum, "little"):
        raise ValueError("frame checksum mismatch (the stored bytes are damaged)")
    return body


def index_nbytes(n_chunks: int) -> int:
    """Size of the index (with its checksum) at the end of a shard of `n_chunks`."""
    return 16 * n_chunks + 4


def build_shard(chunks: Sequence[bytes], n_chunks: int) -> bytes:
    """Shard bytes holding `chunks` as its first chunks; the rest of `n_chunks` absent."""
    if len(chunks) > n_chunks:
        raise ValueError(f"{len(chunks)} chunks do not fit a shard of {n_chunks}")
    index = np.full((n_chunks, 2), EMPTY, dtype="<u8")
    offset = 0
    for i, chunk in enumerate(chunks):
        index[i] = (offset, len(chunk))
        offset += len(chunk)
    index_bytes = index.tobytes()
    checksum = crc32c.crc32c(index_bytes).to_bytes(4, "little")
    return b"".join([*chunks, index_bytes, checksum])


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
    EOFError or ValueError (checksum) for a missing, short or damaged shard.
    """
    n = index_nbytes(n_chunks)
    (tail,) = storage.read_ranges(key, [(-n, n)])
    index = parse_index(tail, n_chunks)
    return [None if off == int(EMPTY) else (int(off), int(nb)) for off, nb in index.tolist()]
