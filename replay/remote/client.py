"""The client of the replay service: the embedded sampler's batches, over HTTP.

`Client.sample` returns the same `Batch` an embedded ``store.sampler(...)``
gives for the same parameters and seed: the service sends the stored JPEG
bytes (`replay.remote.protocol`), and the client decodes them itself, on its GPU when
asked (``device="cuda"``), with `replay.read.decode.decode_batch`, the embedded
reader's own decoder. ::

    with Client("http://127.0.0.1:8000", token=os.environ.get("REPLAY_TOKEN")) as client:
        for batch in client.batches(batch_size=64, seq_len=4, kind="prioritized", seed=0):
            loss, td = learn(batch.frames, batch.action, batch.reward, batch.weights)
            client.update_priorities(batch.keys, td.abs() + 1e-3)

One HTTP connection pool (keep-alive) serves all calls; calls are retried with
exponential backoff when the connection fails or the service answers 503 (by
default for about 22 s, enough to ride out a restart of the service);
`batches` prefetches the next batches in a thread while you train.

Retries never act twice: `sample*` and `update_priorities` send a request id
(``Replay-Request-Id``, the same on every try of one call), and the service
answers a repeat with the same batch (or count) without drawing (or applying)
again. Other calls that are not GETs are retried only when the request was
never sent (the connection could not be made) or the service said it did not
act (503 with ``Retry-After``).

``skip_corrupt=True`` works as the embedded sampler's: the service redraws items
that touch a damaged shard or frame (and avoids them from then on), and a batch
with a frame that does not decode here is drawn again; each skip is logged and
counted in `Client.corrupt_skipped` (the embedded `stats().corrupt_skipped`).

Errors (all `ReplayError`)::

    ServiceError            any other error answer, or the service is unreachable
    RaceNotFoundError       404 for a race (also a malformed race id)
    SamplingError           422 nothing (enough) to sample, or a parameter over a limit
    RateLimitedError        429 past `timeout`: min_size / samples_per_insert still held
    CorruptDataError        409 a damaged shard (race_id, shard, step as the service named them)
    ProtocolError           a batch body that does not parse (replay.remote.protocol)
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Unpack

import httpx

from replay.closing import Closing
from replay.codec.frames import writer_device
from replay.codec.transform import Transform
from replay.errors import (
    CorruptDataError,
    RaceNotFoundError,
    RateLimitedError,
    ReplayError,
    SamplingError,
)
from replay.format.race import RaceInfo
from replay.read.batch import MAX_REDRAWS, EncodedBatch, Out, Sampled
from replay.read.decode import decode_batch
from replay.read.prefetch import prefetched
from replay.read.tensors import check_out, make_batch, to_numpy
from replay.remote import protocol
from replay.remote.ingest import RaceRequest
from replay.remote.retries import NOT_SENT, RETRYABLE, SAFE_METHODS, RetryPolicy, error_of
from replay.remote.retries import ServiceError as ServiceError  # raised by every call here
from replay.remote.service_sink import ServiceDestination, connection_pool, writer_options
from replay.sample.params import SamplerKwargs, SamplerParams
from replay.write.start import start_writer
from replay.write.writer import Writer

log = logging.getLogger(__name__)


class Client(Closing):
    """A connection to a replay service at `url`.

    `token` is sent as ``Authorization: Bearer``; `retries` more tries follow a
    failed connection or a 503, `backoff` seconds apart at first and doubling up to
    `max_backoff`, longer where the 503's ``Retry-After`` asks
    (`replay.remote.retries.RetryPolicy`). The defaults wait about 22 s in all: a
    restarted service takes 1.3 s to accept connections again on an idle machine,
    several on a busy one, plus however long it was down.
    `transport` replaces httpx's (tests, custom TLS, proxies); `device` (``"auto"``:
    the GPU when there is one, else the CPU), `out` and `transform` are the
    defaults of `sample` and `batches`.

    `corrupt_skipped` counts the damaged shards and frames skipped for this
    client's ``skip_corrupt`` batches (by the service, and frames that did not
    decode here).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeout: float = 60.0,
        retries: int = 10,
        backoff: float = 0.1,
        max_backoff: float = 4.0,
        transport: httpx.BaseTransport | None = None,
        device: str = "auto",
        out: Out = "numpy",
        transform: Transform | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        check_out(out)
        self._retry = RetryPolicy(tries=retries + 1, backoff=backoff, max_backoff=max_backoff)
        headers = {"User-Agent": "replay-client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.device, self.out, self.transform = device, out, transform
        self.corrupt_skipped = 0
        self._skipped_lock = threading.Lock()
        self._own_transport = transport is not None
        self._timeout = timeout
        self._http = connection_pool(self.url, headers, timeout, transport)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- plumbing --------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call, retried on connection errors and 503; error answers raise.

        A call that may act (not a GET; no ``Replay-Request-Id`` header) is retried
        only if it was never sent or the service answered 503 with ``Retry-After``
        (it did not act); see the module doc.
        """
        headers = kwargs.get("headers") or {}
        repeatable = method.upper() in SAFE_METHODS or protocol.REQUEST_ID_HEADER in headers
        response = self._retry.call(
            lambda: self._http.request(method, path, **kwargs),
            where=f"{method} {self.url}{path}",
            retry_on=RETRYABLE if repeatable else NOT_SENT,
            busy=lambda r: r.status_code == 503 and (repeatable or "Retry-After" in r.headers),
        )
        if response.status_code >= 400:
            raise error_of(response)
        return response

    def _acting(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call that acts (draws a batch, sets priorities), under a fresh request id
        that each of its tries carries: the service acts on it once."""
        headers = {**kwargs.pop("headers", {}), protocol.REQUEST_ID_HEADER: uuid.uuid4().hex}
        return self.request(method, path, headers=headers, **kwargs)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # -- races -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /v1/health``: readiness (the store opens and lists); 503s raise `ServiceError`."""
        body: dict[str, Any] = self.request("GET", "/v1/health").json()
        return body

    def stats(self) -> dict[str, Any]:
        """``GET /v1/stats``: store totals, cached samplers, request counters."""
        body: dict[str, Any] = self.request("GET", "/v1/stats").json()
        return body

    def races(self, *, limit: int = 1000, offset: int = 0, **filters: Any) -> list[RaceInfo]:
        """Races, newest first; `filters` as ``GET /v1/races`` takes them (env, status, ...)."""
        params = {"limit": limit, "offset": offset, **filters}
        page = self.request("GET", "/v1/races", params=params).json()
        return [race_info(item) for item in page["items"]]

    def race(self, race_id: str) -> RaceInfo:
        """One race's metadata."""
        return race_info(self.request("GET", f"/v1/races/{_race_path(race_id)}").json())

    def frame_bytes(self, race_id: str, step: int) -> bytes:
        """One frame's stored bytes (a JPEG for JPEG races)."""
        path = f"/v1/races/{_race_path(race_id)}/frames/{int(step)}"
        return self.request("GET", path).content

    # -- sampling --------------------------------------------------------------------------

    def sample_encoded(
        self, *, timeout: float | None = 60.0, **params: Unpack[SamplerKwargs]
    ) -> EncodedBatch:
        """One batch as the service sends it: stored JPEG bytes and step arrays.

        `params` are the sampler parameters (`replay.sample.params.SamplerParams`, checked
        here before anything is sent). With `skip_corrupt` the service redraws items
        on damaged shards or frames (counted in `corrupt_skipped`) instead of raising
        `CorruptDataError`. ``n_step, gamma, next_frames`` add n-step values
        (`replay.read.nstep`); ``min_size, samples_per_insert, error_margin`` rate-limit as
        the embedded sampler does: on the service's 429 this waits its Retry-After and
        asks again, for up to `timeout` seconds in all, then raises `RateLimitedError`.
        """
        body = SamplerParams(**params).request_body()
        response = self._rate_limited(body, timeout, headers={"Accept": protocol.MEDIA_TYPE})
        message = protocol.unpack(response.content)
        if not isinstance(message, EncodedBatch):
            raise protocol.ProtocolError("asked for stored frames, got decoded ones")
        return message

    def sample(
        self,
        *,
        timeout: float | None = 60.0,
        device: str | None = None,
        out: Out | None = None,
        transform: Transform | None = None,
        **params: Unpack[SamplerKwargs],
    ) -> Sampled:
        """One batch, decoded here on `device` (as `Sampler.sample` decodes it).

        A frame that does not decode raises `CorruptDataError` naming race, shard
        and step; with `skip_corrupt` the service skips damaged data and a batch
        with such a frame is drawn again (and counted), as the embedded sampler does.
        `params` and `timeout` are `sample_encoded`'s.
        """
        for _ in range(MAX_REDRAWS):
            encoded = self.sample_encoded(timeout=timeout, **params)
            try:
                return decode_batch(
                    encoded,
                    device=device or self.device,
                    out=out or self.out,
                    transform=transform if transform is not None else self.transform,
                )
            except CorruptDataError as e:
                if not params.get("skip_corrupt", False):
                    raise
                log.warning("skipping corrupt data: %s", e)
                with self._skipped_lock:
                    self.corrupt_skipped += 1
        raise SamplingError(f"no batch clear of corrupt data after {MAX_REDRAWS} tries")

    def sample_decoded(
        self,
        *,
        crop: tuple[int, int, int, int] | None = None,
        size: tuple[int, int] | None = None,
        grey: bool = False,
        out: Out = "numpy",
        timeout: float | None = 60.0,
        **params: Unpack[SamplerKwargs],
    ) -> Sampled:
        """One batch the service decodes (for clients without a JPEG decoder); uint8 pixels.

        `params` as `sample_encoded`'s (``batch_size`` 8 unless given; no bootstrap
        frames here)."""
        params.setdefault("batch_size", 8)
        body = SamplerParams(**params).request_body()
        body["decoded"] = {"crop": crop, "size": size, "grey": grey}
        response = self._rate_limited(body, timeout)
        message = protocol.unpack(response.content)
        if not isinstance(message, protocol.RawBatch):
            raise protocol.ProtocolError("asked for decoded frames, got stored ones")
        return make_batch(
            message.keys,
            message.frames,
            message.steps,
            out=out,
            transform=None,
            nstep=message.nstep,
        )

    def _rate_limited(
        self, body: dict[str, Any], timeout: float | None, headers: Mapping[str, str] | None = None
    ) -> httpx.Response:
        """``POST /v1/sample``, asked again after each 429 (its Retry-After later) until
        `timeout` seconds have passed (None: for ever); skipped damage counted."""
        deadline = None if timeout is None else time.monotonic() + timeout
        limited = "min_size" in body or "samples_per_insert" in body
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if limited and left is not None:
                body["timeout"] = left  # the service waits at most this (and its own bound)
            try:
                # a fresh request id per try: a 429 means the service did nothing
                response = self._acting(
                    "POST", "/v1/sample", json=body, headers=dict(headers or {})
                )
            except RateLimitedError as e:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise RateLimitedError(
                        f"{e} (the client waited {timeout:g} s)", retry_after=e.retry_after
                    ) from e
                time.sleep(e.retry_after if left is None else min(e.retry_after, left))
                continue
            self._count_skipped(response)
            return response

    def batches(
        self,
        *,
        prefetch: int = 2,
        limit: int | None = None,
        device: str | None = None,
        out: Out | None = None,
        transform: Transform | None = None,
        timeout: float | None = 60.0,
        **params: Unpack[SamplerKwargs],
    ) -> Iterator[Sampled]:
        """Batches for ever (or `limit` of them); a thread fetches and decodes the next
        `prefetch` while you use the current one (`replay.read.prefetch`: at most
        ``prefetch + 1`` batches in memory). `params` are `sample_encoded`'s.

        Closing the iterator (or leaving the ``for`` loop) stops the thread, as does
        the interpreter's exit for an iterator left open.
        """
        return prefetched(
            lambda: self.sample(
                timeout=timeout, device=device, out=out, transform=transform, **params
            ),
            limit=limit,
            ahead=prefetch,
            name="replay-client-prefetch",
        )

    def _count_skipped(self, response: httpx.Response) -> None:
        """Log and count what the service skipped for a ``skip_corrupt`` batch."""
        raw = response.headers.get(protocol.CORRUPT_SKIPPED_HEADER, "0")
        try:
            n = int(raw)
        except ValueError:
            raise protocol.ProtocolError(
                f"{protocol.CORRUPT_SKIPPED_HEADER}: {raw!r} is not a count"
            ) from None
        if n <= 0:
            return
        where = response.headers.get(protocol.CORRUPT_WHERE_HEADER, "")
        log.warning("the service skipped %d damaged shards or frames: %s", n, where)
        with self._skipped_lock:
            self.corrupt_skipped += n

    def update_priorities(self, keys: Sequence[tuple[str, int]], priorities: Any) -> int:
        """Set the priorities of sampled items (`Batch.keys`); returns how many were sent."""
        values = to_numpy(priorities).reshape(-1).tolist()
        body = {"keys": [[str(r), int(s)] for r, s in keys], "priorities": values}
        updated: int = self._acting("PUT", "/v1/priorities", json=body).json()["updated"]
        return updated

    def new_race(self, *, env: str, **options: Any) -> Writer:
        """Start recording a race through the service; returns its `Writer`.

        The arguments are `Store.new_race`'s (``map, policy, fps, height, width,
        action_shape, extras, meta, codec, quality, subsampling, shard_size`` describe
        the race; ``flush_interval, queue_size, on_full, device, writer`` the writer) and
        `retry_for`, how long a chunk is sent again while the service does not answer.
        The writer is the local one (a writer process for CPU frames; a thread for CUDA
        frames, which nvJPEG encodes, or when this client was given its own
        `transport`, which cannot go to another process); its encoded frames go to the
        service in chunks (`replay.remote.service_sink`), which commits them.
        """
        settings, retry_for = writer_options(options, own_transport=self._own_transport)
        request = RaceRequest(env=env, **options)  # TypeError for an unknown argument
        codec, specs = request.check()
        settings = dataclasses.replace(settings, device=writer_device(codec, settings.device))
        settings.resolved()  # the device checked before the race exists
        created = self.request("POST", "/v1/races", json=dataclasses.asdict(request)).json()
        # the race as the service made it from the same request: no second round trip
        info = RaceInfo.from_attrs(str(created["race_id"]), request.attrs(codec))
        destination = ServiceDestination(
            self.url,
            self._http.headers,
            self._timeout,
            int(created["max_chunk_bytes"]),
            retry_for,
            http=self._http,
        )
        try:
            return start_writer(destination, info, specs, settings)
        except BaseException:  # no writer: the race ends now, not when its lease expires
            with contextlib.suppress(ReplayError, httpx.HTTPError):
                self.request("POST", f"/v1/races/{info.race_id}/close", json={"status": "aborted"})
            raise


def _race_path(race_id: str) -> str:
    """A race id as a path segment; anything but a race id is refused here already."""
    from replay.format import spec as fmt

    if not fmt.is_race_id(race_id):
        raise RaceNotFoundError(f"{race_id!r} is not a race id (26 characters, ULID)")
    return race_id


def race_info(item: Mapping[str, Any]) -> RaceInfo:
    """A `RaceInfo` from the JSON of a race (``/v1/races`` items, ``/v1/races/{id}``)."""
    return RaceInfo.from_attrs(str(item["race_id"]), dict(item))
