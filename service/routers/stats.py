"""``GET /v1/stats``: store totals, the cached samplers, request counters."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from replay.sample.sampler import Sampler
from service.deps import Authorized, StateDep, StoreDep
from service.models import SamplerState, Stats
from service.routers import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["stats"], dependencies=[Authorized])


@router.get("/stats", summary="Store totals, samplers and request counters")
def stats(store: StoreDep, state: StateDep) -> Stats:
    """Totals over every race (sizes of finished races are remembered, the rest re-read)."""
    races, damaged = state.scan(store)
    state.forget_sizes_except({info.race_id for info in races})
    by_status: dict[str, int] = {}
    frames = nbytes = raw = 0
    for info in races:
        by_status[info.status] = by_status.get(info.status, 0) + 1
        frames += info.length
        raw += info.raw_nbytes
        nbytes += state.race_nbytes(store, info)
    m = state.metrics
    return Stats(
        races=len(races),
        races_by_status=by_status,
        frames=frames,
        nbytes=nbytes,
        raw_nbytes=raw,
        compression=round(raw / nbytes, 2) if nbytes else 0.0,
        damaged_races=damaged,
        samplers=[_sampler_state(entry.params, entry.value) for entry in state.samplers.entries()],
        requests=m.total_requests,
        errors=m.total_errors,
        frames_served=m.total_frames,
        uptime_s=round(time.monotonic() - m.started, 3),
    )


def _sampler_state(params: dict[str, Any], sampler: Sampler) -> SamplerState:
    counts = sampler.stats()
    return SamplerState(
        **params,
        batches=counts.batches,
        corrupt_skipped=counts.corrupt_skipped,
        damaged_races=counts.damaged_races,
    )
