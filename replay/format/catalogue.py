"""The races of a store, as functions of its byte storage.

`replay.store.Store` is a front over these; capacity, recovery, verify and repair use
them directly, so none of them needs (or imports) `Store`:

    ids = race_ids(storage)                  # oldest first
    infos, damaged = scan(storage)           # readable races, {id: damage} of the others
    race = open_race(storage, ids[0], zarr_group(storage))
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import zarr
from zarr.storage import LocalStore

from replay.errors import CorruptDataError, RaceNotFoundError
from replay.format import spec as fmt
from replay.format.race import Race, RaceInfo, read_race_info
from replay.format.race_doc import check_not_live, metadata_key
from replay.storage.base import ByteStorage
from replay.storage.local import LocalStorage

if TYPE_CHECKING:
    from zarr.abc.store import Store as ZarrStore

    from replay.storage.base import ByteStorage
    from replay.storage.s3 import ObjectStorage

log = logging.getLogger(__name__)


def race_ids(storage: ByteStorage) -> list[str]:
    """Ids of all race folders, oldest first (ids sort by creation time)."""
    return [n for n in storage.list_dir(fmt.RACES) if fmt.is_race_id(n)]


def scan(storage: ByteStorage) -> tuple[list[RaceInfo], dict[str, str]]:
    """(metadata of every readable race, {race id: damage} of those that cannot be read).

    Races being created (no metadata yet) are in neither; damaged ones are logged.
    """
    out, damaged = [], {}
    for race_id in race_ids(storage):
        try:
            out.append(read_race_info(storage, race_id))
        except RaceNotFoundError:  # being created right now
            continue
        except CorruptDataError as e:
            log.warning("skipping race %s: %s", race_id, e)
            damaged[race_id] = str(e)
    return out, damaged


def folder_nbytes(storage: ByteStorage, race_id: str) -> int:
    """Bytes under a race's folder (whether or not its metadata is readable)."""
    return sum(size for _, size in storage.walk_sizes(fmt.race_key(race_id)))


def zarr_group(storage: LocalStorage | ObjectStorage) -> zarr.Group:
    """The store as a read-only zarr Group (what `Race.frames` indexes)."""
    zarr_store: ZarrStore = (
        LocalStore(storage.root, read_only=True)
        if isinstance(storage, LocalStorage)
        else storage.zarr_store()
    )
    return zarr.open_group(store=zarr_store, mode="r")


def open_race(storage: ByteStorage, race_id: str, root: zarr.Group) -> Race:
    """One race; `RaceNotFoundError` if the id is malformed or absent."""
    return Race(storage, read_race_info(storage, race_id), root)


def remove_race(storage: ByteStorage, race_id: str, *, now: float | None = None) -> None:
    """Delete a race: its group document first (it vanishes for readers), then its data.

    Refused (`RaceBusyError`) while its writer is alive. A race whose document is
    damaged or missing (orphan data) is removed as it is.
    """
    with contextlib.suppress(RaceNotFoundError, CorruptDataError):
        check_not_live(storage, race_id, now=now)
    storage.delete(metadata_key(race_id))
    storage.delete_tree(fmt.race_key(race_id))
