"""One race of a store, read side: its metadata (`RaceInfo`) and its data (`Race`).

`RaceInfo` is a snapshot of the race group's attributes; `length` is the number
of committed steps, the only steps a reader may look at. `Race` reads frames
and step arrays up to that length::

    race = store.race(race_id)
    race.length, race.status
    race.frame(0)                  # (H, W, 3) uint8, decoded
    race.frame_bytes(0)            # the stored JPEG, as written
    race.steps("reward")           # (length,) float32
    race.frames[10:12]             # the zarr.Array, for plain zarr-python access
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from numcodecs import Zstd

from replay.codec.frames import FrameCodec, frame_codec
from replay.errors import CorruptDataError, RaceNotFoundError, StepDataError
from replay.format import shards
from replay.format import spec as fmt
from replay.format.race_doc import metadata_key, read_race_doc

if TYPE_CHECKING:
    import zarr

    from replay.storage.base import ByteStorage


@dataclass(frozen=True)
class RaceInfo:
    """A race's metadata as stored in its group attributes (format v1)."""

    race_id: str
    env: str
    map: str
    policy: str
    status: fmt.RaceStatus
    length: int
    fps: float
    height: int
    width: int
    shard_size: int
    started_at: str
    ended_at: str | None
    codec: dict[str, Any]
    action_shape: tuple[int, ...]
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    lease: dict[str, Any] | None = None
    #: [start, stop) ranges of steps whose data was damaged and removed by
    #: ``replay verify --repair`` (docs/format.md, "Damaged steps")
    lost_steps: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_attrs(cls, race_id: str, attrs: dict[str, Any]) -> RaceInfo:
        """Parse a race group's attributes (KeyError/TypeError/ValueError if malformed:
        a missing field, an unknown status or codec)."""
        frame_codec(attrs["codec"])  # chosen once here: an unknown codec is damaged metadata
        return cls(
            race_id=race_id,
            env=str(attrs["env"]),
            map=str(attrs.get("map", "")),
            policy=str(attrs.get("policy", "")),
            status=fmt.race_status(attrs["status"]),
            length=int(attrs["length"]),
            fps=float(attrs["fps"]),
            height=int(attrs["height"]),
            width=int(attrs["width"]),
            shard_size=int(attrs["shard_size"]),
            started_at=str(attrs["started_at"]),
            ended_at=attrs.get("ended_at"),
            codec=dict(attrs["codec"]),
            action_shape=tuple(int(n) for n in attrs["action_shape"]),
            extras=dict(attrs.get("extras", {})),
            meta=dict(attrs.get("meta", {})),
            lease=attrs.get("lease"),
            lost_steps=tuple((int(a), int(b)) for a, b in attrs.get("lost_steps", [])),
        )

    @functools.cached_property
    def frame_codec(self) -> FrameCodec:
        """The typed codec of the race's frames (`replay.codec.frames`), from `codec`."""
        return frame_codec(self.codec)

    def is_lost(self, step: int) -> bool:
        """True if `step`'s data was damaged and removed by a repair."""
        return any(a <= step < b for a, b in self.lost_steps)

    def step_layout(self, name: str) -> tuple[np.dtype[Any], tuple[int, ...]]:
        """(dtype, per-step shape) of step array `name`."""
        if name in fmt.STANDARD_STEPS:
            shape = self.action_shape if name == "action" else ()
            return np.dtype(fmt.STANDARD_STEPS[name]), tuple(shape)
        spec = self.extras[name]
        return np.dtype(spec["dtype"]), tuple(int(n) for n in spec["shape"])

    @property
    def step_arrays(self) -> list[str]:
        """Names of the per-step arrays: the standard ones, then the declared extras."""
        return [*fmt.STANDARD_STEPS, *self.extras]

    @property
    def raw_frame_nbytes(self) -> int:
        """Bytes of one uncompressed frame."""
        return self.height * self.width * 3

    @property
    def raw_nbytes(self) -> int:
        """Bytes the committed frames would take uncompressed (what compression is against)."""
        return self.length * self.raw_frame_nbytes

    @property
    def n_shards(self) -> int:
        """Shards holding committed frames."""
        return -(-self.length // self.shard_size)

    @property
    def duration_s(self) -> float:
        """Length of the race in game seconds."""
        return self.length / self.fps if self.fps else 0.0


def read_json(storage: ByteStorage, key: str) -> dict[str, Any]:
    """A zarr.json document as a dict."""
    value = json.loads(storage.read(key))
    if not isinstance(value, dict):
        raise ValueError(f"{key} is not a JSON object")
    return value


def read_race_info(storage: ByteStorage, race_id: str) -> RaceInfo:
    """The current metadata of a race; RaceNotFoundError if there is no such race,
    CorruptDataError if its document is torn, lacks a field or cannot be read (an
    OSError: a folder its writer made unreadable to us, an EIO, an object store's 403)."""
    if not fmt.is_race_id(race_id):
        raise RaceNotFoundError(f"{race_id!r} is not a race id (26 characters, ULID)")
    try:
        attrs = read_race_doc(storage, race_id)["attributes"]
    except OSError as e:  # permissions, EIO, an object store's 403: this race, not the store
        raise CorruptDataError(
            f"race {race_id}: cannot read {metadata_key(race_id)} ({type(e).__name__}: {e})",
            race_id=race_id,
            shard=-1,
        ) from e
    if not attrs:  # the writer writes the attributes last: still being created
        raise RaceNotFoundError(f"race {race_id} is being created")
    try:
        return RaceInfo.from_attrs(race_id, attrs)
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptDataError(
            f"race {race_id}: metadata {metadata_key(race_id)} is damaged ({e!r})",
            race_id=race_id,
            shard=-1,
        ) from e


def read_step_chunk(
    storage: ByteStorage, info: RaceInfo, name: str, shard: int
) -> npt.NDArray[Any]:
    """The `shard_size` values of step array `name` in one chunk (a shard's steps),
    read and decoded without zarr; CorruptDataError naming the chunk if it is damaged."""
    dtype, shape = info.step_layout(name)
    key = fmt.shard_key(info.race_id, name, shard, 1 + len(shape))
    try:
        raw = Zstd().decode(storage.read(key))
        values = np.frombuffer(raw, dtype=dtype.newbyteorder("<"))
        return values.reshape(info.shard_size, *shape).astype(dtype)
    except (OSError, RuntimeError, ValueError) as e:
        s = info.shard_size
        raise CorruptDataError.at(
            info.race_id,
            shard,
            f"step array {name!r} is damaged at steps {shard * s}..{shard * s + s - 1} "
            f"({type(e).__name__}: {e})",
            shard * s,
            whole_shard=True,
        ) from e


class Race:
    """Read access to one race, bounded by its committed length at open time."""

    def __init__(self, storage: ByteStorage, info: RaceInfo, zarr_root: zarr.Group) -> None:
        self._storage = storage
        self._zarr_root = zarr_root
        self.info = info

    def __repr__(self) -> str:
        return f"Race({self.info.race_id!r}, status={self.status!r}, length={self.length})"

    @property
    def race_id(self) -> str:
        return self.info.race_id

    @property
    def length(self) -> int:
        """Committed steps (frames) of the race when it was opened."""
        return self.info.length

    @property
    def status(self) -> fmt.RaceStatus:
        """``recording``, ``complete`` or ``aborted``."""
        return self.info.status

    @property
    def attrs(self) -> dict[str, Any]:
        """The race group's attributes, as stored."""
        doc = read_json(self._storage, f"{fmt.race_key(self.race_id)}/{fmt.METADATA}")
        attrs: dict[str, Any] = doc["attributes"]
        return attrs

    @property
    def frames(self) -> zarr.Array[Any]:
        """The frames as a zarr Array (T, H, W, 3); index only below `length`."""
        array = self._zarr_root[f"{fmt.race_key(self.race_id)}/{fmt.FRAMES}"]
        return array  # type: ignore[return-value]

    def _check_step(self, step: int) -> None:
        if not 0 <= step < self.length:
            raise IndexError(self.no_step(step))

    def no_step(self, step: int) -> str:
        """The message for a step past the committed ones: which steps there are."""
        n = self.length
        steps = f"0..{n - 1}" if n else "none yet"
        return f"race {self.race_id} has {n} committed steps ({steps}); there is no step {step}"

    def shard_index(self, shard: int) -> list[tuple[int, int] | None]:
        """(offset, nbytes) of each frame in a shard; CorruptDataError if damaged."""
        key = fmt.frames_key(self.race_id, shard)
        n = self.info.shard_size
        try:
            return shards.read_index(self._storage, key, n)
        except (OSError, EOFError, ValueError) as e:
            raise CorruptDataError.at(self.race_id, shard, f"cannot read its index ({e})") from e

    def frame_bytes(
        self, step: int, index: Sequence[tuple[int, int] | None] | None = None
    ) -> bytes:
        """The stored bytes of one frame (a JPEG for jpeg races), checksum verified, not decoded.

        `index`: its shard's `shard_index`, when the caller reads many frames of one shard.
        """
        self._check_step(step)
        shard, slot = divmod(step, self.info.shard_size)
        where = (self.shard_index(shard) if index is None else index)[slot]
        if where is None:
            problem = (
                f"step {step} was lost to damage (removed by `replay verify --repair`)"
                if self.info.is_lost(step)
                else f"committed step {step} is missing"
            )
            raise CorruptDataError.at(self.race_id, shard, problem, step=step)
        key = fmt.frames_key(self.race_id, shard)
        try:
            (chunk,) = self._storage.read_ranges(key, [where])
            return shards.without_checksum(chunk)
        except (OSError, EOFError, ValueError) as e:
            raise CorruptDataError.at(
                self.race_id, shard, f"frame at step {step} is damaged ({e})", step=step
            ) from e

    def frame(
        self, step: int, index: Sequence[tuple[int, int] | None] | None = None
    ) -> npt.NDArray[np.uint8]:
        """One frame, decoded to (H, W, 3) uint8 RGB (`index`: as for `frame_bytes`)."""
        blob = self.frame_bytes(step, index)
        shard = step // self.info.shard_size
        image = decode_frame(blob, self.info)
        if image is None:
            raise CorruptDataError.at(
                self.race_id, shard, f"frame at step {step} does not decode", step=step
            )
        return image

    def steps(self, name: str, start: int = 0, stop: int | None = None) -> npt.NDArray[Any]:
        """Committed values of one per-step array (e.g. ``"reward"``), steps [start, stop)
        (default: all); only the chunks holding those steps are read.

        CorruptDataError names the race, shard and steps of a damaged chunk. Values
        of `lost_steps` (removed by a repair) read as zero.
        """
        if name not in self.info.step_arrays:
            raise StepDataError(
                f"race {self.race_id} has no step array {name!r}; it has {self.info.step_arrays}"
            )
        end = self.length if stop is None else min(stop, self.length)
        start = min(max(start, 0), end)
        s = self.info.shard_size
        chunks = [
            read_step_chunk(self._storage, self.info, name, k)
            for k in range(start // s, -(-end // s))
        ]
        if not chunks:
            dtype, shape = self.info.step_layout(name)
            return np.zeros((0, *shape), dtype)
        values = np.concatenate(chunks)
        first = (start // s) * s
        return values[start - first : end - first]


def decode_frame(blob: bytes, info: RaceInfo) -> npt.NDArray[np.uint8] | None:
    """Decode one stored frame of a race (jpeg or lossless zstd); None if it does not decode."""
    return info.frame_codec.decode(blob, info.height, info.width)
