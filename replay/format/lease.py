"""Who may change a race: the writer's lease, and whether that writer is alive.

A writer holds a lease in its race's attributes, ``{"host", "pid", "started",
"heartbeat", "ttl"}``, refreshed at every commit and at least every 5 flush
intervals when idle. Whether that writer is alive is decided here, once:

- on the writer's own host, by its process: a pid that exists (and, where the
  lease records it, started when the writer's process did, so a reused pid is not
  mistaken for it) is alive *whatever its heartbeat* -- a writer paused by SIGSTOP,
  a debugger or a laptop suspend is not dead;
- elsewhere, by the heartbeat: older than its ttl is dead.

`replay.format.race_doc.update_race` applies the rule to every change of a race's
document.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any

from replay.format import spec as fmt

if TYPE_CHECKING:
    pass

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


def pid_alive(pid: int, started: str | None) -> bool:
    """True while process `pid` of this host lives and is the one that started at
    `started` (`process_started`; None: any process of that pid)."""
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
                return pid_alive(int(lease["pid"]), lease.get("started"))
            ttl = float(lease.get("ttl", fmt.lease_ttl(1.0)))
            return now - float(lease["heartbeat"]) <= ttl
        except (KeyError, TypeError, ValueError):
            pass  # a malformed lease counts as none
    # no lease: died before taking it, or taking it right now; judge by the start
    try:
        return now - fmt.parse_time(str(attrs["started_at"])) <= fmt.lease_ttl(1.0)
    except (KeyError, ValueError):
        return False
