"""Integrity check of a store: every shard index checksum, every frame decodes.

    report = verify_store(store, progress=lambda n: ...)   # n = frames checked so far
    for race in report.races:
        race.race_id, race.frames_checked, race.damaged_shards, race.first_bad_step
    repair(store, race)     # truncate a damaged race to its last good step, and mark it

Frames are read and decoded in parallel (the JPEG decoder releases the GIL).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from replay import format as fmt
from replay.errors import CorruptDataError, RaceNotFoundError, ReplayError
from replay.race import Race, read_json

if TYPE_CHECKING:
    from replay.store import Store


@dataclass(frozen=True)
class RaceCheck:
    """The verdict on one race."""

    race_id: str
    length: int
    frames_checked: int
    damaged_shards: list[int] = field(default_factory=list)
    bad_steps: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def first_bad_step(self) -> int | None:
        """The first committed step that cannot be read (None if all are fine)."""
        return min(self.bad_steps) if self.bad_steps else None


@dataclass(frozen=True)
class StoreCheck:
    """The verdict on a store."""

    races: list[RaceCheck]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.races)

    @property
    def frames_checked(self) -> int:
        return sum(r.frames_checked for r in self.races)


def _check_shard(race: Race, shard: int) -> tuple[int, list[int], list[str]]:
    """Frames checked, bad steps and messages for one shard."""
    s = race.info.shard_size
    steps = range(shard * s, min((shard + 1) * s, race.length))
    try:
        index = race.shard_index(shard)
    except CorruptDataError as e:
        return len(steps), list(steps), [str(e)]
    bad, errors = [], []
    for step in steps:
        try:
            race.frame(step, index)
        except (ReplayError, OSError) as e:
            bad.append(step)
            errors.append(str(e))
    return len(steps), bad, errors


def verify_race(race: Race, pool: ThreadPoolExecutor, progress: Callable[[int], None]) -> RaceCheck:
    """Check one race's shards, frames and step arrays."""
    futures = [pool.submit(_check_shard, race, k) for k in range(race.info.n_shards)]
    checked, bad_steps, damaged, errors = 0, [], [], []
    for shard, future in enumerate(futures):
        n, bad, messages = future.result()
        checked += n
        progress(n)
        if bad:
            damaged.append(shard)
            bad_steps += bad
            errors += messages[:3]  # one shard can hold many bad frames: keep it readable
    for name in race.info.step_arrays:
        try:
            race.steps(name)
        except Exception as e:  # zarr raises many kinds for a damaged chunk
            errors.append(f"race {race.race_id}: step array {name!r} is damaged ({e})")
    return RaceCheck(race.race_id, race.length, checked, damaged, sorted(bad_steps), errors)


def verify_store(
    store: Store, progress: Callable[[int], None] = lambda n: None, threads: int = 4
) -> StoreCheck:
    """Check every committed frame of every race."""
    checks = []
    with ThreadPoolExecutor(threads) as pool:
        for race_id in store.race_ids():  # not races(): that skips damaged metadata
            try:
                race = store.race(race_id)
            except RaceNotFoundError:  # being created
                continue
            except ReplayError as e:
                checks.append(RaceCheck(race_id, 0, 0, errors=[str(e)]))
                continue
            checks.append(verify_race(race, pool, progress))
    return StoreCheck(checks)


def repair(store: Store, check: RaceCheck) -> int:
    """Truncate a damaged race to the steps before its first bad one; returns the new length.

    The race keeps its status and gains a ``repaired`` attribute saying what was cut.
    """
    first_bad = check.first_bad_step
    if first_bad is None:
        return check.length
    race_key = fmt.race_key(check.race_id)
    race = store.race(check.race_id)
    for name in [fmt.FRAMES, *race.info.step_arrays]:
        key = f"{race_key}/{name}/{fmt.METADATA}"
        doc = read_json(store.storage, key)
        doc["shape"][0] = min(doc["shape"][0], first_bad)
        store.storage.write(key, json.dumps(doc).encode())
    key = f"{race_key}/{fmt.METADATA}"
    doc = read_json(store.storage, key)
    doc["attributes"]["length"] = first_bad
    doc["attributes"]["repaired"] = {
        "at": fmt.utc_now(),
        "length_before": check.length,
        "damaged_shards": check.damaged_shards,
    }
    store.storage.write(key, json.dumps(doc).encode())
    return first_bad
