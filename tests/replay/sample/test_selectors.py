"""`replay.sample.selectors`: the item space of a real store's races, and what `Uniform`,
`Prioritized` and `Recent` choose from it, against plain enumerations of the items."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sampling_helpers import small_frames, write_race

import replay
from replay.read.index import Index, RaceEntry
from replay.read.reader import Reader
from replay.sample import prioritized
from replay.sample.prioritized import MAX_PRIORITY, Prioritized
from replay.sample.selectors import ItemSpace, Recent, Uniform, make_selector

LENGTHS = [7, 6, 10]
SPAN = 3  # windows of 3 steps: 5, 4 and 8 items
SECOND = 10**9


@pytest.fixture(scope="module")
def store_path(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Three races of real frames (downscaled to 90x160), one step per second, the second
    race starting an hour after the first and the third 4 s after the second."""
    path = tmp_path_factory.mktemp("selectors") / "store"
    store = replay.open_store(path)
    small = np.ascontiguousarray(real_frames[:, ::10, ::10])
    starts = [0, 3600 * SECOND, 3604 * SECOND]
    for n, t0 in zip(LENGTHS, starts, strict=True):
        write_race(store, small[:n], t0_ns=10**18 + t0, dt_ns=SECOND)
    return path


@pytest.fixture
def index(store_path: Path) -> Index:
    index = Index(replay.open_store(store_path, mode="r").storage)
    index.refresh()
    return index


def space_of(index: Index, counts: list[int] | None = None) -> ItemSpace:
    entries = index.entries
    if counts is None:
        counts = [max(0, e.length - SPAN + 1) for e in entries]
    return ItemSpace(entries, np.array(counts, dtype=np.int64), SPAN)


def items_of(space: ItemSpace) -> list[tuple[int, int]]:
    """Every (race position, start step) of a space, in item order."""
    return [(r, s) for r, n in enumerate(space.counts.tolist()) for s in range(n)]


def keys_of(space: ItemSpace) -> list[tuple[str, int]]:
    return [(space.entries[r].race_id, s) for r, s in items_of(space)]


def test_item_space_numbers_items_race_by_race(index: Index) -> None:
    space = space_of(index)
    assert [e.length for e in space.entries] == LENGTHS
    assert space.total == 17
    races, starts = space.locate(np.arange(17))
    assert list(zip(races.tolist(), starts.tolist(), strict=True)) == items_of(space)
    assert ItemSpace([], np.zeros(0, np.int64), SPAN).total == 0
    gap = space_of(index, [2, 0, 3])  # a race too short for a window holds no item
    races, starts = gap.locate(np.arange(5))
    assert races.tolist() == [0, 0, 2, 2, 2]
    assert starts.tolist() == [0, 1, 0, 1, 2]


def test_uniform_draws_every_item_with_its_probability(index: Index) -> None:
    space = space_of(index)
    draw = Uniform().draw(space, np.random.default_rng(0), 3000)
    drawn = set(zip(draw.races.tolist(), draw.starts.tolist(), strict=True))
    assert drawn == set(items_of(space))
    np.testing.assert_array_equal(draw.probabilities, 1 / 17)
    assert draw.weights.dtype == np.float32
    np.testing.assert_array_equal(draw.weights, 1)
    again = Uniform().draw(space, np.random.default_rng(0), 3000)
    np.testing.assert_array_equal(again.starts, draw.starts)


def test_prioritized_probabilities_and_weights(index: Index) -> None:
    space = space_of(index)
    keys = keys_of(space)
    priorities = np.arange(1.0, 18.0)
    selector = Prioritized(alpha=0.7, beta=0.5)
    selector.sync(space)
    assert selector.update(keys, priorities) == 17
    draw = selector.draw(space, np.random.default_rng(1), 200)
    drawn = [
        keys.index((space.entries[r].race_id, s))
        for r, s in zip(draw.races, draw.starts, strict=True)
    ]
    expected_p = priorities[drawn] ** 0.7 / np.sum(priorities**0.7)
    np.testing.assert_allclose(draw.probabilities, expected_p)
    w = (17 * expected_p) ** -0.5
    np.testing.assert_allclose(draw.weights, w / w.max(), rtol=1e-6)
    counts = np.bincount(drawn, minlength=17)
    assert counts[:3].sum() < counts[-3:].sum()  # low priorities are drawn less
    assert selector.max_priority == 17.0


def test_growing_races_keep_their_priorities_and_new_items_enter_at_the_max(index: Index) -> None:
    selector = Prioritized(alpha=1.0, beta=0.4)
    early = space_of(index, [2, 1, 3])
    selector.sync(early)
    selector.update(keys_of(early), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    grown = space_of(index, [4, 2, 3])  # race 0 grows after races 1 and 2 got their leaves
    selector.sync(grown)
    state = selector.state()
    ids = [e.race_id for e in index.entries]
    assert state["race_ids"].tolist() == sorted(ids)
    by_race = dict(
        zip(
            state["race_ids"].tolist(),
            np.split(state["priorities"], np.cumsum(state["counts"])[:-1]),
            strict=True,
        )
    )
    assert by_race[ids[0]].tolist() == [1.0, 2.0, 6.0, 6.0]  # new items at the max so far
    assert by_race[ids[1]].tolist() == [3.0, 6.0]
    assert by_race[ids[2]].tolist() == [4.0, 5.0, 6.0]
    keys = keys_of(grown)
    selector.update(keys, np.arange(10.0, 19.0))  # every key still finds its own leaf
    np.testing.assert_array_equal(selector.state()["priorities"], np.arange(10.0, 19.0))
    selector.sync(space_of(index, [5, 2, 3]))  # grows right after its own last leaves
    np.testing.assert_array_equal(selector.state()["counts"], [5, 2, 3])
    assert selector.state()["priorities"][:5].tolist() == [10.0, 11.0, 12.0, 13.0, 18.0]
    assert selector.update([(ids[0], 4)], [0.5]) == 1
    assert selector.state()["priorities"][4] == 0.5
    assert selector.update([("0" * 26, 0), (ids[0], 5), (ids[0], -1)], [1.0, 1.0, 1.0]) == 0


def test_zeroed_and_removed_items_are_never_drawn(index: Index) -> None:
    space = space_of(index)
    selector = Prioritized(alpha=0.6, beta=0.4)
    selector.sync(space)
    keys = keys_of(space)
    selector.zero(keys[:5])  # the whole first race
    draw = selector.draw(space, np.random.default_rng(2), 500)
    assert 0 not in set(draw.races.tolist())
    without_middle = ItemSpace([space.entries[0], space.entries[2]], space.counts[[0, 2]], SPAN)
    draw = selector.draw(without_middle, np.random.default_rng(3), 500)
    assert set(draw.races.tolist()) == {1}  # only the third race is left, now at position 1
    assert draw.starts.max() < 8
    selector.zero(keys)
    with pytest.raises(replay.SamplingError, match="every item has priority 0"):
        selector.draw(without_middle, np.random.default_rng(4), 1)


def test_priority_state_round_trips(index: Index) -> None:
    space = space_of(index)
    selector = Prioritized(alpha=0.5, beta=0.4)
    selector.sync(space)
    selector.update(keys_of(space), np.linspace(0.5, 8.0, 17))
    state = selector.state()
    restored = Prioritized(alpha=0.5, beta=0.4)
    restored.load_state(state)
    restored.sync(space)
    np.testing.assert_allclose(restored.state()["priorities"], state["priorities"])
    assert float(restored.state()["max_priority"]) == 8.0
    a = selector.draw(space, np.random.default_rng(5), 50)
    b = restored.draw(space, np.random.default_rng(5), 50)
    np.testing.assert_array_equal(a.starts, b.starts)
    np.testing.assert_allclose(a.probabilities, b.probabilities)
    only_first = ItemSpace(space.entries[:1], space.counts[:1], SPAN)
    partial = Prioritized(alpha=0.5, beta=0.4)
    partial.load_state(state)
    partial.sync(only_first)  # races not seen this run keep their saved priorities
    np.testing.assert_allclose(np.sort(partial.state()["priorities"]), np.sort(state["priorities"]))
    with pytest.raises(ValueError, match="inconsistent"):
        Prioritized(alpha=0.5, beta=0.4).load_state({**state, "counts": state["counts"][:2]})


def test_races_churned_through_eviction_keep_the_tree_within_twice_the_live_items(
    index: Index,
) -> None:
    """200 races of 1000 items pass through with 5 live at a time (issue 13, item 10: the
    tree kept every evicted leaf, 200,000 leaves for 5,000 items). After each eviction the
    tree holds at most twice the live items, and the draw probabilities and weights
    are those of the live priorities alone."""
    info = index.entries[0].info
    races = [RaceEntry(dataclasses.replace(info, race_id=f"race-{i:03d}")) for i in range(200)]
    live, per_race = 5, 1000
    selector = Prioritized(alpha=0.5, beta=0.6)
    rng = np.random.default_rng(8)
    largest = 0
    for first in range(len(races) - live + 1):
        entries = races[first : first + live]
        space = ItemSpace(entries, np.full(live, per_race, dtype=np.int64), SPAN)
        selector.sync(space)
        largest = max(largest, len(selector.tree))
        assert len(selector.tree) <= 2 * live * per_race
        assert selector.tree.nbytes <= 16 * 4 * live * per_race
        newest = entries[-1].race_id  # the newest race's items get priorities 1..1000
        selector.update([(newest, s) for s in range(per_race)], np.arange(1.0, per_race + 1))
    assert largest > live * per_race  # evicted leaves did build up between compactions
    # the live priorities are kept through every compaction
    state = selector.state()
    assert state["race_ids"].tolist() == [e.race_id for e in races[-live:]]
    expected = np.tile(np.arange(1.0, per_race + 1), live)
    np.testing.assert_allclose(state["priorities"], expected)
    draw = selector.draw(space, rng, 4000)
    assert draw.races.min() >= 0  # only live races are drawn
    p = (draw.starts + 1.0) ** 0.5 / (live * np.sum(np.arange(1.0, per_race + 1) ** 0.5))
    np.testing.assert_allclose(draw.probabilities, p)
    w = (live * per_race * p) ** -0.6
    np.testing.assert_allclose(draw.weights, w / w.max(), rtol=1e-6)
    assert np.bincount(draw.races, minlength=live).min() > 600  # every live race is drawn
    assert selector.update([(races[0].race_id, 0)], [5.0]) == 0  # an evicted race's key


def test_a_sampler_over_a_store_that_evicts_keeps_its_tree_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real eviction: a store with a byte budget for about two races, 10 races recorded
    one after another, a prioritized sampler refreshed after each. (The tree is compacted
    past COMPACT_MIN_LEAVES removed leaves; set to 0 so 16-item races show it.)"""
    monkeypatch.setattr(prioritized, "COMPACT_MIN_LEAVES", 0)
    store = replay.open_store(tmp_path / "store")
    frames = small_frames(16)
    write_race(store, frames)
    store.set_capacity(max_bytes=2.5 * store.race_nbytes(store.races()[0].race_id))
    sampler = store.sampler("prioritized", batch_size=4, seed=0, refresh_interval=0)
    selector = sampler.selector
    assert isinstance(selector, Prioritized)
    for i in range(6):
        if i:
            write_race(store, frames)
        store.enforce_capacity()
        batch = sampler.sample()
        sampler.update_priorities(batch.keys, np.full(4, 2.0 + i))
        live = len(sampler)
        assert live <= 3 * 16
        assert len(selector.tree) <= 2 * live
    assert len(sampler.index.entries) < 6  # races were evicted
    present = {e.race_id for e in sampler.index.entries}
    drawn = {r for _ in range(10) for r in sampler.sample_keys(len(sampler)).race_ids}
    assert drawn == present
    sampler.close()


def test_bad_settings_and_priorities_are_refused(index: Index) -> None:
    with pytest.raises(ValueError, match=r"alpha must be >= 0, got -0\.1"):
        Prioritized(alpha=-0.1, beta=0.4)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\], got 1.5"):
        Prioritized(alpha=0.6, beta=1.5)
    with pytest.raises(ValueError, match="recent_seconds must be positive, got 0"):
        Recent(seconds=0, fraction=0.5)
    with pytest.raises(ValueError, match=r"recent_fraction must be in \[0, 1\], got -0.5"):
        Recent(seconds=1, fraction=-0.5)
    space = space_of(index)
    selector = Prioritized(alpha=0.6, beta=0.4)
    selector.sync(space)
    keys = keys_of(space)[:2]
    with pytest.raises(ValueError, match="2 keys but 3 priorities"):
        selector.update(keys, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"finite, >= 0 and <= 1e\+30, got \[-1\.0\]"):
        selector.update(keys, [1.0, -1.0])
    with pytest.raises(ValueError, match="finite, >= 0"):
        selector.update(keys, [np.nan, 1.0])


def test_an_infinite_priority_is_named(index: Index) -> None:
    selector = Prioritized(alpha=0.6, beta=0.4)
    space = space_of(index)
    selector.sync(space)
    with pytest.raises(ValueError, match="finite, >= 0") as e:
        selector.update(keys_of(space)[:1], [np.inf])
    assert "inf" in str(e.value)


def test_a_priority_too_large_for_the_sum_tree_is_refused(index: Index) -> None:
    """1e308 is finite, but two of them overflow the tree's total (every weight NaN)."""
    selector = Prioritized(alpha=1.0, beta=0.4)
    space = space_of(index)
    selector.sync(space)
    keys = keys_of(space)[:2]
    with pytest.raises(ValueError, match=r"<= 1e\+30, got \[1e\+308\]"):
        selector.update(keys, [1.0, 1e308])
    selector.update(keys, [MAX_PRIORITY, MAX_PRIORITY])  # the largest taken
    draw = selector.draw(space, np.random.default_rng(0), 64)
    assert np.all(np.isfinite(draw.weights))
    assert np.all(draw.weights > 0)


def test_recent_takes_its_share_from_the_newest_seconds(index: Index) -> None:
    reader = Reader(index.storage, index, threads=1)
    try:
        # the selector reads nothing: the space brings the steps' times (the sampler's reader)
        space = dataclasses.replace(
            space_of(index), step_times=lambda e, steps: reader.step_values(e, "t_ns", steps)
        )
        times = [reader.step_values(e, "t_ns", np.arange(e.length)) for e in space.entries]
        newest = max(int(t[-1]) for t in times)
        cutoff = newest - 11 * SECOND
        first = [int(np.searchsorted(t, cutoff)) for t in times]  # first step at or after it
        assert first == [7, 2, 0]  # race 0 is an hour old; race 1 overlaps the last 11 s
        selector = Recent(seconds=11, fraction=0.25)
        recent, lo = selector.recent_space(space)
        assert lo.tolist() == first
        assert recent.counts.tolist() == [0, 2, 8]  # windows starting at or after the cutoff
        draw = selector.draw(space, np.random.default_rng(6), 40)
    finally:
        reader.close()
    is_recent = draw.starts >= lo[draw.races]
    assert is_recent[:10].all()  # round(0.25 * 40) items come from the recent windows
    p = 0.75 / 17 + np.where(is_recent, 0.25 / 10, 0.0)
    np.testing.assert_allclose(draw.probabilities, p)
    assert set(draw.races[:10].tolist()) <= {1, 2}
    assert set(draw.starts[:10][draw.races[:10] == 1].tolist()) <= {2, 3}


def test_every_selector_speaks_one_protocol(index: Index) -> None:
    """Issue 14, item 1: the sampler never asks which selector it holds; the ones
    without priorities answer the protocol with no-ops (and refuse new priorities)."""
    space = space_of(index)
    keys = keys_of(space)[:2]
    made = [
        make_selector(kind, 0.6, 0.4, 60.0, 0.5) for kind in ("uniform", "recent", "prioritized")
    ]
    assert [s.kind for s in made] == ["uniform", "recent", "prioritized"]
    for selector in made[:2]:
        selector.on_refresh(space)
        selector.zero(keys)
        selector.load_state_dict({})
        assert selector.state_dict() == {}
        with pytest.raises(replay.SamplingError, match=f"not '{selector.kind}'"):
            selector.update_priorities(keys, [1.0, 2.0])
    prioritized = made[2]
    prioritized.on_refresh(space)  # gives the space's items their leaves
    prioritized.update_priorities(keys, [4.0, 2.0])
    state = prioritized.state_dict()
    np.testing.assert_allclose(state["priorities"][:2], [4.0, 2.0])
    again = make_selector("prioritized", 0.6, 0.4, 60.0, 0.5)
    again.load_state_dict(state)
    again.on_refresh(space)
    np.testing.assert_allclose(again.state_dict()["priorities"], state["priorities"])
    with pytest.raises(ValueError, match="kind must be"):
        make_selector("lifo", 0.6, 0.4, 60.0, 0.5)
