"""FastAPI dependencies and the `Annotated` aliases routes use.

    def route(store: StoreDep, race_id: RaceId) -> ...

`Authorized` is attached to the routers that need a token (every one but
health and the viewer shell); it accepts any request when no token is set.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from replay.format import spec as fmt
from replay.store import Store
from service.models import EXAMPLE_RACE_ID
from service.settings import Settings, get_settings
from service.state import ServiceState

SettingsDep = Annotated[Settings, Depends(get_settings)]

#: Largest step index accepted in a path (far past any race; keeps ints small).
MAX_STEP = 2**40

RaceId = Annotated[
    str,
    Path(
        pattern=fmt.RACE_ID_PATTERN.pattern,
        min_length=26,
        max_length=26,
        description="A race id: 26-character ULID (Crockford base32, upper case).",
        examples=[EXAMPLE_RACE_ID],
    ),
]
Step = Annotated[int, Path(ge=0, le=MAX_STEP, description="Step (frame) index.", examples=[0])]


async def get_state(request: Request) -> ServiceState:
    """The app's `ServiceState` (async: resolved on the event loop, no worker thread)."""
    state: ServiceState = request.app.state.replay
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_store(settings: SettingsDep, state: StateDep) -> Store:
    """The served store (opened read-only on first use)."""
    return state.store(settings.store)


StoreDep = Annotated[Store, Depends(get_store)]

_bearer = HTTPBearer(auto_error=False, description="Set when the service has REPLAY_TOKEN.")


async def check_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 unless the request carries ``Authorization: Bearer <REPLAY_TOKEN>`` (when set).

    Async (a constant-time compare, no I/O): checked without a worker thread."""
    expected = settings.token_value()
    if expected is None:
        return
    given = "" if credentials is None else credentials.credentials
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong bearer token" if given else "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )


Authorized = Depends(check_token)
