"""A race recorded through a replay service: its encoded frames sent as chunks.

`Client.new_race` records with the local writer itself (`replay.write.start`: the
process writer for CPU frames, a thread for CUDA ones or a `Client` given its own
httpx transport), whose encoded frames go to a `ServiceSink` instead of a store: a
`ChunkSender` thread sends them in chunks (`replay.remote.chunks`) at least every
`flush_interval`, each at most the service's ``max_chunk_bytes``, one in flight while
the writer goes on encoding, and a step counts as written once the service has
acknowledged it (committed to the store). So raw frames never cross the network, the
driver's `append` costs what it costs a local writer (a copy into a shared-memory
ring), and a driver killed mid-race loses nothing it appended: its writer process
sends what is in the ring and closes the race as aborted.

A chunk whose answer is lost, or refused as busy (429/503), is sent again, the same
bytes from the same first step, for up to `retry_for` seconds; while it waits, the
pending frames fill, the encoder waits, the ring fills and `append` applies
``on_full``, as a local writer does when its disk is slow.

`ServiceDestination` is what travels to the writer process: the service's URL, the
headers (the token) and the timeout of the client's connections, from which the
writer process opens its own.

    with Client(url).new_race(env="CarRacing-v3", codec="zstd") as writer:
        writer.append(frame, action=a, reward=r)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import numpy.typing as npt

from replay.errors import WriterFailedError
from replay.remote.chunk_sender import ChunkSender
from replay.remote.retries import RetryPolicy
from replay.write.settings import WriterSettings

if TYPE_CHECKING:
    from replay.format.race import RaceInfo
    from replay.format.race_schema import StepSpec

#: `Client.new_race` arguments that configure the writer, not the race.
WRITER_OPTIONS = ("queue_size", "on_full", "writer", "retry_for")


def writer_options(options: dict[str, Any], *, own_transport: bool) -> tuple[WriterSettings, float]:
    """Take the writer's settings and `retry_for` out of `new_race`'s `options` (checked:
    ValueError naming the value); ``flush_interval`` stays there too (the service's lease
    needs it). A client with its `own_transport` records in a thread of its process: the
    transport cannot go to a writer process."""
    writer = {k: options.pop(k) for k in WRITER_OPTIONS if k in options}
    retry_for = writer.pop("retry_for", 60.0)
    if isinstance(retry_for, bool) or not isinstance(retry_for, int | float) or retry_for < 0:
        raise ValueError(f"retry_for must be a number of seconds >= 0, got {retry_for!r}")
    if own_transport:
        if writer.get("writer") == "process":
            raise ValueError(
                "writer='process' sends from another process, which cannot use this "
                "client's own transport: use writer='auto' or 'thread'"
            )
        writer["writer"] = "thread"
    settings = WriterSettings(  # validated when made: ValueError naming the bad value
        flush_interval=options.setdefault("flush_interval", 1.0),
        device=options.pop("device", "auto"),
        **writer,
    )
    return settings, float(retry_for)


def connection_pool(
    url: str,
    headers: Mapping[str, str],
    timeout: float,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """The HTTP connections of a `Client`, and of a writer process sending its chunks."""
    return httpx.Client(
        base_url=url,
        headers=dict(headers),
        timeout=timeout,
        transport=transport,
        # idle connections are dropped before the service's keep-alive timeout (5 s)
        # closes them, so a request is never sent on one it is closing
        limits=httpx.Limits(max_keepalive_connections=8, keepalive_expiry=4),
    )


@dataclass(frozen=True)
class ServiceDestination:
    """A race recorded through the service at `url`. `http` is the client's own pool,
    used by a writer in the client's process; a writer process opens its own (it is
    not pickled)."""

    url: str
    headers: Mapping[str, str]
    timeout: float
    max_chunk_bytes: int
    retry_for: float
    http: httpx.Client | None = field(default=None, compare=False, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.url, dict(self.headers), self.timeout, self.max_chunk_bytes, self.retry_for)
        return (ServiceDestination, fields)

    def open(self, info: RaceInfo, specs: list[StepSpec], settings: WriterSettings) -> ServiceSink:
        owned = self.http is None
        http = connection_pool(self.url, self.headers, self.timeout) if owned else self.http
        assert http is not None
        retry = RetryPolicy(deadline_s=self.retry_for, backoff=0.05, max_backoff=2.0)
        sender = ChunkSender(
            http,
            info.race_id,
            {s.name: s for s in specs},
            max_chunk_bytes=self.max_chunk_bytes,
            flush_interval=settings.flush_interval,
            retry=retry,
        )
        return ServiceSink(sender, info, http if owned else None)


class ServiceSink:
    """Sends race `info`'s encoded frames with `sender` (started here); `owned` is a
    connection pool to close with the race."""

    def __init__(self, sender: ChunkSender, info: RaceInfo, owned: httpx.Client | None) -> None:
        self._sender = sender
        self._race_id = info.race_id
        self._shard_size = info.shard_size
        self._owned = owned
        sender.start()

    @property
    def written(self) -> int:
        return self._sender.acked

    @property
    def nbytes(self) -> int:
        return self._sender.nbytes

    @property
    def shards(self) -> int:
        return self._sender.acked // self._shard_size

    def add(self, blobs: list[bytes], steps: list[dict[str, npt.NDArray[Any]]]) -> None:
        if not self._sender.put(blobs, steps):
            self.check()

    def flush(self, now: float) -> None:
        """Nothing to do: the sender sends by time itself (and renews the lease)."""

    def check(self) -> None:
        if self._sender.error is not None:
            raise self._sender.error

    def finish(self) -> None:
        self._sender.finish()
        self._sender.join()
        self.check()

    def fail(self, error: BaseException) -> None:
        self._sender.fail(error)
        self._sender.finish()
        self._sender.join()

    def close(self, status: str) -> None:
        try:
            path = f"/v1/races/{self._race_id}/close"
            self._sender.post(path, json={"status": status})
        except httpx.HTTPError as e:
            raise WriterFailedError(f"race {self._race_id}: closing it failed: {e}") from e
        finally:
            if self._owned is not None:
                self._owned.close()
