"""n-step returns: what a TD learner bootstraps from, computed beside the batch read.

For every step t of a batch (each of the B x L positions) and ``n_step=N``::

    returns[t]  = r_t + g r_{t+1} + ... + g^(m-1) r_{t+m-1}
    discount[t] = g^m, or 0 when one of those m steps terminated the race
    next_step[t] = t + m          the state to bootstrap from: target = returns + discount * V(next)

m <= N rewards are summed; the sum is cut at the step that terminated the race
(its reward counts, nothing after it does) and at the end of committed data: a
reward counts only if the frame after it is committed (or its step terminated),
so the bootstrap frame is always there. A step whose successor is not committed
yet (the newest step of a race being recorded, or the last step of a truncated
or unfinished race) has m = 0: returns 0, discount 1, next step itself.

The reward at step t is the reward the action at frame t earned (`capture.source.Step`).
Everything is vectorised over the batch: one gather of the (B, L, N) rewards and
terminated flags from the reader's cached step chunks, then NumPy.

    sampler = store.sampler(batch_size=32, n_step=3, gamma=0.99, next_frames=True)
    batch = sampler.sample()
    target = batch.returns + batch.discount * q(batch.next_frames).max(-1)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from replay.read.batch import EncodedBatch, NStepArrays, SampleKeys

if TYPE_CHECKING:
    from replay.read.reader import Reader


@dataclass(frozen=True)
class NStep:
    """The n-step parameters of a sampler: `n` rewards at most, discount `gamma`, and
    whether the bootstrap frames are read and decoded too (`next_frames`)."""

    n: int
    gamma: float = 0.99
    next_frames: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ValueError(f"n_step must be a positive integer, got {self.n!r}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")

    @classmethod
    def of(cls, n_step: int | None, gamma: float, next_frames: bool) -> NStep | None:
        """The parameters as a sampler takes them (``n_step=None``: no n-step returns)."""
        if n_step is None:
            if next_frames:
                raise ValueError("next_frames=True needs n_step (the bootstrap is n steps on)")
            return None
        return cls(n_step, gamma, next_frames)


def compute(
    rewards: npt.NDArray[Any],
    terminated: npt.NDArray[Any],
    steps: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    gamma: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """(returns, discount, next_steps) from the (B, L, N) rewards and terminated flags
    at steps t..t+N-1 (any value past a race's committed `lengths` (B,) is ignored)."""
    n = rewards.shape[-1]
    at = steps[..., None] + np.arange(n, dtype=np.int64)  # (B, L, N)
    length = lengths[:, None, None]
    term = terminated.astype(bool) & (at < length)
    # a reward counts if its step is committed and so is the frame after it (or it ended)
    usable = (at < length) & ((at + 1 < length) | term)
    ended_before = np.cumsum(term, axis=-1) - term > 0
    taken = np.logical_and.accumulate(usable & ~ended_before, axis=-1)
    powers = gamma ** np.arange(n, dtype=np.float64)
    returns = np.where(taken, rewards.astype(np.float64) * powers, 0.0).sum(-1)
    m = taken.sum(-1)
    done = (taken & term).any(-1)
    discount = np.where(done, 0.0, np.float64(gamma) ** m)
    next_steps = np.minimum(steps + m, lengths[:, None] - 1)
    return returns.astype(np.float32), discount.astype(np.float32), next_steps.astype(np.int64)


def fetch(reader: Reader, keys: SampleKeys, params: NStep) -> EncodedBatch:
    """`Reader.fetch` of `keys` with the n-step values attached (`EncodedBatch.nstep`).

    With ``next_frames`` the bootstrap frames are read in the same batched read (the
    window's and the bootstrap steps side by side, ranges coalesced per shard).
    """
    entries = [reader.index.entry(r) for r in keys.race_ids]
    lengths = np.array([e.length for e in entries], dtype=np.int64)
    at = keys.steps[..., None] + np.arange(params.n, dtype=np.int64)
    clipped = np.minimum(at, lengths[:, None, None] - 1)
    rewards = np.empty(at.shape, np.float32)
    terminated = np.empty(at.shape, bool)
    race_ids = np.asarray(keys.race_ids)
    for race_id in dict.fromkeys(keys.race_ids):  # one gather per race and column
        rows = np.flatnonzero(race_ids == race_id)
        entry = entries[rows[0]]
        rewards[rows] = reader.step_values(entry, "reward", clipped[rows])
        terminated[rows] = reader.step_values(entry, "terminated", clipped[rows])
    returns, discount, next_steps = compute(rewards, terminated, keys.steps, lengths, params.gamma)
    if not params.next_frames:
        encoded = reader.fetch(keys)
        return replace(encoded, nstep=NStepArrays(returns, discount, next_steps))
    seq = keys.seq_len
    both = SampleKeys(
        race_ids=keys.race_ids,
        steps=np.concatenate([keys.steps, next_steps], axis=1),
        weights=keys.weights,
        probabilities=keys.probabilities,
    )
    read = reader.fetch(both)
    return EncodedBatch(
        keys=keys,
        frames=[row[:seq] for row in read.frames],
        height=read.height,
        width=read.width,
        steps={name: value[:, :seq] for name, value in read.steps.items()},
        codec=read.codec,
        shard_size=read.shard_size,
        formats=read.formats,
        nstep=NStepArrays(
            returns, discount, next_steps, next_frames=[row[seq:] for row in read.frames]
        ),
    )


def with_next_frames(encoded: EncodedBatch) -> EncodedBatch:
    """The batch with its bootstrap frames after each item's window ((B, 2L) keys and
    frames), to decode both in one call; unchanged without bootstrap frames."""
    ns = encoded.nstep
    if ns is None or ns.next_frames is None:
        return encoded
    keys = encoded.keys
    both = SampleKeys(
        race_ids=keys.race_ids,
        steps=np.concatenate([keys.steps, ns.next_steps], axis=1),
        weights=keys.weights,
        probabilities=keys.probabilities,
    )
    frames = [a + b for a, b in zip(encoded.frames, ns.next_frames, strict=True)]
    return EncodedBatch(
        keys=both,
        frames=frames,
        height=encoded.height,
        width=encoded.width,
        steps={},
        codec=encoded.codec,
        shard_size=encoded.shard_size,
        formats=encoded.formats,
    )
