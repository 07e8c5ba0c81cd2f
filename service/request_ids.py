"""Request ids: what the service remembers so a client may retry a request that acts.

``POST /v1/sample`` moves a seeded stream on and ``PUT /v1/priorities`` changes
priorities, so a client that lost the answer (a dropped connection, a read timeout)
cannot simply send the request again. With a ``Replay-Request-Id`` header
(`replay.remote.protocol.REQUEST_ID_HEADER`, any string up to 128 characters, the same on
every try of one call) it can: the service remembers what it did for that id for
`ttl_s` seconds, and a repeat gets the same answer without acting again (the same
batch keys, re-read; the same priority count, not re-applied). A repeat that
arrives while the first is still running waits for it.

An id is remembered with the request's content (its route, body and credentials,
`digest`): the same id with other content is refused (`RequestIdConflict`, a 422
naming the id), never answered with another request's answer. Only the request
that made an entry can settle it: its failure forgets the entry (a retry runs
afresh), while a repeat or a conflicting request that fails leaves it alone.
The memory cap counts the bytes each entry holds (`nbytes_of`). Only the event
loop touches this (no lock)::

    ticket = await ids.claim(key, digest)  # ticket.value: None for the first of its id
    ticket.done(value)                     # ... or ticket.fail() if it raised
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import anyio
import numpy as np

from replay.errors import ReplayError

#: Bytes of remembered answers kept at most (the oldest go first).
MAX_BYTES = 16 << 20
#: What an entry costs besides its answer: the entry, its event, the key and digest,
#: the dict slot (measured with tracemalloc: tests/service/test_request_ids.py).
ENTRY_OVERHEAD = 1536


class RequestIdConflict(ReplayError):
    """A request id already used for a request with other content (422)."""


def digest(*parts: str | bytes) -> bytes:
    """What identifies a request's content: a hash of its route, body and credentials."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little") + data)
    return h.digest()


def nbytes_of(value: Any) -> int:
    """Bytes `value` holds: arrays, strings, containers and dataclasses, followed down."""
    if isinstance(value, np.ndarray):
        return sys.getsizeof(value) + (value.nbytes if value.base is not None else 0)
    if isinstance(value, list | tuple | set):
        return sys.getsizeof(value) + sum(nbytes_of(v) for v in value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(nbytes_of(k) + nbytes_of(v) for k, v in value.items())
    if is_dataclass(value) and not isinstance(value, type):
        return sys.getsizeof(value) + sum(nbytes_of(getattr(value, f.name)) for f in fields(value))
    if hasattr(value, "__dict__"):  # a pydantic model
        return sys.getsizeof(value) + nbytes_of(vars(value))
    return sys.getsizeof(value)


@dataclass
class _Entry:
    digest: bytes
    done: anyio.Event = field(default_factory=anyio.Event)
    value: Any = None
    nbytes: int = 0
    expires: float = float("inf")  # while running


@dataclass
class Ticket:
    """One request's hold on its id: `value` is the remembered answer (None: this request
    is the first, and `owner`); `done` and `fail` settle the entry, for its owner only."""

    ids: RequestIds | None
    key: Hashable | None
    value: Any = None
    owner: bool = False

    def done(self, value: Any) -> None:
        """Remember `value` as the answer of this id (the owner's)."""
        if self.owner and self.ids is not None:
            self.ids.settle(self.key, value)

    def fail(self) -> None:
        """Forget the id (the owner's request failed): a retry runs again."""
        if self.owner and self.ids is not None:
            self.ids.forget(self.key)


class RequestIds:
    """Answers remembered by request id, for `ttl_s` seconds and `max_bytes` in all."""

    def __init__(self, ttl_s: float, max_bytes: int = MAX_BYTES) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def claim(self, key: Hashable | None, content: bytes) -> Ticket:
        """The ticket of `key` for a request whose content hashes to `content`: the
        remembered answer, or ownership when this request is the first with it. A `key`
        of None (no id) is never remembered. `RequestIdConflict` if the id was used for
        other content."""
        if key is None:
            return Ticket(None, None)
        while True:
            self._expire()
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(content)
                return Ticket(self, key, owner=True)
            if entry.digest != content:
                raise RequestIdConflict(
                    f"request id {key[-1] if isinstance(key, tuple) else key!r} was used for "
                    "another request (other body, route or token); a retry must repeat its "
                    "request exactly, and a new request needs a new id"
                )
            if entry.done.is_set():
                return Ticket(self, key, entry.value)
            await entry.done.wait()  # the first try is still running; a failed one is gone

    def settle(self, key: Hashable | None, value: Any) -> None:
        """Remember `value` as the answer of `key` (`Ticket.done`)."""
        entry = None if key is None else self._entries.get(key)
        if entry is None:
            return
        entry.value = value
        entry.nbytes = ENTRY_OVERHEAD + nbytes_of(key) + nbytes_of(value)
        entry.expires = time.monotonic() + self.ttl_s
        self.nbytes += entry.nbytes
        entry.done.set()
        self._expire()

    def forget(self, key: Hashable | None) -> None:
        """Forget `key` (`Ticket.fail`)."""
        entry = None if key is None else self._entries.pop(key, None)
        if entry is not None:
            self.nbytes -= entry.nbytes
            entry.done.set()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in list(self._entries):
            entry = self._entries[key]
            if entry.done.is_set() and (entry.expires <= now or self.nbytes > self.max_bytes):
                del self._entries[key]
                self.nbytes -= entry.nbytes
            elif entry.expires > now and self.nbytes <= self.max_bytes:
                break  # in order of arrival: the rest are newer
