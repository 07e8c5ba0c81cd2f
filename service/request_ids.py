"""Request ids: what the service remembers so a client may retry a request that acts.

``POST /v1/sample`` moves a seeded stream on and ``PUT /v1/priorities`` changes
priorities, so a client that lost the answer (a dropped connection, a read timeout)
cannot simply send the request again. With a ``Replay-Request-Id`` header
(`replay.remote.protocol.REQUEST_ID_HEADER`, any string up to 128 characters, the same on
every try of one call) it can: the service remembers what it did for that id for
`ttl_s` seconds, and a repeat gets the same answer without acting again (the same
batch keys, re-read; the same priority count, not re-applied). A repeat that
arrives while the first is still running waits for it. A request that failed is
forgotten, so its retry runs afresh. Only the event loop touches this (no lock)::

    remembered = await ids.claim(key)      # None: first of its id; run it, then
    ids.done(key, value, nbytes)           # ... or ids.fail(key) if it raised
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import anyio

#: Bytes of remembered answers kept at most (the oldest go first).
MAX_BYTES = 16 << 20


@dataclass
class _Entry:
    done: anyio.Event = field(default_factory=anyio.Event)
    value: Any = None
    nbytes: int = 0
    expires: float = float("inf")  # while running


class RequestIds:
    """Answers remembered by request id, for `ttl_s` seconds and `max_bytes` in all."""

    def __init__(self, ttl_s: float, max_bytes: int = MAX_BYTES) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def claim(self, key: Hashable | None) -> Any:
        """The remembered value of `key`, or None when this request is the first with it
        (then `done` or `fail` must follow). A `key` of None (no id) is never remembered."""
        if key is None:
            return None
        while True:
            self._expire()
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry()
                return None
            if entry.done.is_set():
                return entry.value
            await entry.done.wait()  # the first try is still running; a failed one is gone

    def done(self, key: Hashable | None, value: Any, nbytes: int) -> None:
        """Remember `value` (about `nbytes` bytes) as the answer of `key`."""
        entry = None if key is None else self._entries.get(key)
        if entry is None:
            return
        entry.value, entry.nbytes = value, nbytes
        entry.expires = time.monotonic() + self.ttl_s
        self._nbytes += nbytes
        entry.done.set()
        self._expire()

    def fail(self, key: Hashable | None) -> None:
        """Forget `key` (its request failed): a retry runs again."""
        entry = None if key is None else self._entries.pop(key, None)
        if entry is not None:
            self._nbytes -= entry.nbytes
            entry.done.set()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in list(self._entries):
            entry = self._entries[key]
            if entry.done.is_set() and (entry.expires <= now or self._nbytes > self.max_bytes):
                del self._entries[key]
                self._nbytes -= entry.nbytes
            elif entry.expires > now and self._nbytes <= self.max_bytes:
                break  # in order of arrival: the rest are newer
