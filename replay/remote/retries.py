"""How the client talks HTTP: which failed tries may be repeated, and which
`ReplayError` an error answer of the service stands for (`replay.remote.client`)."""

from __future__ import annotations

import httpx

from replay.errors import (
    CorruptDataError,
    RaceNotFoundError,
    RateLimitedError,
    ReplayError,
    SamplingError,
)

#: Errors that mean the request was never sent: any request may be tried again.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
#: Errors worth another try of a request that is safe to repeat (a GET, or one with
#: a request id): the connection failed or broke, maybe after the service acted.
RETRYABLE = (*NOT_SENT, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
#: Methods that never act, so any failed try may be repeated.
SAFE_METHODS = frozenset(["GET", "HEAD", "OPTIONS"])


class ServiceError(ReplayError):
    """An error answer of the service (or no answer at all); `status` is 0 for the latter."""

    def __init__(self, message: str, *, status: int = 0, error: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error = error


def error_of(response: httpx.Response) -> ReplayError:
    """The `ReplayError` an error answer stands for."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    name = str(body.get("error", ""))
    detail = body.get("detail", response.reason_phrase)
    message = detail if isinstance(detail, str) else f"invalid request: {detail}"
    where = f"{response.request.method} {response.request.url.path}"
    if name == "RaceNotFoundError":
        return RaceNotFoundError(message)
    if name == "RateLimitedError":
        try:
            retry_after = float(response.headers.get("Retry-After", "1"))
        except ValueError:
            retry_after = 1.0
        return RateLimitedError(message, retry_after=max(0.0, retry_after))
    if name == "SamplingError":
        return SamplingError(message)
    if name == "CorruptDataError":
        return CorruptDataError(
            message,
            race_id=str(body.get("race_id", "")),
            shard=int(body.get("shard", -1)),
            step=body.get("step"),
        )
    return ServiceError(
        f"{where}: {response.status_code} {name or response.reason_phrase}: {message}",
        status=response.status_code,
        error=name,
    )
