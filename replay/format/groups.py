"""The Zarr group documents of a store: written durably, and filled in where missing.

A store is a complete Zarr v3 hierarchy (docs/format.md): the root group, the
``races`` group and every race group each have a ``zarr.json``, so plain
zarr-python finds everything (``zarr.open_group(path)["races"]``,
``root.members()``). Stores written before version 0.x had no ``races/zarr.json``;
`ensure_groups` adds it when a store is opened for writing and by ``replay
recover``. Readers of `replay` never need it (they list the folder).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zarr
from zarr.storage import MemoryStore

from replay.errors import ReadOnlyStoreError
from replay.format import spec as fmt

if TYPE_CHECKING:
    from replay.storage.base import ByteStorage

log = logging.getLogger(__name__)


def write_group(
    storage: ByteStorage,
    prefix: str,
    attributes: dict[str, Any],
    build: Callable[[zarr.Group], None] = lambda group: None,
) -> None:
    """Create a Zarr group (and the arrays `build` adds to it) at `prefix`, durably.

    zarr-python writes the metadata documents (it is our compatibility oracle), but
    into memory: each document then goes through `storage.write` (fsynced and renamed
    into place locally, one PUT on S3), the group's own document last, so the group
    is listed only once its arrays are on disk.
    """
    documents: dict[str, Any] = {}
    build(zarr.open_group(store=MemoryStore(documents), mode="w", attributes=attributes))
    group_doc = fmt.METADATA
    for key in sorted(documents, key=lambda k: k == group_doc):
        storage.write(f"{prefix}/{key}" if prefix else key, documents[key].to_bytes())


def ensure_groups(storage: ByteStorage) -> list[str]:
    """Write the group documents of `fmt.GROUPS` that are missing; returns their keys.

    On storage that refuses writes (a read-only mount) nothing is written and a
    warning is logged: readers cope without the documents.
    """
    added: list[str] = []
    for group in fmt.GROUPS:
        key = f"{group}/{fmt.METADATA}"
        if storage.exists(key):
            continue
        try:
            write_group(storage, group, {})
        except (ReadOnlyStoreError, PermissionError) as e:  # PermissionError: S3 read-only keys
            log.warning("cannot add the missing group document %s: %s", key, e)
            return added
        added.append(key)
    return added
