"""The batched reader: from `SampleKeys` to an `EncodedBatch` of stored bytes.

For a batch it groups the wanted frames by shard, looks their byte ranges up
in the `Index`, coalesces ranges that touch (a sequence window is one read),
and reads every shard's ranges in parallel through `ByteStorage.read_ranges`
(``os.pread`` on disk; an object store implements the same call with ranged
GETs). The step arrays come from their per-shard zstd chunks, decoded once and
kept in a small LRU cache. Nothing is decoded here: `replay.read.decode.decode_batch`
does that, on the CPU or GPU.

    reader = Reader(store.storage, index)
    encoded = reader.fetch(keys)
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from replay.cpus import usable_cpus
from replay.errors import CorruptDataError, SamplingError
from replay.format import shards
from replay.format import spec as fmt
from replay.format.race import RaceInfo, read_step_chunk
from replay.read.batch import Blob, EncodedBatch, FrameFormat, SampleKeys

if TYPE_CHECKING:
    from replay.codec.transform import Transform
    from replay.read.index import Index, RaceEntry
    from replay.storage.base import ByteStorage

#: Ranges closer than this are read as one (a pread costs more than a few KB).
COALESCE_GAP = 4096
#: Decoded step chunks kept (per reader); each is shard_size values of one array.
STEP_CACHE_CHUNKS = 4096


@dataclass(frozen=True)
class ReadStats:
    """Counters of a reader."""

    frames: int
    bytes: int
    reads: int


class Reader:
    """Reads the frames and step data of sampled keys; thread-safe."""

    def __init__(self, storage: ByteStorage, index: Index, *, threads: int | None = None) -> None:
        self.storage = storage
        self.index = index
        #: the I/O threads, where shards are read at once (`ByteStorage.concurrent_reads`,
        #: or `threads` given); None: in the caller, one after another
        self._pool = (
            ThreadPoolExecutor(
                max_workers=threads or min(16, 4 * usable_cpus()), thread_name_prefix="replay-read"
            )
            if threads is not None or storage.concurrent_reads
            else None
        )
        self._steps: OrderedDict[tuple[str, str, int], tuple[int, npt.NDArray[Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self._frames = self._bytes = self._reads = 0

    def close(self) -> None:
        """Stop the I/O threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def stats(self) -> ReadStats:
        """Frames and bytes read so far, and the reads (after coalescing) that took."""
        return ReadStats(frames=self._frames, bytes=self._bytes, reads=self._reads)

    def fetch(self, keys: SampleKeys) -> EncodedBatch:
        """The stored bytes and step arrays of every frame of `keys`.

        One read task per shard touched, run on the I/O threads when there are
        several and the storage wants its reads at once (an object store answers
        ranged GETs in parallel), else in the caller's thread (a disk's page-cache
        reads take microseconds, less than waiting for a thread: a batch inside one
        shard ~0.3 ms). Step values are gathered per shard with one NumPy index.
        Raises `CorruptDataError` (naming race, shard and step) for a shard that
        cannot be read.
        """
        b, seq = keys.steps.shape
        entries = {r: self.index.entry(r) for r in dict.fromkeys(keys.race_ids)}
        infos = [e.info for e in entries.values()]
        names = _common_step_arrays(infos)
        groups = _shard_groups(keys, list(entries.values()))
        blobs: list[Blob] = [b""] * (b * seq)

        def read_group(g: _ShardGroup) -> tuple[int, dict[str, npt.NDArray[Any]]]:
            reads = self._read_frames(g, blobs)
            return reads, {n: self._step_chunk(g.entry, n, g.shard)[g.slots] for n in names}

        pool = self._pool if len(groups) > 1 else None
        done = [read_group(g) for g in groups] if pool is None else pool.map(read_group, groups)
        values: dict[str, npt.NDArray[Any]] = {}
        reads = 0
        for g, (group_reads, gathered) in zip(groups, done, strict=True):
            reads += group_reads
            for name, v in gathered.items():
                if name not in values:
                    values[name] = np.empty((b * seq, *v.shape[1:]), dtype=v.dtype)
                values[name][g.flats] = v
        nbytes = sum(len(x) for x in blobs)
        with self._lock:
            self._frames += len(blobs)
            self._bytes += nbytes
            self._reads += reads
        first = infos[0]
        return EncodedBatch(
            keys=keys,
            frames=[blobs[i * seq : (i + 1) * seq] for i in range(b)],
            height=first.height,
            width=first.width,
            steps={n: v.reshape(b, seq, *v.shape[1:]) for n, v in values.items()},
            codec=dict(first.codec),
            shard_size=first.shard_size,
            formats=frame_formats(infos),
        )

    def _read_frames(self, g: _ShardGroup, out: list[Blob]) -> int:
        """The frames of one shard group into `out`; the reads (coalesced spans) that took."""
        entry, shard = g.entry, g.shard
        slots = sorted(set(g.slots.tolist()))
        ranges = entry.frame_ranges(self.storage, shard, slots)
        spans = coalesce(sorted(ranges))
        frames = [
            (slot, offset, nbytes) for slot, (offset, nbytes) in zip(slots, ranges, strict=True)
        ]
        by_slot = self._read_spans(entry, shard, spans, frames)
        for flat, slot in zip(g.flats.tolist(), g.slots.tolist(), strict=True):
            out[flat] = by_slot[slot]
        return len(spans)

    def _read_spans(
        self,
        entry: RaceEntry,
        shard: int,
        spans: list[tuple[int, int]],
        frames: list[tuple[int, int, int]],
    ) -> dict[int, Blob]:
        """Read `spans` of a shard; the bytes of each of `frames` (slot, offset, nbytes)
        they hold, CRC32C checked in place, not copied (views into the reads)."""
        key = fmt.frames_key(entry.race_id, shard)
        try:
            data = self.storage.read_ranges(key, spans)
        except (OSError, EOFError, ValueError) as e:
            step = shard * entry.info.shard_size + frames[0][0]
            raise CorruptDataError.at(
                entry.race_id,
                shard,
                f"cannot read frame bytes near step {step} ({type(e).__name__}: {e})",
                step,
                whole_shard=True,
            ) from e
        starts = [s for s, _ in spans]
        views = [memoryview(d) for d in data]
        by_slot: dict[int, Blob] = {}
        for slot, offset, nbytes in frames:
            i = bisect.bisect_right(starts, offset) - 1
            at = offset - starts[i]
            try:
                by_slot[slot] = shards.checked_body(views[i][at : at + nbytes])
            except ValueError as e:
                step = shard * entry.info.shard_size + slot
                raise CorruptDataError.at(
                    entry.race_id, shard, f"frame at step {step} is damaged ({e})", step=step
                ) from e
        return by_slot

    def _step_chunk(self, entry: RaceEntry, name: str, shard: int) -> npt.NDArray[Any]:
        """Values of one step array for the committed steps of one shard (cached)."""
        s = entry.info.shard_size
        committed = min(s, entry.length - shard * s)
        cache_key = (entry.race_id, name, shard)
        with self._lock:
            hit = self._steps.get(cache_key)
            if hit is not None and hit[0] >= committed:
                self._steps.move_to_end(cache_key)
                return hit[1]
        values = read_step_chunk(self.storage, entry.info, name, shard)  # a private copy
        with self._lock:
            self._steps[cache_key] = (committed, values)
            while len(self._steps) > STEP_CACHE_CHUNKS:
                self._steps.popitem(last=False)
        return values

    def step_values(self, entry: RaceEntry, name: str, steps: npt.NDArray[np.int64]) -> Any:
        """Values of step array `name` at `steps` (any shape) of one race (e.g. t_ns for
        recency, rewards for n-step returns); one gather per shard touched."""
        steps = np.asarray(steps, dtype=np.int64)
        shard_of, slot = np.divmod(steps.reshape(-1), entry.info.shard_size)
        out: npt.NDArray[Any] | None = None
        for shard in np.unique(shard_of).tolist():
            chunk = self._step_chunk(entry, name, shard)
            if out is None:
                out = np.empty((len(slot), *chunk.shape[1:]), dtype=chunk.dtype)
            here = shard_of == shard
            out[here] = chunk[slot[here]]
        if out is None:
            return np.zeros(steps.shape)
        return out.reshape(*steps.shape, *out.shape[1:])


@dataclass(frozen=True)
class _ShardGroup:
    """The frames of a batch that lie in one shard of one race."""

    entry: RaceEntry
    shard: int
    flats: npt.NDArray[np.intp]  # their flat indexes in the batch (B * L)
    slots: npt.NDArray[np.int64]  # their slots in the shard, in the same order


def _shard_groups(keys: SampleKeys, entries: list[RaceEntry]) -> list[_ShardGroup]:
    """The frames of `keys` grouped by (race, shard), in order of first appearance;
    SamplingError for a step past its race's committed length (the batch's first such
    frame). One Python pass, then one array of flat indexes and one of slots for the
    batch, which each group slices (for batches of up to a few hundred frames a NumPy
    sort, or NumPy per race, measured 2-4x slower)."""
    seq = keys.seq_len
    by_id = {e.race_id: e for e in entries}
    rows = [by_id[r] for r in keys.race_ids]
    groups: dict[tuple[str, int], tuple[list[int], list[int]]] = {}
    for flat, step in enumerate(keys.steps.reshape(-1).tolist()):
        e = rows[flat // seq]
        if not 0 <= step < e.length:
            raise SamplingError(
                f"race {e.race_id}: step {step} is not committed (length {e.length})"
            )
        shard, slot = divmod(step, e.info.shard_size)
        members = groups.get((e.race_id, shard))
        if members is None:
            members = groups[(e.race_id, shard)] = ([], [])
        members[0].append(flat)
        members[1].append(slot)
    flats = np.array([f for fs, _ in groups.values() for f in fs])
    slots = np.array([s for _, ss in groups.values() for s in ss])
    out, at = [], 0
    for (race_id, shard), (fs, _) in groups.items():
        out.append(
            _ShardGroup(by_id[race_id], shard, flats[at : at + len(fs)], slots[at : at + len(fs)])
        )
        at += len(fs)
    return out


def coalesce(ranges: list[tuple[int, int]], gap: int = COALESCE_GAP) -> list[tuple[int, int]]:
    """Merge sorted (offset, nbytes) ranges that overlap or lie within `gap` bytes."""
    out: list[tuple[int, int]] = []
    for offset, nbytes in ranges:
        if out and offset <= out[-1][0] + out[-1][1] + gap:
            start, size = out[-1]
            out[-1] = (start, max(size, offset + nbytes - start))
        else:
            out.append((offset, nbytes))
    return out


def frame_formats(infos: list[RaceInfo]) -> dict[str, FrameFormat]:
    """Each race's `FrameFormat` when the races of a batch differ in codec or frame size
    (each frame then decodes by its own race's codec); empty when they all match."""
    formats = {i.race_id: FrameFormat(dict(i.codec), i.height, i.width) for i in infos}
    first = formats[infos[0].race_id]
    return formats if any(f != first for f in formats.values()) else {}


def check_frame_sizes(index: Index, transform: Transform | None) -> None:
    """SamplingError, naming the races of each size and the filter that picks one, when
    the races of `index` (refreshed) differ in frame size and would share batches
    without a transform that resizes them to one `size` (checked when a sampler is made)."""
    index.refresh()
    by_size: dict[tuple[int, int], list[str]] = defaultdict(list)
    for entry in index.entries:
        by_size[(entry.info.height, entry.info.width)].append(entry.race_id)
    if len(by_size) < 2 or (transform is not None and transform.size is not None):
        return
    sizes = "; ".join(
        f"{h}x{w}: {len(ids)} races ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"
        for (h, w), ids in sorted(by_size.items())
    )
    (h, w), _ = max(by_size.items(), key=lambda kv: len(kv[1]))
    raise SamplingError(
        f"the sampled races differ in frame size ({sizes}); pass "
        f"transform=Transform(size=(H, W)) to resize every frame to one size, or sample one "
        f"size with filters={{'height': {h}, 'width': {w}}}"
    )


def _common_step_arrays(infos: list[Any]) -> list[str]:
    """Step arrays every race of a batch has with one dtype and shape."""
    first = infos[0]
    names = []
    for name in first.step_arrays:
        layouts = set()
        for info in infos:
            if name not in info.step_arrays:
                break
            if name in fmt.STANDARD_STEPS:
                layouts.add((name, tuple(info.action_shape) if name == "action" else ()))
            else:
                spec = info.extras[name]
                layouts.add((spec["dtype"], tuple(spec["shape"])))
        else:
            if len(layouts) == 1:
                names.append(name)
                continue
        if name in fmt.STANDARD_STEPS:
            raise SamplingError(
                f"the races of this batch disagree on the layout of {name!r}; "
                "use filters to sample compatible races"
            )
    return names
