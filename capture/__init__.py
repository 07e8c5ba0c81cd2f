"""Frame sources for `replay`: games and screens that play races and yield 1600x900 frames.

`make_source` builds one by name (``"carracing"``, ``"vizdoom"``, ``"screen"``,
``"synthetic"``); each yields `Step`s that ``replay record`` (see
`capture.cli`) writes into a store. Game packages are optional and imported
only when their source is made: ``pip install 'replay[capture]'`` (CuPy for the
synthetic GPU source: ``pip install 'replay[gpu]'``).
"""

from capture.errors import CaptureError, MissingDependencyError, UnknownSourceError
from capture.registry import DEFAULT_SOURCE, SOURCES, make_source
from capture.source import Source, Step

__all__ = [
    "DEFAULT_SOURCE",
    "SOURCES",
    "CaptureError",
    "MissingDependencyError",
    "Source",
    "Step",
    "UnknownSourceError",
    "make_source",
]
