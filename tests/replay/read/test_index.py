"""The index: refresh, cached shard tables, committed lengths, memory per frame, filters."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from sampling_helpers import make_store, small_frames, write_race

import replay
from replay.format import spec as fmt
from replay.read.index import Index, ShardTable
from replay.sample.sampler import Sampler
from replay.storage.local import LocalStorage


class CountingStorage(LocalStorage):
    """LocalStorage that counts reads per key."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: Counter[str] = Counter()
        self.ranges: Counter[str] = Counter()

    def read(self, key: str) -> bytes:
        self.reads[key] += 1
        return super().read(key)

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        self.ranges[key] += 1
        return super().read_ranges(key, ranges)


def meta_key(race_id: str) -> str:
    return f"{fmt.race_key(race_id)}/{fmt.METADATA}"


def test_refresh_sees_new_races_and_rereads_only_live_ones(tmp_path: Path) -> None:
    store, (a,) = make_store(tmp_path / "s", [5])
    storage = CountingStorage(tmp_path / "s")
    index = Index(storage)
    assert index.refresh()
    assert [(e.race_id, e.length) for e in index.entries] == [(a, 5)]
    assert not index.refresh()  # nothing new
    assert storage.reads[meta_key(a)] == 1  # a complete race's metadata is read once

    writer = store.new_race(env="test", height=90, width=160, shard_size=8, flush_interval=60)
    index.refresh()
    assert [e.race_id for e in index.entries] == [a]  # nothing committed yet
    for frame in small_frames(3):
        writer.append(frame)
    writer.close()
    assert index.refresh()
    assert [(e.race_id, e.length) for e in index.entries] == [(a, 5), (writer.race_id, 3)]
    # a race that disappears (evicted) leaves the index
    shutil.rmtree(tmp_path / "s" / fmt.race_key(a))
    assert index.refresh()
    assert [e.race_id for e in index.entries] == [writer.race_id]


def test_full_shard_tables_are_read_once(tmp_path: Path) -> None:
    make_store(tmp_path / "s", [20])  # shards of 8: full, full, 4
    storage = CountingStorage(tmp_path / "s")
    sampler = Sampler(storage, batch_size=20, seed=0)
    for _ in range(5):
        sampler.fetch(sampler.sample_keys())
    (race,) = sampler.index.entries
    # each shard: one read of its table, then one coalesced read of frame bytes per batch
    for shard in range(3):
        key = fmt.shard_key(race.race_id, fmt.FRAMES, shard, 4)
        assert storage.ranges[key] == 1 + 5
    assert sorted(race.tables) == [0, 1, 2]
    assert race.tables[2].count == 4


def test_open_shard_table_is_reread_as_the_race_grows(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "s")
    storage = CountingStorage(tmp_path / "s")
    index = Index(storage)
    frames = small_frames(6)
    with store.new_race(
        env="test", height=90, width=160, shard_size=8, flush_interval=0.05
    ) as writer:
        key = fmt.shard_key(writer.race_id, fmt.FRAMES, 0, 4)
        for frame in frames[:3]:
            writer.append(frame)
        wait_written(writer, 3)
        index.refresh()
        (entry,) = index.entries
        assert entry.length == 3
        first = entry.frame_ranges(storage, 0, [0, 1, 2])
        assert entry.tables[0].count == 3
        for frame in frames[3:]:
            writer.append(frame)
        wait_written(writer, 6)
        index.refresh()
        assert entry.length == 6
        assert entry.frame_ranges(storage, 0, [0, 1, 2]) == first  # cached, and never move
        assert storage.ranges[key] == 1
        entry.frame_ranges(storage, 0, [5])  # past the cached part: re-read
        assert entry.tables[0].count == 6
        assert storage.ranges[key] == 2


def wait_written(writer: replay.Writer, n: int) -> None:
    deadline = time.monotonic() + 10
    while writer.stats().written < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.stats().written == n


def test_never_reads_past_length(tmp_path: Path) -> None:
    store, (race_id,) = make_store(tmp_path / "s", [16])
    # as if the writer had committed shard 1 but not yet moved `length` past step 10
    doc = json.loads((tmp_path / "s" / meta_key(race_id)).read_text())
    doc["attributes"]["length"] = 11
    (tmp_path / "s" / meta_key(race_id)).write_text(json.dumps(doc))
    sampler = store.sampler(batch_size=11, seed=0)
    steps = {s for _ in range(50) for _, s in sampler.sample_keys().keys}
    assert steps == set(range(11))
    sampler.fetch(sampler.sample_keys())
    entry = sampler.index.entry(race_id)
    assert entry.tables[1].count <= 3  # steps 8, 9, 10 of shard 1
    keys = replay.SampleKeys(
        race_ids=[race_id],
        steps=np.array([[11]]),
        weights=np.ones(1, np.float32),
        probabilities=np.ones(1),
    )
    with pytest.raises(replay.SamplingError, match="step 11 is not committed"):
        sampler.fetch(keys)


def test_index_memory_is_a_few_bytes_per_frame(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "s")
    race_id = write_race(store, small_frames(256, h=16, w=16), shard_size=64)
    index = Index(store.storage)
    index.refresh()
    entry = index.entry(race_id)
    for shard in range(4):
        entry.frame_ranges(store.storage, shard, list(range(64)))
    table_bytes = sum(t.memory for t in entry.tables.values())
    assert table_bytes / 256 <= 4.1  # cumulative uint32 offsets
    assert index.memory / 256 < 10  # with per-shard and per-race overhead


def test_shard_table_handles_gaps_and_large_offsets() -> None:
    contiguous = ShardTable([(0, 10), (10, 5), (15, 7)])
    assert [contiguous.range(i) for i in range(3)] == [(0, 10), (10, 5), (15, 7)]
    assert contiguous.memory == 16
    gappy = ShardTable([(0, 10), None, (2**33, 7)])
    assert [gappy.range(i) for i in range(3)] == [(0, 10), None, (2**33, 7)]


def test_filters_of_final_races_are_decided_once(tmp_path: Path) -> None:
    _, (a, b) = make_store(tmp_path / "s", [3, 3])
    storage = CountingStorage(tmp_path / "s")
    index = Index(storage, replay.Filters(race_ids=[b]))
    index.refresh()
    index.refresh()
    assert [e.race_id for e in index.entries] == [b]
    assert storage.reads[meta_key(a)] == 1


# -- filters -----------------------------------------------------------------------------


def test_filters_match_env_map_policy_and_ids(tmp_path: Path) -> None:
    store, (race_id,) = make_store(tmp_path / "s", [2], env="CarRacing-v3", map="m1", policy="p")
    info = store.race(race_id).info
    assert replay.Filters().matches(info)
    assert replay.Filters(env="CarRacing-v3", map=["m0", "m1"], policy=("p",)).matches(info)
    assert replay.Filters(race_ids=[race_id]).matches(info)
    for no in (
        replay.Filters(env="ViZDoom"),
        replay.Filters(env=["CarRacing"]),  # whole names only
        replay.Filters(map="m2"),
        replay.Filters(policy=[]),
        replay.Filters(race_ids=["0" * 26]),
        replay.Filters(env="CarRacing-v3", map="m2"),  # every filter must pass
    ):
        assert not no.matches(info), no


def test_filters_by_start_time(tmp_path: Path) -> None:
    store, (race_id,) = make_store(tmp_path / "s", [2])
    info = store.race(race_id).info
    started = dt.datetime.fromisoformat(info.started_at)
    second = dt.timedelta(seconds=1)
    assert replay.Filters(since=started, until=started + second).matches(info)  # since <=
    assert not replay.Filters(until=started).matches(info)  # < until
    assert not replay.Filters(since=started + second).matches(info)
    assert replay.Filters(since=info.started_at).matches(info)  # ISO strings work too
    in_paris = started.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert replay.Filters(since=in_paris.isoformat()).matches(info)
    assert not replay.Filters(until=in_paris).matches(info)
    naive = started.replace(tzinfo=None)  # a time without a zone is UTC
    assert replay.Filters(since=naive, until=naive + second).matches(info)
    assert not replay.Filters(since=naive + second).matches(info)


def test_filters_from_dicts_and_bad_input() -> None:
    assert replay.Filters.of(None) == replay.Filters()
    f = replay.Filters(env="e")
    assert replay.Filters.of(f) is f
    assert replay.Filters.of({"env": "e", "map": ["a"]}) == replay.Filters(env="e", map=["a"])
    with pytest.raises(ValueError, match=r"unknown filter\(s\) \['speed', 'track'\]; known: \["):
        replay.Filters.of({"track": "x", "speed": 1, "env": "e"})
    with pytest.raises(ValueError, match="since must be an ISO 8601 time, got 'yesterday'"):
        replay.Filters(since="yesterday")
    with pytest.raises(ValueError, match="until must be an ISO 8601 time, got 1700000000"):
        replay.Filters(until=1700000000)  # type: ignore[arg-type]
