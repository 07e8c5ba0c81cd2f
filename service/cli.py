"""``replay serve STORE``: run the service with uvicorn.

Found by the ``replay`` command through the ``replay.commands`` entry point.
Options fall back on the ``REPLAY_*`` environment variables (`service.settings`).
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING, Any

import click
import pydantic

from replay.errors import StoreError
from replay.store import open_store
from service.redact import RedactSecrets

if TYPE_CHECKING:
    from service.settings import Settings


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one.

    Made with ``proto=IPPROTO_TCP`` (not `socket.create_server`'s 0): asyncio sets
    TCP_NODELAY only on accepted sockets of that protocol, and without it every
    small answer on a reused connection waited ~40 ms (Nagle's algorithm against
    the client's delayed ACK). The option is set here too (Linux passes it on to
    accepted sockets)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )[0]
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """The http:// URL a bound socket serves."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


@click.command(
    epilog="Example: replay serve ./replay-data --port 8000  (then open the printed URL)"
)
@click.argument("store")
@click.option("--host", default=None, help="Address to bind [REPLAY_HOST; default 127.0.0.1].")
@click.option(
    "--port", type=int, default=None, help="Port, 0 for any free one [REPLAY_PORT; 8000]."
)
@click.option(
    "--token",
    default=None,
    help="Bearer token every route but the probes (/v1/live, /v1/health) requires "
    "[REPLAY_TOKEN]. Needed to bind a non-loopback address.",
)
@click.option(
    "--allow-public",
    is_flag=True,
    default=None,
    help="Bind a non-loopback address without a token (anyone who reaches it reads the store).",
)
@click.option(
    "--limit-concurrency",
    type=int,
    default=None,
    help="Requests handled at once (the probes excepted); more are answered 503 "
    "[REPLAY_MAX_REQUESTS_IN_FLIGHT; 256]. Open connections do not count: idle and "
    "slow ones are closed by the REPLAY_TIMEOUT_* timeouts.",
)
@click.option(
    "--read-only",
    is_flag=True,
    default=None,
    help="Refuse the recording routes (POST /v1/races...) with 403: actors cannot "
    "record through this service; sampling and browsing work as ever [REPLAY_READ_ONLY].",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
def serve(
    store: str,
    host: str | None,
    port: int | None,
    token: str | None,
    allow_public: bool | None,
    limit_concurrency: int | None,
    read_only: bool | None,
    access_log: bool,
    log_level: str,
) -> None:
    """Serve the replay store STORE (a directory or s3://bucket/prefix) over HTTP: the
    API under /v1, the race viewer at /.

    Binds 127.0.0.1:8000 by default. Races being recorded into STORE show up
    without a restart.
    """
    import uvicorn

    from service.app import create_app
    from service.connections import uvicorn_config

    settings = _settings(
        store=store,
        host=host,
        port=port,
        token=token,
        allow_public=allow_public,
        max_requests_in_flight=limit_concurrency,
        read_only=read_only,
    )
    try:
        open_store(settings.store, mode="r")
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    try:
        sock = bind(settings.host, settings.port)
    except OSError as e:
        raise click.ClickException(
            f"cannot bind {settings.host}:{settings.port}: {e.strerror}"
        ) from None
    _announce(settings, url_of(sock))
    config = uvicorn_config(
        create_app(settings),
        settings,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=5,
    )
    # after uvicorn.Config, which (re)configures logging
    logging.getLogger("uvicorn.access").addFilter(RedactSecrets())
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _settings(**given: Any) -> Settings:
    """The settings: the options given, the rest from ``REPLAY_*`` (ClickException naming
    what is wrong)."""
    from service.settings import Settings

    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except pydantic.ValidationError as e:
        messages = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
        raise click.ClickException(messages) from None


def _announce(settings: Settings, url: str) -> None:
    """Say where the store is served, and how it is protected (a warning if it is not)."""
    click.echo(f"replay: serving {settings.store} at {url}  (API docs: {url}docs)", err=False)
    if settings.token is not None:
        click.echo("replay: a bearer token is required; open the viewer as <url>#token=<token>")
    if settings.read_only:
        click.echo("replay: read-only: the recording routes answer 403")
    if settings.token is None and settings.allow_public:
        click.echo(
            f"replay: WARNING: --allow-public and no token: anyone who can reach {url} "
            "reads the whole store. Set REPLAY_TOKEN (--token) unless that is intended.",
            err=True,
        )


if __name__ == "__main__":  # python -m service.cli STORE ...
    serve()
