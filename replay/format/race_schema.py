"""What a new race is made of: its attributes, its step arrays and its Zarr documents.

`Store.new_race` checks its arguments here and writes what `race_builder` builds;
a repair rebuilds a torn array document from `race_documents` (docs/format.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.storage import MemoryStore

from replay.codec.frames import FrameCodec, frame_codec, new_frame_codec, step_compressors
from replay.errors import ReplayError
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


def race_attrs(
    *,
    env: str,
    map: str,
    policy: str,
    fps: float,
    height: int,
    width: int,
    shard_size: int,
    codec: FrameCodec,
    action_shape: tuple[int, ...],
    extras: Mapping[str, tuple[str, tuple[int, ...]]],
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    """The attributes of a race just started (status ``recording``, length 0, no lease)."""
    return {
        "env": env,
        "map": map,
        "policy": policy,
        "fps": fps,
        "height": height,
        "width": width,
        "shard_size": shard_size,
        "started_at": fmt.utc_now(),
        "ended_at": None,
        "status": fmt.RECORDING,
        "length": 0,
        "codec": codec.attrs,
        "action_shape": list(action_shape),
        "extras": {n: {"dtype": d, "shape": list(s)} for n, (d, s) in extras.items()},
        "meta": dict(meta),
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


def check_race_args(
    height: int,
    width: int,
    fps: float,
    shard_size: int,
    codec: str,
    quality: int,
    subsampling: str,
    meta: Mapping[str, Any] | None,
) -> FrameCodec:
    """The frame codec of a new race; ValueError (naming the value) for a bad argument
    of `Store.new_race`, before anything is written: sizes, a non-finite fps, the codec
    (`replay.codec.frames.new_frame_codec`), non-JSON or NaN meta."""
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    try:
        fps_ok = math.isfinite(float(fps)) and fps > 0
    except (TypeError, ValueError):
        fps_ok = False
    if not fps_ok:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    if not 1 <= shard_size <= 65536:
        raise ValueError(f"shard_size must be in 1..65536, got {shard_size}")
    frames = new_frame_codec(codec, quality, subsampling)
    try:
        json.dumps(dict(meta or {}), allow_nan=False)
    except TypeError as e:
        raise ValueError(f"meta must be JSON-serialisable: {e}") from e
    except ValueError as e:  # NaN or infinity: not JSON (zarr.json must stay standard)
        raise ValueError(f"meta must hold finite numbers only (no NaN/inf): {e}") from e
    return frames


def step_specs(
    action_shape: tuple[int, ...], extras: Mapping[str, tuple[str, tuple[int, ...]]]
) -> list[StepSpec]:
    """The step arrays of a race: the standard ones, then the declared extras."""
    specs = [
        StepSpec(name, np.dtype(dtype), tuple(action_shape) if name == "action" else ())
        for name, dtype in fmt.STANDARD_STEPS.items()
    ]
    for name, (dtype, shape) in extras.items():
        if name in fmt.STANDARD_STEPS or name == fmt.FRAMES or not name.isidentifier():
            raise ReplayError(f"extra step array name {name!r} is reserved or not an identifier")
        specs.append(StepSpec(name, np.dtype(dtype), tuple(shape)))
    return specs
