"""``GET /metrics``: Prometheus text format (token required when one is set)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import Authorized, StateDep, StoreDep

router = APIRouter(tags=["metrics"], dependencies=[Authorized])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(store: StoreDep, state: StateDep) -> Response:
    """Request latency histograms, batch bytes, frames served, errors, store gauges
    (races, frames, and races that cannot be read)."""
    races, damaged = state.scan(store)
    state.metrics.races.set(len(races))
    state.metrics.damaged_races.set(len(damaged))
    state.metrics.frames.set(sum(info.length for info in races))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
