"""Which writer a race gets: the kind its settings ask for, with a ring that fits.

`start_writer` resolves the settings (`replay.write.settings`) and builds a
`ThreadWriter` or a `ProcessWriter`. A process writer's ring lives in shared memory
(`replay.write.ring`), and containers give little of it: Docker and Kubernetes mount
a 64 MiB /dev/shm by default. When the ring the writer sized for the race does not
fit there, the race is still recorded, with one warning (once per process) that says
what was needed, what is free and the fix:

- with a smaller ring, if at least `MIN_SLOTS` slots fit (the driver may wait for
  the encoder a little sooner);
- else, with ``writer="auto"``, by the thread writer, whose ring is in the driver's
  own memory.

A ring whose size was asked for (``queue_size``), or an explicit ``writer="process"``
that cannot have `MIN_SLOTS`, is not changed behind the caller's back: `new_race`
raises `MemoryError` with the same line.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from replay.write.process_writer import ProcessWriter
from replay.write.ring import SHM_FIX, Room, step_table
from replay.write.settings import MIN_SLOTS
from replay.write.thread_writer import ThreadWriter

if TYPE_CHECKING:
    from pathlib import Path

    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec
    from replay.write.settings import WriterSettings
    from replay.write.sink import Destination
    from replay.write.writer import Writer

log = logging.getLogger(__name__)
_warned: set[tuple[Path, str]] = set()  # (shared-memory folder, writer kind) warned about


def start_writer(
    destination: Destination, info: RaceInfo, specs: list[StepSpec], settings: WriterSettings
) -> Writer:
    """The writer of a race just created (its group written, in a store or by a service):
    a thread or a process, whose frames go to `destination` (`replay.write.sink`)."""
    chosen = settings.resolved()
    if chosen.writer == "process":
        chosen = fitted(chosen, info, specs, auto=settings.writer == "auto")
    if chosen.writer == "thread":
        return ThreadWriter(destination, info, specs, chosen)
    return ProcessWriter(destination, info, specs, chosen)


def fitted(
    settings: WriterSettings, info: RaceInfo, specs: list[StepSpec], *, auto: bool
) -> WriterSettings:
    """Process-writer `settings` whose ring fits in shared memory now: the same, a
    smaller ring, or (`auto`) the thread writer; one warning when they change."""
    slots, shape, steps = settings.slots(info.fps), (info.height, info.width, 3), step_table(specs)
    room = Room.now()
    shortfall = room.shortfall(slots, shape, steps)
    if shortfall is None or settings.queue_size is not None:
        return settings  # it fits, or the caller chose the size: FrameRing.create says
    fewer = room.most_slots(shape, steps, slots)
    if fewer >= MIN_SLOTS:
        chosen = dataclasses.replace(settings, queue_size=fewer)
        instead = f"a ring of {fewer} frames instead"
    elif auto:
        chosen = dataclasses.replace(settings, writer="thread")
        instead = "the thread writer instead (its ring in this process's memory)"
    else:
        return settings
    if (room.where, chosen.writer) not in _warned:  # a recorder of 25 races says it once
        _warned.add((room.where, chosen.writer))
        log.warning("replay: %s; recording with %s. Fix: %s", shortfall, instead, SHM_FIX)
    return chosen
