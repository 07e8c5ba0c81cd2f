"""PyTorch integration: batches as tensors, in the training loop or through a DataLoader.

In one process, iterate a sampler with ``out="torch"``: the frames are decoded
into a NumPy buffer that the tensor shares (no copy), or straight into device
memory with ``device="cuda"``; the next batch is read while this one trains::

    sampler = store.sampler("prioritized", batch_size=64, seq_len=4, out="torch")
    for batch in sampler:
        frames = batch.frames.to("cuda", non_blocking=True)   # (64, 4, 900, 1600, 3) uint8
        loss = (batch.weights * td_error(frames, batch.action, batch.reward)).mean()
        sampler.update_priorities(batch.keys, td.abs() + 1e-3)

To spread decoding over more CPU cores, `ReplayDataset` runs one sampler per
DataLoader worker (each opens the store read-only, seeded per worker); the
workers hand whole batches back through shared memory::

    loader = make_loader("./replay-data", batch_size=64, num_workers=4)
    for batch in loader: ...

Priorities live in the sampler that draws, so a prioritized sampler belongs in
the learner's process (the first form); workers suit uniform and recent sampling.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from replay.batch import Batch
from replay.samplers import Kind
from replay.store import open_store
from replay.transform import Transform

__all__ = ["ReplayDataset", "make_loader", "to_device"]


class ReplayDataset(IterableDataset[Batch]):
    """Batches of a store as an `IterableDataset` (use with ``DataLoader(batch_size=None)``).

    Args:
        store: path of the store (opened read-only in each worker).
        kind: ``"uniform"`` or ``"recent"`` (see the module doc for ``"prioritized"``).
        batches: how many batches each worker yields (None: for ever).
        seed: base seed; worker ``i`` samples with a seed derived from ``(seed, i)``.
        transform: the fused transform applied while decoding.
        sampler_options: more `Store.sampler` keywords (batch_size, seq_len, filters...).
    """

    def __init__(
        self,
        store: str | os.PathLike[str],
        kind: Kind = "uniform",
        *,
        batches: int | None = None,
        seed: int | None = None,
        transform: Transform | None = None,
        **sampler_options: Any,
    ) -> None:
        super().__init__()
        if kind == "prioritized":
            raise ValueError(
                "a prioritized sampler must live in the learner's process (its priorities "
                "are updated there): iterate store.sampler('prioritized', out='torch') instead"
            )
        self.store = os.fspath(store)
        self.kind: Kind = kind
        self.batches = batches
        self.seed = seed
        self.transform = transform
        self.sampler_options = sampler_options

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        seed = self.seed
        if seed is not None:
            seed = int(np.random.SeedSequence([seed, worker]).generate_state(1, np.uint64)[0])
        store = open_store(self.store, mode="r")
        with store.sampler(self.kind, seed=seed, **self.sampler_options) as sampler:
            yield from sampler.batches(
                device="cpu", out="torch", transform=self.transform, limit=self.batches
            )


def make_loader(
    store: str | os.PathLike[str],
    kind: Kind = "uniform",
    *,
    num_workers: int = 2,
    pin_memory: bool = False,
    **dataset_options: Any,
) -> DataLoader[Batch]:
    """A DataLoader of `ReplayDataset` batches (workers start with ``spawn``).

    ``spawn`` because the parent may already run the reader's and decoder's
    threads, which a forked child would inherit in an unknown state.
    """
    dataset = ReplayDataset(store, kind, **dataset_options)
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        multiprocessing_context="spawn" if num_workers else None,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def to_device(batch: Batch, device: str | torch.device, *, non_blocking: bool = True) -> Batch:
    """A copy of a torch `Batch` with every tensor on `device` (frames, weights, steps)."""

    def move(value: Any) -> Any:
        return value.to(device, non_blocking=non_blocking) if torch.is_tensor(value) else value

    return Batch(
        frames=move(batch.frames),
        keys=batch.keys,
        weights=move(batch.weights),
        steps={name: move(value) for name, value in batch.steps.items()},
    )
