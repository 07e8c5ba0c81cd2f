"""Samplers: which (race, step) windows a batch holds, then the batch itself.

A `Sampler` composes three parts, each with one job (TorchRL's split):
an `Index` (what is there), a selector that only chooses items (`replay.sample.selectors`:
`Uniform`, `Recent`, `Prioritized`), and a `Reader` that only fetches bytes;
decoding is `replay.read.decode.decode_batch`.

An item is a window of `seq_len` steps of one race, `stride` apart, starting at
any step from which the whole window is committed: windows never cross a race
boundary. With ``seq_len=1`` an item is one frame. A batch may mix codecs (each frame
decodes by its race's); races of several frame sizes are refused when the sampler is made,
unless its `transform` has a `size` (``check_sizes=False``: stored bytes only, the service).

    sampler = store.sampler("prioritized", batch_size=64, seq_len=4, seed=0)
    batch = sampler.sample()                    # frames (64, 4, 900, 1600, 3) uint8
    sampler.update_priorities(batch.keys, td_errors)
    for batch in sampler:                       # prefetches the next batch meanwhile
        ...

The parameters are `replay.sample.params.SamplerParams`; where priorities are saved is
`replay.sample.checkpoints`, damaged data avoided `replay.sample.damage`, n-step returns
`replay.read.nstep`, rate limits `replay.sample.rate_limit`. Memory: the index's few
bytes per cached frame (`replay.read.index`), and the selector's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np

from replay.closing import Closing
from replay.codec.gpu_check import resolve_device
from replay.errors import CorruptDataError, SamplingError
from replay.read import nstep
from replay.read.batch import MAX_REDRAWS, EncodedBatch, Out, Sampled, SampleKeys
from replay.read.decode import decode_frames
from replay.read.filters import Filters
from replay.read.index import Index, RaceEntry
from replay.read.prefetch import prefetched
from replay.read.reader import Reader, check_frame_sizes
from replay.read.tensors import check_out, make_batch, to_numpy
from replay.sample.checkpoints import SelectorFile
from replay.sample.damage import Damage, Drawn, R, Skipped, frame_errors
from replay.sample.items import LiveSpace
from replay.sample.params import Kind, SamplerKwargs, SamplerParams
from replay.sample.prioritized import item_keys
from replay.sample.rate_limit import RateLimiter
from replay.sample.selectors import make_selector

if TYPE_CHECKING:
    from replay.codec.transform import Transform
    from replay.storage.base import ByteStorage

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
__all__ = ["Drawn", "Kind", "Sampler", "SamplerStats", "Skipped"]


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
        params: SamplerParams | None = None,
        *,
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
        timeout: float | None = 60.0,
        check_sizes: bool = True,
        **kwargs: Unpack[SamplerKwargs],
    ) -> None:
        #: the sampler parameters (`replay.sample.params`): `params` with `kwargs` over them
        self.params = p = dataclasses.replace(params or SamplerParams(), **kwargs)
        self.selector = make_selector(p.kind, alpha, beta, recent_seconds, recent_fraction)
        if not _NAME.match(name):
            raise ValueError(f"name must be 1-64 of [A-Za-z0-9_.-], not {name!r}")
        resolve_device(device)  # refuse a bad device now; "auto" runs its GPU check once, here
        check_out(out)  # and an `out` whose library is missing
        self.storage, self.kind, self.name, self.read_only = storage, p.kind, name, read_only
        self.batch_size, self.seq_len, self.stride = p.batch_size, p.seq_len, p.stride
        self.span, self.skip_corrupt, self.seed = p.span, p.skip_corrupt, p.seed
        self.device, self.out, self.transform = device, out, transform
        #: where and when the selector's state (priorities) is saved (`replay.sample.checkpoints`)
        self.saved = SelectorFile(
            storage, name, checkpoint_path, read_only, checkpoint_interval, save_priorities
        )
        self.filters = Filters.of(p.filters)
        self.index = Index(storage, self.filters)
        self.reader = Reader(storage, self.index, threads=io_threads)
        #: n-step returns (`replay.read.nstep`); None without ``n_step``
        self.nstep = p.nstep
        limit = p.rate_limit(timeout)
        #: waits for ``min_size`` / ``samples_per_insert`` (`replay.sample.rate_limit`), or None
        self.limiter = RateLimiter(limit, p.batch_size) if limit.active else None
        self._rng = np.random.default_rng(p.seed)
        self._lock = threading.RLock()
        #: what can be drawn, as of the last refresh (`replay.sample.live_items`)
        self.live = LiveSpace(
            self.index, self.span, refresh_interval, self._step_times, self.selector.on_refresh
        )
        #: corrupt shards and frames met (`replay.sample.damage`), never drawn again
        self.damage = Damage(self.span, p.stride)
        self._batches = self._items = 0
        saved = self.saved.load()
        if saved is not None:
            self.selector.load_state_dict(saved)
        if check_sizes:  # races of several sizes need a resizing transform: say so now
            check_frame_sizes(self.index, transform)

    def __repr__(self) -> str:
        space = self.live.space
        return (
            f"Sampler({self.kind!r}, batch_size={self.batch_size}, seq_len={self.seq_len}, "
            f"stride={self.stride}, races={len(space.entries)}, items={space.total})"
        )

    def refresh(self) -> None:
        """Pick up races and frames committed since the last refresh (cheap)."""
        with self._lock:
            self.live.refresh()

    def _step_times(self, entry: RaceEntry, steps: Any) -> Any:
        """The ``t_ns`` of some steps of a race (what `Recent` chooses by), read lazily."""
        return self.reader.step_values(entry, "t_ns", steps)

    def _maybe_refresh(self) -> None:
        if self.live.due:
            self.refresh()

    def __len__(self) -> int:
        """Items (windows) that can be drawn right now."""
        self._maybe_refresh()
        return self.live.space.total

    def sample_keys(
        self, batch_size: int | None = None, *, timeout: float | None = None
    ) -> SampleKeys:
        """Choose the items of one batch; reads nothing but the index.

        With a rate limit (``min_size``, ``samples_per_insert``) it first waits, up to
        `timeout` (None: the sampler's), and raises `RateLimitedError` past it.
        """
        n = batch_size or self.batch_size
        if self.limiter is not None:
            self.limiter.acquire(n, self.look, timeout)
        with self._lock:
            self._maybe_refresh()
            space = self.live.space
            if space.total < n:
                space.require(n, self._where(), self.seq_len, self.stride)
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

    def _where(self) -> str:
        """The store and filters, for messages."""
        where = f"store {getattr(self.storage, 'root', self.storage)}"
        return where + (f" with {self.filters}" if self.filters != Filters() else "")

    def look(self, fresh: bool) -> tuple[list[RaceEntry], int]:
        """The races and items drawable now (re-read when `fresh`), as the rate limit sees."""
        with self._lock:
            return self.live.look(fresh)

    def fetch(self, keys: SampleKeys) -> EncodedBatch:
        """The stored bytes and step arrays of `keys` (see `replay.read.reader.Reader.fetch`)."""
        with self._lock:
            if self.live.generation < 0 or any(r not in self.index for r in set(keys.race_ids)):
                self.refresh()
        if self.nstep is not None:
            return nstep.fetch(self.reader, keys, self.nstep)
        return self.reader.fetch(keys)

    def sample(
        self, device: str | None = None, out: Out | None = None, transform: Transform | None = None
    ) -> Sampled:
        """One decoded batch: ``decode_batch(fetch(sample_keys()))``.

        With ``skip_corrupt=True`` an item whose shard or frame is corrupt is
        redrawn and counted (`stats().corrupt_skipped`); otherwise `CorruptDataError`
        names the race, shard and step.
        """
        device, out = device or self.device, out or self.out
        transform = transform if transform is not None else self.transform
        drawn = self.draw(
            lambda e: decode_frames(nstep.with_next_frames(e), device=device, transform=transform)
        )
        keys, steps, values = drawn.keys, drawn.encoded.steps, drawn.encoded.nstep
        return make_batch(keys, drawn.decoded, steps, out=out, transform=transform, nstep=values)

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
                if self.live.evicted(e.race_id, self._lock):
                    continue  # removed by capacity eviction since the last refresh: redraw
                if not self.skip_corrupt:
                    raise
                skipped.append(self._mark_bad(e, whole=e.whole_shard))
                continue
            decoded, failed = decode(encoded)
            if failed:
                errors = frame_errors(encoded, failed)
                if not self.skip_corrupt:
                    raise errors[0]
                skipped += [self._mark_bad(error, whole=False) for error in errors]
                continue
            with self._lock:
                self._batches += 1
                self._items += keys.batch_size
            return Drawn(keys, encoded, decoded, skipped)
        raise SamplingError(f"no batch clear of corrupt data after {MAX_REDRAWS} tries")

    def draw_keys(
        self, keys: SampleKeys, decode: Callable[[EncodedBatch], tuple[R, list[int]]]
    ) -> Drawn[R]:
        """The batch of given `keys` (a retry of the request that drew them: the service's
        request ids), fetched and decoded as `draw` does; never redrawn, and damage met
        raises `CorruptDataError`."""
        encoded = self.fetch(keys)
        decoded, failed = decode(encoded)
        if failed:
            raise frame_errors(encoded, failed)[0]
        return Drawn(keys, encoded, decoded, [])

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
        (`replay.read.prefetch`).
        """
        return prefetched(lambda: self.sample(device, out, transform), limit=limit)

    def update_priorities(self, keys: Sequence[tuple[str, int]], priorities: Any) -> None:
        """Set new priorities (e.g. |TD error| + eps) for the items of `keys`.

        Keys are (race id, first step), as in `Batch.keys`; keys of races gone from
        the store are ignored; a malformed key is a ValueError. Raises `SamplingError` on a
        non-prioritized sampler.
        """
        keys = item_keys(keys)
        values = to_numpy(priorities)
        self.selector.update_priorities([], np.zeros(0))  # a selector without priorities refuses
        self.saved.check_can_take()
        with self._lock:
            self._maybe_refresh()
            self.selector.on_refresh(self.live.space)  # a loaded state_dict waits for a space
            self.selector.update_priorities(keys, values)
            due = self.saved.changed()
        if due:
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
        """Save the priorities (atomic) to `checkpoint_location`, where a prioritized sampler
        of the same name starts from them; uniform and recent ones have none to save."""
        with self._lock:
            state = self.selector.state_dict()
            if state:
                self.saved.saving()
        if state:
            self.saved.save(state)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume this sampler's random stream and priorities."""
        with self._lock:
            state: dict[str, Any] = {
                "kind": self.kind,
                "rng": self._rng.bit_generator.state,
                **self.damage.state(),
            }
            self._maybe_refresh()
            self.selector.on_refresh(self.live.space)
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
            refreshes=self.live.refreshes,
            races=len(self.live.space.entries),
            frames=sum(e.length for e in self.live.space.entries),
            index_bytes=self.index.memory,
        )

    def close(self) -> None:
        """Save changed priorities (unless ``save_priorities=False``); stop the I/O threads."""
        try:
            if self.saved.pending:
                self.checkpoint()
        finally:
            self.reader.close()
