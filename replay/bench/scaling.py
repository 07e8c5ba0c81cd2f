"""Scaling benchmark: throughput against store size and against concurrent writers/readers.

- **store size**: sampling frames/s (and the index's memory) from stores of growing
  size. A store is grown by copying one recorded race under new race ids (races are
  independent directories), so building 100k frames costs disk copies, not encodes.
- **writers**: 1, 2, 4, ... processes each recording its own race into one store as
  fast as it can; aggregate frames/s until every race is closed (durable).
- **readers**: 1, 2, 4, ... processes each sampling from the largest store;
  aggregate frames/s.

Each process count runs in fresh processes (spawned), in one run, on the same
frames, so the curve is comparable within the run.
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from ulid import ULID

from replay.bench.report import expect, stage
from replay.format import spec as fmt
from replay.store import open_store

Frame = npt.NDArray[np.uint8]


def _write_race(store_path: str, frames_path: str, n: int, out: Any) -> None:
    frames = np.load(frames_path, mmap_mode="r")
    store = open_store(store_path)
    h, w = frames.shape[1:3]
    with store.new_race(env="scaling", height=h, width=w) as writer:
        for i in range(n):
            writer.append(frames[i % len(frames)])
    out.put(writer.stats().written)


def _sample(store_path: str, batches: int, batch_size: int, out: Any) -> None:
    store = open_store(store_path, mode="r")
    with store.sampler(batch_size=batch_size, seed=None) as sampler:
        sampler.sample()  # warm: index, decoder
        start = time.perf_counter()
        for _ in range(batches):
            sampler.sample()
        out.put((batches * batch_size, time.perf_counter() - start, sampler.index.memory))


def _in_processes(target: Any, args: Sequence[tuple[Any, ...]]) -> tuple[list[Any], float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, queue)) for a in args]
    start = time.perf_counter()
    for p in procs:
        p.start()
    results = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a benchmark process failed (exit {p.exitcode})")
    return results, time.perf_counter() - start


def grow_store(store_path: Path, frames: int) -> int:
    """Copy the store's first race under new ids until it holds >= `frames`; returns the total."""
    store = open_store(store_path)
    (source, *_) = store.races()
    total = sum(r.length for r in store.races())
    while total < frames:
        shutil.copytree(
            store_path / fmt.race_key(source.race_id), store_path / fmt.race_key(str(ULID()))
        )
        total += source.length
    return total


def run_scaling_bench(
    work: Path,
    frames: Sequence[Frame],
    *,
    sizes: Sequence[int] = (1_000, 10_000, 100_000),
    processes: Sequence[int] = (1, 2, 4, 8),
    frames_per_writer: int = 200,
    batches: int = 5,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Run the three scaling curves in `work` (a scratch folder); returns the figures."""
    work.mkdir(parents=True, exist_ok=True)
    frames_path = work / "frames.npy"
    np.save(frames_path, np.stack(frames))
    results: dict[str, Any] = {"batch_size": batch_size, "writers": [], "store_size": []}

    expect(2 * len(processes) + len(sizes))
    for k in processes:
        stage(f"scaling: {k} writers")
        store = work / f"writers-{k}"
        args = [(str(store), str(frames_path), frames_per_writer)] * k
        open_store(store)
        written, elapsed = _in_processes(_write_race, args)
        results["writers"].append(
            {"processes": k, "frames": sum(written), "frames_per_s": sum(written) / elapsed}
        )
        shutil.rmtree(store)

    store = work / "sized"
    _in_processes(_write_race, [(str(store), str(frames_path), min(sizes[0], 1000))])
    for size in sizes:
        stage(f"scaling: store of {size:,} frames")
        total = grow_store(store, size)
        ((n, elapsed, index_bytes),), _ = _in_processes(
            _sample, [(str(store), batches, batch_size)]
        )
        results["store_size"].append(
            {
                "frames": total,
                "frames_per_s": n / elapsed,
                "index_bytes": index_bytes,
                "disk_bytes": sum(p.stat().st_size for p in store.rglob("*") if p.is_file()),
            }
        )

    results["readers"] = []
    for k in processes:
        stage(f"scaling: {k} readers")
        out, _ = _in_processes(_sample, [(str(store), batches, batch_size)] * k)
        rate = sum(n / elapsed for n, elapsed, _ in out)
        results["readers"].append({"processes": k, "frames_per_s": rate})
    return results
