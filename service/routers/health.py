"""Probes, without a token: ``GET /v1/live`` (liveness) and ``GET /v1/health`` (readiness).

The two answer different questions, so an orchestrator can act on each:

- ``/v1/live``: is the process up and its event loop answering? It touches no
  storage, so it stays 200 while the store is slow or gone. Restart the process
  when it fails (Kubernetes livenessProbe and startupProbe).
- ``/v1/health``: can this replica serve batches now? It opens the store, checks
  the store's root ``zarr.json`` is still there and lists the races (one HEAD and
  one LIST on an object store), and answers 503 with the reason otherwise. Take
  the replica out of rotation while it fails (readinessProbe); restarting would
  not bring the store back. Its storage reads run on threads of their own
  (`ServiceState.probe_threads`), never queued behind other requests' reads.

Both are exempt from the request limit (`service.middleware`) and need no token.
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter

from replay.errors import StoreError
from replay.format import spec as fmt
from service import __version__
from service.deps import SettingsDep, StateDep
from service.models import Error, Health, Live
from service.routers import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["health"])


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
    """Answers without a token, so load balancers and readiness probes can use it."""

    def races() -> int:
        store = state.store(settings.store)
        if not store.storage.exists(fmt.METADATA):  # removed since it was opened
            raise StoreError(f"{store.root} is no longer a replay store (no {fmt.METADATA})")
        return len(store.race_ids())

    n = await anyio.to_thread.run_sync(races, limiter=state.probe_threads)
    return Health(version=__version__, races=n)
