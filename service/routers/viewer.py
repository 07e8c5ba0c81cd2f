"""``GET /``: the race viewer, a static page (plain HTML and JS, no build step).

The page holds no data of its own: it reads everything from the API with the
token the user gives it (kept in the tab's sessionStorage, or passed in the
URL fragment ``#token=...``, which browsers never send to the server). So the
shell itself is served without a token, like health.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    """The viewer page."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """The viewer's icon, for browsers that ask for it at the root."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")
