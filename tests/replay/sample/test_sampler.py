"""Samplers: the statistics of what they draw, windows, seeds, priorities, recency, errors."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sampling_helpers import CHI2_999, chi_square, make_store, small_frames, write_race

import replay


@pytest.fixture(scope="module")
def three_races(tmp_path_factory: pytest.TempPathFactory) -> tuple[replay.Store, list[str]]:
    """Races of 13, 7 and 20 steps (40 frames), shard size 8."""
    return make_store(tmp_path_factory.mktemp("three") / "store", [13, 7, 20])


def draw(sampler: replay.Sampler, n_batches: int) -> list[tuple[str, int]]:
    keys: list[tuple[str, int]] = []
    for _ in range(n_batches):
        keys += sampler.sample_keys().keys
    return keys


# -- uniform -----------------------------------------------------------------------------


def test_uniform_is_uniform_over_steps(three_races: tuple[replay.Store, list[str]]) -> None:
    store, ids = three_races
    sampler = store.sampler(batch_size=40, seed=1)
    counts = Counter(draw(sampler, 500))  # 20,000 draws, 500 expected per step
    lengths = dict(zip(ids, [13, 7, 20], strict=True))
    cells = [(r, s) for r in ids for s in range(lengths[r])]
    assert set(counts) == set(cells)
    observed = np.array([counts[c] for c in cells])
    stat = chi_square(observed, np.full(len(cells), observed.sum() / len(cells)))
    assert stat < CHI2_999[39], stat
    keys = sampler.sample_keys()
    np.testing.assert_allclose(keys.probabilities, 1 / 40)
    np.testing.assert_array_equal(keys.weights, 1)


def test_windows_never_cross_races_and_are_uniform(
    three_races: tuple[replay.Store, list[str]],
) -> None:
    store, ids = three_races
    lengths = dict(zip(ids, [13, 7, 20], strict=True))
    sampler = store.sampler(batch_size=22, seq_len=4, stride=2, seed=2)  # span 7
    counts: Counter[tuple[str, int]] = Counter()
    for _ in range(400):
        keys = sampler.sample_keys()
        assert keys.steps.shape == (22, 4)
        np.testing.assert_array_equal(np.diff(keys.steps, axis=1), 2)
        for race_id, steps in zip(keys.race_ids, keys.steps, strict=True):
            assert steps[0] >= 0
            assert steps[-1] < lengths[race_id]
        counts.update(keys.keys)
    # windows of 7 fit 13-6, 7-6 and 20-6 times: 22 items
    cells = [(r, s) for r in ids for s in range(lengths[r] - 6)]
    assert set(counts) == set(cells)
    observed = np.array([counts[c] for c in cells])
    assert chi_square(observed, np.full(22, observed.sum() / 22)) < CHI2_999[21]


def test_seeds_reproduce_and_state_dict_resumes(
    three_races: tuple[replay.Store, list[str]],
) -> None:
    store, _ = three_races
    a = store.sampler(batch_size=16, seq_len=2, seed=42)
    b = store.sampler(batch_size=16, seq_len=2, seed=42)
    c = store.sampler(batch_size=16, seq_len=2, seed=43)
    ka, kb, kc = draw(a, 3), draw(b, 3), draw(c, 3)
    assert ka == kb
    assert ka != kc
    state = a.state_dict()
    expected = draw(a, 2)
    c.load_state_dict(state)
    assert draw(c, 2) == expected
    with pytest.raises(ValueError, match="uniform"):
        store.sampler("prioritized").load_state_dict(state)


def test_sample_carries_steps_of_each_window(three_races: tuple[replay.Store, list[str]]) -> None:
    store, _ = three_races
    batch = store.sampler(batch_size=8, seq_len=3, stride=2, seed=0).sample()
    assert batch.frames.shape == (8, 3, 90, 160, 3)
    for (_, start), reward, action in zip(batch.keys, batch.reward, batch.action, strict=True):
        np.testing.assert_array_equal(reward, [start, start + 2, start + 4])
        np.testing.assert_array_equal(action[:, 1], 2 * reward)
    assert batch.terminated.dtype == np.bool_
    assert batch.t_ns.dtype == np.int64
    assert batch.truncated.shape == (8, 3)


# -- prioritized -------------------------------------------------------------------------


def test_prioritized_follows_priorities_and_updates(tmp_path: Path) -> None:
    store, ids = make_store(tmp_path / "s", [10, 10])
    sampler = store.sampler("prioritized", batch_size=20, alpha=0.5, beta=1.0, seed=3)
    keys = [(r, s) for r in ids for s in range(10)]
    priorities = np.arange(1, 21, dtype=np.float64)
    sampler.update_priorities(keys, priorities)
    counts = Counter(draw(sampler, 1000))
    expected = np.sqrt(priorities) / np.sqrt(priorities).sum() * 20_000
    observed = np.array([counts[k] for k in keys])
    assert chi_square(observed, expected) < CHI2_999[19]

    batch = sampler.sample_keys()
    p = (
        np.array([np.sqrt(priorities[keys.index(k)]) for k in batch.keys])
        / np.sqrt(priorities).sum()
    )
    np.testing.assert_allclose(batch.probabilities, p)
    w = 1 / (20 * p)
    np.testing.assert_allclose(batch.weights, w / w.max(), rtol=1e-6)

    # an update takes effect at once: zero never comes back, a huge one dominates
    sampler.update_priorities(keys[:10], np.zeros(10))
    sampler.update_priorities([keys[15]], [1e8])
    drawn = Counter(draw(sampler, 50))
    assert not set(drawn) & set(keys[:10])
    assert drawn[keys[15]] > 0.95 * 1000
    # keys of unknown races are ignored; bad priorities are refused
    sampler.update_priorities([("0" * 26, 0)], [1.0])
    with pytest.raises(ValueError, match="finite"):
        sampler.update_priorities(keys[:1], [float("nan")])
    with pytest.raises(ValueError, match="2 keys but 1"):
        sampler.update_priorities(keys[:2], [1.0])
    # malformed keys are refused, not truncated (2.5 was step 2, "3" step 3)
    race = ids[0]
    for key, message in [
        (("garbage", 0), "'garbage' is not a race id"),
        ((race, 2.5), "its step must be a whole number, got 2.5"),
        ((race, "3"), "its step must be a whole number, got '3'"),
        ((race, -1), "its step is negative"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            sampler.update_priorities([key], [1.0])
    sampler.update_priorities([(race, np.int64(3))], [1.0])  # NumPy's integers are steps


def test_new_steps_enter_at_max_priority(tmp_path: Path) -> None:
    store, ids = make_store(tmp_path / "s", [6])
    sampler = store.sampler("prioritized", batch_size=4, alpha=1.0, seed=0, refresh_interval=0)
    sampler.update_priorities([(ids[0], s) for s in range(6)], [1, 1, 1, 1, 1, 50])
    new = write_race(store, small_frames(6, seed=9))
    counts = Counter(draw(sampler, 2000))
    new_share = sum(v for (r, _), v in counts.items() if r == new) / 8000
    # 6 new items at 50, the old ones 5 x 1 + 50: expected share 300 / 355
    assert new_share == pytest.approx(300 / 355, abs=0.02)


def test_priorities_checkpoint_into_the_store(tmp_path: Path) -> None:
    store, ids = make_store(tmp_path / "s", [8, 5])
    keys = [(r, s) for r, n in zip(ids, [8, 5], strict=True) for s in range(n)]
    with store.sampler("prioritized", name="learner", seed=0, batch_size=4) as sampler:
        sampler.update_priorities(keys, np.arange(1, 14))
        expected = sampler.state_dict()["priorities"]
    assert (tmp_path / "s" / "samplers" / "learner" / "priorities.npz").is_file()
    # a new process (here: a new sampler of that name) starts from the saved priorities
    again = replay.open_store(tmp_path / "s").sampler(
        "prioritized", name="learner", seed=0, batch_size=4
    )
    restored = again.state_dict()["priorities"]
    np.testing.assert_allclose(restored["priorities"], expected["priorities"])
    assert float(restored["max_priority"]) == 13
    other = store.sampler("prioritized", name="other", seed=0)
    np.testing.assert_array_equal(other.state_dict()["priorities"]["priorities"], 1)
    # state_dict round trip, without the store
    fresh = store.sampler("prioritized", name="third", seed=5, batch_size=4)
    fresh.load_state_dict(again.state_dict())
    assert draw(fresh, 3) == draw(again, 3)
    # a read-only store cannot take a checkpoint
    ro = replay.open_store(tmp_path / "s", mode="r").sampler("prioritized", name="learner")
    with pytest.raises(replay.ReadOnlyStoreError):
        ro.checkpoint()
    ro.close()  # nothing changed: no write attempted


def test_priorities_on_a_read_only_store_are_saved_where_asked_or_refused(
    tmp_path: Path,
) -> None:
    """Issue 13, item 11: on a store opened with mode="r", update_priorities took the
    priorities and close() silently dropped them."""
    _store, ids = make_store(tmp_path / "s", [8, 5])
    keys = [(r, s) for r, n in zip(ids, [8, 5], strict=True) for s in range(n)]
    ro = replay.open_store(tmp_path / "s", mode="r")
    with ro.sampler("prioritized", name="learner", batch_size=4) as sampler:
        with pytest.raises(replay.ReadOnlyStoreError, match="checkpoint_path=") as e:
            sampler.update_priorities(keys, np.arange(1, 14))
        assert str(tmp_path / "s") in str(e.value)
        assert "'learner'" in str(e.value)
    # a file of the user's keeps them, whatever the store's mode
    mine = tmp_path / "mine" / "priorities.npz"
    mine.parent.mkdir()
    with ro.sampler("prioritized", name="learner", checkpoint_path=mine) as sampler:
        assert sampler.checkpoint_location == str(mine)
        sampler.update_priorities(keys, np.arange(1, 14))
        expected = sampler.state_dict()["priorities"]
    assert mine.is_file()
    assert not (tmp_path / "s" / "samplers" / "learner").exists()  # the group is the store's
    again = ro.sampler("prioritized", name="learner", checkpoint_path=mine)
    restored = again.state_dict()["priorities"]
    np.testing.assert_allclose(restored["priorities"], expected["priorities"])
    assert float(restored["max_priority"]) == 13
    again.close()
    # or, said so, in memory only (the service's samplers)
    with ro.sampler("prioritized", name="memory", save_priorities=False) as sampler:
        sampler.update_priorities(keys, np.full(13, 3.0))
        assert sampler.selector.max_priority == 3.0  # type: ignore[union-attr]
    assert [p.name for p in (tmp_path / "s" / "samplers").iterdir()] == ["zarr.json"]


def test_update_priorities_needs_a_prioritized_sampler(
    three_races: tuple[replay.Store, list[str]],
) -> None:
    store, ids = three_races
    with pytest.raises(replay.SamplingError, match="prioritized"):
        store.sampler().update_priorities([(ids[0], 0)], [1.0])


# -- recency and filters -----------------------------------------------------------------


def test_recent_fraction_comes_from_the_newest_seconds(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "s")
    now = time.time_ns()
    old = write_race(store, small_frames(30), t0_ns=now - 3600 * 10**9, dt_ns=10**9)
    new = write_race(store, small_frames(30, seed=1), t0_ns=now - 29 * 10**9, dt_ns=10**9)
    # the newest 10 s are steps 19..29 of the new race (t_ns >= newest - 10 s)
    sampler = store.sampler("recent", batch_size=40, recent_seconds=10, recent_fraction=0.5, seed=0)
    recent = {(new, s) for s in range(19, 30)}
    total = Counter[bool]()
    for _ in range(200):
        keys = sampler.sample_keys()
        first_half = set(keys.keys[:20])
        assert first_half <= recent
        total.update(k in recent for k in keys.keys)
        p = np.where([k in recent for k in keys.keys], 0.5 / 11 + 0.5 / 60, 0.5 / 60)
        np.testing.assert_allclose(keys.probabilities, p)
    # half of every batch, plus a uniform share of the rest: 0.5 + 0.5 * 11/60
    assert total[True] / 8000 == pytest.approx(0.5 + 0.5 * 11 / 60, abs=0.02)
    assert {r for r, _ in draw(sampler, 20)} == {old, new}


def test_filters_select_races(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "s")
    a = write_race(store, small_frames(5), env="A", map="m1", policy="p")
    cut = dt.datetime.now(dt.UTC)
    time.sleep(0.01)
    b = write_race(store, small_frames(5), env="B", map="m2", policy="p")
    c = write_race(store, small_frames(5), env="B", map="m3", policy="q")

    def races(filters: object) -> set[str]:
        sampler = store.sampler(batch_size=4, seed=0, filters=filters)  # type: ignore[arg-type]
        return {r for r, _ in draw(sampler, 30)}

    assert races(None) == {a, b, c}
    assert races(replay.Filters(env="B")) == {b, c}
    assert races({"map": ["m1", "m3"]}) == {a, c}
    assert races({"policy": "p", "env": "B"}) == {b}
    assert races({"race_ids": [a, c]}) == {a, c}
    assert races({"since": cut.isoformat()}) == {b, c}
    assert races({"until": cut}) == {a}
    with pytest.raises(replay.SamplingError, match="no committed frames"):
        store.sampler(filters={"env": "nope"}).sample_keys()
    with pytest.raises(ValueError, match="unknown filter"):
        store.sampler(filters={"track": "x"})
    with pytest.raises(ValueError, match="ISO 8601"):
        replay.Filters(since="yesterday")


# -- errors ------------------------------------------------------------------------------


def test_clear_errors_for_what_cannot_be_sampled(tmp_path: Path) -> None:
    empty = replay.open_store(tmp_path / "empty")
    with pytest.raises(replay.SamplingError, match="no committed frames"):
        empty.sampler().sample()
    store, _ = make_store(tmp_path / "s", [5, 3])
    with pytest.raises(replay.SamplingError, match=r"batch_size=9 is more than the 8 items"):
        store.sampler(batch_size=9).sample_keys()
    with pytest.raises(
        replay.SamplingError, match=r"needs races of 7 steps; the longest race in store .* has 5"
    ):
        store.sampler(batch_size=1, seq_len=3, stride=3).sample_keys()
    for bad in ({"batch_size": 0}, {"seq_len": -1}, {"stride": 1.5}, {"name": "../x"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            store.sampler("prioritized", **bad)
    with pytest.raises(ValueError, match="kind"):
        store.sampler("newest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="recent_fraction"):
        store.sampler("recent", recent_fraction=2)
    with pytest.raises(ValueError, match="beta"):
        store.sampler("prioritized", beta=-1)


def test_races_evicted_between_refreshes_are_redrawn(tmp_path: Path) -> None:
    store, (old, new) = make_store(tmp_path / "s", [8, 8])
    sampler = store.sampler(batch_size=8, seed=0, refresh_interval=3600)
    sampler.sample()
    # capacity eviction: the race's metadata goes first, then its data
    store.storage.delete(f"races/{old}/zarr.json")
    store.storage.delete_tree(f"races/{old}")
    for _ in range(5):
        assert {r for r, _ in sampler.sample().keys} == {new}
    assert sampler.stats().corrupt_skipped == 0


def test_refresh_is_automatic_after_the_interval(tmp_path: Path) -> None:
    store, (first,) = make_store(tmp_path / "s", [4])
    sampler = store.sampler(batch_size=4, seed=0, refresh_interval=1.0)
    assert len(sampler) == 4  # refreshes now
    refreshed = time.monotonic()
    second = write_race(store, small_frames(4))
    if time.monotonic() - refreshed < 0.9:  # (a very slow machine skips this check)
        assert {r for r, _ in draw(sampler, 10)} == {first}  # not yet: refreshed < 1 s ago
    time.sleep(max(0.0, refreshed + 1.05 - time.monotonic()))
    assert {r for r, _ in draw(sampler, 10)} == {first, second}
    refreshes = sampler.stats().refreshes
    sampler.refresh()  # explicit, at any time
    assert sampler.stats().refreshes == refreshes + 1
