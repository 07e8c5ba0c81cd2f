"""Capacity: keep a store under a byte budget and/or a maximum age.

Eviction removes whole races, oldest first (race ids sort by time), and never a
race that a live writer is still recording (`replay.format.lease.remove_race` checks
again as it removes). A race disappears atomically for readers: its group
metadata goes first (it is no longer listed, and samplers drop it on their next
refresh), then its data. Orphan data -- a race folder whose ``zarr.json`` is gone
(`replay.maintenance.recovery.orphan_races`) -- is always in the plan, first.

    store.set_capacity(max_bytes=50e9, max_age=7 * 86400)   # saved in the store
    plan = plan_eviction(store.storage)  # what would go, and why (a dry run)
    evict(store.storage, plan)           # enforce(storage) does both
                                         # (store.enforce_capacity(), and writers)
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from replay.errors import RaceBusyError
from replay.format import catalogue
from replay.format import spec as fmt
from replay.format.catalogue import remove_race
from replay.format.race import read_json
from replay.maintenance.recovery import orphan_races, writer_is_dead

if TYPE_CHECKING:
    from replay.storage.base import ByteStorage

log = logging.getLogger(__name__)
CAPACITY_ATTR = "capacity"
# units are required: a bare number once meant bytes or seconds, and `--max-age 3` (3 s)
# removed a whole store
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(B|[KMGT]i?B?)\s*$", re.IGNORECASE)
_AGE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Capacity:
    """A store's budget: total bytes and/or seconds since a race ended (None: no limit)."""

    max_bytes: int | None = None
    max_age: float | None = None

    def __post_init__(self) -> None:
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError(f"max_age must be positive seconds, got {self.max_age}")

    @property
    def unlimited(self) -> bool:
        return self.max_bytes is None and self.max_age is None


@dataclass(frozen=True)
class Eviction:
    """One race to remove, and why."""

    race_id: str
    nbytes: int
    reason: str


@dataclass(frozen=True)
class EvictionPlan:
    """What `evict` would remove, with the store's size before and after."""

    evictions: list[Eviction] = field(default_factory=list)
    bytes_before: int = 0

    @property
    def bytes_after(self) -> int:
        return self.bytes_before - sum(e.nbytes for e in self.evictions)


def parse_size(text: str) -> int:
    """'50G', '500MB', '1.5TiB', '1000B' -> bytes; a bare number is refused (units required)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(
            f"not a size: {text!r} (a number with a unit: 1000B, 500MB, 50GB, 2GiB, 1.5TiB)"
        )
    unit = m.group(2).upper().removesuffix("B")
    power = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}[unit.rstrip("I")]
    base = 1024 if unit.endswith("I") else 1000
    return int(float(m.group(1)) * base**power)


def parse_age(text: str) -> float:
    """'7d', '12h', '30m', '90s', '2w' -> seconds; a bare number is refused (units required)."""
    m = _AGE.match(text)
    if not m:
        raise ValueError(f"not an age: {text!r} (a number with a unit: 90s, 30m, 12h, 14d, 2w)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2).lower()]
    return float(m.group(1)) * unit


def read_capacity(storage: ByteStorage) -> Capacity:
    """The capacity saved in the store (unlimited if none)."""
    attrs = read_json(storage, fmt.METADATA).get("attributes", {})
    saved = attrs.get(CAPACITY_ATTR) or {}
    return Capacity(saved.get("max_bytes"), saved.get("max_age"))


def save_capacity(storage: ByteStorage, capacity: Capacity) -> None:
    """Save the capacity in the store's root attributes (writers then enforce it)."""
    doc = read_json(storage, fmt.METADATA)
    doc.setdefault("attributes", {})[CAPACITY_ATTR] = {
        "max_bytes": capacity.max_bytes,
        "max_age": capacity.max_age,
    }
    storage.write(fmt.METADATA, json.dumps(doc).encode())


def plan_eviction(
    storage: ByteStorage, capacity: Capacity | None = None, now: float | None = None
) -> EvictionPlan:
    """The oldest finished races to remove so the store fits `capacity` (default: saved)."""
    capacity = read_capacity(storage) if capacity is None else capacity
    now = time.time() if now is None else now
    races = catalogue.scan(storage)[0]
    sizes = {r.race_id: catalogue.folder_nbytes(storage, r.race_id) for r in races}
    orphans = [(o, catalogue.folder_nbytes(storage, o)) for o in orphan_races(storage, now)]
    total = sum(sizes.values()) + sum(n for _, n in orphans)
    evictions = [Eviction(o, n, "orphan data (its zarr.json is gone)") for o, n in orphans]
    remaining = total - sum(n for _, n in orphans)
    if capacity.unlimited:
        return EvictionPlan(evictions, total)
    for info in races:  # oldest first
        if info.status == fmt.RECORDING and not writer_is_dead(info, now):
            continue  # a live writer's race is never evicted
        ended = fmt.parse_time(info.ended_at or info.started_at)
        if capacity.max_age is not None and now - ended > capacity.max_age:
            reason = f"older than {capacity.max_age:.0f} s"
        elif capacity.max_bytes is not None and remaining > capacity.max_bytes:
            reason = f"store over {capacity.max_bytes} bytes"
        else:
            continue
        evictions.append(Eviction(info.race_id, sizes[info.race_id], reason))
        remaining -= sizes[info.race_id]
    return EvictionPlan(evictions, total)


def evict(storage: ByteStorage, plan: EvictionPlan) -> list[Eviction]:
    """Remove the planned races (metadata first: they vanish for readers, then data);
    returns the evictions done. A race whose writer came back to life is skipped."""
    done = []
    for eviction in plan.evictions:
        try:
            remove_race(storage, eviction.race_id)
        except RaceBusyError as e:
            log.warning("not evicting %s: %s", eviction.race_id, e)
            continue
        done.append(eviction)
    return done


def enforce(storage: ByteStorage) -> EvictionPlan:
    """Evict the oldest finished races that exceed the saved capacity; returns the plan.

    A function of the storage alone, so a writer (in the writer process too) enforces
    the store's capacity as it commits shards without opening a `Store`.
    """
    plan = plan_eviction(storage)
    evict(storage, plan)
    return plan
