"""Sources by name: what `replay record --source NAME` and `make_source` look up.

Each entry is a factory that imports its source module only when called, so
listing or choosing sources never loads a game, and a missing optional package
is reported (as `MissingDependencyError`) only for the source that needs it.

Example::

    with make_source("vizdoom", scenario="basic") as src:
        ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from capture.errors import UnknownSourceError
from capture.source import Source

__all__ = ["DEFAULT_SOURCE", "SOURCES", "make_source"]

DEFAULT_SOURCE = "carracing"


def _carracing(**kwargs: Any) -> Source:
    from capture.carracing import CarRacingSource

    return CarRacingSource(**kwargs)


def _vizdoom(**kwargs: Any) -> Source:
    from capture.vizdoom import ViZDoomSource

    return ViZDoomSource(**kwargs)


def _screen(**kwargs: Any) -> Source:
    from capture.screen import ScreenSource

    return ScreenSource(**kwargs)


def _synthetic(**kwargs: Any) -> Source:
    from capture.synthetic import SyntheticSource

    return SyntheticSource(**kwargs)


#: Source factories by name; keyword arguments go to the source's constructor.
SOURCES: Mapping[str, Callable[..., Source]] = MappingProxyType(
    {
        "carracing": _carracing,
        "vizdoom": _vizdoom,
        "screen": _screen,
        "synthetic": _synthetic,
    }
)


def make_source(name: str = DEFAULT_SOURCE, **kwargs: Any) -> Source:
    """Create the source registered as `name`, passing `kwargs` to its constructor.

    Raises:
        UnknownSourceError: `name` is not in `SOURCES`.
        MissingDependencyError: the source's optional package is not installed.
    """
    try:
        factory = SOURCES[name]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise UnknownSourceError(f"unknown source {name!r}; known sources: {known}") from None
    return factory(**kwargs)
