"""Recording through the service: ``POST /v1/races``, ``.../{race_id}/chunks``, ``.../close``.

An actor creates a race (JSON), sends its steps in chunks
(``application/vnd.replay.chunk.v1``, `replay.remote.chunks`), each answered
once committed to the store, and closes it. docs/protocol.md ("Recording over
HTTP") specifies the routes; `service.inserts` holds the races. The routes need
the token when one is set, and answer 403 when the service is read-only
(``replay serve --read-only``, ``REPLAY_READ_ONLY=1``) or its store cannot be written.
A chunk past the bytes in flight its race or the service may hold
(`service.insert_budget`) is answered 429 or 503 with Retry-After, undecoded; one
taken waits for one of the service's ``insert_workers`` commit slots.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from replay.errors import RaceTakenOverError, ReadOnlyStoreError
from replay.format import spec as fmt
from replay.remote import chunks
from replay.remote.ingest import ChunkGapError, RaceRequest
from service.deps import Authorized, RaceId, SettingsDep
from service.insert_budget import CommitSlots
from service.inserts import Inserts
from service.models import Error
from service.routers import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/races", tags=["insert"], dependencies=[Authorized])
#: The chunk route's paths: their bodies may reach ``max_chunk_bytes``, not ``max_body_bytes``.
CHUNK_PATH = re.compile(rf"{API_PREFIX}/races/[^/]+/chunks")

REFUSED: dict[int | str, dict[str, Any]] = {
    403: {"model": Error, "description": "The service or its store is read-only."},
    409: {"model": Error, "description": "A gap (Replay-Expected-Step), or a closed race."},
    422: {"model": Error, "description": "Frames or steps that are not the race's."},
    429: {"model": Error, "description": "The race's chunk bytes in flight are full: Retry-After."},
    503: {
        "model": Error,
        "description": "The service's chunk bytes in flight are full, or the race is held "
        "by a replica on another host whose lease is fresh: Retry-After.",
    },
}

Name = Annotated[str, Field(max_length=200)]
Shape = list[Annotated[int, Field(ge=1, le=1 << 16, strict=True)]]


class NewRace(BaseModel):
    """The race to create: `Store.new_race`'s arguments that describe it."""

    model_config = ConfigDict(extra="forbid")

    env: Name = Field(examples=["CarRacing-v3"])
    map: Name = ""
    policy: Name = ""
    fps: float = Field(30, gt=0, le=10_000)
    height: int = Field(900, ge=1, le=fmt.MAX_SIDE, strict=True)
    width: int = Field(1600, ge=1, le=fmt.MAX_SIDE, strict=True)
    action_shape: Shape = Field([3], max_length=8)
    extras: dict[Name, tuple[Name, Shape]] = Field({}, max_length=64)
    meta: dict[str, Any] = {}
    codec: Literal["jpeg", "zstd"] = "jpeg"
    quality: int = Field(fmt.DEFAULT_QUALITY, ge=1, le=100, strict=True)
    subsampling: Literal["420", "422", "444"] = "420"
    shard_size: int = Field(fmt.DEFAULT_SHARD_SIZE, ge=1, le=65536, strict=True)
    flush_interval: float = Field(1.0, gt=0, le=3600)


class RaceCreated(BaseModel):
    """A race created: where its chunks go, and how large one may be."""

    race_id: str
    height: int
    width: int
    shard_size: int
    length: int
    max_chunk_bytes: int = Field(description="Largest chunk body the service accepts.")
    chunk_media_type: str = chunks.MEDIA_TYPE


class Committed(BaseModel):
    """The race's committed length after a chunk (or a close)."""

    race_id: str
    length: int


class CloseRace(BaseModel):
    """How the race ended."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["complete", "aborted"] = "complete"


def inserts_of(request: Request, settings: SettingsDep) -> Inserts:
    """The app's `Inserts`; 403 when the service is read-only."""
    if settings.read_only:
        raise HTTPException(
            403,
            detail="this service is read-only (--read-only, REPLAY_READ_ONLY): it records nothing",
        )
    inserts: Inserts = request.app.state.inserts
    return inserts


async def received(request: Request, inserts: Inserts) -> bytes:
    """The request's body, counted with its request line and headers (`Inserts.received`:
    what an actor sends, as HTTP/1.1 writes it)."""
    body = await request.body()  # read once: FastAPI's own parse of it reads the same
    scope = request.scope
    target = len(scope["raw_path"]) + (
        len(scope["query_string"]) + 1 if scope["query_string"] else 0
    )
    line = len(scope["method"]) + 1 + target + len(" HTTP/1.1\r\n")
    headers = sum(len(k) + len(v) + 4 for k, v in scope["headers"]) + 2  # ": ", CRLF; blank line
    inserts.received(line + headers + len(body))
    return body


async def _run(call: Any, *args: Any, slots: CommitSlots | None = None) -> Any:
    """`call(*args)` in a worker thread (one of `slots`' when given), its refusals as
    HTTP answers."""
    try:
        if slots is not None:
            return await slots.run(call, *args)
        return await anyio.to_thread.run_sync(call, *args)
    except ChunkGapError as e:
        headers = {chunks.EXPECTED_STEP_HEADER: str(e.expected)}
        raise HTTPException(409, detail=str(e), headers=headers) from e
    except RaceTakenOverError as e:
        raise HTTPException(409, detail=str(e)) from e
    except ReadOnlyStoreError as e:
        raise HTTPException(403, detail=f"the store cannot be written: {e}") from e


@router.post("", status_code=201, summary="Create a race to record", responses=REFUSED)
async def create(body: NewRace, request: Request, settings: SettingsDep) -> RaceCreated:
    inserts = inserts_of(request, settings)
    await received(request, inserts)
    fields = body.model_dump()
    fields["action_shape"] = tuple(body.action_shape)
    fields["extras"] = {n: (d, tuple(s)) for n, (d, s) in body.extras.items()}
    try:
        race = await _run(inserts.create, RaceRequest(**fields))
    except (TypeError, ValueError) as e:  # meta with NaN, an unknown extras dtype...
        raise HTTPException(422, detail=str(e)) from e
    info = race.info
    return RaceCreated(
        race_id=info.race_id,
        height=info.height,
        width=info.width,
        shard_size=info.shard_size,
        length=race.length,
        max_chunk_bytes=settings.max_chunk_bytes,
    )


@router.post(
    "/{race_id}/chunks",
    summary="Steps of a race: committed before the answer",
    responses=REFUSED,
    openapi_extra={
        "requestBody": {
            "content": {chunks.MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "required": True,
        }
    },
)
async def add_chunk(
    race_id: RaceId,
    request: Request,
    settings: SettingsDep,
    content_type: Annotated[str, Header()] = "",
) -> Committed:
    inserts = inserts_of(request, settings)
    if content_type.split(";")[0].strip() != chunks.MEDIA_TYPE:
        raise HTTPException(415, detail=f"a chunk is {chunks.MEDIA_TYPE}, not {content_type!r}")
    body = await received(request, inserts)  # whole, <= max_chunk_bytes (`BodyLimitMiddleware`)
    with inserts.budget.held(race_id, len(body)):  # 429 / 503 with Retry-After when full
        length = await _run(_unpack_and_apply, inserts, race_id, body, slots=inserts.commits)
    return Committed(race_id=race_id, length=length)


def _unpack_and_apply(inserts: Inserts, race_id: str, body: bytes) -> int:
    """Unpack and apply a chunk, in a worker thread: unpacking copies its frames out of
    the body (up to ``max_chunk_bytes``), which the event loop should not wait for."""
    return int(inserts.apply(race_id, chunks.unpack(body)))


@router.post("/{race_id}/close", summary="End a race", responses=REFUSED)
async def close(
    race_id: RaceId, body: CloseRace, request: Request, settings: SettingsDep
) -> Committed:
    inserts = inserts_of(request, settings)
    await received(request, inserts)
    length = await _run(inserts.close, race_id, body.status)
    return Committed(race_id=race_id, length=length)
