"""Where a sampler's selector state (the priorities) is saved between runs.

`SelectorFile` writes ``samplers/<name>/priorities.npz`` in the store, or the local file
`path` when one is given (the way to keep priorities when the store is open
read-only), atomically; `load` gives back what was saved, from `path` first.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from replay.errors import ReadOnlyStoreError
from replay.storage import LocalStorage

if TYPE_CHECKING:
    from replay.storage import ByteStorage

__all__ = ["SelectorFile"]


class SelectorFile:
    """The saved state of sampler `name`: in the store, or at `path`."""

    def __init__(
        self, storage: ByteStorage, name: str, path: Path | None, *, read_only: bool
    ) -> None:
        self.storage, self.name, self.path, self.read_only = storage, name, path, read_only

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
        """Refuse to take priorities that could never be saved (a read-only store)."""
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
        self.check_can_save()
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
