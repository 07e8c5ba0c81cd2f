"""The replay service: a FastAPI app over one replay store.

    replay serve ./replay-data                 # http://127.0.0.1:8000/ (viewer), /docs
    REPLAY_STORE=./replay-data uvicorn --factory service.app:create_app

Routes live under ``/v1`` (one router per resource in `service.routers`),
settings come from ``REPLAY_*`` environment variables (`service.settings`),
and `/v1/sample` answers in the binary batch format of `replay.remote.protocol`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("replay")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
