"""A TCP proxy on loopback that adds a fixed delay to every request.

The S3 benchmark runs its object store on loopback, where a request costs well under a
millisecond; behind this proxy each request costs one more `delay`, as a round trip
to an object store across a network would, so the figures show what concurrency and
range coalescing buy there.

    with DelayProxy("127.0.0.1", 8333, delay=0.010) as proxy:
        store = open_store("s3://bucket/prefix")   # with AWS_ENDPOINT_URL=proxy.endpoint
"""

from __future__ import annotations

import asyncio
import socket
import threading

HOST = "127.0.0.1"


class DelayProxy:
    """A TCP proxy on loopback that holds each request `delay` seconds before passing it on.

    A request is the first bytes a client sends after the last response bytes, so a
    large PUT body is delayed once, not per packet: every request costs one extra
    `delay`, as a network round trip would. Plain asyncio protocols, so that
    stopping closes every connection it holds.
    """

    def __init__(self, host: str, port: int, delay: float) -> None:
        self.upstream = (host, port)
        self.delay = delay
        self.connections: set[_ProxiedConnection] = set()
        self.loop = asyncio.new_event_loop()
        self._sock = socket.socket()
        self._sock.bind((HOST, 0))
        self._sock.listen(128)
        self.endpoint = f"http://{HOST}:{self._sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()

        async def start() -> asyncio.Server:
            return await self.loop.create_server(lambda: _ProxiedConnection(self), sock=self._sock)

        self._server = asyncio.run_coroutine_threadsafe(start(), self.loop).result()
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()
            while self.connections:
                for conn in list(self.connections):
                    conn.close()
                await asyncio.sleep(0.01)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _ProxiedConnection(asyncio.Protocol):
    """One client connection of a `DelayProxy` and its upstream connection."""

    def __init__(self, proxy: DelayProxy) -> None:
        self.proxy = proxy
        self.client: asyncio.Transport | None = None
        self.server: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # client bytes not yet passed on
        self.holding = False  # a request is being delayed
        self.answered = True  # the last bytes went to the client: the next ones are a request
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.client = transport
        self.proxy.connections.add(self)
        self._connecting = self.proxy.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            transport, _ = await self.proxy.loop.create_connection(
                lambda: _Upstream(self), *self.proxy.upstream
            )
        except OSError:
            self.close()
            return
        if self.closed:
            transport.close()
            return
        assert isinstance(transport, asyncio.Transport)
        self.server = transport
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.pending.append(data)
        if self.answered:  # the first bytes of a new request: hold them
            self.answered = False
            self.holding = True
            self.proxy.loop.call_later(self.proxy.delay, self._release)
        self._flush()

    def _release(self) -> None:
        self.holding = False
        self._flush()

    def _flush(self) -> None:
        if self.holding or self.server is None or self.closed:
            return
        for data in self.pending:
            self.server.write(data)
        self.pending.clear()

    def answer(self, data: bytes) -> None:
        self.answered = True
        if self.client is not None and not self.closed:
            self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True
        self._connecting.cancel()
        for transport in (self.client, self.server):
            if transport is not None:
                transport.close()
        self.proxy.connections.discard(self)


class _Upstream(asyncio.Protocol):
    def __init__(self, conn: _ProxiedConnection) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn.answer(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.close()
