"""What a new race is made of: its attributes, its step arrays and its Zarr documents.

`Store.new_race` checks its arguments here (`RaceSpec`) and writes what `race_builder`
builds; a repair rebuilds a torn array document from `race_documents` (docs/format.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.storage import MemoryStore

from replay.arguments import whole, whole_tuple
from replay.codec.frames import FrameCodec, frame_codec, new_frame_codec, step_compressors
from replay.format import spec as fmt
from replay.format.groups import write_group
from replay.format.race import RaceInfo

if TYPE_CHECKING:
    from replay.storage.base import ByteStorage


@dataclass(frozen=True)
class StepSpec:
    """One per-step array of a race: its name, dtype and per-step shape (besides its
    frames, what a race is made of: `step_specs` lists them, `race_builder` makes them)."""

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]


@dataclass(frozen=True)
class RaceSpec:
    """What a race is, as opposed to how it is recorded: the arguments of
    `Store.new_race` (and of a remote `new_race`) that describe it. `check` refuses a bad
    one before anything is written; `attrs` are the attributes of the race just started."""

    env: str
    map: str = ""
    policy: str = ""
    fps: float = 30
    height: int = 900
    width: int = 1600
    action_shape: tuple[int, ...] = (3,)
    extras: Mapping[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    codec: str = "jpeg"
    quality: int = fmt.DEFAULT_QUALITY
    subsampling: str = "420"
    shard_size: int = fmt.DEFAULT_SHARD_SIZE

    def __post_init__(self) -> None:
        """Sizes as ints (NumPy's integers are whole numbers too; a bool or a float is
        not), text fields as str, `fps` as a float: what ``zarr.json`` stores."""
        for name in ("height", "width", "quality", "shard_size"):
            object.__setattr__(self, name, whole(name, getattr(self, name)))
        object.__setattr__(self, "action_shape", whole_tuple("action_shape", self.action_shape))
        for name in ("env", "map", "policy", "codec", "subsampling"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if isinstance(self.fps, bool) or not isinstance(self.fps, int | float | np.number):
            raise ValueError(f"fps must be a positive finite number, got {self.fps!r}")
        object.__setattr__(self, "fps", float(self.fps))

    def check(self) -> tuple[FrameCodec, list[StepSpec]]:
        """The race's frame codec and step arrays; ValueError (naming the value) for a bad
        argument: sizes, a non-finite fps, the codec (`replay.codec.frames.new_frame_codec`),
        non-JSON or NaN meta, an extra's name (reserved, or not an identifier), dtype or
        shape."""
        if not (0 < self.height <= fmt.MAX_SIDE and 0 < self.width <= fmt.MAX_SIDE):
            raise ValueError(
                f"height and width must be in 1..{fmt.MAX_SIDE}, got {self.height}x{self.width}"
            )
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be a positive finite number, got {self.fps!r}")
        if not 1 <= self.shard_size <= 65536:
            raise ValueError(f"shard_size must be in 1..65536, got {self.shard_size}")
        frames = new_frame_codec(self.codec, self.quality, self.subsampling)
        try:
            json.dumps(dict(self.meta), allow_nan=False)
        except TypeError as e:
            raise ValueError(f"meta must be JSON-serialisable: {e}") from e
        except ValueError as e:  # NaN or infinity: not JSON (zarr.json must stay standard)
            raise ValueError(f"meta must hold finite numbers only (no NaN/inf): {e}") from e
        return frames, step_specs(self.action_shape, self.extras)

    def attrs(self, codec: FrameCodec) -> dict[str, Any]:
        """The attributes of the race just started (status ``recording``, length 0, no
        lease), its frames stored with `codec` (from `check`)."""
        return {
            "env": self.env,
            "map": self.map,
            "policy": self.policy,
            "fps": self.fps,
            "height": self.height,
            "width": self.width,
            "shard_size": self.shard_size,
            "started_at": fmt.utc_now(),
            "ended_at": None,
            "status": fmt.RECORDING,
            "length": 0,
            "codec": codec.attrs,
            "action_shape": list(self.action_shape),
            "extras": {n: {"dtype": d, "shape": list(s)} for n, (d, s) in self.extras.items()},
            "meta": dict(self.meta),
            "lease": None,
        }


def race_builder(attrs: dict[str, Any], specs: list[StepSpec]) -> Callable[[zarr.Group], None]:
    """What `write_group` needs to add a race's arrays to its group (from its attributes):
    also how a repair rebuilds a torn array document."""
    h, w, s = attrs["height"], attrs["width"], attrs["shard_size"]
    chain = frame_codec(attrs["codec"]).zarr_chain()

    def build(group: zarr.Group) -> None:
        group.create_array(
            fmt.FRAMES,
            shape=(0, h, w, 3),
            chunks=(1, h, w, 3),
            shards=(s, h, w, 3),
            dtype="uint8",
            filters=chain.filters,
            serializer=chain.serializer,
            compressors=chain.compressors,
            fill_value=0,
            dimension_names=["step", "y", "x", "channel"],
        )
        for spec in specs:
            group.create_array(
                spec.name,
                shape=(0, *spec.shape),
                chunks=(s, *spec.shape),
                dtype=spec.dtype,
                compressors=step_compressors(),
                fill_value=0,
            )

    return build


def write_race(
    storage: ByteStorage, race_id: str, attrs: dict[str, Any], specs: list[StepSpec]
) -> RaceInfo:
    """Write a new race's Zarr documents (its group with `attrs`, its empty frame and step
    arrays); its `RaceInfo`. The one way a race comes to be: `Store.new_race` and the
    service's remote races both call it."""
    write_group(storage, fmt.race_key(race_id), attrs, race_builder(attrs, specs))
    return RaceInfo.from_attrs(race_id, attrs)


def race_documents(info: RaceInfo) -> dict[str, bytes]:
    """The zarr.json documents of a race's arrays as `new_race` wrote them, by array name
    (shape 0: the caller sets the committed length)."""
    attrs = {"height": info.height, "width": info.width, "shard_size": info.shard_size}
    extras = {n: (e["dtype"], tuple(e["shape"])) for n, e in info.extras.items()}
    build = race_builder({**attrs, "codec": info.codec}, step_specs(info.action_shape, extras))
    documents: dict[str, Any] = {}
    build(zarr.open_group(store=MemoryStore(documents), mode="w"))
    suffix = f"/{fmt.METADATA}"
    return {k[: -len(suffix)]: v.to_bytes() for k, v in documents.items() if k.endswith(suffix)}


def step_specs(
    action_shape: tuple[int, ...], extras: Mapping[str, tuple[str, tuple[int, ...]]]
) -> list[StepSpec]:
    """The step arrays of a race: the standard ones, then the declared extras."""
    specs = [
        StepSpec(name, np.dtype(dtype), tuple(action_shape) if name == "action" else ())
        for name, dtype in fmt.STANDARD_STEPS.items()
    ]
    for name, (dtype, shape) in extras.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"extra step array name {name!r} is not an identifier")
        if name in fmt.STANDARD_STEPS or name == fmt.FRAMES:
            raise ValueError(f"extra step array name {name!r} is reserved")
        kind = np.dtype(dtype)
        if kind.kind not in "biufc":  # Zarr v3's core types: bool, integers, floats, complex
            raise ValueError(f"extra {name!r}: dtype {kind} is not a number or bool")
        sizes = whole_tuple(f"extra {name!r}'s shape", shape)
        if any(n < 1 for n in sizes):
            raise ValueError(f"extra {name!r}: shape {sizes} has a size below 1")
        specs.append(StepSpec(name, kind, sizes))
    return specs
