"""What a sampler can draw from: the races of a store, their committed lengths,
and the byte ranges of their frames inside the shards.

`Index.refresh` lists the races (one directory listing) and re-reads the
metadata only of races it has not seen or that are still recording, so it is
cheap enough to run every flush interval while races are being written. A race
whose metadata cannot be read (a torn ``zarr.json``, a missing ``length``) is
left out and named in `Index.damaged`; it never stops the others. A
race's ``length`` attribute is read before any of its shards, and the writer
commits shards before ``length``, so every frame below ``length`` is in the
shard file the index reads; nothing past ``length`` is ever looked at.

A shard's index (the (offset, nbytes) table at its end) is read the first time
one of its frames is wanted. A full shard never changes, so its table is kept;
the open (last) shard's table is re-read when a frame past the cached part is
wanted (the writer only appends to it, so cached offsets stay valid).

Memory: a cached shard table takes 4 bytes per frame (cumulative uint32 offsets
of contiguous chunks, as the writer lays them out; 16 bytes for other layouts
or shards over 4 GiB) plus ~100 bytes per shard; a race costs about 1 KB
(its metadata). No pixel data is held.

    index = Index(store.storage, Filters(env="CarRacing-v3"))
    index.refresh()
    for entry in index.entries: entry.race_id, entry.length
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from replay.errors import CorruptDataError, RaceNotFoundError
from replay.format import shards
from replay.format import spec as fmt
from replay.format.race import RaceInfo, read_race_info
from replay.read.filters import Filters

if TYPE_CHECKING:
    from replay.storage.base import ByteStorage


class ShardTable:
    """Byte ranges of the first `count` frames of one shard."""

    __slots__ = ("_nbytes", "_offsets", "count")

    def __init__(self, ranges: Sequence[tuple[int, int] | None]) -> None:
        self.count = len(ranges)
        starts = [r[0] if r else -1 for r in ranges]
        sizes = [r[1] if r else 0 for r in ranges]
        contiguous = all(r is not None for r in ranges) and all(
            starts[i] + sizes[i] == starts[i + 1] for i in range(len(ranges) - 1)
        )
        end = (starts[-1] + sizes[-1]) if ranges and ranges[-1] else 0
        self._nbytes: npt.NDArray[np.int64] | None
        if contiguous and end < 2**32:
            self._offsets: npt.NDArray[Any] = np.array([*starts, end], dtype=np.uint32)
            self._nbytes = None
        else:
            self._offsets = np.array(starts, dtype=np.int64)
            self._nbytes = np.array(sizes, dtype=np.int64)

    def range(self, slot: int) -> tuple[int, int] | None:
        """(offset, nbytes) of a frame; None if absent."""
        if self._nbytes is None:
            start = int(self._offsets[slot])
            return (start, int(self._offsets[slot + 1]) - start)
        start = int(self._offsets[slot])
        return None if start < 0 else (start, int(self._nbytes[slot]))

    @property
    def memory(self) -> int:
        """Bytes this table holds."""
        return self._offsets.nbytes + (0 if self._nbytes is None else self._nbytes.nbytes)


class RaceEntry:
    """One race in the index: its metadata, committed length and cached shard tables."""

    __slots__ = ("_lock", "info", "tables")

    def __init__(self, info: RaceInfo) -> None:
        self.info = info
        self.tables: dict[int, ShardTable] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RaceEntry({self.race_id!r}, length={self.length})"

    @property
    def length(self) -> int:
        """Committed steps, as of the last refresh."""
        return self.info.length

    @property
    def race_id(self) -> str:
        """The race's id."""
        return self.info.race_id

    @property
    def final(self) -> bool:
        """True once the race can no longer grow (complete or aborted)."""
        return self.info.status != fmt.RECORDING

    def frame_ranges(
        self, storage: ByteStorage, shard: int, slots: Sequence[int]
    ) -> list[tuple[int, int]]:
        """(offset, nbytes) of each of `slots` in `shard`; CorruptDataError if unreadable."""
        s = self.info.shard_size
        need = max(slots) + 1
        with self._lock:
            table = self.tables.get(shard)
            if table is None or table.count < need:
                table = self._read_table(storage, shard, need, min(slots))
                # a full shard never changes; the open one is kept as far as it is known
                self.tables[shard] = table
        out = []
        for slot in slots:
            where = table.range(slot)
            if self.info.lost_steps and self.info.is_lost(shard * s + slot):
                step = shard * s + slot
                raise CorruptDataError.at(
                    self.race_id, shard, f"step {step} was lost to damage (repaired)", step
                )
            if where is None:
                step = shard * s + slot
                raise CorruptDataError.at(
                    self.race_id, shard, f"committed step {step} is missing from the shard", step
                )
            out.append(where)
        return out

    def _read_table(self, storage: ByteStorage, shard: int, need: int, first: int) -> ShardTable:
        s = self.info.shard_size
        committed = min(s, self.length - shard * s)
        key = fmt.frames_key(self.race_id, shard)
        try:
            ranges = shards.read_index(storage, key, s)[:committed]
        except (OSError, EOFError, ValueError) as e:
            step = shard * s + first
            raise CorruptDataError(
                f"race {self.race_id}, shard {shard} (steps {shard * s}.."
                f"{shard * s + committed - 1}): cannot read the shard index for step {step} "
                f"({type(e).__name__}: {e})",
                race_id=self.race_id,
                shard=shard,
                step=step,
                whole_shard=True,
            ) from e
        if len(ranges) < need:
            step = shard * s + need - 1
            raise CorruptDataError.at(
                self.race_id, shard, f"step {step} is past the committed length {self.length}", step
            )
        return ShardTable(ranges)

    @property
    def memory(self) -> int:
        """Approximate bytes held for this race (tables, plus ~1 KB of metadata)."""
        return 1024 + sum(t.memory + 100 for t in self.tables.values())


class Index:
    """The sampleable races of a store, refreshed on demand. Thread-safe."""

    def __init__(self, storage: ByteStorage, filters: Filters | None = None) -> None:
        self.storage = storage
        self.filters = filters or Filters()
        self._entries: dict[str, RaceEntry] = {}
        self._excluded: set[str] = set()  # final races the filters reject
        #: races whose metadata cannot be read (race id -> what is wrong): left out of
        #: sampling, re-read at every refresh (a repair brings them back)
        self.damaged: dict[str, str] = {}
        self._lock = threading.Lock()
        self.generation = 0  # bumped whenever races or lengths change

    def __repr__(self) -> str:
        return f"Index({len(self._entries)} races, {self.total_frames} frames)"

    @property
    def entries(self) -> list[RaceEntry]:
        """Races with at least one committed frame, oldest first."""
        with self._lock:
            return [e for e in self._entries.values() if e.length > 0]

    def __contains__(self, race_id: object) -> bool:
        return race_id in self._entries

    def entry(self, race_id: str) -> RaceEntry:
        """The entry of a race; RaceNotFoundError if it is not in the index."""
        try:
            return self._entries[race_id]
        except KeyError:
            raise RaceNotFoundError(f"race {race_id} is not in the sampled set") from None

    @property
    def total_frames(self) -> int:
        """Committed frames of all indexed races."""
        return sum(e.length for e in self._entries.values())

    @property
    def memory(self) -> int:
        """Approximate bytes the index holds."""
        return sum(e.memory for e in self._entries.values())

    def drop(self, race_id: str) -> None:
        """Forget a race (it was evicted); a later refresh re-adds it only if listed again."""
        with self._lock:
            if self._entries.pop(race_id, None) is not None:
                self.generation += 1

    def refresh(self) -> bool:
        """Pick up new races, grown lengths and removed races; True if anything changed."""
        ids = [n for n in self.storage.list_dir(fmt.RACES) if fmt.is_race_id(n)]
        changed = False
        with self._lock:
            present = set(ids)
            for gone in [r for r in self._entries if r not in present]:
                del self._entries[gone]
                changed = True
            self._excluded &= present
            for gone in [r for r in self.damaged if r not in present]:
                del self.damaged[gone]
            for race_id in ids:
                entry = self._entries.get(race_id)
                if race_id in self._excluded or (entry is not None and entry.final):
                    continue
                try:
                    info = read_race_info(self.storage, race_id)
                except RaceNotFoundError:  # created or removed right now
                    continue
                except CorruptDataError as e:  # costs this race, never the others
                    changed |= self._entries.pop(race_id, None) is not None
                    self.damaged[race_id] = str(e)
                    continue
                self.damaged.pop(race_id, None)
                if not self.filters.matches(info):
                    if info.status != fmt.RECORDING:
                        self._excluded.add(race_id)
                    continue
                if entry is None:
                    self._entries[race_id] = RaceEntry(info)
                    changed = True
                elif info.length != entry.length or info.status != entry.info.status:
                    changed |= info.length != entry.length
                    entry.info = info
            if changed:
                self.generation += 1
        return changed
