"""Accepted connections have TCP_NODELAY (issue 23, item 4): without it every small
answer on a reused keep-alive connection waited ~40 ms (Nagle against the client's
delayed ACK). The round trip itself is a benchmark (`service.tools.latency_bench`)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import httpx
import psutil
from service_helpers import ThreadServer, address

from service.cli import bind
from service.settings import Settings


def test_bind_makes_a_tcp_socket_that_asyncio_sets_nodelay_on() -> None:
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio's condition for TCP_NODELAY
    finally:
        sock.close()


def test_the_accepted_connection_has_tcp_nodelay(served_store: Path) -> None:
    with (
        ThreadServer(Settings(store=served_store)) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert http.get("/v1/live").status_code == 200  # the connection is open, kept alive
        port = address(server.url)[1]
        accepted = [
            c
            for c in psutil.Process().net_connections("tcp")
            if c.laddr and c.laddr.port == port and c.raddr and c.status == "ESTABLISHED"
        ]
        assert len(accepted) == 1, accepted  # the server's end of http's connection
        with socket.socket(fileno=os.dup(accepted[0].fd)) as conn:
            assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert http.get("/v1/live").status_code == 200
