"""Samplers: which (race, step) windows a batch holds, then the batch itself.

A `Sampler` composes three parts, each with one job (TorchRL's split):
an `Index` (what is there), a selector that only chooses items (`replay.selectors`:
`Uniform`, `Recent`, `Prioritized`), and a `Reader` that only fetches bytes;
decoding is `replay.decode.decode_batch`.

An item is a window of `seq_len` steps of one race, `stride` apart, starting at
any step from which the whole window is committed: windows never cross a race
boundary. With ``seq_len=1`` an item is one frame.

    sampler = store.sampler("prioritized", batch_size=64, seq_len=4, seed=0)
    batch = sampler.sample()                    # frames (64, 4, 900, 1600, 3) uint8
    sampler.update_priorities(batch.keys, td_errors)
    for batch in sampler:                       # prefetches the next batch meanwhile
        ...

Priorities (``"prioritized"``) are saved every `checkpoint_interval` seconds and at
`close` to ``samplers/<name>/priorities.npz`` in the store, or to `checkpoint_path` (a
local file of yours: the way to keep them when the store is open read-only); a new
sampler of the same name starts from them. On a read-only store without a
`checkpoint_path`, `update_priorities` raises `ReadOnlyStoreError` rather than drop
them; ``save_priorities=False`` keeps them in memory, for the sampler's life only.

``n_step=N, gamma=g`` (and ``next_frames=True``) add n-step returns, discounts and
bootstrap steps (and frames) to every batch (`replay.nstep`); ``min_size``,
``samples_per_insert``, ``error_margin`` and ``timeout`` hold a learner back until
its actors have written enough (`replay.rate_limit`). ``out="tensordict"`` gives
TensorDicts (`replay.tensordicts`).

Memory: the index's few bytes per cached frame (see `replay.index`); the
prioritized selector adds 16 bytes per item (a float64 sum tree, leaves and
nodes); `Uniform` and `Recent` add nothing per item.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, TypeVar

import numpy as np

from replay import format as fmt
from replay import nstep
from replay.batch import (
    MAX_REDRAWS,
    EncodedBatch,
    Out,
    Sampled,
    SampleKeys,
    corrupt_frame_error,
    make_batch,
    to_numpy,
)
from replay.closing import Closing
from replay.decode import decode_frames
from replay.errors import CorruptDataError, ReadOnlyStoreError, SamplingError
from replay.filters import Filters
from replay.index import Index, RaceEntry
from replay.jpeg import resolve_device
from replay.nstep import NStep
from replay.prefetch import prefetched
from replay.rate_limit import RateLimit, RateLimiter
from replay.reader import Reader
from replay.selectors import Draw, ItemSpace, Prioritized, Recent, Uniform
from replay.storage import LocalStorage

if TYPE_CHECKING:
    from replay.storage import ByteStorage
    from replay.transform import Transform

Kind = Literal["uniform", "prioritized", "recent"]
log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
R = TypeVar("R")


class Skipped(NamedTuple):
    """A damaged place a ``skip_corrupt`` sampler skipped: a whole shard (`step` None), or
    one frame. ``str()`` gives ``race:shard`` or ``race:shard:step``."""

    race_id: str
    shard: int
    step: int | None

    def __str__(self) -> str:
        return f"{self.race_id}:{self.shard}" + ("" if self.step is None else f":{self.step}")


@dataclass(frozen=True)
class Drawn(Generic[R]):
    """One batch clear of damaged data (`Sampler.draw`): its keys, its stored bytes,
    what the decode function made of them, and the damaged places skipped to get it."""

    keys: SampleKeys
    encoded: EncodedBatch
    decoded: R
    skipped: list[Skipped]


@dataclass(frozen=True)
class SamplerStats:
    """Counters of a sampler."""

    batches: int
    items: int
    corrupt_skipped: int
    #: races left out because their metadata cannot be read (`Index.damaged` names them)
    damaged_races: int
    refreshes: int
    races: int
    frames: int
    index_bytes: int


class Sampler(Closing):
    """Draws batches from a store. Create one with `Store.sampler`; see the module doc."""

    def __init__(
        self,
        storage: ByteStorage,
        *,
        kind: Kind = "uniform",
        batch_size: int = 64,
        seq_len: int = 1,
        stride: int = 1,
        seed: int | None = None,
        filters: Filters | Mapping[str, Any] | None = None,
        skip_corrupt: bool = False,
        device: str = "cpu",
        out: Out = "numpy",
        transform: Transform | None = None,
        alpha: float = 0.6,
        beta: float = 0.4,
        name: str = "default",
        recent_seconds: float = 60.0,
        recent_fraction: float = 0.5,
        refresh_interval: float = 1.0,
        checkpoint_interval: float | None = 60.0,
        checkpoint_path: str | os.PathLike[str] | None = None,
        save_priorities: bool = True,
        io_threads: int | None = None,
        read_only: bool = False,
        n_step: int | None = None,
        gamma: float = 0.99,
        next_frames: bool = False,
        min_size: int = 0,
        samples_per_insert: float | None = None,
        error_margin: float | None = None,
        timeout: float | None = 60.0,
    ) -> None:
        for arg, value in (("batch_size", batch_size), ("seq_len", seq_len), ("stride", stride)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if kind not in ("uniform", "prioritized", "recent"):
            raise ValueError(f"kind must be 'uniform', 'prioritized' or 'recent', not {kind!r}")
        if not _NAME.match(name):
            raise ValueError(f"name must be 1-64 of [A-Za-z0-9_.-], not {name!r}")
        self.storage = storage
        self.kind, self.name = kind, name
        self.batch_size, self.seq_len, self.stride = batch_size, seq_len, stride
        self.span = (seq_len - 1) * stride + 1
        self.skip_corrupt = skip_corrupt
        self.device, self.out, self.transform = device, out, transform
        resolve_device(device)  # refuse a bad device now; "auto" runs its GPU check once, here
        self.refresh_interval = refresh_interval
        self.checkpoint_interval = checkpoint_interval
        self.checkpoint_path = None if checkpoint_path is None else Path(checkpoint_path)
        self.save_priorities = save_priorities
        self.read_only = read_only
        self.filters = Filters.of(filters)
        self.index = Index(storage, self.filters)
        self.reader = Reader(storage, self.index, threads=io_threads)
        self.selector: Uniform | Recent | Prioritized
        if kind == "uniform":
            self.selector = Uniform()
        elif kind == "recent":
            self.selector = Recent(self.reader, seconds=recent_seconds, fraction=recent_fraction)
        else:
            self.selector = Prioritized(alpha=alpha, beta=beta)
        #: n-step returns (`replay.nstep`); None without ``n_step``
        self.nstep = NStep.of(n_step, gamma, next_frames)
        limit = RateLimit(min_size, samples_per_insert, error_margin, timeout)
        #: waits for ``min_size`` / ``samples_per_insert`` (`replay.rate_limit`); None: no limit
        self.limiter = RateLimiter(limit, batch_size) if limit.active else None
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._space = ItemSpace([], np.zeros(0, np.int64), self.span)
        self._generation = -1
        self._last_refresh = -np.inf
        self._bad_shards: set[tuple[str, int]] = set()
        self._bad_frames: set[tuple[str, int]] = set()
        self._batches = self._items = self._skipped = self._refreshes = 0
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        if isinstance(self.selector, Prioritized):
            self._load_checkpoint()

    def __repr__(self) -> str:
        return (
            f"Sampler({self.kind!r}, batch_size={self.batch_size}, seq_len={self.seq_len}, "
            f"stride={self.stride}, races={len(self._space.entries)}, items={self._space.total})"
        )

    # -- the index ---------------------------------------------------------------------

    def refresh(self) -> None:
        """Pick up races and frames committed since the last refresh (cheap)."""
        with self._lock:
            self.index.refresh()
            self._refreshes += 1
            self._last_refresh = time.monotonic()
            if self.index.generation != self._generation:
                entries = self.index.entries
                counts = np.array([max(0, e.length - self.span + 1) for e in entries], np.int64)
                self._space = ItemSpace(entries, counts, self.span)
                self._generation = self.index.generation

    def _maybe_refresh(self) -> None:
        if time.monotonic() - self._last_refresh >= self.refresh_interval:
            self.refresh()

    def __len__(self) -> int:
        """Items (windows) that can be drawn right now."""
        self._maybe_refresh()
        return self._space.total

    # -- sampling ----------------------------------------------------------------------

    def sample_keys(
        self, batch_size: int | None = None, *, timeout: float | None = None
    ) -> SampleKeys:
        """Choose the items of one batch; reads nothing but the index.

        With a rate limit (``min_size``, ``samples_per_insert``) it first waits, up to
        `timeout` (None: the sampler's), and raises `RateLimitedError` past it.
        """
        n = batch_size or self.batch_size
        if self.limiter is not None:
            self.limiter.acquire(n, self._look, timeout)
        with self._lock:
            self._maybe_refresh()
            space = self._space
            self._check_space(space, n)
            d = self.selector.draw(space, self._rng, n)
            if self._bad_shards or self._bad_frames:
                d = self._avoid_bad(space, d, n)
            steps = d.starts[:, None] + np.arange(self.seq_len, dtype=np.int64) * self.stride
            return SampleKeys(
                race_ids=[space.entries[i].race_id for i in d.races.tolist()],
                steps=steps.astype(np.int64),
                weights=d.weights,
                probabilities=d.probabilities.astype(np.float64),
            )

    def _look(self, fresh: bool) -> tuple[list[RaceEntry], int]:
        """The races and items a rate limiter checks (`fresh`: re-read the store first)."""
        if fresh:
            self.refresh()
        else:
            self._maybe_refresh()
        space = self._space
        return space.entries, space.total

    def _check_space(self, space: ItemSpace, n: int) -> None:
        if space.total >= n:
            return
        where = f"store {getattr(self.storage, 'root', self.storage)}"
        if self.filters != Filters():
            where += f" with {self.filters}"
        if not space.entries:
            raise SamplingError(f"nothing to sample: no committed frames in {where}")
        longest = max(e.length for e in space.entries)
        if longest < self.span:
            raise SamplingError(
                f"seq_len={self.seq_len} with stride={self.stride} needs races of {self.span} "
                f"steps; the longest race in {where} has {longest}"
            )
        raise SamplingError(
            f"batch_size={n} is more than the {space.total} items (windows of {self.span} "
            f"steps) available in {where}"
        )

    def _avoid_bad(self, space: ItemSpace, d: Draw, n: int) -> Draw:
        """Redraw items whose windows touch known-corrupt frames or shards."""
        races, starts = d.races.copy(), d.starts.copy()
        p, w = d.probabilities.copy(), d.weights.copy()
        for _ in range(MAX_REDRAWS):
            bad = [i for i in range(n) if self._is_bad(space.entries[races[i]], int(starts[i]))]
            if not bad:
                return Draw(races, starts, p, w)
            redo = self.selector.draw(space, self._rng, len(bad))
            races[bad], starts[bad] = redo.races, redo.starts
            p[bad], w[bad] = redo.probabilities, redo.weights
        raise SamplingError(f"no {n} items clear of corrupt data after {MAX_REDRAWS} tries")

    def _is_bad(self, e: RaceEntry, start: int) -> bool:
        s = e.info.shard_size
        for step in range(start, start + self.span, self.stride):
            if (e.race_id, step // s) in self._bad_shards or (e.race_id, step) in self._bad_frames:
                return True
        return False

    def fetch(self, keys: SampleKeys) -> EncodedBatch:
        """The stored bytes and step arrays of `keys` (see `replay.reader.Reader.fetch`)."""
        with self._lock:
            if self._generation < 0 or any(r not in self.index for r in set(keys.race_ids)):
                self.refresh()
        if self.nstep is not None:
            return nstep.fetch(self.reader, keys, self.nstep)
        return self.reader.fetch(keys)

    def sample(
        self,
        device: str | None = None,
        out: Out | None = None,
        transform: Transform | None = None,
    ) -> Sampled:
        """One decoded batch: ``decode_batch(fetch(sample_keys()))``.

        With ``skip_corrupt=True`` an item whose shard or frame is corrupt is
        redrawn and counted (`stats().corrupt_skipped`); otherwise `CorruptDataError`
        names the race, shard and step.
        """
        device = device or self.device
        out = out or self.out
        transform = transform if transform is not None else self.transform
        drawn = self.draw(
            lambda encoded: decode_frames(
                nstep.with_next_frames(encoded), device=device, transform=transform
            )
        )
        return make_batch(
            drawn.keys,
            drawn.decoded,
            drawn.encoded.steps,
            out=out,
            transform=transform,
            nstep=drawn.encoded.nstep,
        )

    def draw(
        self,
        decode: Callable[[EncodedBatch], tuple[R, list[int]]],
        *,
        timeout: float | None = None,
    ) -> Drawn[R]:
        """Draw keys, fetch their stored bytes and `decode` them, past damaged data.

        `decode` returns its result and the flat indices of the frames that did not
        decode. `sample` is `draw` with the batch decoder; the service draws with
        none (its client decodes) or its own view. A race evicted since the last
        refresh is redrawn. A damaged shard or frame raises `CorruptDataError`, or
        with ``skip_corrupt`` is remembered (never drawn again, priority zero,
        `stats().corrupt_skipped`), named in `Drawn.skipped`, and the batch redrawn.
        `timeout` bounds a rate limit's wait (`sample_keys`).
        """
        skipped: list[Skipped] = []
        for _ in range(MAX_REDRAWS):
            keys = self.sample_keys(timeout=timeout)
            try:
                encoded = self.fetch(keys)
            except CorruptDataError as e:
                if self._evicted(e.race_id):
                    continue  # removed by capacity eviction since the last refresh: redraw
                if not self.skip_corrupt:
                    raise
                skipped.append(self._mark_bad(e, whole=e.whole_shard))
                continue
            decoded, failed = decode(encoded)
            if failed:
                # a frame drawn twice in one batch is one damaged place
                errors: dict[tuple[str, int | None], CorruptDataError] = {}
                for i in failed:
                    error = corrupt_frame_error(encoded, i)
                    errors.setdefault((error.race_id, error.step), error)
                if not self.skip_corrupt:
                    raise next(iter(errors.values()))
                skipped += [self._mark_bad(error, whole=False) for error in errors.values()]
                continue
            with self._lock:
                self._batches += 1
                self._items += keys.batch_size
            return Drawn(keys, encoded, decoded, skipped)
        raise SamplingError(f"no batch clear of corrupt data after {MAX_REDRAWS} tries")

    def _evicted(self, race_id: str) -> bool:
        """True (and the race dropped) if a race vanished from the store since the refresh."""
        if self.storage.exists(f"{fmt.race_key(race_id)}/{fmt.METADATA}"):
            return False
        with self._lock:
            self.index.drop(race_id)
            self.refresh()
        return True

    def _mark_bad(self, e: CorruptDataError, *, whole: bool) -> Skipped:
        """Never draw this shard (`whole`) or frame again; zero its items' priorities."""
        step = None if whole else e.step  # None: the whole shard
        with self._lock:
            self._skipped += 1
            if step is None:
                self._bad_shards.add((e.race_id, e.shard))
            else:
                self._bad_frames.add((e.race_id, step))
            if isinstance(self.selector, Prioritized):
                entry = self.index.entry(e.race_id)
                size = entry.info.shard_size
                steps = (
                    range(e.shard * size, (e.shard + 1) * size)
                    if step is None
                    else range(step, step + 1)
                )
                keys = {
                    (e.race_id, start)
                    for bad in steps
                    for start in range(bad - self.span + 1, bad + 1)
                    if start >= 0 and (bad - start) % self.stride == 0
                }
                self.selector.zero(sorted(keys))
        log.warning("skipping corrupt data: %s", e)
        return Skipped(e.race_id, e.shard, step)

    def __iter__(self) -> Iterator[Sampled]:
        return self.batches()

    def batches(
        self,
        device: str | None = None,
        out: Out | None = None,
        transform: Transform | None = None,
        *,
        limit: int | None = None,
    ) -> Iterator[Sampled]:
        """Batches for ever (or `limit` of them), the next one read while you train.

        A background thread prepares batch k+1 while the caller holds batch k, so
        at most two batches are in memory. Closing the iterator stops the thread;
        an iterator left open (a ``break``, a DataLoader worker) is stopped at exit
        (`replay.prefetch`).
        """
        return prefetched(lambda: self.sample(device, out, transform), limit=limit)

    # -- priorities --------------------------------------------------------------------

    def update_priorities(self, keys: Sequence[tuple[str, int]], priorities: Any) -> None:
        """Set new priorities (e.g. |TD error| + eps) for the items of `keys`.

        Keys are (race id, first step), as in `Batch.keys`; keys of races gone from
        the store are ignored. Raises `SamplingError` on a non-prioritized sampler.
        """
        if not isinstance(self.selector, Prioritized):
            raise SamplingError(f"update_priorities needs kind='prioritized', not {self.kind!r}")
        if self.save_priorities:
            self._check_can_save()
        keys = [(str(r), int(s)) for r, s in keys]
        with self._lock:
            self._maybe_refresh()
            self.selector.sync(self._space)
            self.selector.update(keys, to_numpy(priorities))
            self._dirty = True
            due = self.checkpoint_interval is not None and (
                time.monotonic() - self._last_checkpoint >= self.checkpoint_interval
            )
        if due and self.save_priorities:
            self.checkpoint()

    @property
    def checkpoint_key(self) -> str:
        """Where this sampler's priorities live in the store."""
        return f"samplers/{self.name}/priorities.npz"

    @property
    def checkpoint_location(self) -> str:
        """Where `checkpoint` saves the priorities: `checkpoint_path`, or a file in the store."""
        if self.checkpoint_path is not None:
            return str(self.checkpoint_path)
        return f"{getattr(self.storage, 'root', self.storage)}/{self.checkpoint_key}"

    def _check_can_save(self) -> None:
        """Refuse to take priorities that could never be saved (a read-only store)."""
        if self.read_only and self.checkpoint_path is None:
            raise ReadOnlyStoreError(
                f"store {getattr(self.storage, 'root', self.storage)} is open read-only, so "
                f"the priorities of sampler {self.name!r} cannot be saved in it: open it "
                "writable (replay.open_store(path)), give the sampler a file of yours "
                "(checkpoint_path='priorities.npz'), or keep them in memory only "
                "(save_priorities=False)"
            )

    def checkpoint(self) -> None:
        """Save the priorities (atomic) to `checkpoint_location`; a prioritized sampler
        of the same name (and `checkpoint_path`) starts from them."""
        if not isinstance(self.selector, Prioritized):
            return
        self._check_can_save()
        with self._lock:
            state = self.selector.state()
            state["alpha"] = np.float64(self.selector.alpha)
            self._dirty = False
            self._last_checkpoint = time.monotonic()
        buf = io.BytesIO()
        np.savez(buf, **state)
        if self.checkpoint_path is None:
            self.storage.write(self.checkpoint_key, buf.getvalue())
        else:  # the store's atomic, fsynced write, into the file's own folder
            path = self.checkpoint_path
            LocalStorage(path.parent).write(path.name, buf.getvalue())

    def _load_checkpoint(self) -> None:
        """Start from the saved priorities: `checkpoint_path` if it exists, else the store's."""
        assert isinstance(self.selector, Prioritized)
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            raw = self.checkpoint_path.read_bytes()
        elif self.storage.exists(self.checkpoint_key):
            raw = self.storage.read(self.checkpoint_key)
        else:
            return
        with np.load(io.BytesIO(raw)) as data:
            self.selector.load_state({k: data[k] for k in data.files})

    # -- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this sampler's random stream and priorities."""
        with self._lock:
            state: dict[str, Any] = {
                "kind": self.kind,
                "rng": self._rng.bit_generator.state,
                "bad_shards": sorted(self._bad_shards),
                "bad_frames": sorted(self._bad_frames),
            }
            if isinstance(self.selector, Prioritized):
                self._maybe_refresh()
                self.selector.sync(self._space)
                state["priorities"] = self.selector.state()
            return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state_dict()` output (of a sampler of the same kind)."""
        if state.get("kind") != self.kind:
            raise ValueError(f"state is of a {state.get('kind')!r} sampler, not {self.kind!r}")
        with self._lock:
            self._rng.bit_generator.state = state["rng"]
            self._bad_shards = {(str(r), int(s)) for r, s in state.get("bad_shards", [])}
            self._bad_frames = {(str(r), int(s)) for r, s in state.get("bad_frames", [])}
            if isinstance(self.selector, Prioritized) and "priorities" in state:
                self.selector.load_state(state["priorities"])

    def stats(self) -> SamplerStats:
        """A snapshot of the counters."""
        return SamplerStats(
            batches=self._batches,
            items=self._items,
            corrupt_skipped=self._skipped,
            damaged_races=len(self.index.damaged),
            refreshes=self._refreshes,
            races=len(self._space.entries),
            frames=sum(e.length for e in self._space.entries),
            index_bytes=self.index.memory,
        )

    def close(self) -> None:
        """Save changed priorities (unless ``save_priorities=False``); stop the I/O threads."""
        try:
            if self._dirty and self.save_priorities:
                self.checkpoint()
        finally:
            self.reader.close()
