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

import atexit
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from replay.codec.transform import Transform
from replay.read.batch import Batch
from replay.read.prefetch import prefetched
from replay.sample.sampler import Kind
from replay.store import open_store

__all__ = ["ReplayDataset", "make_loader", "to_device"]

#: Longest wait, at a worker's exit, for a queue feeder thread to send what it holds.
FEEDER_DRAIN_S = 5.0
_feeders_drained = False
#: How `make_loader` starts its workers.
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


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
        if info is not None:
            _drain_feeders_at_exit()
        store = open_store(self.store, mode="r")
        options = {"transform": self.transform, **self.sampler_options}
        with store.sampler(self.kind, seed=seed, **options) as sampler:

            def make() -> Batch:
                batch = sampler.sample(device="cpu", out="torch", transform=self.transform)
                return batch if info is None else in_shared_memory(batch)

            yield from prefetched(make, limit=self.batches)


def _drain_feeders_at_exit() -> None:
    """In a worker: at exit, wait for its queues' feeder threads to send what they hold.

    A worker that stops (the loop it fed ended) exits without waiting for the feeder
    thread that pickles its last batches. Pickling a tensor calls into torch's C++
    code, which gives up the GIL; a thread that is there when the interpreter
    finalizes is ended by ``pthread_exit`` through C++ frames and the worker aborts
    ("terminate called without an active exception", SIGABRT). Batches already in
    shared memory (`in_shared_memory`) pickle to a few hundred bytes each, so the
    feeders finish at once. Registered once per process.
    """
    global _feeders_drained
    if _feeders_drained:
        return
    _feeders_drained = True

    def drain() -> None:
        for thread in threading.enumerate():
            if thread.name == "QueueFeederThread" and thread is not threading.current_thread():
                thread.join(timeout=FEEDER_DRAIN_S)

    atexit.register(drain)


def in_shared_memory(batch: Batch) -> Batch:
    """`batch` with its tensors moved into shared memory, as a worker hands them back.

    A DataLoader worker would otherwise copy them there on its queue's feeder thread,
    inside torch's C++ code; a worker that exits while that copy runs (the loop that
    consumed it ended: ``break``) aborts (SIGABRT, "terminate called without an active
    exception"). Done on the prefetch thread instead, which is joined before exit.
    """
    return _map_tensors(batch, lambda value: value.share_memory_())  # type: ignore[no-untyped-call]


def make_loader(
    store: str | os.PathLike[str],
    kind: Kind = "uniform",
    *,
    num_workers: int = 2,
    pin_memory: bool = False,
    **dataset_options: Any,
) -> DataLoader[Batch]:
    """A DataLoader of `ReplayDataset` batches, its workers forked from a fork server.

    Not plain ``fork``: the parent may already run the reader's and decoder's threads,
    which a forked child would inherit in an unknown state. The fork server is a fresh
    process that imports torch and `replay` once (``forkserver`` with this module
    preloaded), and each worker is forked from it, instead of every worker importing
    them again (``spawn``, where forkserver is missing). As with ``spawn``, a script
    that makes a loader needs ``if __name__ == "__main__":``.
    """
    dataset = ReplayDataset(store, kind, **dataset_options)
    context = None
    if num_workers:
        context = multiprocessing.get_context(START_METHOD)
        if START_METHOD == "forkserver":
            context.set_forkserver_preload([__name__])
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        multiprocessing_context=context,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


def to_device(batch: Batch, device: str | torch.device, *, non_blocking: bool = True) -> Batch:
    """A copy of a torch `Batch` with every tensor on `device` (frames, weights, steps)."""

    return _map_tensors(batch, lambda value: value.to(device, non_blocking=non_blocking))


def _map_tensors(batch: Batch, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
    """A `Batch` with `fn` applied to each of its tensors (frames, weights, steps)."""

    def apply(value: Any) -> Any:
        return fn(value) if torch.is_tensor(value) else value

    return Batch(
        frames=apply(batch.frames),
        keys=batch.keys,
        weights=apply(batch.weights),
        steps={name: apply(value) for name, value in batch.steps.items()},
    )
