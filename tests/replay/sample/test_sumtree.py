"""`replay.sample.sumtree.SumTree` against a plain NumPy reference: totals, prefix-sum lookup,
updates, growth and the edge cases (zero total, one leaf, zero-weight leaves)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from replay.sample.sumtree import SumTree


def reference_find(
    weights: npt.NDArray[np.float64], u: npt.NDArray[np.float64]
) -> npt.NDArray[np.intp]:
    """The leaf whose half-open cumulative range [c[i-1], c[i]) holds each u."""
    return np.searchsorted(np.cumsum(weights), u, side="right")


def check_against(
    tree: SumTree, weights: npt.NDArray[np.float64], rng: np.random.Generator
) -> None:
    assert len(tree) == len(weights)
    # integer weights: every partial sum is exact, so the totals must agree exactly
    assert tree.total == weights.sum()
    np.testing.assert_array_equal(tree.get(np.arange(len(weights))), weights)
    if weights.sum() > 0:
        u = rng.random(200) * weights.sum()
        np.testing.assert_array_equal(tree.find(u), reference_find(weights, u))


def test_random_appends_and_updates_match_a_naive_reference() -> None:
    rng = np.random.default_rng(0)
    tree = SumTree(capacity=3)  # rounds up to 4, then doubles several times
    weights = np.zeros(0)
    for _ in range(60):
        if len(weights) == 0 or rng.random() < 0.3:
            new = rng.integers(0, 10, size=int(rng.integers(0, 40))).astype(np.float64)
            assert tree.append(new) == len(weights)  # the first new leaf's number
            weights = np.concatenate([weights, new])
        else:
            leaves = rng.integers(0, len(weights), size=int(rng.integers(1, 30)))
            values = rng.integers(0, 10, size=len(leaves)).astype(np.float64)
            tree.set(leaves, values)
            for leaf, value in zip(leaves, values, strict=True):  # the last write wins
                weights[leaf] = value
        check_against(tree, weights, rng)
    assert len(weights) > 256  # the tree grew past several capacities


def test_lookup_at_exact_boundaries_goes_to_the_next_weighted_leaf() -> None:
    weights = np.array([2.0, 0.0, 0.0, 3.0, 1.0, 0.0, 4.0])
    tree = SumTree(capacity=len(weights))
    tree.append(weights)
    ends = np.cumsum(weights)  # 2, 2, 2, 5, 6, 6, 10
    u = np.array([0.0, *ends[:-1], np.nextafter(ends[-1], 0)])
    np.testing.assert_array_equal(tree.find(u), reference_find(weights, u))
    np.testing.assert_array_equal(tree.find(np.array([0.0, 2.0, 5.0, 6.0])), [0, 3, 4, 6])
    assert not np.any(weights[tree.find(np.linspace(0, tree.total, 1001))] == 0)


def test_sum_tree_grows_and_finds() -> None:
    tree = SumTree(capacity=2)
    first = tree.append(np.array([1.0, 0.0, 3.0]))
    assert (first, len(tree), tree.total) == (0, 3, 4.0)
    tree.append(np.full(100, 0.5))
    assert tree.total == pytest.approx(54.0)
    np.testing.assert_array_equal(tree.find(np.array([0.0, 0.99, 1.0, 3.99])), [0, 0, 2, 2])
    tree.set(np.array([0, 0]), np.array([2.0, 5.0]))  # last write wins
    assert tree.get(np.array([0]))[0] == 5.0
    assert tree.total == pytest.approx(58.0)
    # a zero-weight leaf is never returned, even at the very end of the range
    tree.set(np.arange(3, 103), np.zeros(100))
    assert tree.find(np.array([tree.total, tree.total * (1 - 1e-16)])).tolist() == [2, 2]
    with pytest.raises(ValueError, match="finite"):
        tree.set(np.array([1]), np.array([-1.0]))


def test_single_leaf_and_zero_total() -> None:
    tree = SumTree(capacity=1)
    assert (len(tree), tree.total) == (0, 0.0)
    assert tree.append(np.array([2.5])) == 0
    assert tree.total == 2.5
    np.testing.assert_array_equal(tree.find(np.array([0.0, 1.0, 2.4999])), [0, 0, 0])
    tree.set(np.array([0]), np.array([0.0]))
    assert tree.total == 0.0
    assert tree.append(np.array([1.0])) == 1  # grows from one leaf to two
    assert tree.total == 1.0
    np.testing.assert_array_equal(tree.find(np.array([0.0, 0.5])), [1, 1])
    tree.set(np.arange(2), np.zeros(2))
    assert tree.total == 0.0
    np.testing.assert_array_equal(tree.get(np.arange(2)), [0.0, 0.0])


def test_capacity_and_memory() -> None:
    for asked, leaves in ((0, 1), (1, 1), (2, 2), (5, 8), (1024, 1024), (1025, 2048)):
        assert SumTree(capacity=asked).nbytes == 16 * leaves  # float64 leaves + inner nodes
    tree = SumTree(capacity=4)
    tree.append(np.ones(5))
    assert tree.nbytes == 16 * 8
    assert tree.append(np.zeros(0)) == 5  # appending nothing changes nothing
    assert (len(tree), tree.total) == (5, 5.0)


def test_bad_leaves_and_weights_are_refused() -> None:
    tree = SumTree()
    tree.append(np.ones(4))
    for leaves in ([4], [-1], [0, 7]):
        with pytest.raises(IndexError, match=r"0\.\.3"):
            tree.set(np.array(leaves), np.ones(len(leaves)))
    for bad in (np.nan, np.inf, -0.5):
        with pytest.raises(ValueError, match="finite and >= 0"):
            tree.set(np.array([1]), np.array([bad]))
    assert tree.total == 4.0  # refused updates changed nothing
    tree.set(np.zeros(0, np.int64), np.zeros(0))  # an empty update is fine
    assert tree.total == 4.0
