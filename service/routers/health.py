"""``GET /v1/health``: liveness, without a token."""

from __future__ import annotations

from fastapi import APIRouter

from service import __version__
from service.deps import StoreDep
from service.models import Error, Health

router = APIRouter(prefix="/v1", tags=["health"])


@router.get(
    "/health",
    summary="Liveness: the service runs and its store opens",
    responses={503: {"model": Error, "description": "The store cannot be opened."}},
)
def health(store: StoreDep) -> Health:
    """Answers without a token, so load balancers and probes can use it."""
    return Health(version=__version__, races=len(store.race_ids()))
