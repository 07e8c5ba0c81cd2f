"""The one read-change-write of a race's ``zarr.json``, which every module uses.

`update_race` is the only way `replay` rewrites a race's ``zarr.json``, and it holds
the rule about live writers (`replay.format.lease.writer_alive`):

    update_race(storage, race_id, lambda attrs: attrs.update(status="aborted"))
    # maintenance (recover, repair, prune): refused with RaceBusyError while the writer lives

    update_race(storage, race_id, change, writer=lease)
    # the writer's own update: refused with RaceTakenOverError once the race was
    # aborted or removed by someone who judged the writer dead, so a writer that
    # wakes up stops instead of resurrecting its race

Between the read and the write another process may write too (a file system has no
compare-and-swap); the rule closes every window but that one, which is milliseconds
against a lease ttl of 30 s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from replay.errors import (
    CorruptDataError,
    RaceBusyError,
    RaceNotFoundError,
    RaceTakenOverError,
)
from replay.format import spec as fmt
from replay.format.lease import Attrs, writer_alive

if TYPE_CHECKING:
    from replay.storage.base import ByteStorage


def metadata_key(race_id: str) -> str:
    """Key of a race's group document."""
    return f"{fmt.race_key(race_id)}/{fmt.METADATA}"


def read_race_doc(storage: ByteStorage, race_id: str) -> dict[str, Any]:
    """A race's group document; RaceNotFoundError if absent, CorruptDataError if torn."""
    key = metadata_key(race_id)
    try:
        doc = json.loads(storage.read(key))
    except FileNotFoundError:
        raise RaceNotFoundError(
            f"no race {race_id} in {getattr(storage, 'root', storage)}"
        ) from None
    except ValueError as e:
        raise CorruptDataError(
            f"race {race_id}: metadata {key} is damaged ({e})", race_id=race_id, shard=-1
        ) from e
    if not isinstance(doc, dict) or not isinstance(doc.get("attributes"), dict):
        raise CorruptDataError(
            f"race {race_id}: metadata {key} is damaged (it is not a JSON object with attributes)",
            race_id=race_id,
            shard=-1,
        )
    return doc


def update_race(
    storage: ByteStorage,
    race_id: str,
    change: Callable[[Attrs], None],
    *,
    writer: dict[str, Any] | None = None,
    now: float | None = None,
) -> Attrs:
    """Read a race's attributes, apply `change` to them, write them back; returns them.

    Without `writer` (maintenance), a race whose writer is alive is refused
    (`RaceBusyError`). With `writer` (the writer's own lease), the race must still
    exist and be ``recording`` (else `RaceTakenOverError`); the lease is stored
    with a fresh heartbeat unless `change` sets ``lease`` to None.
    """
    doc = _read_for_update(storage, race_id, writer, now)
    attrs: Attrs = doc["attributes"]
    if writer is not None:
        attrs["lease"] = {**writer, "heartbeat": time.time()}
    change(attrs)
    storage.write(metadata_key(race_id), json.dumps(doc, allow_nan=False).encode())
    return attrs


def check_owner(storage: ByteStorage, race_id: str, writer: dict[str, Any]) -> None:
    """RaceTakenOverError unless the race still exists and is ``recording`` (for a writer
    about to commit: it must not recreate a removed race's files)."""
    _read_for_update(storage, race_id, writer, None)


def check_not_live(storage: ByteStorage, race_id: str, *, now: float | None = None) -> None:
    """RaceBusyError while the race's writer is alive (before a repair rewrites its data)."""
    _read_for_update(storage, race_id, None, now)


def _read_for_update(
    storage: ByteStorage, race_id: str, writer: dict[str, Any] | None, now: float | None
) -> dict[str, Any]:
    try:
        doc = read_race_doc(storage, race_id)
    except RaceNotFoundError:
        if writer is None:
            raise
        raise RaceTakenOverError(
            f"race {race_id} was removed (by `replay prune` or capacity eviction, which "
            "judged this writer dead); the writer stopped without recreating it"
        ) from None
    attrs = doc["attributes"]
    if writer is not None:
        if attrs.get("status") != fmt.RECORDING:
            raise RaceTakenOverError(
                f"race {race_id} was marked {attrs.get('status')!r} by another process "
                "(`replay recover` judged this writer dead); the writer stopped without "
                "writing to it again"
            )
    elif writer_alive(attrs, now):
        lease = attrs.get("lease") or {}
        raise RaceBusyError(
            f"race {race_id} is being recorded by a live writer (host {lease.get('host')!r}, "
            f"pid {lease.get('pid')}); it is left alone"
        )
    return doc
