"""Probes, without a token: ``GET /v1/live`` (liveness) and ``GET /v1/health`` (readiness).

The two answer different questions, so an orchestrator can act on each:

- ``/v1/live``: is the process up and its event loop answering? It touches no
  storage, so it stays 200 while the store is slow or gone. Restart the process
  when it fails (Kubernetes livenessProbe and startupProbe).
- ``/v1/health``: can this replica serve batches now? It opens the store, checks
  the store's root ``zarr.json`` is still there and lists the races (one HEAD and
  one LIST on an object store), and answers 503 with the reason otherwise. Races
  whose metadata cannot be read (permissions, EIO, a 403) make it ``degraded``
  with their count, still 200: the others serve. Take
  the replica out of rotation while it fails (readinessProbe); restarting would
  not bring the store back. Its storage reads run on threads of their own
  (`ServiceState.probe_threads`), never queued behind other requests' reads.

Both are exempt from the request limit (`service.middleware`) and need no token.
"""

from __future__ import annotations

from typing import Literal

import anyio
from fastapi import APIRouter

from service import __version__
from service.deps import SettingsDep, StateDep
from service.models import Error, Health, Live
from service.routers import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["health"])

#: How old the scan of race metadata behind ``/v1/health``'s ``degraded`` may be (s):
#: a probe reads every race's metadata at most this often (any /v1/races, /v1/stats
#: or /metrics request rescans too).
HEALTH_SCAN_S = 30.0


@router.get("/live", summary="Liveness: the process answers (reads no storage)")
async def live() -> Live:
    """Answers from memory on the event loop (not the worker threads that reading
    the store keeps busy), without a token: for liveness probes."""
    return Live(version=__version__)


@router.get(
    "/health",
    summary="Readiness: the store opens and its races list",
    responses={503: {"model": Error, "description": "The store is missing or unreadable."}},
)
async def health(settings: SettingsDep, state: StateDep) -> Health:
    """Answers without a token, so load balancers and readiness probes can use it.

    ``degraded`` (still 200: the other races serve) when races cannot be read, by the
    last scan of the store's metadata (`ServiceState.damaged`, at most
    `HEALTH_SCAN_S` old)."""

    def probe() -> tuple[int, int]:
        store = state.store(settings.store)
        store.check()
        return len(store.race_ids()), len(state.damaged(store, HEALTH_SCAN_S))

    races, damaged = await anyio.to_thread.run_sync(probe, limiter=state.probe_threads)
    status: Literal["ok", "degraded"] = "degraded" if damaged else "ok"
    return Health(status=status, version=__version__, races=races, damaged_races=damaged)
