"""``/v1/races``: the race list (paged, filtered, sorted), one race, its step data.

Metadata is read fresh on every request, so races being recorded appear and
grow without a restart. ``GET /v1/races/{race}`` takes any unique start of a
race id (`Store.resolve`, as git takes hashes); its answer has the full id.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from replay.format.race import RaceInfo
from replay.read.filters import Filters
from replay.store import Store
from service.deps import Authorized, RaceId, SettingsDep, StateDep, StoreDep
from service.models import Error, RaceDetail, RacePage, RaceSummary, Status, StepWindow
from service.routers import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/races", tags=["races"], dependencies=[Authorized])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": Error, "description": "No such race."}}

#: A race id or any unique start of one (case-insensitive), as `Store.resolve` takes.
RaceRef = Annotated[
    str,
    Path(
        pattern=r"^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{1,26}$",
        description="A race id, or any unique start of one (like a git hash).",
        examples=["01JF3K"],
    ),
]

#: Columns the race list sorts by (`RaceQuery.sort`).
SortKey = Literal[
    "started", "race_id", "env", "map", "policy", "status", "length", "return", "duration"
]


#: One filter value or several (``?env=a&env=b``: any of them matches).
Values = list[Annotated[str, Field(max_length=200)]] | None


class RaceQuery(BaseModel):
    """Filters, order and paging of the race list (query parameters).

    The filters validate into `replay.Filters` (`filters`), the rule samplers use,
    so ``GET /v1/races?env=...`` lists the races a sampler with the same filters
    draws from. ``started_after`` / ``started_before`` are the older spellings of
    ``since`` / ``until`` and still accepted.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    env: Values = Field(None, max_length=64, examples=[["CarRacing-v3"]])
    map: Values = Field(None, max_length=64)
    policy: Values = Field(None, max_length=64)
    status: list[Status] | None = Field(None, max_length=3)
    since: dt.datetime | None = Field(
        None, description="Only races started at or after this time (UTC if no zone)."
    )
    until: dt.datetime | None = Field(
        None, description="Only races started before this time (UTC if no zone)."
    )
    started_after: dt.datetime | None = Field(None, description="Same as `since`.")
    started_before: dt.datetime | None = Field(None, description="Same as `until`.")
    min_length: int = Field(0, ge=0, le=2**40, description="Only races with this many steps.")
    q: str | None = Field(
        None,
        max_length=200,
        description="Only races whose env, map, policy or id contains this (any case).",
        examples=["carracing"],
    )
    codec: list[Literal["jpeg", "zstd"]] | None = Field(None, max_length=2)
    height: list[Annotated[int, Field(ge=1)]] | None = Field(None, max_length=64)
    width: list[Annotated[int, Field(ge=1)]] | None = Field(None, max_length=64)
    order: Literal["newest", "oldest"] = "newest"
    sort: SortKey | None = Field(
        None, description="Sort by this column (ascending; `desc` reverses); overrides `order`."
    )
    desc: bool = False
    offset: int = Field(0, ge=0, le=2**31)
    limit: int = Field(50, ge=1, description="Page size (at most the service's max_page_size).")

    @model_validator(mode="after")
    def _one_spelling(self) -> RaceQuery:
        for new, old in (("since", "started_after"), ("until", "started_before")):
            if getattr(self, new) is not None and getattr(self, old) is not None:
                raise ValueError(f"give {new} or {old}, not both (they are the same filter)")
        return self

    def filters(self) -> Filters:
        """The query's filters as the library's `Filters`."""
        return Filters(
            env=self.env,
            map=self.map,
            policy=self.policy,
            status=self.status,
            since=self.since or self.started_after,
            until=self.until or self.started_before,
            min_length=self.min_length,
            contains=self.q,
            codec=self.codec,
            height=self.height,
            width=self.width,
        )


def select(races: Iterable[RaceInfo], q: RaceQuery) -> list[RaceInfo]:
    """The races matching the query's filters, in its order (no paging)."""
    filters = q.filters()
    out = [info for info in races if filters.matches(info)]
    return out[::-1] if q.order == "newest" else out


class Returns:
    """Total return of races, remembered per (race, length): a race's rewards never
    change once committed, so each is summed once per length it is seen at."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sums: dict[tuple[str, str], tuple[int, float]] = {}

    def of(self, store: Store, info: RaceInfo) -> float | None:
        """The sum of `info`'s committed rewards; None if the race has no reward array."""
        key = (str(store.root), info.race_id)
        with self._lock:
            known = self._sums.get(key)
        if known is not None and known[0] == info.length:
            return known[1]
        if "reward" not in info.step_arrays:
            return None
        rewards = store.race(info.race_id).steps("reward", 0, info.length)
        total = float(np.nansum(rewards.astype(np.float64)))
        with self._lock:
            self._sums[key] = (info.length, total)
        return total


RETURNS = Returns()


def _sort_key(key: SortKey, returns: dict[str, float | None]) -> Any:
    def of(info: RaceInfo) -> Any:
        if key == "return":
            value = returns[info.race_id]
            return (value is None, value or 0.0)
        if key == "started":
            return info.race_id  # ids sort by creation time
        if key == "duration":
            return info.duration_s
        return getattr(info, key)

    return of


@router.get("", summary="List races (paged, filterable, sortable)")
def list_races(
    store: StoreDep, settings: SettingsDep, state: StateDep, q: Annotated[RaceQuery, Query()]
) -> RacePage:
    """Races matching the filters, newest first unless ``order=oldest`` or ``sort``."""
    if q.limit > settings.max_page_size:
        raise HTTPException(422, f"limit {q.limit} is over the maximum {settings.max_page_size}")
    matching = select(state.scan(store)[0], q)
    returns: dict[str, float | None] = {}
    if q.sort is not None:
        if q.sort == "return":
            returns = {info.race_id: RETURNS.of(store, info) for info in matching}
        matching.sort(key=_sort_key(q.sort, returns), reverse=q.desc)
    page = matching[q.offset : q.offset + q.limit]
    return RacePage(
        total=len(matching),
        offset=q.offset,
        limit=q.limit,
        items=[_summary(store, info, returns) for info in page],
    )


def _summary(store: Store, info: RaceInfo, returns: dict[str, float | None]) -> RaceSummary:
    total = returns[info.race_id] if info.race_id in returns else RETURNS.of(store, info)
    return RaceSummary.of(info).model_copy(update={"total_return": total})


@router.get(
    "/{race_id}", summary="One race (by its id or a unique start of it)", responses=NOT_FOUND
)
def get_race(race_id: RaceRef, store: StoreDep, state: StateDep) -> RaceDetail:
    """A race's metadata, with its size on disk, compression ratio and total return."""
    info = store.race(store.resolve(race_id)).info
    nbytes = state.race_nbytes(store, info)
    raw = info.raw_nbytes
    return RaceDetail(
        **_summary(store, info, {}).model_dump(),
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
