"""How the client talks HTTP: which failed tries may be repeated, how long and how
often (`RetryPolicy`, one for `Client` calls and a remote race's chunks alike), and which
`ReplayError` an error answer of the service stands for (`replay.remote.client`).

    policy = RetryPolicy(deadline_s=60, backoff=0.05, max_backoff=2)
    response = policy.call(lambda: http.post(path, content=body), where="POST /v1/...",
                           retry_on=(httpx.TransportError,), busy=lambda r: r.status_code == 503)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class RetryPolicy:
    """Tries a call again after a failed connection or a busy answer, with backoff.

    At most `tries` tries (None: no count) and, from the first try on, at most
    `deadline_s` seconds (None: no deadline; one of the two must be set). The pause
    starts at `backoff` seconds and doubles up to `max_backoff`; a busy answer's
    ``Retry-After`` (seconds) lengthens it, up to `max_backoff` (the caller's own
    bound on one wait). A try that would start past the deadline is not made.
    """

    tries: int | None = None
    deadline_s: float | None = None
    backoff: float = 0.1
    max_backoff: float = 4.0

    def __post_init__(self) -> None:
        if self.tries is None and self.deadline_s is None:
            raise ValueError("a RetryPolicy needs tries or deadline_s (or both)")
        if self.tries is not None and self.tries < 1:
            raise ValueError(f"tries must be >= 1, got {self.tries}")
        if self.deadline_s is not None and not self.deadline_s >= 0:
            raise ValueError(f"deadline_s must be >= 0 seconds, got {self.deadline_s!r}")
        if not (self.backoff >= 0 and self.max_backoff >= 0):
            raise ValueError(
                f"backoff and max_backoff must be >= 0, got {self.backoff}, {self.max_backoff}"
            )

    def call(
        self,
        send: Callable[[], httpx.Response],
        *,
        where: str,
        retry_on: tuple[type[httpx.TransportError], ...],
        busy: Callable[[httpx.Response], bool],
    ) -> httpx.Response:
        """`send()` until it gives an answer that is not `busy` (returned, whatever its
        status). A transport error not in `retry_on` raises `ServiceError` at once; tries
        or time spent raise `ServiceError` naming the last problem (the error answer's
        `ReplayError` for a busy answer)."""
        started = time.monotonic()
        delay = self.backoff
        attempt = 0
        while True:
            attempt += 1
            failed: httpx.TransportError | None = None
            try:
                response = send()
            except httpx.TransportError as e:
                if not isinstance(e, retry_on):
                    raise ServiceError(
                        f"{where}: no answer ({type(e).__name__}: {e}); not retried, as the "
                        "service may have acted on it"
                    ) from e
                wait, failed = delay, e
            else:
                if not busy(response):
                    return response
                wait = max(delay, min(_retry_after(response), self.max_backoff))
            spent = time.monotonic() - started
            out_of_time = self.deadline_s is not None and spent + wait > self.deadline_s
            if out_of_time or (self.tries is not None and attempt >= self.tries):
                tried = f"after {attempt} tries in {spent:.1f} s"
                if failed is not None:
                    raise ServiceError(f"{where}: no answer {tried} ({failed})") from failed
                raise _gave_up(error_of(response), tried)
            time.sleep(wait)
            delay = min(2 * delay, max(self.backoff, self.max_backoff))


def _retry_after(response: httpx.Response) -> float:
    """A busy answer's ``Retry-After`` in seconds (0 when absent or not a number)."""
    try:
        seconds = float(response.headers.get("Retry-After", "0"))
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _gave_up(error: ReplayError, tried: str) -> ReplayError:
    """`error` of the last busy answer, its message saying how long it was tried."""
    if isinstance(error, ServiceError):
        return ServiceError(f"{error} ({tried})", status=error.status, error=error.error)
    return error
