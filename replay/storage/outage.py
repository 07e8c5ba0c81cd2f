"""Riding out a store that stops answering for a while: retry a commit until a budget ends.

An S3 gateway restarting, a load balancer failing over, an NFS server rebooting: the
store refuses every request for seconds, then answers again. obstore retries a request
for about 2.3 s and gives up; a writer that failed then would end its race. Instead the
commit thread (`replay.write.shard_committer`) retries the whole commit (the shard, its
step chunks, the shapes, the length: each PUT or rename replaces its object whole, so a
commit is safe to repeat) with backoff, for up to the storage's ``outage_timeout``
seconds from the first failure (default 60 s, or ``REPLAY_OUTAGE_TIMEOUT`` when the store
is opened; ``store.storage.outage_timeout = 300`` before `new_race` sets it for the races
started after; it travels with the storage into the writer process). Meanwhile the frames wait: the
commits queued behind, the encoder's open shard, then the ring, whose ``on_full``
policy decides what the driver feels (``"block"``: `append` waits; ``"drop"``: it
returns False and counts the frame dropped). Nothing the writer acknowledged is lost.
Past the budget the commit fails with `StoreOutageError`, naming the outage.

Which errors are an outage: an `OSError` whose errno says the storage may come back
(EIO, which `replay.storage.s3` makes of any network or server error, a timeout, a
refused or reset connection, an unreachable host, a stale NFS handle). A refused
permission, a full disk or a missing file is not: those fail at once, as before.

    ride_out(lambda: commit(job), what="race 01J...: commit of shard 3", budget=60.0)
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections.abc import Callable
from typing import TypeVar

from replay.errors import WriterFailedError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The environment variable that sets the default budget, in seconds (read when a
#: storage is made: `open_store`).
OUTAGE_TIMEOUT_ENV = "REPLAY_OUTAGE_TIMEOUT"
DEFAULT_OUTAGE_TIMEOUT = 60.0
#: errnos after which the storage may answer again.
TRANSIENT_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EAGAIN,
        errno.ETIMEDOUT,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
        errno.ESTALE,
    }
)
FIRST_WAIT_S = 0.1  # the first retry's wait; it doubles up to MAX_WAIT_S
MAX_WAIT_S = 2.0


class StoreOutageError(WriterFailedError):
    """The store did not answer within the outage budget (``REPLAY_OUTAGE_TIMEOUT``)."""


def outage_budget(seconds: float | None = None) -> float:
    """A storage's budget: `seconds`, or where None ``REPLAY_OUTAGE_TIMEOUT`` if set, else
    60 (0: fail at the first error); ValueError naming the value unless a number >= 0."""
    raw: object = seconds
    if seconds is None:
        raw = os.environ.get(OUTAGE_TIMEOUT_ENV, "").strip()
        if not raw:
            return DEFAULT_OUTAGE_TIMEOUT
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        where = OUTAGE_TIMEOUT_ENV if seconds is None else "outage_timeout"
        raise ValueError(f"{where} must be a number of seconds >= 0, got {raw!r}")
    return value


def is_transient(error: BaseException) -> bool:
    """True for an error after which the storage may answer again (see the module doc)."""
    return isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS


def ride_out(action: Callable[[], T], *, what: str, budget: float) -> T:
    """`action()`, retried with backoff while it fails transiently, for up to `budget`
    seconds from the first failure; then `StoreOutageError` naming `what` and the cause."""
    started: float | None = None
    wait = FIRST_WAIT_S
    while True:
        try:
            result = action()
        except OSError as e:
            if not is_transient(e):
                raise
            now = time.monotonic()
            if started is None:
                started = now
                log.warning("%s: store unreachable (%s); retrying for up to %gs", what, e, budget)
            if now - started >= budget:
                raise StoreOutageError(
                    f"{what}: the store was unreachable for {now - started:.1f}s, past the "
                    f"outage budget of {budget:g}s ({OUTAGE_TIMEOUT_ENV}); last error: {e}"
                ) from e
            time.sleep(min(wait, started + budget - now))
            wait = min(2 * wait, MAX_WAIT_S)
            continue
        if started is not None:
            log.warning("%s: store back after %.1fs", what, time.monotonic() - started)
        return result
