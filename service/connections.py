"""Connections: the uvicorn setup of the service, with timeouts on slow and idle clients.

uvicorn closes an idle keep-alive connection only once a response has been sent:
a connection that sends nothing, or a header a byte at a time (slowloris), stays
open for good, and so does one that stops reading its answer (its bytes wait in
the server's memory). `TimedH11Protocol` (uvicorn's h11 protocol) adds two timers
per connection:

- *request timeout* (`Settings.timeout_request_s`): from the moment the service
  waits for a request (the connection opened, or the previous answer was sent),
  the whole request, head and body, must arrive within this many seconds, or the
  connection is closed. Trickling bytes does not extend it.
- *send timeout* (`Settings.timeout_send_s`): a client that takes nothing of its
  answer for this long (the socket's send buffer stays full) is dropped, so a
  batch waiting for it leaves memory and its batch slot frees.

Idle connections between requests are closed after `Settings.timeout_keep_alive_s`
(uvicorn's keep-alive timeout). Connections no longer count towards the request
limit (`service.middleware.ConcurrencyLimitMiddleware` counts requests, probes
excepted), so open connections cannot lock the probes out. Use::

    config = uvicorn_config(app, settings, log_level="info")
    uvicorn.Server(config).run(sockets=[sock])
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.settings import Settings

log = logging.getLogger(__name__)

#: States of the client's side in which the service waits for (more of) a request.
_WAITING = (h11.IDLE, h11.SEND_BODY)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request timeout and a send timeout (module doc).

    The timeouts are class attributes; `protocol_class` makes a subclass with others.
    """

    timeout_request: float = 10.0
    timeout_send: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._request_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_request()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_request()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._request_timer, self._send_timer):
            if timer is not None:
                timer.cancel()
        self._request_timer = self._send_timer = None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.timeout_send, self._send_timed_out)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _watch_request(self) -> None:
        """Arm the request timer while a request is awaited; disarm it once one is in."""
        waiting = self.conn.their_state in _WAITING and not self.transport.is_closing()
        if waiting and self._request_timer is None:
            self._request_timer = self.loop.call_later(
                self.timeout_request, self._request_timed_out
            )
        elif not waiting and self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if not self.transport.is_closing():
            log.debug("%s: no complete request in %s s; closing", self.client, self.timeout_request)
            self.transport.close()

    def _send_timed_out(self) -> None:
        self._send_timer = None
        if not self.transport.is_closing():
            log.info("%s read nothing for %s s; dropping it", self.client, self.timeout_send)
            self.transport.abort()  # close() would wait for the unsent bytes


def protocol_class(timeout_request: float, timeout_send: float) -> type[TimedH11Protocol]:
    """A `TimedH11Protocol` with these timeouts (seconds)."""
    return type(
        "TimedH11Protocol",
        (TimedH11Protocol,),
        {"timeout_request": timeout_request, "timeout_send": timeout_send},
    )


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration of the service: its timeouts, no connection limit
    (requests are limited by the app), `options` passed on (log_level, access_log...)."""
    return uvicorn.Config(
        app,
        http=protocol_class(settings.timeout_request_s, settings.timeout_send_s),
        timeout_keep_alive=settings.timeout_keep_alive_s,
        limit_concurrency=None,
        **options,
    )
