"""Integrity check of a store: every shard index, every frame, every step chunk, every
array document, and every race folder's metadata.

    report = store.verify(progress=lambda n: ...)   # n = frames checked so far
    for race in report.races:
        race.race_id, race.frames_checked, race.damaged_shards, race.bad_steps,
        race.damaged_arrays, race.problem
    store.repair(race)     # keep every intact frame, drop the damaged ones

Frames are read and decoded in parallel (the JPEG decoder releases the GIL). Steps a
repair already removed (``lost_steps``, docs/format.md) are not reported again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from replay.errors import CorruptDataError, RaceNotFoundError, ReplayError
from replay.format import catalogue
from replay.format import spec as fmt
from replay.format.race import Race, read_step_chunk
from replay.maintenance.recovery import orphan_races

if TYPE_CHECKING:
    import zarr

    from replay.storage.base import ByteStorage
    from replay.storage.local import LocalStorage
    from replay.storage.s3 import ObjectStorage

#: What is wrong with a race as a whole: its metadata cannot be read, or its folder has
#: data but no metadata at all.
Problem = Literal["metadata", "orphan"]
#: The chunk number of `RaceCheck.damaged_arrays` that stands for the array's zarr.json.
DOCUMENT = -1


@dataclass(frozen=True)
class RaceCheck:
    """The verdict on one race.

    `damaged_shards` / `bad_steps`: frames; `damaged_arrays`: ``{array: [chunk, ...]}``
    of step-array chunks that do not decode (`DOCUMENT` for a torn array zarr.json,
    the frames' included); `problem`: the race's metadata is unreadable or missing.
    """

    race_id: str
    length: int
    frames_checked: int
    damaged_shards: list[int] = field(default_factory=list)
    bad_steps: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    damaged_arrays: dict[str, list[int]] = field(default_factory=dict)
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def first_bad_step(self) -> int | None:
        """The first committed step whose frame cannot be read (None if all are fine)."""
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
    steps = [
        step
        for step in range(shard * s, min((shard + 1) * s, race.length))
        if not race.info.is_lost(step)
    ]
    try:
        index = race.shard_index(shard) if steps else []
    except CorruptDataError as e:
        return len(steps), steps, [str(e)]
    bad, errors = [], []
    for step in steps:
        try:
            race.frame(step, index)
        except (ReplayError, OSError) as e:
            bad.append(step)
            errors.append(str(e))
    return len(steps), bad, errors


def _check_documents(storage: ByteStorage, race: Race) -> tuple[dict[str, list[int]], list[str]]:
    """Array zarr.json documents that do not parse or are shorter than the race."""
    damaged: dict[str, list[int]] = {}
    errors = []
    for name in [fmt.FRAMES, *race.info.step_arrays]:
        key = f"{fmt.race_key(race.race_id)}/{name}/{fmt.METADATA}"
        try:
            doc = json.loads(storage.read(key))
            if doc.get("node_type") != "array" or int(doc["shape"][0]) < race.length:
                raise ValueError(f"not an array of {race.length} steps")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            damaged[name] = [DOCUMENT]
            errors.append(f"race {race.race_id}: array document {key} is damaged ({e})")
    return damaged, errors


def _check_steps(storage: ByteStorage, race: Race, damaged: dict[str, list[int]]) -> list[str]:
    """Add the step-array chunks that do not decode to `damaged`; their messages."""
    errors = []
    for name in race.info.step_arrays:
        for shard in range(race.info.n_shards):
            try:
                read_step_chunk(storage, race.info, name, shard)
            except CorruptDataError as e:
                damaged.setdefault(name, []).append(shard)
                errors.append(str(e))
    return errors


def verify_race(
    storage: ByteStorage, race: Race, pool: ThreadPoolExecutor, progress: Callable[[int], None]
) -> RaceCheck:
    """Check one race's shards, frames, step chunks and array documents."""
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
    arrays, doc_errors = _check_documents(storage, race)
    errors += doc_errors + _check_steps(storage, race, arrays)
    return RaceCheck(race.race_id, race.length, checked, damaged, sorted(bad_steps), errors, arrays)


def verify_store(
    storage: LocalStorage | ObjectStorage,
    progress: Callable[[int], None] = lambda n: None,
    threads: int = 4,
) -> StoreCheck:
    """Check every committed frame of every race, and every race folder."""
    checks = []
    orphans = set(orphan_races(storage))
    root: zarr.Group | None = None
    with ThreadPoolExecutor(threads) as pool:
        for race_id in catalogue.race_ids(storage):  # not races(): that skips damaged metadata
            if race_id in orphans:
                message = (
                    f"race {race_id}: orphan data (races/{race_id} has no {fmt.METADATA}); "
                    "`replay prune` removes it"
                )
                checks.append(RaceCheck(race_id, 0, 0, errors=[message], problem="orphan"))
                continue
            try:
                root = catalogue.zarr_group(storage) if root is None else root
                race = catalogue.open_race(storage, race_id, root)
            except RaceNotFoundError:  # being created
                continue
            except ReplayError as e:
                checks.append(RaceCheck(race_id, 0, 0, errors=[str(e)], problem="metadata"))
                continue
            checks.append(verify_race(storage, race, pool, progress))
    return StoreCheck(checks)
