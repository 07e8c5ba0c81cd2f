"""Lazy imports of the optional packages that sources need.

Sources import their game or screen library only when they are created, so
``import capture`` works without any extra installed and a missing package
surfaces as a `MissingDependencyError` that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from capture.errors import MissingDependencyError

#: Which `replay` extra provides each optional top-level package.
EXTRA_FOR_PACKAGE: dict[str, str] = {
    "gymnasium": "capture",
    "Box2D": "capture",
    "pygame": "capture",
    "vizdoom": "capture",
    "mss": "capture",
    "cupy": "gpu",
}


def require(module: str, *, source: str) -> ModuleType:
    """Import `module` for the source named `source`, or explain how to install it.

    Example::

        mss = require("mss", source="screen")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = (exc.name or module).partition(".")[0]
        extra = EXTRA_FOR_PACKAGE.get(missing, "capture")
        raise MissingDependencyError(
            f"source {source!r} needs the package {missing!r}, which is not installed: "
            f"pip install 'replay[{extra}]'"
        ) from exc
