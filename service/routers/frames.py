"""``GET /v1/races/{race_id}/frames/{step}``: one frame, the stored bytes as they are.

A JPEG race's frame is served exactly as the writer stored it (``image/jpeg``).
A lossless (zstd) race's frame is its stored zstd bytes, or, with
``?format=jpeg`` (what the viewer asks for, since browsers cannot show raw
zstd), the decoded frame encoded as a JPEG at quality 95 for display. A
committed frame never changes and race ids are never reused, so the answer is
cacheable for good; the ETag is a hash of the bytes.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Response

from replay.codec.zarr_jpeg import JpegCodec
from service.deps import Authorized, RaceId, SettingsDep, StateDep, Step, StoreDep
from service.models import Error
from service.routers import API_PREFIX

router = APIRouter(prefix=f"{API_PREFIX}/races", tags=["frames"], dependencies=[Authorized])

MEDIA_TYPES = {"jpeg": "image/jpeg", "zstd": "application/zstd"}

#: JPEG quality of a lossless frame shown in the viewer (``?format=jpeg``).
DISPLAY_QUALITY = 95


def etag_of(blob: bytes) -> str:
    """A strong ETag for frame bytes."""
    return '"' + hashlib.blake2b(blob, digest_size=12).hexdigest() + '"'


@router.get(
    "/{race_id}/frames/{step}",
    summary="One frame: the stored JPEG bytes",
    response_class=Response,
    responses={
        200: {
            "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The frame as stored (image/jpeg for JPEG races; "
            "application/zstd, raw (H, W, 3) uint8, for lossless races).",
        },
        304: {"description": "Not modified (If-None-Match matched the ETag)."},
        404: {"model": Error, "description": "No such race, or no such committed step."},
        409: {"model": Error, "description": "The shard holding the frame is damaged."},
    },
)
def get_frame(
    race_id: RaceId,
    step: Step,
    store: StoreDep,
    state: StateDep,
    settings: SettingsDep,
    if_none_match: Annotated[str | None, Header(max_length=1024)] = None,
    format: Annotated[
        Literal["stored", "jpeg"],
        Query(
            description="stored: the bytes as stored; jpeg: a JPEG (lossless races "
            "are encoded at quality 95 for display)."
        ),
    ] = "stored",
) -> Response:
    """The frame at `step` of a race, if committed (steps below the race's length)."""
    race = store.race(race_id)
    if step >= race.length:
        raise HTTPException(404, race.no_step(step))
    codec: str = race.info.frame_codec.name
    if format == "jpeg" and codec != "jpeg":
        # CorruptDataError (409) names a damaged shard or frame
        blob = JpegCodec(quality=DISPLAY_QUALITY).encode_image(race.frame(step))
        codec = "jpeg"
    else:
        blob = race.frame_bytes(step)  # CorruptDataError (409) names a damaged shard or frame
    etag = etag_of(blob)
    scope = "private" if settings.token is not None else "public"
    headers = {"ETag": etag, "Cache-Control": f"{scope}, max-age=31536000, immutable"}
    if if_none_match is not None and etag in [t.strip() for t in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    state.metrics.count_frames("frame", 1)
    media = MEDIA_TYPES.get(codec, "application/octet-stream")
    return Response(content=blob, media_type=media, headers=headers)
