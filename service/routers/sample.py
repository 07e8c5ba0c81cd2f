"""``POST /v1/sample`` (binary batches) and ``PUT /v1/priorities``.

A sampler is kept per (kind, batch_size, seq_len, stride, seed, filters), so a
seeded stream continues from one request to the next (the same seed and
parameters give the embedded ``store.sampler(...)``'s batches in order) and
priorities set by a learner stay with the sampler that uses them.

A request with ``skip_corrupt`` gets a sampler of its own (``skip_corrupt`` is one
of the parameters), which redraws past damaged shards and frames exactly as the
embedded ``store.sampler(..., skip_corrupt=True)`` does, and remembers them; the
answer's ``Replay-Corrupt-Skipped`` / ``Replay-Corrupt-Where`` headers say what
this batch skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass

import anyio
import numpy as np
import numpy.typing as npt
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import BaseModel

from replay.codec.transform import Transform
from replay.errors import RaceNotFoundError, RateLimitedError, ReplayError
from replay.read.batch import EncodedBatch, SampleKeys
from replay.read.decode import decode_frames
from replay.remote import protocol
from replay.sample.params import SamplerParams
from replay.sample.rate_limit import MAX_POLL_S
from replay.sample.sampler import Drawn, Sampler, Skipped
from replay.store import Store
from service.batch_response import BatchResponse
from service.deps import Authorized, SettingsDep, StateDep, StoreDep
from service.models import Error, PrioritiesRequest, PrioritiesUpdated, SampleRequest
from service.request_ids import Ticket, digest
from service.routers import API_PREFIX
from service.settings import Settings
from service.state import Cached, ServiceState

router = APIRouter(prefix=API_PREFIX, tags=["sample"], dependencies=[Authorized])

#: How long a /v1/sample request waits for a free batch slot before a 503.
BUSY_TIMEOUT_S = 30.0
#: Places named in `protocol.CORRUPT_WHERE_HEADER` at most (the count is always exact).
MAX_WHERE = 20
#: What a ``decoded`` view adds to a batch: (B*L, H, W, C) uint8 pixels, or None.
Pixels = npt.NDArray[np.uint8] | None
#: Longest request id accepted (longer ones are refused with 422).
MAX_REQUEST_ID = 128


@dataclass(frozen=True)
class DrawnKeys:
    """What a sample request with a request id is remembered by: its keys, and what
    was skipped to draw them; a repeat re-reads the same keys."""

    keys: SampleKeys
    skipped: list[Skipped]


def request_key(route: str, request: Request) -> Hashable | None:
    """The `service.request_ids` key of a request: its route and ``Replay-Request-Id``."""
    rid = request.headers.get(protocol.REQUEST_ID_HEADER)
    if rid is None:
        return None
    if not 0 < len(rid) <= MAX_REQUEST_ID:
        raise HTTPException(
            422, f"{protocol.REQUEST_ID_HEADER} must be 1 to {MAX_REQUEST_ID} characters"
        )
    return (route, rid)


async def claim(route: str, request: Request, body: BaseModel) -> Ticket:
    """This request's hold on its request id (`service.request_ids`), keyed on its
    route and id, and checked against its content: body and credentials."""
    content = digest(route, body.model_dump_json(), request.headers.get("authorization", ""))
    state: ServiceState = request.app.state.replay
    return await state.request_ids.claim(request_key(route, request), content)


def _check_limits(req: SampleRequest, settings: Settings) -> None:
    if req.batch_size > settings.max_batch_size:
        raise HTTPException(
            422, f"batch_size {req.batch_size} is over the limit of {settings.max_batch_size}"
        )
    if req.seq_len > settings.max_seq_len:
        raise HTTPException(
            422, f"seq_len {req.seq_len} is over the limit of {settings.max_seq_len}"
        )
    frames = req.batch_size * req.seq_len * (2 if req.next_frames else 1)
    if frames > settings.max_batch_frames:
        both = " * 2 (next_frames)" if req.next_frames else ""
        raise HTTPException(
            422,
            f"batch_size * seq_len{both} = {frames} frames is over the limit of "
            f"{settings.max_batch_frames}",
        )


def sampler_params(req: SampleRequest) -> SamplerParams:
    """The parameters that identify a sampler (and are shown in /v1/stats)."""
    try:
        return req.params()
    except ValueError as e:
        raise HTTPException(422, f"cannot make this sampler: {e}") from e


def borrow_sampler(
    store: Store, state: ServiceState, params: SamplerParams
) -> contextlib.AbstractContextManager[Cached[Sampler]]:
    """The cached sampler for `params` (made on first use), borrowed for one request."""
    shown = params.key()
    key = json.dumps(shown, sort_keys=True)

    def build() -> Sampler:
        try:
            # the store is read-only; clients decode (with their own transform): any sizes
            return store.sampler(**params.kwargs(), save_priorities=False, check_sizes=False)
        except ReplayError:
            raise
        except (TypeError, ValueError) as e:
            raise HTTPException(422, f"cannot make this sampler: {e}") from e

    return state.samplers.borrow(key, shown, build)


def _view(req: SampleRequest, encoded: EncodedBatch, settings: Settings) -> Transform:
    view = req.decoded
    assert view is not None
    try:
        t = Transform(
            crop=None if view.crop is None else tuple(view.crop),  # type: ignore[arg-type]
            size=None if view.size is None else tuple(view.size),  # type: ignore[arg-type]
            grey=view.grey,
        )
        shape = t.output_shape(encoded.height, encoded.width)
    except ValueError as e:
        raise HTTPException(422, f"decoded view: {e}") from e
    nbytes = req.batch_size * req.seq_len * shape[0] * shape[1] * shape[2]
    if nbytes > settings.max_decoded_bytes:
        raise HTTPException(
            422,
            f"decoded batch would be {nbytes} bytes, over the limit of "
            f"{settings.max_decoded_bytes}; sample the stored JPEGs, or a smaller view",
        )
    return t


def draw(
    entry: Cached[Sampler], req: SampleRequest, settings: Settings, known: DrawnKeys | None
) -> Drawn[Pixels]:
    """A batch from the cached sampler (`Sampler.draw`; its rate limit was waited for
    on the event loop, `wait_for_rate_limit`): keys, stored bytes, and pixels for a
    ``decoded`` view; with `known` (a repeated request id), the batch of those keys
    (`Sampler.draw_keys`). The client decodes stored frames itself, so without a view
    nothing is decoded here; the reader has CRC32C-checked every stored frame."""

    def decode(encoded: EncodedBatch) -> tuple[Pixels, list[int]]:
        if req.decoded is None:
            return None, []
        return decode_frames(encoded, transform=_view(req, encoded, settings))

    if known is None:
        return entry.value.draw(decode, timeout=0)
    return dataclasses.replace(entry.value.draw_keys(known.keys, decode), skipped=known.skipped)


async def wait_for_rate_limit(
    sampler: Sampler, req: SampleRequest, settings: Settings, state: ServiceState
) -> None:
    """Wait until the sampler's rate limit (``min_size``, ``samples_per_insert``) lets a
    batch through, on the event loop: a waiting request holds no batch slot and no
    worker thread (each look at the store takes one briefly). At most
    ``max_rate_waiters`` wait at once; past that, 503 with Retry-After. Past the
    request's ``timeout`` (at most ``max_rate_wait_s``), `RateLimitedError` (429)."""
    limiter = sampler.limiter
    if limiter is None:
        return
    if state.rate_waiters >= settings.max_rate_waiters:
        raise HTTPException(
            503,
            f"busy: {state.rate_waiters} requests are waiting for a rate limit (the most "
            f"max_rate_waiters={settings.max_rate_waiters}); retry",
            {"Retry-After": "1"},
        )
    wait = min(settings.max_rate_wait_s, req.timeout if req.timeout is not None else math.inf)
    deadline = time.monotonic() + wait
    state.rate_waiters += 1
    try:
        pause = 0.01
        while why := await anyio.to_thread.run_sync(limiter.held, req.batch_size, sampler.look):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RateLimitedError(
                    f"sampling waited {wait:g} s and is still held: {why}", retry_after=MAX_POLL_S
                )
            await anyio.sleep(min(pause, left))
            pause = min(2 * pause, MAX_POLL_S)
    finally:
        state.rate_waiters -= 1


def skipped_headers(skipped: list[Skipped]) -> dict[str, str]:
    """``Replay-Corrupt-Skipped: n`` and ``Replay-Corrupt-Where: race:shard[:step], ...``.

    A place without a step is a whole shard (its index unreadable); with one, one frame.
    """
    headers = {protocol.CORRUPT_SKIPPED_HEADER: str(len(skipped))}
    if skipped:
        where = ", ".join(str(place) for place in skipped[:MAX_WHERE])
        headers[protocol.CORRUPT_WHERE_HEADER] = where
    return headers


@router.post(
    "/sample",
    summary="Draw a batch: stored JPEGs and step arrays in one binary body",
    response_class=Response,
    responses={
        200: {
            "content": {protocol.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "One batch in the format of docs/protocol.md.",
            "headers": {
                protocol.CORRUPT_SKIPPED_HEADER: {
                    "description": "With skip_corrupt: damaged shards and frames skipped.",
                    "schema": {"type": "integer"},
                },
                protocol.CORRUPT_WHERE_HEADER: {
                    "description": "With skip_corrupt: which (race:shard, or race:shard:step "
                    f"for one frame; the first {MAX_WHERE}).",
                    "schema": {"type": "string"},
                },
            },
        },
        409: {"model": Error, "description": "A shard holding a sampled frame is damaged."},
        422: {"model": Error, "description": "Over a limit, or nothing (enough) to sample."},
        429: {"model": Error, "description": "Rate limited (min_size, samples_per_insert)."},
        503: {"model": Error, "description": "Too many batches in flight for too long; retry."},
    },
)
async def sample(
    req: SampleRequest, request: Request, store: StoreDep, settings: SettingsDep, state: StateDep
) -> Response:
    """Draws keys with the (cached) sampler, reads their frames as stored, and streams them.

    Waiting for a batch slot holds no worker thread (only the reading does), so
    waiting requests never starve other routes; the slot is held until the answer
    has been sent (`service.batch_response`).
    """
    _check_limits(req, settings)
    ticket = await claim("sample", request, req)
    known: DrawnKeys | None = ticket.value
    try:
        async with borrowed(store, state, sampler_params(req)) as entry:
            if known is None:
                await wait_for_rate_limit(entry.value, req, settings, state)
            if not await state.batch_slots.acquire(BUSY_TIMEOUT_S):
                raise HTTPException(
                    503, "busy: too many batches in flight; retry", {"Retry-After": "1"}
                )
            try:
                drawn = await anyio.to_thread.run_sync(draw, entry, req, settings, known)
                parts = protocol.pack(drawn.encoded, drawn.decoded)
            except BaseException:
                state.batch_slots.release()
                raise
    except BaseException:
        ticket.fail()
        raise
    state.sampled_races.update(drawn.keys.race_ids)
    ticket.done(DrawnKeys(drawn.keys, drawn.skipped))
    m = state.metrics
    m.count_frames("sample", req.batch_size * req.seq_len)
    response = BatchResponse(
        parts,
        release=state.batch_slots.release,
        headers=skipped_headers(drawn.skipped) if req.skip_corrupt else None,
    )
    m.batch_bytes.observe(response.nbytes)
    m.corrupt_skipped.inc(0 if known is not None else len(drawn.skipped))
    return response


@contextlib.asynccontextmanager
async def borrowed(
    store: Store, state: ServiceState, params: SamplerParams
) -> AsyncIterator[Cached[Sampler]]:
    """`borrow_sampler`, entered and left on a worker thread (making a sampler, or
    closing one evicted meanwhile, reads the store)."""
    borrow = borrow_sampler(store, state, params)
    entry = await anyio.to_thread.run_sync(borrow.__enter__)
    try:
        yield entry
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(borrow.__exit__, None, None, None)


@router.put(
    "/priorities",
    summary="Set the priorities of sampled keys",
    responses={
        404: {
            "model": Error,
            "description": "A key names a race neither in the store nor sampled before "
            "(keys of races evicted since they were sampled are ignored).",
        },
        422: {"model": Error, "description": "Keys and priorities disagree, or no sampler."},
    },
)
async def update_priorities(
    req: PrioritiesRequest, request: Request, store: StoreDep, state: StateDep
) -> PrioritiesUpdated:
    """Applies to every cached prioritized sampler (those that drew the keys). With a
    request id, a repeat is answered as the first was and applies nothing again."""
    if len(req.keys) != len(req.priorities):
        raise HTTPException(422, f"{len(req.keys)} keys but {len(req.priorities)} priorities")
    ticket = await claim("priorities", request, req)
    if ticket.value is not None:
        known: PrioritiesUpdated = ticket.value
        return known
    try:
        result = await anyio.to_thread.run_sync(_update_priorities, req, store, state)
    except BaseException:
        ticket.fail()
        raise
    ticket.done(result)
    return result


def _update_priorities(
    req: PrioritiesRequest, store: Store, state: ServiceState
) -> PrioritiesUpdated:
    named = {race_id for race_id, _ in req.keys} - state.sampled_races
    # neither in the store nor sampled before (then evicted: ignored)
    unknown = sorted(named - set(store.race_ids())) if named else []
    if unknown:  # nothing applied
        raise RaceNotFoundError(f"no race {', '.join(unknown[:10])} in {store.root}")
    targets = [e for e in state.samplers.entries() if e.params["kind"] == "prioritized"]
    if not targets:
        raise HTTPException(
            422, "no prioritized sampler yet: draw a batch with kind=prioritized first"
        )
    for entry in targets:
        entry.value.update_priorities(list(req.keys), list(req.priorities))
    return PrioritiesUpdated(updated=len(req.keys))
