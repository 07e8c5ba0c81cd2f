"""Repair of a damaged race: keep every intact frame, drop the damaged ones, reclaim
their bytes, and record what was lost (docs/format.md, "Damaged steps").

    check = store.verify().races[0]       # or verify_store(store.storage)
    result = store.repair(check)           # or repair(store.storage, check)
    result.kept, result.lost, result.refused     # refused: why nothing was done

A damaged shard is rebuilt from the frames that still read back (checksum and
decode): through its index, or, when the index itself is damaged or cut off, by
finding the frames in its bytes (`replay.format.shards.salvage`). The rebuilt shard holds
only those frames (the damaged ones become absent chunks, which plain Zarr reads as
zeros); its step values stay. A step chunk that does not decode is rewritten as
zeros and its steps are lost; a torn array document is rebuilt from the race's
attributes. The race's ``length`` never changes: the lost steps are listed in its
``lost_steps`` attribute, which readers and samplers avoid. A race whose writer is
alive is refused (`replay.format.lease`); a dead writer's race is marked ``aborted``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from replay.codec.frames import encode_steps
from replay.errors import RaceBusyError
from replay.format import shards
from replay.format import spec as fmt
from replay.format.race import RaceInfo, decode_frame, read_race_info
from replay.format.race_doc import check_not_live, update_race
from replay.format.race_schema import race_documents
from replay.maintenance.verify import DOCUMENT, RaceCheck

if TYPE_CHECKING:
    from replay.storage.base import ByteStorage


@dataclass(frozen=True)
class Repair:
    """What `repair` did to one race: committed steps kept whole, steps newly lost, or
    why it refused (then nothing was changed)."""

    race_id: str
    kept: int = 0
    lost: int = 0
    refused: str | None = None


def repair(storage: ByteStorage, check: RaceCheck, *, now: float | None = None) -> Repair:
    """Repair the damage `check` found in one race (see the module doc)."""
    race_id = check.race_id
    if check.ok:
        return Repair(race_id, kept=check.length)
    if check.problem == "orphan":
        return Repair(race_id, refused="orphan data: `replay prune` removes it")
    if check.problem == "metadata":
        return Repair(
            race_id,
            refused="its metadata (env, fps, frame size...) is damaged and cannot be rebuilt; "
            "its data is left as it is",
        )
    try:
        check_not_live(storage, race_id, now=now)
    except RaceBusyError as e:
        return Repair(race_id, refused=str(e))
    info = read_race_info(storage, race_id)
    lost: set[int] = set()
    for shard in check.damaged_shards:
        lost |= _rebuild_shard(storage, info, shard)
    for name, chunks in check.damaged_arrays.items():
        lost |= _repair_array(storage, info, name, chunks)
    lost -= {s for s in range(info.length) if info.is_lost(s)}  # newly lost only
    all_lost = lost | {s for a, b in info.lost_steps for s in range(a, b)}

    def change(attrs: dict[str, Any]) -> None:
        attrs["lost_steps"] = step_ranges(all_lost)
        attrs.setdefault("repairs", []).append(
            {"at": fmt.utc_now(), "lost": step_ranges(lost), "damaged_shards": check.damaged_shards}
        )
        if attrs.get("status") == fmt.RECORDING:  # its writer is dead: it never grows again
            attrs.update(status=fmt.ABORTED, ended_at=fmt.utc_now(), lease=None)

    update_race(storage, race_id, change, now=now)
    return Repair(race_id, kept=info.length - len(all_lost), lost=len(lost))


def step_ranges(steps: set[int]) -> list[list[int]]:
    """Sorted steps as [start, stop) ranges: {0, 1, 2, 7} -> [[0, 3], [7, 8]]."""
    out: list[list[int]] = []
    for step in sorted(steps):
        if out and out[-1][1] == step:
            out[-1][1] = step + 1
        else:
            out.append([step, step + 1])
    return out


def _rebuild_shard(storage: ByteStorage, info: RaceInfo, shard: int) -> set[int]:
    """Rewrite a frames shard with only its intact committed frames; their lost steps."""
    s = info.shard_size
    first, key = shard * s, fmt.frames_key(info.race_id, shard)
    committed = min(s, info.length - first)
    try:
        data = storage.read(key)
    except FileNotFoundError:
        data = b""
    chunks: list[bytes | None]
    try:
        index = shards.read_index(storage, key, s)[:committed]
        chunks = [None if r is None else data[r[0] : r[0] + r[1]] for r in index]
    except (OSError, EOFError, ValueError):  # the index is lost: find the frames
        found: list[bytes | None] = list(shards.salvage(data, s, committed))
        chunks = found + [None] * (committed - len(found))
    chunks = [c if c is not None and _intact(c, info) else None for c in chunks]
    storage.write(key, shards.build_shard(chunks, s))
    return {first + i for i, c in enumerate(chunks) if c is None}


def _intact(chunk: bytes, info: RaceInfo) -> bool:
    try:
        return decode_frame(shards.without_checksum(chunk), info) is not None
    except ValueError:
        return False


def _repair_array(storage: ByteStorage, info: RaceInfo, name: str, chunks: list[int]) -> set[int]:
    """Rebuild a torn array document; rewrite undecodable step chunks as zeros."""
    s = info.shard_size
    lost: set[int] = set()
    for shard in chunks:
        if shard == DOCUMENT:
            doc = json.loads(race_documents(info)[name])
            doc["shape"][0] = info.length
            storage.write(
                f"{fmt.race_key(info.race_id)}/{name}/{fmt.METADATA}", json.dumps(doc).encode()
            )
            continue
        dtype, shape = info.step_layout(name)
        zeros = np.zeros((s, *shape), dtype=dtype.newbyteorder("<"))
        key = fmt.shard_key(info.race_id, name, shard, 1 + len(shape))
        storage.write(key, encode_steps(zeros))
        lost |= set(range(shard * s, min((shard + 1) * s, info.length)))
    return lost
