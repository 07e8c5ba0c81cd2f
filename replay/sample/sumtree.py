"""A sum tree in NumPy: proportional sampling and updates in O(log n), vectorised.

Leaves hold non-negative weights; every inner node holds the sum of its two
children, so the root is the total and a uniform number in [0, total) walks
down to the leaf whose cumulative range contains it. The tree doubles its
capacity as leaves are appended (amortised O(1) per leaf), and costs 16 bytes
per leaf (float64 leaves plus inner nodes).

    tree = SumTree()
    first = tree.append(np.ones(10))          # leaves 0..9
    tree.set(np.array([3]), np.array([5.0]))
    leaves = tree.find(rng.random(64) * tree.total)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


class SumTree:
    """Leaves 0..size-1 with weights; `find` draws leaves proportionally to them."""

    def __init__(self, capacity: int = 1024) -> None:
        self._cap = 1 << max(0, int(capacity) - 1).bit_length()
        self._nodes = np.zeros(2 * self._cap, dtype=np.float64)  # node 1 is the root
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def total(self) -> float:
        """Sum of all leaf weights."""
        return float(self._nodes[1])

    @property
    def nbytes(self) -> int:
        """Bytes the tree holds."""
        return self._nodes.nbytes

    def reserve(self, leaves: int) -> None:
        """Make room for `leaves` leaves in all (one regrowth instead of several)."""
        if leaves <= self._cap:
            return
        cap = self._cap
        while cap < leaves:
            cap *= 2
        old = self._nodes[self._cap : self._cap + self.size]
        self._cap = cap
        self._nodes = np.zeros(2 * cap, dtype=np.float64)
        self._nodes[cap : cap + len(old)] = old
        self._propagate(cap, cap + len(old))

    def append(self, values: npt.NDArray[np.float64]) -> int:
        """Add leaves with these weights; returns the first new leaf's number."""
        values = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("sum tree weights must be finite and >= 0")
        first = self.size
        need = first + len(values)
        self.reserve(need)
        self.size = need
        self._nodes[first + self._cap : need + self._cap] = values
        self._propagate(first + self._cap, need + self._cap)
        return first

    def _propagate(self, lo: int, hi: int) -> None:
        """Recompute the ancestors of the contiguous nodes [lo, hi) of one level.

        Their ancestors are contiguous ranges too, so each level is one slice (no
        sorting): O(hi - lo + log n).
        """
        while lo > 1 and hi > lo:
            lo, hi = lo >> 1, ((hi - 1) >> 1) + 1
            self._nodes[lo:hi] = (
                self._nodes[2 * lo : 2 * hi : 2] + self._nodes[2 * lo + 1 : 2 * hi : 2]
            )

    def set(self, leaves: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> None:
        """Set the weights of `leaves` (ValueError for negative or non-finite weights)."""
        leaves = np.asarray(leaves, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        if len(leaves) == 0:
            return
        if np.any(leaves < 0) or np.any(leaves >= self.size):
            raise IndexError(f"leaf out of range 0..{self.size - 1}")
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError("sum tree weights must be finite and >= 0")
        nodes = leaves + self._cap
        self._nodes[nodes] = values  # the last write wins for repeated leaves
        while self._cap > 1:  # every leaf is at the same depth: all reach the root together
            nodes = np.unique(nodes >> 1)
            self._nodes[nodes] = self._nodes[2 * nodes] + self._nodes[2 * nodes + 1]
            if nodes[0] == 1:
                break

    def get(self, leaves: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """Weights of `leaves`."""
        return self._nodes[np.asarray(leaves, dtype=np.int64) + self._cap]

    def find(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """For each value in [0, total), the leaf whose cumulative range holds it.

        Never returns a leaf of weight 0 (values at or past the total are clamped
        to the last leaf with weight).
        """
        u = np.asarray(values, dtype=np.float64).copy()
        node = np.ones(len(u), dtype=np.int64)
        for _ in range(self._cap.bit_length() - 1):
            left = 2 * node
            lw = self._nodes[left]
            # go right when u is past the left subtree, or the left subtree is empty
            right = (u >= lw) & (self._nodes[left + 1] > 0) | (lw <= 0)
            u = np.where(right, u - lw, u)
            node = np.where(right, left + 1, left)
        return node - self._cap
