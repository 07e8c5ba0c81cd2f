"""Errors raised by `capture`.

They derive from `replay.errors.ReplayError`, so the `replay` CLI's single
``except ReplayError`` turns them into clean exit messages too.

    ReplayError
    └── CaptureError                a frame source cannot be made or cannot run
        ├── UnknownSourceError      no source registered under that name
        └── MissingDependencyError  the source's optional package is not installed
"""

from __future__ import annotations

from replay.errors import ReplayError


class CaptureError(ReplayError):
    """A frame source cannot be created or stopped working (no display, bad region, ...)."""


class UnknownSourceError(CaptureError, ValueError):
    """`make_source` was given a name that is not in `SOURCES`; the message lists the known ones."""


class MissingDependencyError(CaptureError, ImportError):
    """A source needs an optional package; the message says which extra to install.

    Example message::

        source 'vizdoom' needs the package 'vizdoom', which is not installed:
        pip install 'replay[capture]'
    """
