"""ASGI middleware: request metrics, the request body limit, the request limit, HEAD,
security headers.

All are plain ASGI (not BaseHTTPMiddleware), so streaming responses and
background tasks pass through untouched.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

#: An oversized body up to this size is read (and dropped) before the 413 is sent.
DRAIN_MAX = 64 << 20
#: The probes: never refused for load (they read little, and must answer under a flood).
PROBES = frozenset(["/v1/live", "/v1/health"])


def route_label(scope: Scope) -> str:
    """The matched route's template, or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Times every HTTP request and counts it by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics]) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m = self.metrics()
            route = route_label(scope)
            method = str(scope.get("method", ""))
            m.requests.labels(method, route, str(status)).inc()
            m.latency.labels(method, route).observe(time.perf_counter() - started)
            m.total_requests += 1
            if status >= 400:
                m.total_errors += 1


class BodyLimitMiddleware:
    """Answers 413 to request bodies over `max_bytes(path)` (declared or streamed): a
    limit per path, so the chunk route takes larger bodies than the others."""

    def __init__(self, app: ASGIApp, max_bytes: Callable[[str], int]) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes(str(scope.get("path", "")))
        declared = _content_length(scope)
        too_large = declared is not None and declared > limit
        if too_large and declared is not None and declared > DRAIN_MAX:
            await _too_large(send, limit)  # not worth reading: the client gets a reset
            return
        # Read the body up front (at most `limit`), then replay it. An
        # oversized body is read to its end and dropped, so the client sees the 413
        # instead of a connection reset.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            too_large = too_large or size > limit
            if not too_large:
                chunks.append(body)
            elif size > DRAIN_MAX:
                break
            more = bool(message.get("more_body", False))
        if too_large:
            await _too_large(send, limit)
            return
        replayed = False

        async def replay_receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, limit: int) -> None:
    detail = f"request body over the limit of {limit} bytes"
    await _error_answer(send, 413, "RequestTooLarge", detail, [(b"connection", b"close")])


async def _error_answer(
    send: Send, status: int, error: str, detail: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """The service's JSON error body, sent straight through ASGI (before any route)."""
    body = json.dumps({"error": error, "detail": detail}).encode()
    start: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


class ConcurrencyLimitMiddleware:
    """Answers 503 (with ``Retry-After``) to requests over `limit` at once, probes excepted.

    Counts requests being handled, not open connections (idle and slow connections
    are `service.connections`' business), so a flood of connections never turns the
    probes away. A refused request was not acted on: clients may retry it.
    """

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in PROBES:
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit():
            await _busy(send, self.active)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


class HeadAsGetMiddleware:
    """Answers ``HEAD`` on every ``GET`` route as ``GET`` would, without the body
    (the server sends no body to a HEAD request); routes without GET answer 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


async def _busy(send: Send, active: int) -> None:
    detail = f"busy: {active} requests in progress; retry"
    await _error_answer(send, 503, "Busy", detail, [(b"retry-after", b"1")])


#: The viewer's policy, sent with every answer (JSON, frames and errors too): scripts,
#: styles and images of this origin only (a frame is a ``blob:`` URL of a fetched JPEG),
#: no inline code at all, nothing may frame a page of this service (clickjacking).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: FastAPI's API browser loads Swagger UI from its CDN and starts it with an inline
#: script (its OAuth2 redirect page too), allowed by its hash (the pages are built from
#: the app's title and the OpenAPI address, never from a request's data).
DOCS_PATHS = frozenset(["/docs", "/docs/oauth2-redirect"])
DOCS_CSP = (
    "default-src 'none'; script-src https://cdn.jsdelivr.net {hashes}; "
    "style-src https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def script_hashes(html: bytes) -> str:
    """The CSP sources (``'sha256-...'``) of the inline scripts of `html`."""
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'"
        for body in INLINE_SCRIPT.findall(html)
    )


class SecurityHeadersMiddleware:
    """Adds the Content-Security-Policy, ``nosniff`` and ``DENY`` framing to every answer,
    the middlewares' own errors included (it wraps them all)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope.get("path") in DOCS_PATHS:
            await self._docs(scope, receive, send)
        else:
            headers = [(b"content-security-policy", CSP.encode()), *SECURITY_HEADERS]

            async def add_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), *headers]}
                await send(message)

            await self.app(scope, receive, add_headers)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The API browser: its page is read whole (a few KB) to hash its inline script."""
        start: Message = {}
        chunks: list[bytes] = []

        async def hold(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(chunks)
            policy = DOCS_CSP.format(hashes=script_hashes(body)).encode()
            headers = [(b"content-security-policy", policy), *SECURITY_HEADERS]
            await send({**start, "headers": [*start.get("headers", []), *headers]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, hold)
