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

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

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
from replay.checkpoints import SelectorFile
from replay.closing import Closing
from replay.damage import Damage, Skipped
from replay.decode import decode_frames
from replay.errors import CorruptDataError, SamplingError
from replay.filters import Filters
from replay.index import Index, RaceEntry
from replay.jpeg import resolve_device
from replay.nstep import NStep
from replay.prefetch import prefetched
from replay.rate_limit import RateLimit, RateLimiter
from replay.reader import Reader
from replay.selectors import ItemSpace, Selector, make_selector

if TYPE_CHECKING:
    from replay.storage import ByteStorage
    from replay.transform import Transform

Kind = Literal["uniform", "prioritized", "recent"]
log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
R = TypeVar("R")
__all__ = ["Drawn", "Kind", "Sampler", "SamplerStats", "Skipped"]


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
        self.selector: Selector = make_selector(
            kind,
            alpha=alpha,
            beta=beta,
            recent_seconds=recent_seconds,
            recent_fraction=recent_fraction,
        )
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
        #: where the selector's state (priorities) is saved (`replay.checkpoints`)
        self.saved = SelectorFile(storage, name, self.checkpoint_path, read_only=read_only)
        self.filters = Filters.of(filters)
        self.index = Index(storage, self.filters)
        self.reader = Reader(storage, self.index, threads=io_threads)
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
        #: corrupt shards and frames met (`replay.damage`), never drawn again
        self.damage = Damage(self.span, stride)
        self._batches = self._items = self._refreshes = 0
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        saved = self.saved.load()
        if saved is not None:
            self.selector.load_state_dict(saved)

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
                self._space = ItemSpace(entries, counts, self.span, self._step_times)
                self._generation = self.index.generation
                self.selector.on_refresh(self._space)

    def _step_times(self, entry: RaceEntry, steps: Any) -> Any:
        """The ``t_ns`` of some steps of a race (what `Recent` chooses by), read lazily."""
        return self.reader.step_values(entry, "t_ns", steps)

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
            if self.damage:
                d = self.damage.avoid(space, d, lambda k: self.selector.draw(space, self._rng, k))
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
        with self._lock:
            size = self.index.entry(e.race_id).info.shard_size
            skipped, keys = self.damage.mark(e, size, whole=whole)
            self.selector.zero(keys)
        log.warning("skipping corrupt data: %s", e)
        return skipped

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
        keys = [(str(r), int(s)) for r, s in keys]
        values = to_numpy(priorities)
        self.selector.update_priorities([], np.zeros(0))  # a selector without priorities refuses
        if self.save_priorities:
            self.saved.check_can_save()
        with self._lock:
            self._maybe_refresh()
            self.selector.on_refresh(self._space)  # a loaded state_dict waits for a space
            self.selector.update_priorities(keys, values)
            self._dirty = True
            due = self.checkpoint_interval is not None and (
                time.monotonic() - self._last_checkpoint >= self.checkpoint_interval
            )
        if due and self.save_priorities:
            self.checkpoint()

    @property
    def checkpoint_key(self) -> str:
        """Where this sampler's priorities live in the store."""
        return self.saved.key

    @property
    def checkpoint_location(self) -> str:
        """Where `checkpoint` saves the priorities: `checkpoint_path`, or a file in the store."""
        return self.saved.location

    def checkpoint(self) -> None:
        """Save the priorities (atomic) to `checkpoint_location`; a prioritized sampler
        of the same name (and `checkpoint_path`) starts from them. A selector without
        state (uniform, recent) saves nothing."""
        with self._lock:
            state = self.selector.state_dict()
            if not state:
                return
            self.saved.check_can_save()
            self._dirty = False
            self._last_checkpoint = time.monotonic()
        self.saved.save(state)

    # -- state -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this sampler's random stream and priorities."""
        with self._lock:
            state: dict[str, Any] = {
                "kind": self.kind,
                "rng": self._rng.bit_generator.state,
                **self.damage.state(),
            }
            self._maybe_refresh()
            self.selector.on_refresh(self._space)
            selected = self.selector.state_dict()
            if selected:
                state["priorities"] = selected
            return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state_dict()` output (of a sampler of the same kind)."""
        if state.get("kind") != self.kind:
            raise ValueError(f"state is of a {state.get('kind')!r} sampler, not {self.kind!r}")
        with self._lock:
            self._rng.bit_generator.state = state["rng"]
            self.damage.load(state)
            if "priorities" in state:
                self.selector.load_state_dict(state["priorities"])

    def stats(self) -> SamplerStats:
        """A snapshot of the counters."""
        return SamplerStats(
            batches=self._batches,
            items=self._items,
            corrupt_skipped=self.damage.skipped,
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
