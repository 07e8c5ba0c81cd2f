"""Errors to HTTP answers, in one place.

Every error answer has the body of `service.models.Error`:
``{"error": <name>, "detail": <message naming the value>, ...}``, invalid requests
(422 ``ValidationError``) too, with ``errors`` listing the fields. The mapping
of `replay.errors` (and of the I/O errors a store read can raise) is the table
below; nothing maps to 500 — a damaged shard is the store's state, not a bug
of the service, so it is a 409 that names the race and shard::

    RaceNotFoundError            404
    RateLimitedError             429  (+ Retry-After: min_size / samples_per_insert held)
    SamplingError                422  (the request is valid; this store cannot satisfy it)
    StepDataError, FrameError    422
    CorruptDataError             409  (+ race_id, shard, step)
    RequestIdConflict            422  (a Replay-Request-Id reused with other content)
    RaceBusyError                503  (+ Retry-After: 1; a race held by a replica on another host)
    StoreError                   503  (the store is missing or unusable)
    other ReplayError            400
    FileNotFoundError            404  (removed while being read, e.g. evicted)
    EOFError, other OSError      503
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from replay.errors import (
    CorruptDataError,
    FrameError,
    RaceBusyError,
    RaceNotFoundError,
    RateLimitedError,
    ReplayError,
    SamplingError,
    StepDataError,
    StoreError,
)
from service.models import Error, FieldError
from service.request_ids import RequestIdConflict
from service.state import ServiceState

log = logging.getLogger(__name__)

STATUS: list[tuple[type[BaseException], int]] = [
    (RaceNotFoundError, 404),
    (RateLimitedError, 429),
    (SamplingError, 422),
    (StepDataError, 422),
    (FrameError, 422),
    (CorruptDataError, 409),
    (RequestIdConflict, 422),
    (StoreError, 503),
    (ReplayError, 400),
    (FileNotFoundError, 404),
    (OSError, 503),
    (EOFError, 503),
]


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception is answered with."""
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 503


def _count(request: Request, name: str) -> None:
    state: ServiceState = request.app.state.replay
    state.metrics.count_error(name)


async def store_error_handler(request: Request, exc: Exception) -> Response:
    """The one handler of `ReplayError` and store I/O errors."""
    code = status_of(exc)
    name = type(exc).__name__
    _count(request, name)
    body = Error(error=name, detail=str(exc) or name)
    if isinstance(exc, CorruptDataError):
        body.race_id, body.shard, body.step = exc.race_id, exc.shard, exc.step
        log.warning("corrupt data: %s", exc)
    elif isinstance(exc, OSError | EOFError) and not isinstance(exc, FileNotFoundError):
        log.warning("store read failed: %s", exc)
        body.detail = f"reading the store failed: {exc}"
    headers = None
    if isinstance(exc, RateLimitedError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    elif isinstance(exc, RaceBusyError):  # its holder's lease may expire: ask again
        headers = {"Retry-After": "1"}
    return JSONResponse(body.model_dump(exclude_none=True), status_code=code, headers=headers)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """HTTPException (401, 404 of unknown routes, 405, ...) in the common error shape."""
    assert isinstance(exc, HTTPException)
    name = {
        401: "Unauthorized",
        404: "NotFound",
        405: "MethodNotAllowed",
        403: "Forbidden",
        429: "Busy",
        503: "Busy",
    }.get(exc.status_code, "HTTPError")
    _count(request, name)
    body = Error(error=name, detail=str(exc.detail))
    return JSONResponse(body.model_dump(exclude_none=True), exc.status_code, headers=exc.headers)


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's 422 for invalid parameters and bodies, in the common shape (counted):
    ``detail`` says what is wrong with each field, ``errors`` lists them. The offending
    input is not echoed (it may be anything: a lone surrogate cannot be encoded as
    UTF-8, ``NaN`` is not JSON; both were a 500), and every message is made encodable."""
    assert isinstance(exc, RequestValidationError)
    _count(request, "ValidationError")
    fields = [
        FieldError(
            loc=[_text(p) if isinstance(p, str) else p for p in e.get("loc", ())],
            msg=_text(str(e.get("msg", ""))),
            type=_text(str(e.get("type", ""))),
        )
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(map(str, f.loc))}: {f.msg}" for f in fields)
    body = Error(error="ValidationError", detail=detail or "invalid request", errors=fields)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=422)


def _text(value: str) -> str:
    """`value` with anything UTF-8 cannot encode (lone surrogates) as ``\\udXXX`` escapes."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    for cls in (ReplayError, OSError, EOFError):
        app.add_exception_handler(cls, store_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
