"""Where a sampler's selector state (the priorities) is saved between runs.

`SelectorFile` writes ``samplers/<name>/priorities.npz`` in the store, or the local file
`path` when one is given (the way to keep priorities when the store is open
read-only), atomically; `load` gives back what was saved, from `path` first. It also
keeps the schedule: a change (`changed`) is due for saving every `interval` seconds,
and `pending` at close; with ``enabled=False`` (``save_priorities=False``) nothing is
due, and a read-only store takes priorities (`check_can_take`).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from replay.errors import ReadOnlyStoreError
from replay.storage.local import LocalStorage

if TYPE_CHECKING:
    from replay.storage.base import ByteStorage

__all__ = ["SelectorFile"]


class SelectorFile:
    """The saved state of sampler `name`: in the store, or at `path`."""

    def __init__(
        self,
        storage: ByteStorage,
        name: str,
        path: str | os.PathLike[str] | None,
        read_only: bool,
        interval: float | None = None,
        enabled: bool = True,
    ) -> None:
        self.storage, self.name, self.read_only = storage, name, read_only
        self.path = None if path is None else Path(path)
        self.interval, self.enabled = interval, enabled
        self._dirty = False
        self._last = time.monotonic()

    @property
    def pending(self) -> bool:
        """True when a change is not saved yet (and saving is enabled)."""
        return self._dirty and self.enabled

    def changed(self) -> bool:
        """Note a change; True when a save is due (`interval` seconds since the last)."""
        self._dirty = True
        return (
            self.enabled
            and self.interval is not None
            and time.monotonic() - self._last >= self.interval
        )

    def saving(self) -> None:
        """A save starts now: nothing pending; `changed` counts the interval from here.
        Refuses (`ReadOnlyStoreError`) where it could not be saved."""
        self.check_can_save()
        self._dirty = False
        self._last = time.monotonic()

    def check_can_take(self) -> None:
        """Refuse a change that could never be saved (unless saving is not enabled)."""
        if self.enabled:
            self.check_can_save()

    @property
    def key(self) -> str:
        """Where the state lives in the store."""
        return f"samplers/{self.name}/priorities.npz"

    @property
    def location(self) -> str:
        """Where `save` writes: `path`, or a file in the store."""
        if self.path is not None:
            return str(self.path)
        return f"{getattr(self.storage, 'root', self.storage)}/{self.key}"

    def check_can_save(self) -> None:
        """Refuse to save priorities where they cannot go (a read-only store, no `path`)."""
        if self.read_only and self.path is None:
            raise ReadOnlyStoreError(
                f"store {getattr(self.storage, 'root', self.storage)} is open read-only, so "
                f"the priorities of sampler {self.name!r} cannot be saved in it: open it "
                "writable (replay.open_store(path)), give the sampler a file of yours "
                "(checkpoint_path='priorities.npz'), or keep them in memory only "
                "(save_priorities=False)"
            )

    def save(self, state: Mapping[str, Any]) -> None:
        """Write `state` (arrays) atomically to `location`."""
        buf = io.BytesIO()
        np.savez(buf, **state)
        if self.path is None:
            self.storage.write(self.key, buf.getvalue())
        else:  # the store's atomic, fsynced write, into the file's own folder
            LocalStorage(self.path.parent).write(self.path.name, buf.getvalue())

    def load(self) -> dict[str, Any] | None:
        """The saved state: `path`'s if it exists, else the store's; None when neither."""
        if self.path is not None and self.path.exists():
            raw = self.path.read_bytes()
        elif self.storage.exists(self.key):
            raw = self.storage.read(self.key)
        else:
            return None
        with np.load(io.BytesIO(raw)) as data:
            return {k: data[k] for k in data.files}
