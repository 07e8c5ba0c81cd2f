"""Recovery after crashes: dead writers' races, their temp files, the store's documents.

A race whose writer died stays ``recording`` with the ``length`` of its last
commit. Whether its writer is dead is decided by `replay.format.lease`: on the writer's
host by its process (a paused writer is alive), elsewhere by its heartbeat.

    report = recover(store.storage)  # or store.recover(): dead races aborted, temp files gone
    report.aborted, report.live, report.damaged, report.orphans, report.temp_files_removed

`recover` also adds the group documents of ``races/`` that stores written by older
versions lack (docs/format.md), and never stops on one damaged race: a race whose
metadata cannot be read is listed in `damaged` (``replay verify`` names the damage),
and a race folder without metadata (its ``zarr.json`` deleted) in `orphans`
(``replay prune`` removes them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ulid import ULID

from replay.errors import CorruptDataError, RaceBusyError, RaceNotFoundError
from replay.format import catalogue
from replay.format import spec as fmt
from replay.format.groups import ensure_groups
from replay.format.lease import writer_alive
from replay.format.race import RaceInfo, read_race_info
from replay.format.race_doc import metadata_key, update_race
from replay.storage.base import TEMP_PREFIX

if TYPE_CHECKING:
    from replay.storage.base import ByteStorage


@dataclass(frozen=True)
class RecoveryReport:
    """What `recover` found and did; `damaged` maps race id to what is wrong."""

    aborted: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    temp_files_removed: list[str] = field(default_factory=list)
    damaged: dict[str, str] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)


def writer_is_dead(info: RaceInfo, now: float | None = None) -> bool:
    """True when the race is ``recording`` but its writer is gone (`replay.format.lease`)."""
    attrs = {"status": info.status, "lease": info.lease, "started_at": info.started_at}
    return info.status == fmt.RECORDING and not writer_alive(attrs, now)


def orphan_races(storage: ByteStorage, now: float | None = None) -> list[str]:
    """Race folders without a group document, created longer ago than a writer needs to
    write one: their ``zarr.json`` was deleted or never written (a crash mid-creation)."""
    now = time.time() if now is None else now
    return [
        race_id
        for race_id in storage.list_dir(fmt.RACES)
        if fmt.is_race_id(race_id)
        and now - ULID.from_str(race_id).timestamp > fmt.lease_ttl(1.0)
        and not _has_document(storage, race_id)
    ]


def _has_document(storage: ByteStorage, race_id: str) -> bool:
    try:
        return storage.exists(metadata_key(race_id))
    except OSError:  # there but unreadable to us (permissions, EIO): damaged, not orphan
        return True


def recover(
    storage: ByteStorage, *, dry_run: bool = False, now: float | None = None
) -> RecoveryReport:
    """Mark races of dead writers ``aborted`` (keeping their committed length), delete
    temp files that no live writer can still be renaming, and add missing group documents."""
    report = RecoveryReport()
    if not dry_run:
        ensure_groups(storage)
    dead_or_done: set[str] = set(orphan_races(storage, now))
    report.orphans.extend(sorted(dead_or_done))
    for race_id in catalogue.race_ids(storage):
        try:
            info = read_race_info(storage, race_id)
        except RaceNotFoundError:
            continue
        except CorruptDataError as e:
            report.damaged[race_id] = str(e)
            continue
        if info.status != fmt.RECORDING:
            dead_or_done.add(race_id)
        elif writer_is_dead(info, now):
            try:
                if not dry_run:
                    update_race(storage, race_id, _mark_aborted, now=now)
            except RaceBusyError:  # it came back to life since we read it
                report.live.append(race_id)
                continue
            dead_or_done.add(race_id)
            report.aborted.append(race_id)
        else:
            report.live.append(race_id)
    for key, _ in storage.walk_sizes(fmt.RACES):
        parts = key.split("/")
        if parts[-1].startswith(TEMP_PREFIX) and len(parts) > 1 and parts[1] in dead_or_done:
            report.temp_files_removed.append(key)
            if not dry_run:
                storage.delete(key)
    return report


def _mark_aborted(attrs: dict[str, object]) -> None:
    attrs.update(status=fmt.ABORTED, ended_at=fmt.utc_now(), lease=None, recovered=True)
