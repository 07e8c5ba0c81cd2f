"""``/v1/races``: the race list (paged, filtered), one race, its step data.

Metadata is read fresh on every request, so races being recorded appear and
grow without a restart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field

from replay.race import RaceInfo
from service.deps import Authorized, RaceId, SettingsDep, StateDep, StoreDep
from service.models import Error, RaceDetail, RacePage, RaceSummary, Status, StepWindow

router = APIRouter(prefix="/v1/races", tags=["races"], dependencies=[Authorized])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Error, "description": "No such race."}}


class RaceQuery(BaseModel):
    """Filters and paging of the race list (query parameters)."""

    model_config = ConfigDict(extra="forbid")

    env: str | None = Field(None, max_length=200, examples=["CarRacing-v3"])
    map: str | None = Field(None, max_length=200)
    policy: str | None = Field(None, max_length=200)
    status: Status | None = None
    started_after: dt.datetime | None = Field(
        None, description="Only races started at or after this time (UTC if no zone)."
    )
    started_before: dt.datetime | None = Field(
        None, description="Only races started before this time (UTC if no zone)."
    )
    min_length: int = Field(0, ge=0, le=2**40, description="Only races with this many steps.")
    order: Literal["newest", "oldest"] = "newest"
    offset: int = Field(0, ge=0, le=2**31)
    limit: int = Field(50, ge=1, description="Page size (at most the service's max_page_size).")


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _started(info: RaceInfo) -> dt.datetime | None:
    try:
        return _utc(dt.datetime.fromisoformat(info.started_at))
    except ValueError:
        return None


def select(races: Iterable[RaceInfo], q: RaceQuery) -> list[RaceInfo]:
    """The races matching the query's filters, in its order (no paging)."""
    out = []
    for info in races:
        if (q.env is not None and info.env != q.env) or (q.map is not None and info.map != q.map):
            continue
        if (q.policy is not None and info.policy != q.policy) or (
            q.status is not None and info.status != q.status
        ):
            continue
        if info.length < q.min_length:
            continue
        if q.started_after is not None or q.started_before is not None:
            started = _started(info)
            if started is None:
                continue
            if q.started_after is not None and started < _utc(q.started_after):
                continue
            if q.started_before is not None and started >= _utc(q.started_before):
                continue
        out.append(info)
    return out[::-1] if q.order == "newest" else out


@router.get("", summary="List races (paged, filterable)")
def list_races(
    store: StoreDep, settings: SettingsDep, q: Annotated[RaceQuery, Query()]
) -> RacePage:
    """Races matching the filters, newest first unless ``order=oldest``."""
    if q.limit > settings.max_page_size:
        raise HTTPException(422, f"limit {q.limit} is over the maximum {settings.max_page_size}")
    matching = select(store.races(), q)
    page = matching[q.offset : q.offset + q.limit]
    return RacePage(
        total=len(matching),
        offset=q.offset,
        limit=q.limit,
        items=[RaceSummary.of(info) for info in page],
    )


@router.get("/{race_id}", summary="One race", responses=NOT_FOUND)
def get_race(race_id: RaceId, store: StoreDep, state: StateDep) -> RaceDetail:
    """A race's metadata, with its size on disk and compression ratio."""
    info = store.race(race_id).info
    nbytes = state.race_nbytes(store, info)
    raw = info.raw_nbytes
    return RaceDetail(
        **RaceSummary.of(info).model_dump(),
        extras=info.extras,
        n_shards=info.n_shards,
        nbytes=nbytes,
        raw_nbytes=raw,
        compression=round(raw / nbytes, 2) if nbytes else 0.0,
    )


def jsonable(values: npt.NDArray[Any]) -> list[Any]:
    """Array values as JSON-able lists (non-finite floats become null)."""
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            obj = values.astype(object)
            obj[~finite] = None
            out: list[Any] = obj.tolist()
            return out
    listed: list[Any] = values.tolist()
    return listed


@router.get(
    "/{race_id}/steps",
    summary="Per-step values of a race (action, reward, ...) over [start, stop)",
    responses={**NOT_FOUND, 422: {"model": Error, "description": "Unknown step array."}},
)
def get_steps(
    race_id: RaceId,
    store: StoreDep,
    settings: SettingsDep,
    names: Annotated[
        list[str] | None,
        Query(
            max_length=64,
            description="Step arrays to return (default: all).",
            examples=[["reward"]],
        ),
    ] = None,
    start: Annotated[int, Query(ge=0, le=2**40)] = 0,
    stop: Annotated[
        int | None, Query(ge=0, le=2**40, description="Default: the race length.")
    ] = None,
) -> StepWindow:
    """Step data for the viewer and for scripts; bounded by the committed length."""
    race = store.race(race_id)
    end = race.length if stop is None else min(stop, race.length)
    begin = min(start, end)
    if end - begin > settings.max_steps_window:
        raise HTTPException(
            422, f"{end - begin} steps asked for; at most {settings.max_steps_window} at once"
        )
    wanted = race.info.step_arrays if names is None else list(dict.fromkeys(names))
    arrays = {name: jsonable(race.steps(name, begin, end)) for name in wanted}
    return StepWindow(race_id=race_id, start=begin, stop=end, arrays=arrays)
