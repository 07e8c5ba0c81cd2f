"""Who may change a race: the writer's lease, and the one read-change-write of a
race's ``zarr.json`` that every module uses.

A writer holds a lease in its race's attributes, ``{"host", "pid", "started",
"heartbeat", "ttl"}``, refreshed at every commit and at least every 5 flush
intervals when idle. Whether that writer is alive is decided here, once:

- on the writer's own host, by its process: a pid that exists (and, where the
  lease records it, started when the writer's process did, so a reused pid is not
  mistaken for it) is alive *whatever its heartbeat* -- a writer paused by SIGSTOP,
  a debugger or a laptop suspend is not dead;
- elsewhere, by the heartbeat: older than its ttl is dead.

`update_race` is the only way `replay` rewrites a race's ``zarr.json``:

    update_race(storage, race_id, lambda attrs: attrs.update(status="aborted"))
    # maintenance (recover, repair, prune): refused with RaceBusyError while the writer lives

    update_race(storage, race_id, change, writer=lease)
    # the writer's own update: refused with RaceTakenOverError once the race was
    # aborted or removed by someone who judged the writer dead, so a writer that
    # wakes up stops instead of resurrecting its race

`remove_race` deletes a race under the same rule. Between the read and the write
another process may write too (a file system has no compare-and-swap); the rule
closes every window but that one, which is milliseconds against a lease ttl of 30 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from replay import format as fmt
from replay.errors import (
    CorruptDataError,
    RaceBusyError,
    RaceNotFoundError,
    RaceTakenOverError,
)

if TYPE_CHECKING:
    from replay.storage import ByteStorage

Attrs = dict[str, Any]


def process_started(pid: int) -> str | None:
    """When process `pid` started (Linux: clock ticks since boot), or None if unknown.

    Stored in the lease so that a pid reused by another process after the writer
    died is not taken for the writer.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def new_lease(flush_interval: float) -> dict[str, Any]:
    """The lease a writer in this process holds, with a fresh heartbeat."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": process_started(os.getpid()),
        "heartbeat": time.time(),
        "ttl": fmt.lease_ttl(flush_interval),
    }


def _pid_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    if started is None:
        return True
    now = process_started(pid)
    return now is None or now == started


def writer_alive(attrs: Attrs, now: float | None = None) -> bool:
    """True while a ``recording`` race's writer is alive (see the module doc)."""
    if attrs.get("status") != fmt.RECORDING:
        return False
    now = time.time() if now is None else now
    lease = attrs.get("lease")
    if isinstance(lease, dict):
        try:
            if lease.get("host") == socket.gethostname():
                return _pid_alive(int(lease["pid"]), lease.get("started"))
            ttl = float(lease.get("ttl", fmt.lease_ttl(1.0)))
            return now - float(lease["heartbeat"]) <= ttl
        except (KeyError, TypeError, ValueError):
            pass  # a malformed lease counts as none
    # no lease: died before taking it, or taking it right now; judge by the start
    try:
        return now - fmt.parse_time(str(attrs["started_at"])) <= fmt.lease_ttl(1.0)
    except (KeyError, ValueError):
        return False


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


def remove_race(storage: ByteStorage, race_id: str, *, now: float | None = None) -> None:
    """Delete a race: its group document first (it vanishes for readers), then its data.

    Refused (`RaceBusyError`) while its writer is alive. A race whose document is
    damaged or missing (orphan data) is removed as it is.
    """
    with contextlib.suppress(RaceNotFoundError, CorruptDataError):
        _read_for_update(storage, race_id, None, now)
    storage.delete(metadata_key(race_id))
    storage.delete_tree(fmt.race_key(race_id))


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
