"""Which races to take: the one race filter of the library and the service.

Samplers (`Store.sampler(filters=...)`, ``POST /v1/sample``'s ``filters``) and the
race list (``GET /v1/races``) validate into this one class, so a filter selects the
same races whichever way it is asked for.

    Filters(env="CarRacing-v3", since="2026-05-01T00:00:00+00:00")
    Filters(map=["seed-1", "seed-2"], min_length=100).matches(race.info)
    Filters(codec="jpeg", height=900, width=1600)   # one codec, one frame size
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from replay.format.race import RaceInfo


@dataclass(frozen=True)
class Filters:
    """Which races a sampler draws from (or a race list shows); None means any.

    `env`, `map`, `policy`, `status`, `race_ids`, `codec` (the frame codec's name,
    ``"jpeg"`` or ``"zstd"``), `height` and `width` (frame size in pixels) take one
    value or a sequence of values (any of them matches). `since` / `until` bound the race's
    ``started_at`` (ISO 8601 strings or datetimes, UTC when they have no zone;
    ``since <= started_at < until``); a race whose ``started_at`` cannot be read
    passes no time bound. `min_length` keeps races with at least that many
    committed steps; `contains` keeps races whose env, map, policy or id contains
    it (any case). All fields combine with AND.

        Filters(env="CarRacing-v3", since="2026-05-01T00:00:00+00:00")
        store.sampler(filters={"map": ["seed-1", "seed-2"]})
    """

    env: str | Sequence[str] | None = None
    map: str | Sequence[str] | None = None
    policy: str | Sequence[str] | None = None
    since: str | dt.datetime | None = None
    until: str | dt.datetime | None = None
    race_ids: Sequence[str] | None = None
    status: str | Sequence[str] | None = None
    min_length: int = 0
    contains: str | None = None
    codec: str | Sequence[str] | None = None
    height: int | Sequence[int] | None = None
    width: int | Sequence[int] | None = None

    def __post_init__(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                _parse_time(value, name)
        if self.min_length < 0:
            raise ValueError(f"min_length must be >= 0, got {self.min_length}")

    @classmethod
    def of(cls, value: Filters | Mapping[str, Any] | None) -> Filters:
        """A `Filters` from itself, a dict of its fields, or None (no filter)."""
        if value is None:
            return cls()
        if isinstance(value, Filters):
            return value
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown filter(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**value)

    def matches(self, info: RaceInfo) -> bool:
        """True if the race passes every filter."""
        for name, actual in (
            ("env", info.env),
            ("map", info.map),
            ("policy", info.policy),
            ("status", info.status),
            ("race_ids", info.race_id),
            ("codec", info.codec.get("name")),
            ("height", info.height),
            ("width", info.width),
        ):
            want = getattr(self, name)
            if want is not None and actual not in _as_set(want):
                return False
        if info.length < self.min_length:
            return False
        if self.contains is not None and not _contains(info, self.contains):
            return False
        return self._in_time(info)

    def _in_time(self, info: RaceInfo) -> bool:
        if self.since is None and self.until is None:
            return True
        try:
            started = _parse_time(info.started_at, "started_at")
        except ValueError:
            return False  # a damaged start time is in no time window
        if self.since is not None and started < _parse_time(self.since, "since"):
            return False
        return self.until is None or started < _parse_time(self.until, "until")


def _as_set(value: str | int | Sequence[str] | Sequence[int]) -> set[object]:
    return {value} if isinstance(value, str | int) else set(value)


def _contains(info: RaceInfo, text: str) -> bool:
    needle = text.casefold()
    return any(
        needle in field.casefold() for field in (info.env, info.map, info.policy, info.race_id)
    )


def _parse_time(value: str | dt.datetime, name: str) -> dt.datetime:
    """`value` as an aware datetime (UTC when it has no zone); ValueError naming `name`."""
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be an ISO 8601 time, got {value!r}") from e
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)
