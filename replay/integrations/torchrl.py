"""A TorchRL `Storage` backed by a replay store (needs ``replay[torch]``).

TorchRL's `ReplayBuffer` composes a storage, a sampler and a writer. `ReplayStorage`
is the storage: TorchRL's own samplers (``RandomSampler``, ``SliceSampler``,
``PrioritizedSampler``) draw positions in ``range(len(storage))``, and the storage
maps each position to a (race, step) of the store and decodes those frames with
the project's reader, so the buffer holds nothing but a few bytes per step::

    from torchrl.data import ReplayBuffer
    from torchrl.data.replay_buffers import SliceSampler
    from replay.integrations.torchrl import ReplayStorage

    buffer = ReplayBuffer(
        storage=ReplayStorage(store),
        sampler=SliceSampler(slice_len=4, traj_key="episode"),
        batch_size=32,
    )
    batch = buffer.sample()        # TensorDict [32]: pixels (32, 900, 1600, 3) uint8, ...

Positions: every committed step of the (filtered) races, in the order the storage
first saw them. The mapping only ever grows (a race that grows while it is
recorded adds a new segment at the end), so a position, and a priority set on it,
keeps naming the same step for the life of the storage. The storage refreshes at
most every `refresh_interval` seconds when TorchRL asks for its length.

What a position holds (TorchRL's key layout):

- ``pixels``: (H, W, 3) uint8 (or the `transform`'s layout), decoded from the store;
- ``action``, ``t_ns``, the race's extra step arrays;
- ``("next", "reward")``, ``("next", "terminated")``, ``("next", "truncated")``,
  ``("next", "done")`` (terminated or truncated): what followed the action;
- ``episode`` (int64, one number per race, what `SliceSampler` splits on) and
  ``step`` (the step within its race); `locate` gives the race ids.

``storage[index]`` (what samplers read to find trajectories and done flags, and what
``buffer[i]`` returns) is that layout without ``pixels``, kept in memory (about 40
bytes a step): decoding every frame of a store is never what a sampler wants.
``storage.get(index)`` and ``buffer.sample()`` decode the frames.

Writing: ``buffer.extend(td)`` records the steps as new races through the store's
`Writer` (a race per episode in `td`, split after each done step), waits for them to
be committed and returns their positions. A store is append-only, so pass
``writer=AppendWriter()`` to the buffer: TorchRL's default writer counts positions
from 0 and would overwrite.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data.replay_buffers.storages import Storage
from torchrl.data.replay_buffers.writers import Writer as TorchRLWriter

from replay.errors import SamplingError, StoreError
from replay.format import spec as fmt
from replay.integrations.torchrl_steps import (
    as_transitions,
    empty_columns,
    identity,
    index_array,
    step_arrays,
)
from replay.read.batch import SampleKeys
from replay.read.decode import decode_batch
from replay.read.filters import Filters
from replay.read.index import Index
from replay.read.reader import Reader

if TYPE_CHECKING:
    from replay.codec.transform import Transform
    from replay.store import Store

#: TorchRL needs a capacity; a store's is its disk, so positions never wrap.
MAX_SIZE = 2**62


class ReplayStorage(Storage):  # type: ignore[misc]  # torchrl is untyped
    """A TorchRL storage over the races of a store; see the module doc.

    Args:
        store: the store to read (and, through `extend`, to write).
        filters: which races to hold (`replay.Filters` or a dict of its fields).
        device: where frames are decoded: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        transform: a fused `replay.Transform` (crop, resize, grey, float) applied on decode.
        refresh_interval: seconds between looks for new races and steps (0: every call).
        race_options: `Store.new_race` keywords for the races `extend` records
            (default ``env="torchrl"``).
    """

    def __init__(
        self,
        store: Store,
        *,
        filters: Filters | Mapping[str, Any] | None = None,
        device: str = "cpu",
        transform: Transform | None = None,
        refresh_interval: float = 1.0,
        race_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(max_size=MAX_SIZE)
        if refresh_interval < 0:
            raise ValueError(f"refresh_interval must be >= 0, got {refresh_interval}")
        self.store = store
        self.device = device
        self.transform = transform
        self.refresh_interval = refresh_interval
        self.race_options = dict(race_options or {})
        self._index = Index(store.storage, Filters.of(filters))
        self._reader = Reader(store.storage, self._index)
        self._lock = threading.RLock()
        self._segments: list[tuple[str, int, int]] = []  # (race id, first step, steps)
        self._starts = np.zeros(1, dtype=np.int64)  # position of each segment, then the end
        self._seen: dict[str, int] = {}  # race id -> steps held
        self._episodes: dict[str, int] = {}  # race id -> episode number
        self._parts: list[dict[str, npt.NDArray[Any]]] = []  # columns of each segment
        self._columns: TensorDict | None = None
        self._refreshed = -float("inf")
        self._marked = 0  # positions the attached buffers were told about
        self.refresh()

    def __repr__(self) -> str:
        return f"ReplayStorage({self.store.root!s}, {len(self._segments)} segments, {len(self)})"

    # --- positions --------------------------------------------------------------------

    def __len__(self) -> int:
        if time.monotonic() - self._refreshed >= self.refresh_interval:
            self.refresh()
        n = int(self._starts[-1])
        if self._marked < n and self._attached_entities:
            # tell the buffers (their samplers) about positions they have not seen, so a
            # PrioritizedSampler gives steps recorded by actors its default priority
            new, self._marked = torch.arange(self._marked, n), n
            for entity in self._attached_entities:
                entity.mark_update(new)
        return n

    def attach(self, buffer: Any) -> None:
        """Called by a `ReplayBuffer` that uses this storage. TorchRL has no default
        collate function for storages it does not know; batches from `get` are already
        TensorDicts, so the buffer gets the identity unless it was given one."""
        super().attach(buffer)
        if getattr(buffer, "_init_collate_fn", False) is None:
            buffer._init_collate_fn = identity

    def refresh(self) -> bool:
        """Add the store's new races and new steps as positions; True if any were added."""
        with self._lock:
            self._refreshed = time.monotonic()
            self._index.refresh()
            added = False
            for entry in self._index.entries:
                have = self._seen.get(entry.race_id, 0)
                if entry.length > have:
                    self._add_segment(entry.race_id, have, entry.length - have)
                    added = True
            if added:
                self._columns = None
                self._bump_mutation_revision()
            return added

    def _add_segment(self, race_id: str, first: int, count: int) -> None:
        episode = self._episodes.setdefault(race_id, len(self._episodes))
        stop = first + count
        part = {name: self._steps(race_id, name, first, stop) for name in fmt.STANDARD_STEPS}
        part["episode"] = np.full(count, episode, dtype=np.int64)
        part["step"] = np.arange(first, stop, dtype=np.int64)
        self._parts.append(part)
        self._segments.append((race_id, first, count))
        self._starts = np.append(self._starts, self._starts[-1] + count)
        self._seen[race_id] = stop

    def _steps(self, race_id: str, name: str, first: int, stop: int) -> npt.NDArray[Any]:
        """Steps [first, stop) of one step array, read chunk by chunk by the reader (its
        zstd chunks straight from storage: 5x faster here than through zarr-python)."""
        entry = self._index.entry(race_id)
        s = entry.info.shard_size
        shards = range(first // s, (stop - 1) // s + 1)
        chunks = [self._reader._step_chunk(entry, name, k) for k in shards]
        base = shards[0] * s
        return np.concatenate(chunks)[first - base : stop - base]

    def positions(self, index: Any) -> npt.NDArray[np.int64]:
        """TorchRL's index (int, slice, sequence, tensor, 1-tuple) as positions, checked."""
        n = int(self._starts[-1])
        out = index_array(index, n)
        out = np.where(out < 0, out + n, out)
        bad = out[(out < 0) | (out >= n)]
        if bad.size:
            raise IndexError(f"position {int(bad[0])} is out of range: the storage holds {n}")
        return out

    def locate(self, index: Any) -> list[tuple[str, int]]:
        """(race id, step) of each position of `index`: what `Sampler` keys look like."""
        positions = self.positions(index)
        seg = np.searchsorted(self._starts, positions, side="right") - 1
        return [
            (self._segments[s][0], self._segments[s][1] + int(p - self._starts[s]))
            for s, p in zip(seg.tolist(), positions.tolist(), strict=True)
        ]

    # --- reading ----------------------------------------------------------------------

    def columns(self) -> TensorDict:
        """Every position's step data, without pixels (what ``storage[:]`` returns)."""
        with self._lock:
            if self._columns is None:
                self._columns = as_transitions(
                    {
                        name: np.concatenate([p[name] for p in self._parts])
                        for name in (*fmt.STANDARD_STEPS, "episode", "step")
                    }
                    if self._parts
                    else empty_columns(),
                    int(self._starts[-1]),
                )
            return self._columns

    def get(self, index: Any) -> TensorDictBase:
        """The decoded steps at `index`, pixels included (the buffer's ``sample`` calls this)."""
        data = self._decode(self.positions(index))
        return data[0] if isinstance(index, int | np.integer) else data

    def __getitem__(self, index: Any) -> TensorDictBase:
        """The step data at `index` without pixels: what TorchRL's samplers read
        (`SliceSampler` reads the done flags of the positions it drew) and what
        ``buffer[i]`` returns. `get` decodes the frames."""
        columns = self.columns()
        if isinstance(index, slice) and index == slice(None):
            return columns
        data = columns[torch.from_numpy(self.positions(index))]
        return data[0] if isinstance(index, int | np.integer) else data

    def _decode(self, positions: npt.NDArray[np.int64]) -> TensorDictBase:
        if positions.size == 0:
            raise SamplingError("no positions to read (the storage is empty?)")
        located = self.locate(positions)
        keys = SampleKeys(
            race_ids=[race for race, _ in located],
            steps=np.array([[step] for _, step in located], dtype=np.int64),
            weights=np.ones(len(located), dtype=np.float32),
            probabilities=np.ones(len(located), dtype=np.float64),
        )
        batch = decode_batch(
            self._reader.fetch(keys), device=self.device, out="torch", transform=self.transform
        )
        values = {name: value[:, 0] for name, value in batch.steps.items()}
        cols = self.columns()
        index = torch.from_numpy(positions)
        values["episode"] = cols["episode"][index]
        values["step"] = cols["step"][index]
        data = as_transitions(values, len(positions))
        data["pixels"] = batch.frames[:, 0]
        return data

    # --- writing ----------------------------------------------------------------------

    def set(self, cursor: Any, data: Any, *, set_cursor: bool = True) -> None:
        """Append `data` (TorchRL's writers call this); `cursor` must be the end of the storage.

        A store is append-only: positions already written cannot change. Use
        `AppendWriter`, which always writes at the end.
        """
        n = len(self)
        wanted = index_array(cursor, MAX_SIZE)
        if wanted.size and (int(wanted[0]) != n or np.any(np.diff(wanted) != 1)):
            raise StoreError(
                f"a ReplayStorage appends only: asked to write at position {int(wanted[0])} "
                f"but it holds {n} steps; pass "
                "writer=replay.integrations.torchrl.AppendWriter() to the "
                "ReplayBuffer"
            )
        self.append(data)

    def append(self, data: TensorDictBase) -> torch.Tensor:
        """Record `data` (batch [n] or [] with ``pixels``, ``action`` and the reward and done
        flags at the top level or under ``"next"``) as new races; their positions.

        A race ends after each step whose done (terminated or truncated) flag is set;
        what follows the last one is a race of its own. Each race is committed before
        this returns. Other keys are not stored.
        """
        if data.batch_dims == 0:
            data = data.unsqueeze(0)
        if data.batch_dims != 1:
            raise StoreError(f"extend takes a TensorDict of batch [n], got {data.batch_size}")
        steps = step_arrays(data)
        pixels = data.get("pixels").cpu().numpy()
        if pixels.ndim != 4 or pixels.shape[-1] != 3 or pixels.dtype != np.uint8:
            raise StoreError(
                f"pixels must be (n, H, W, 3) uint8, got {pixels.shape} {pixels.dtype}"
            )
        done = steps["terminated"] | steps["truncated"]
        ends = [*(np.flatnonzero(done) + 1).tolist(), len(pixels)]
        options = {"env": "torchrl", **self.race_options}
        with self._lock:
            start_len = int(self._starts[-1])
            first = 0
            for end in ends:
                if end > first:
                    self._record(pixels[first:end], steps, first, end, options)
                first = end
            self.refresh()
            return torch.arange(start_len, int(self._starts[-1]))

    def _record(
        self,
        pixels: npt.NDArray[np.uint8],
        steps: dict[str, npt.NDArray[Any]],
        first: int,
        end: int,
        options: dict[str, Any],
    ) -> None:
        h, w = pixels.shape[1:3]
        action_shape = tuple(steps["action"].shape[1:])
        with self.store.new_race(height=h, width=w, action_shape=action_shape, **options) as writer:
            for i in range(first, end):
                writer.append(pixels[i - first], **{k: v[i] for k, v in steps.items()})

    # --- TorchRL's bookkeeping ---------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The position -> (race, step) mapping, so a reloaded buffer's priorities line up."""
        return {"segments": [list(s) for s in self._segments]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the mapping saved by `state_dict` (against the same store)."""
        with self._lock:
            self._segments, self._parts, self._seen, self._episodes = [], [], {}, {}
            self._starts = np.zeros(1, dtype=np.int64)
            self._index.refresh()
            for race_id, first, count in state_dict["segments"]:
                self._add_segment(str(race_id), int(first), int(count))
            self._columns = None
            self._bump_mutation_revision()

    def contains(self, item: Any) -> bool:
        return isinstance(item, int) and 0 <= item < len(self)

    def _empty(self) -> None:
        raise StoreError(
            "a ReplayStorage cannot be emptied: its steps live in the store "
            "(remove races with `replay prune`)"
        )

    def close(self) -> None:
        """Stop the reader's I/O threads."""
        self._reader.close()


class AppendWriter(TorchRLWriter):  # type: ignore[misc]  # torchrl is untyped
    """A TorchRL writer that appends to a `ReplayStorage` (positions never wrap).

    ``ReplayBuffer(storage=ReplayStorage(store), writer=AppendWriter(), ...)``; then
    ``buffer.extend(td)`` records `td` as races and returns their positions.
    """

    def add(self, data: Any) -> int:
        index = self.extend(data)
        return int(index[0])

    def extend(self, data: Any) -> torch.Tensor:
        storage = self._storage
        if not isinstance(storage, ReplayStorage):
            raise StoreError(
                f"AppendWriter writes to a ReplayStorage, not {type(storage).__name__}"
            )
        index = storage.append(data)
        len(storage)  # marks the new positions on the buffers using the storage
        return index

    def _empty(self, empty_write_count: bool = True) -> None:
        pass

    def dumps(self, path: Any) -> None:
        pass

    def loads(self, path: Any) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


__all__ = ["AppendWriter", "ReplayStorage"]
