"""The JSON bodies of the API (pydantic models), with the examples the schema shows."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    model_validator,
)

from replay.format import spec as fmt
from replay.format.race import RaceInfo
from replay.sample.params import SamplerParams
from service.request_text import refuse_lone_surrogates

EXAMPLE_RACE_ID = "01JZ8X6T3N5W2Q7R9B4C1D0E2F"

Status = fmt.RaceStatus
RaceIdStr = Annotated[str, Field(pattern=fmt.RACE_ID_PATTERN.pattern)]
#: A frame height or width filter.
Pixels = Annotated[int, Field(ge=1, le=65_536, strict=True)]


#: Every request model: unknown fields and non-finite numbers (NaN, Infinity, 1e400)
#: are refused with a 422 naming the field.
STRICT: ConfigDict = {"extra": "forbid", "allow_inf_nan": False}


class Live(BaseModel):
    """Liveness: the process answers (no storage is read)."""

    status: Literal["ok"] = "ok"
    version: str = Field(examples=["0.1.0"])


class Health(BaseModel):
    """Readiness: the service runs, its store opens and its races list."""

    status: Literal["ok", "degraded"] = Field(
        "ok", description="degraded: some races cannot be read (named in /v1/stats)."
    )
    version: str = Field(examples=["0.1.0"])
    races: int = Field(description="Races in the store.", examples=[3])
    damaged_races: int = Field(
        0, description="Races whose metadata cannot be read (left out of sampling)."
    )


class Lease(BaseModel):
    """Who is writing a race (refreshed by its writer while recording)."""

    host: str
    pid: int
    heartbeat: float = Field(description="Unix time of the writer's last refresh.")


class RaceSummary(BaseModel):
    """A race's metadata, as stored in its group attributes."""

    race_id: str = Field(examples=[EXAMPLE_RACE_ID])
    env: str = Field(examples=["CarRacing-v3"])
    map: str = Field(examples=["procedural"])
    policy: str = Field(examples=["pure-pursuit-1"])
    status: Status
    length: int = Field(description="Committed steps (frames).", examples=[1200])
    fps: float = Field(examples=[30.0])
    height: int = Field(examples=[900])
    width: int = Field(examples=[1600])
    shard_size: int = Field(examples=[64])
    started_at: str = Field(examples=["2025-07-01T12:00:00.000+00:00"])
    ended_at: str | None = Field(examples=["2025-07-01T12:00:40.000+00:00"])
    duration_s: float = Field(description="Length in game seconds.", examples=[40.0])
    codec: dict[str, Any] = Field(examples=[{"name": "jpeg", "quality": 90, "subsampling": "420"}])
    action_shape: list[int] = Field(examples=[[3]])
    step_arrays: list[str] = Field(
        examples=[["action", "reward", "terminated", "truncated", "t_ns"]]
    )
    meta: dict[str, Any] = Field(default_factory=dict, examples=[{"seed": 1}])
    lease: Lease | None = None
    total_return: float | None = Field(
        default=None,
        description="Sum of the committed steps' rewards (NaN rewards count 0).",
        examples=[812.5],
    )

    @classmethod
    def of(cls, info: RaceInfo) -> RaceSummary:
        """The summary of a `RaceInfo`."""
        lease = info.lease
        return cls(
            race_id=info.race_id,
            env=info.env,
            map=info.map,
            policy=info.policy,
            status=info.status,
            length=info.length,
            fps=info.fps,
            height=info.height,
            width=info.width,
            shard_size=info.shard_size,
            started_at=info.started_at,
            ended_at=info.ended_at,
            duration_s=info.duration_s,
            codec=info.codec,
            action_shape=list(info.action_shape),
            step_arrays=info.step_arrays,
            meta=info.meta,
            lease=Lease.model_validate(lease) if isinstance(lease, dict) else None,
        )


class RaceDetail(RaceSummary):
    """One race: its metadata plus what it takes on disk."""

    extras: dict[str, dict[str, Any]] = Field(
        default_factory=dict, examples=[{"speed": {"dtype": "float32", "shape": []}}]
    )
    n_shards: int = Field(examples=[19])
    nbytes: int = Field(description="Bytes on disk.", examples=[120_000_000])
    raw_nbytes: int = Field(
        description="Bytes of the frames uncompressed.", examples=[5_184_000_000]
    )
    compression: float = Field(description="raw_nbytes / nbytes.", examples=[43.2])


class RacePage(BaseModel):
    """One page of the race list."""

    total: int = Field(description="Races matching the filters.", examples=[3])
    offset: int = Field(examples=[0])
    limit: int = Field(examples=[50])
    items: list[RaceSummary]


class StepWindow(BaseModel):
    """Per-step values of a race over ``[start, stop)``."""

    race_id: str = Field(examples=[EXAMPLE_RACE_ID])
    start: int = Field(examples=[0])
    stop: int = Field(examples=[2])
    arrays: dict[str, list[Any]] = Field(
        examples=[{"action": [[0.0, 0.5, 0.0], [0.1, 0.5, 0.0]], "reward": [-0.1, 3.2]}]
    )


class SamplerState(BaseModel):
    """One cached sampler: its parameters and how much it served."""

    kind: str = Field(examples=["uniform"])
    batch_size: int = Field(examples=[64])
    seq_len: int = Field(examples=[1])
    stride: int = Field(examples=[1])
    seed: int | None = Field(examples=[0])
    filters: dict[str, Any] | None = Field(examples=[None])
    skip_corrupt: bool = Field(False, description="Redraws past corrupt data.")
    n_step: int | None = Field(None, description="n-step returns over this many rewards.")
    gamma: float = Field(0.99, description="Discount of the n-step returns.")
    next_frames: bool = Field(False, description="Sends the bootstrap frames too.")
    min_size: int = Field(0, description="Committed steps needed before sampling.")
    samples_per_insert: float | None = Field(None, description="Items per inserted step.")
    error_margin: float | None = Field(None, description="Slack of samples_per_insert, items.")
    batches: int = Field(description="Batches served.", examples=[10])
    corrupt_skipped: int = Field(
        0,
        description="Damaged shards and frames this sampler found and now avoids "
        "(the embedded sampler's `stats().corrupt_skipped`).",
        examples=[0],
    )
    damaged_races: int = Field(
        0,
        description="Races left out because their metadata cannot be read "
        "(the embedded sampler's `stats().damaged_races`).",
        examples=[0],
    )


class Stats(BaseModel):
    """Store totals, cached samplers and request counters."""

    races: int = Field(examples=[3])
    races_by_status: dict[str, int] = Field(examples=[{"complete": 2, "recording": 1}])
    frames: int = Field(description="Committed frames of all races.", examples=[3600])
    nbytes: int = Field(description="Bytes on disk.", examples=[360_000_000])
    raw_nbytes: int = Field(
        description="Bytes of all frames uncompressed.", examples=[15_552_000_000]
    )
    compression: float = Field(description="raw_nbytes / nbytes.", examples=[43.2])
    damaged_races: dict[str, str] = Field(
        default_factory=dict,
        description="Races whose metadata cannot be read (race id: the damage), left out "
        "of every total and of sampling; `replay verify` names them too.",
        examples=[{}],
    )
    samplers: list[SamplerState]
    requests: int = Field(description="Requests answered since start.", examples=[1234])
    errors: int = Field(description="Of those, answered 4xx or 5xx.", examples=[3])
    frames_served: int = Field(
        description="Frames sent (frame route and batches).", examples=[9000]
    )
    uptime_s: float = Field(examples=[3600.0])


class FieldError(BaseModel):
    """One invalid field of a request (``ValidationError`` answers list them)."""

    loc: list[str | int] = Field(examples=[["body", "timeout"]])
    msg: str = Field(examples=["Input should be a finite number"])
    type: str = Field(examples=["finite_number"])


class Error(BaseModel):
    """Every error answer: the error's name and a message naming the offending value.

    One shape for all (docs/protocol.md): a ``ValidationError`` (422, a request that
    does not fit its schema) adds `errors`, one entry per invalid field."""

    error: str = Field(examples=["RaceNotFoundError"])
    detail: str = Field(examples=[f"no race {EXAMPLE_RACE_ID} in /data/replay"])
    race_id: str | None = None
    shard: int | None = None
    step: int | None = None
    errors: list[FieldError] | None = None


class RaceFilter(BaseModel):
    """Which races a sampler draws from (all when absent); fields combine with AND.

    `env`, `map`, `policy` and `status` take one value or a list (any of them
    matches). The fields are `replay.Filters`'s, the rule of the race list too.
    """

    model_config = ConfigDict(**STRICT)

    env: str | list[Annotated[str, Field(max_length=200)]] | None = Field(
        None, max_length=200, examples=["CarRacing-v3"]
    )
    map: str | list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=200)
    policy: str | list[Annotated[str, Field(max_length=200)]] | None = Field(None, max_length=200)
    race_ids: list[RaceIdStr] | None = Field(
        None, max_length=10_000, description="Only these races.", examples=[[EXAMPLE_RACE_ID]]
    )
    since: AwareDatetime | None = Field(
        None, description="Races started at or after this time.", examples=["2025-07-01T00:00:00Z"]
    )
    until: AwareDatetime | None = Field(None, description="Races started before this time.")
    status: Status | list[Status] | None = None
    min_length: int = Field(
        0, ge=0, le=2**40, strict=True, description="Only races with this many steps."
    )
    contains: str | None = Field(
        None, max_length=200, description="Env, map, policy or id contains this (any case)."
    )
    codec: Literal["jpeg", "zstd"] | list[Literal["jpeg", "zstd"]] | None = Field(
        None, description="Only races whose frames use this codec.", examples=["jpeg"]
    )
    height: Pixels | list[Pixels] | None = Field(
        None, description="Only races of this frame height (pixels).", examples=[900]
    )
    width: Pixels | list[Pixels] | None = Field(
        None, description="Only races of this frame width (pixels).", examples=[1600]
    )

    def as_filters(self) -> dict[str, Any]:
        """The filters as `replay.read.filters.Filters` fields (unset ones left out)."""
        out = self.model_dump(exclude_defaults=True)
        for name in ("since", "until"):
            if name in out:
                out[name] = out[name].isoformat()
        return out


class DecodedView(BaseModel):
    """Ask for decoded uint8 pixels (for clients without a JPEG decoder), optionally
    cropped, resized or reduced to grey. Costs the service a decode per frame."""

    model_config = ConfigDict(**STRICT)

    crop: tuple[NonNegativeInt, NonNegativeInt, PositiveInt, PositiveInt] | None = Field(
        None,
        description="(top, left, height, width) in stored pixels.",
        examples=[[0, 0, 800, 1600]],
    )
    size: (
        tuple[Annotated[int, Field(ge=1, le=8192)], Annotated[int, Field(ge=1, le=8192)]] | None
    ) = Field(None, description="Output (height, width).", examples=[[225, 400]])
    grey: bool = False


class SampleRequest(BaseModel):
    """A batch to draw: sampler kind and parameters, filters, seed."""

    model_config = ConfigDict(
        **STRICT,
        json_schema_extra={
            "examples": [
                {"kind": "uniform", "batch_size": 64, "seq_len": 1, "seed": 0},
                {"kind": "prioritized", "batch_size": 32, "seq_len": 4, "stride": 1},
                {"kind": "recent", "batch_size": 8, "filters": {"env": "CarRacing-v3"}},
                {"batch_size": 4, "decoded": {"size": [225, 400]}},
                {"batch_size": 64, "skip_corrupt": True},
                {"batch_size": 32, "n_step": 3, "gamma": 0.99, "next_frames": True},
                {"batch_size": 32, "min_size": 1000, "samples_per_insert": 8, "timeout": 60},
            ]
        },
    )

    kind: Literal["uniform", "prioritized", "recent"] = "uniform"
    batch_size: int = Field(64, ge=1, strict=True, description="Sequences per batch (B).")
    seq_len: int = Field(1, ge=1, strict=True, description="Consecutive steps per sequence (L).")
    stride: int = Field(
        1, ge=1, le=1024, strict=True, description="Steps between a sequence's frames."
    )
    seed: int | None = Field(
        None,
        ge=0,
        strict=True,
        le=2**63 - 1,
        description="A seed names a stream of batches: the same seed and parameters give "
        "the same batches in order, continuing from one request to the next.",
    )
    filters: RaceFilter | None = None
    decoded: DecodedView | None = Field(
        None, description="Send decoded pixels instead of the stored JPEGs."
    )
    skip_corrupt: bool = Field(
        False,
        description="Redraw items that touch a damaged shard or frame instead of answering "
        "409, as the embedded `skip_corrupt=True` sampler does; what was skipped is named in "
        "the `Replay-Corrupt-Skipped` and `Replay-Corrupt-Where` headers.",
    )
    n_step: int | None = Field(
        None,
        ge=1,
        strict=True,
        le=256,
        description="Add n-step returns, discounts and bootstrap steps over this many rewards "
        "(`replay.read.nstep`; docs/protocol.md, the header's `nstep`).",
    )
    gamma: float = Field(0.99, ge=0, le=1, description="Discount of the n-step returns.")
    next_frames: bool = Field(
        False, description="With n_step: send the bootstrap frames too (stored frames only)."
    )
    min_size: int = Field(
        0,
        ge=0,
        strict=True,
        description="Wait until the sampled races hold this many committed steps.",
    )
    samples_per_insert: float | None = Field(
        None, gt=0, description="Hold a learner to this many sampled items per inserted step."
    )
    error_margin: float | None = Field(
        None, ge=0, description="Items samples_per_insert may run ahead (two batches if unset)."
    )
    timeout: float | None = Field(
        None,
        ge=0,
        description="Seconds this request may wait for a rate limit (at most the service's "
        "max_rate_wait_s, the default); then 429 with Retry-After.",
    )

    def params(self) -> SamplerParams:
        """The sampler parameters of this request (`replay.sample.params`): its fields of the same
        names, the filters as the fields set (`ValueError` for values it refuses)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(SamplerParams)}
        values["filters"] = None if self.filters is None else self.filters.as_filters() or None
        return SamplerParams(**values)

    _text = model_validator(mode="before")(refuse_lone_surrogates)

    @model_validator(mode="after")
    def _nstep_options(self) -> SampleRequest:
        if self.next_frames and self.n_step is None:
            raise ValueError("next_frames needs n_step")
        if self.next_frames and self.decoded is not None:
            raise ValueError("next_frames travel as stored frames; leave out `decoded`")
        return self


Priority = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class PrioritiesRequest(BaseModel):
    """New priorities for sampled keys (race id, first step of the sequence)."""

    model_config = ConfigDict(
        **STRICT,
        json_schema_extra={
            "examples": [
                {"keys": [[EXAMPLE_RACE_ID, 17], [EXAMPLE_RACE_ID, 90]], "priorities": [0.5, 2.0]}
            ]
        },
    )

    keys: list[tuple[RaceIdStr, Annotated[int, Field(ge=0, le=2**40, strict=True)]]] = Field(
        max_length=100_000
    )
    priorities: list[Priority] = Field(max_length=100_000)

    _text = model_validator(mode="before")(refuse_lone_surrogates)


class PrioritiesUpdated(BaseModel):
    """How many priorities were set."""

    updated: int = Field(examples=[2])
