"""The app factory.

    app = create_app()                                   # settings from REPLAY_* variables
    app = create_app(Settings(store="./replay-data"))    # explicit (tests, embedding)

``uvicorn --factory service.app:create_app`` runs it as is; `replay serve`
(`service.cli`) checks the bind address first and runs it with uvicorn.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service import __version__, errors
from service.inserts import Inserts
from service.middleware import (
    BodyLimitMiddleware,
    ConcurrencyLimitMiddleware,
    HeadAsGetMiddleware,
    MetricsMiddleware,
    SecurityHeadersMiddleware,
)
from service.routers import frames, health, insert, metrics, races, sample, stats, viewer
from service.settings import Settings, get_settings
from service.state import ServiceState

DESCRIPTION = """\
Randomized mini-batches and race browsing over one replay store.

`POST /v1/sample` answers in the binary batch format `application/vnd.replay.batch.v1`
(docs/protocol.md); everything else is JSON, except frames (`image/jpeg`, the stored
bytes) and `/metrics` (Prometheus text). When the service has a token, every route
but the probes `/v1/live` (liveness) and `/v1/health` (readiness) needs
`Authorization: Bearer <token>`.
"""


def body_limit(settings: Settings, path: str) -> int:
    """The largest request body at `path`: ``max_chunk_bytes`` on the chunk route (a
    chunk carries up to a flush interval of frames), ``max_body_bytes`` elsewhere."""
    if insert.CHUNK_PATH.fullmatch(path):
        return settings.max_chunk_bytes
    return settings.max_body_bytes


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app serving `settings.store` (settings from the environment when None)."""
    if settings is None:
        settings = get_settings()
    fixed = settings

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        app.state.replay.samplers.clear()  # stop the samplers' I/O threads

    app = FastAPI(
        lifespan=lifespan,
        title="replay",
        version=__version__,
        description=DESCRIPTION,
        redoc_url=None,  # ReDoc needs inline styles, which the CSP refuses; /docs stays
        openapi_tags=[
            {"name": "health", "description": "Liveness and readiness probes (no token)."},
            {"name": "stats", "description": "Store totals and counters."},
            {"name": "races", "description": "Recorded races and their step data."},
            {"name": "frames", "description": "Stored frames, as stored."},
            {"name": "sample", "description": "Batches for learners; priorities."},
            {"name": "metrics", "description": "Prometheus metrics."},
            {"name": "insert", "description": "Recording races from other machines."},
        ],
    )

    async def settings_of_this_app() -> Settings:  # async: resolved without a worker thread
        return fixed

    app.dependency_overrides[get_settings] = settings_of_this_app
    app.state.replay = ServiceState(
        settings.sampler_cache_size, settings.max_batches_in_flight, settings.request_ids_ttl_s
    )
    errors.install(app)
    app.state.inserts = Inserts(settings, app.state.replay.metrics.registry)
    for module in (health, stats, races, frames, sample, metrics, viewer, insert):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=viewer.STATIC), name="static")
    app.add_middleware(BodyLimitMiddleware, max_bytes=functools.partial(body_limit, fixed))
    app.add_middleware(ConcurrencyLimitMiddleware, limit=lambda: fixed.max_requests_in_flight)
    app.add_middleware(HeadAsGetMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=lambda: app.state.replay.metrics)
    app.add_middleware(SecurityHeadersMiddleware)  # outermost: on every answer
    return app
