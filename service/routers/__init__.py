"""One router per resource: health, stats, races, frames, sample, metrics, viewer."""

#: The version of the HTTP API: the prefix of every route but /metrics and the viewer,
#: written here only. (Each router carries it rather than one ``include_router(prefix=)``
#: in app.py: FastAPI (0.165) includes routers lazily and hands middleware the
#: router's own route, so the metrics' route label would lose the prefix.)
API_PREFIX = "/v1"
