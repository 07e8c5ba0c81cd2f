"""Recovery after crashes: dead writers' races and their temp files.

A race whose writer died stays ``recording`` with the ``length`` of its last
commit. Whether its writer is dead is decided from the lease the writer
refreshes (``{"host", "pid", "heartbeat", "ttl"}``): on the same host a pid that
no longer exists is dead at once; anywhere, a heartbeat older than its ttl is
dead. A live writer on another machine is therefore never mistaken for a dead
one as long as it keeps its lease fresh.

    report = recover(store)          # marks dead races aborted, deletes stale temp files
    report.aborted, report.temp_files_removed
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from replay import format as fmt
from replay.errors import RaceNotFoundError
from replay.race import RaceInfo, read_json, read_race_info
from replay.storage import TEMP_PREFIX

if TYPE_CHECKING:
    from replay.store import Store


@dataclass(frozen=True)
class RecoveryReport:
    """What `recover` found and did."""

    aborted: list[str] = field(default_factory=list)
    live: list[str] = field(default_factory=list)
    temp_files_removed: list[str] = field(default_factory=list)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def writer_is_dead(info: RaceInfo, now: float | None = None) -> bool:
    """True when the race is ``recording`` but its writer is gone (see module doc)."""
    if info.status != fmt.RECORDING:
        return False
    now = time.time() if now is None else now
    lease: dict[str, Any] | None = info.lease
    if not lease:  # died before taking its lease: judge by the start time
        started = fmt.parse_time(info.started_at)
        return now - started > fmt.lease_ttl(1.0)
    if lease.get("host") == socket.gethostname() and not _pid_alive(int(lease["pid"])):
        return True
    return bool(now - float(lease["heartbeat"]) > float(lease.get("ttl", fmt.lease_ttl(1.0))))


def recover(store: Store, *, dry_run: bool = False, now: float | None = None) -> RecoveryReport:
    """Mark races of dead writers ``aborted`` (keeping their committed length) and
    delete temp files that no live writer can still be renaming."""
    report = RecoveryReport()
    dead_or_done: set[str] = set()
    for race_id in store.race_ids():
        try:
            info = read_race_info(store.storage, race_id)
        except RaceNotFoundError:
            continue
        if info.status != fmt.RECORDING:
            dead_or_done.add(race_id)
        elif writer_is_dead(info, now):
            dead_or_done.add(race_id)
            report.aborted.append(race_id)
            if not dry_run:
                _mark_aborted(store, race_id)
        else:
            report.live.append(race_id)
    for key, _ in store.storage.walk_sizes(fmt.RACES):
        parts = key.split("/")
        if parts[-1].startswith(TEMP_PREFIX) and len(parts) > 1 and parts[1] in dead_or_done:
            report.temp_files_removed.append(key)
            if not dry_run:
                store.storage.delete(key)
    return report


def _mark_aborted(store: Store, race_id: str) -> None:
    key = f"{fmt.race_key(race_id)}/{fmt.METADATA}"
    doc = read_json(store.storage, key)
    attrs = doc["attributes"]
    attrs.update(status=fmt.ABORTED, ended_at=fmt.utc_now(), lease=None, recovered=True)
    store.storage.write(key, json.dumps(doc).encode())
