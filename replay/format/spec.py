"""The on-disk layout of a replay store (format version 1), in one place.

A store is a Zarr v3 hierarchy; docs/format.md is the full specification::

    <store>/zarr.json                          group; attrs: {"replay_format": 1}
    <store>/races/zarr.json                    group (no attributes)
    <store>/samplers/zarr.json                 group; samplers/<name>/ keeps sampler state
    <store>/races/<race_id>/zarr.json          group; attrs: RACE_ATTRS below
    <store>/races/<race_id>/frames/zarr.json   uint8 (T, H, W, 3), chunk (1, H, W, 3),
                                               shard (S, H, W, 3): one JPEG per frame
    <store>/races/<race_id>/frames/c/<k>/0/0/0 shard k (frames k*S .. k*S+S-1)
    <store>/races/<race_id>/<step array>/...   action, reward, terminated, truncated,
                                               t_ns and extras: chunk (S, ...), zstd

Commit protocol (what makes a SIGKILL harmless): shards and step chunks are
written whole through a temp file + fsync + rename; then the arrays' shapes
grow; then the race's ``length`` attribute, last. Readers never look past
``length``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final, Literal, get_args

FORMAT_VERSION: Final = 1
FORMAT_ATTR: Final = "replay_format"
RACES: Final = "races"
SAMPLERS: Final = "samplers"
#: The groups under the root; each has its own zarr.json (`replay.format.groups`).
GROUPS: Final = (RACES, SAMPLERS)
FRAMES: Final = "frames"
METADATA: Final = "zarr.json"

#: The per-step arrays every race has, with their dtypes ("action" also has a
#: declared trailing shape).
STANDARD_STEPS: Final[dict[str, str]] = {
    "action": "float32",
    "reward": "float32",
    "terminated": "bool",
    "truncated": "bool",
    "t_ns": "int64",
}

#: Statuses of a race.
RECORDING: Final = "recording"
COMPLETE: Final = "complete"
ABORTED: Final = "aborted"
RaceStatus = Literal["recording", "complete", "aborted"]
STATUSES: Final[tuple[RaceStatus, ...]] = get_args(RaceStatus)


def race_status(value: object) -> RaceStatus:
    """A race's ``status`` attribute; ValueError for anything else (damaged metadata)."""
    for status in STATUSES:
        if value == status:
            return status
    raise ValueError(f"unknown race status {value!r} (expected one of {', '.join(STATUSES)})")


def race_ending(value: object) -> RaceStatus:
    """How a writer may end its race: complete or aborted; ValueError for anything else
    (before the race is touched)."""
    if value in (COMPLETE, ABORTED):
        return race_status(value)
    raise ValueError(f"a race ends {COMPLETE!r} or {ABORTED!r}, not {value!r}")


#: Race ids are ULIDs: 26 Crockford base32 characters that sort by creation time.
RACE_ID_PATTERN: Final = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")

DEFAULT_SHARD_SIZE: Final = 64
#: Largest frame height or width a race takes (JPEG's own limit is 65,500).
MAX_SIDE: Final = 16384
DEFAULT_QUALITY: Final = 90


def is_race_id(value: str) -> bool:
    """True for a well-formed race id (never a path: no '/', '.', or lowercase)."""
    return RACE_ID_PATTERN.fullmatch(value) is not None


def race_key(race_id: str) -> str:
    """Store key of a race group, e.g. ``races/01J.../``."""
    return f"{RACES}/{race_id}"


def shard_key(race_id: str, array: str, shard: int, ndim: int) -> str:
    """Store key of chunk/shard ``shard`` of a race array (default chunk key encoding)."""
    return f"{RACES}/{race_id}/{array}/c/{shard}" + "/0" * (ndim - 1)


def frames_key(race_id: str, shard: int) -> str:
    """Store key of frames shard ``shard`` of a race (the frames array is (T, H, W, 3))."""
    return shard_key(race_id, FRAMES, shard, 4)


def utc_now() -> str:
    """The current time as stored in race attributes (ISO 8601, UTC, milliseconds)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def parse_time(iso: str) -> float:
    """Unix seconds of a time stored by `utc_now`."""
    return dt.datetime.fromisoformat(iso).timestamp()


def lease_ttl(flush_interval: float) -> float:
    """Seconds after its last heartbeat that a writer's lease expires.

    A live writer refreshes its lease at every commit, and at least every
    5 flush intervals when idle; the margin covers a stalled disk or a slow GC.
    """
    return max(30.0, 10 * flush_interval)
