"""The byte storage interface every store sits on: whole-object atomic writes, ranged reads.

Everything `replay` writes (shards, step chunks, metadata JSON) goes through a
`ByteStorage`, so the commit protocol is in one place and a backend only has to
implement this small interface: `replay.storage.local.LocalStorage` (disk) and
`replay.storage.s3.ObjectStorage` (S3-compatible object stores). One contract test
(tests/replay/storage/storage_contract.py) runs against both.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence
from typing import Protocol

from replay.errors import ReadOnlyStoreError

TEMP_PREFIX = ".tmp-"


class ByteStorage(Protocol):
    """What the store needs from a place to keep bytes (keys are '/'-separated)."""

    #: Seconds a writer retries a commit while the storage fails transiently
    #: (`replay.storage.outage`).
    outage_timeout: float
    #: Whether a batch's reads of several shards go out at once, on the reader's I/O
    #: threads (an object store: each read a round trip), rather than one after another
    #: in the caller (a disk: page-cache reads take microseconds, less than a thread
    #: hand-off).
    concurrent_reads: bool

    def read(self, key: str) -> bytes:
        """All bytes of `key`; FileNotFoundError if absent."""
        ...

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes at each (offset, nbytes); a negative offset counts from the end."""
        ...

    def write(self, key: str, data: bytes) -> None:
        """Replace `key` with `data` atomically and durably."""
        ...

    def size(self, key: str) -> int:
        """Size of `key` in bytes; FileNotFoundError if absent."""
        ...

    def exists(self, key: str) -> bool: ...

    def list_dir(self, prefix: str) -> list[str]:
        """Names directly under `prefix` (empty if none)."""
        ...

    def walk_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size) of every object under `prefix`."""
        ...

    def delete(self, key: str) -> None:
        """Remove one object (no error if absent)."""
        ...

    def delete_tree(self, prefix: str) -> None: ...


#: errnos that mean "this place cannot be written": a permission refused, an
#: immutable file, a read-only mount.
READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def is_read_only_error(error: BaseException) -> bool:
    """True for an OSError that says the storage refuses writes (EACCES, EPERM, EROFS)."""
    return isinstance(error, OSError) and error.errno in READ_ONLY_ERRNOS


def check_writable(root: object, read_only: bool, what: str) -> None:
    """ReadOnlyStoreError (naming the store and what was refused) for a read-only store."""
    if read_only:
        raise ReadOnlyStoreError(f"store {root} is open read-only; cannot {what}")
