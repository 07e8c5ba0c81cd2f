"""Choosing keys at scale: how long drawing a batch takes as the store grows to millions
of frames, against TorchRL's samplers on the same number of items.

TorchRL's `SliceSampler` is known to slow down with the buffer's size (pytorch/rl
#2669: 4.8 ms a batch at 5M items); a learner pays that on every batch. Choosing keys
reads only the index, never a frame, so the stores here hold race metadata only: one
race is created through the `Store` API, given `race_len` committed steps in its
metadata, and copied under new ids until the store holds the size asked for (no
pixels: a 5M-frame store takes a few MB). TorchRL gets the same items: a
`LazyTensorStorage` holding only the trajectory ids its samplers need.

Per size, in one process:

- replay: index load (seconds, bytes); `sample_keys` latency for uniform single frames
  (64), uniform sequences (16 x 4) and prioritized (64), the sum tree's build time, and
  `update_priorities` of 64 keys;
- TorchRL: `SliceSampler(slice_len=4)` (16 x 4, with and without ``cache_values``),
  `PrioritizedSampler` (64) and its `update_priority` (where torchrl has its C++
  sum tree; a wheel without it says so under ``prioritized_error``).

    replay bench keys --sizes 10000,100000,1000000,5000000 --out docs/results/keys-cpu.json
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from replay.bench.environment import torchrl_available
from replay.bench.report import expect, stage
from replay.bench.scaling import grow_store
from replay.format import spec as fmt
from replay.store import open_store

BATCH = 64
SEQ_LEN = 4


def _latency_us(draw: Callable[[], Any], repeats: int) -> dict[str, float]:
    draw()  # warm: lazy structures built on first use
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        draw()
        times.append(time.perf_counter() - start)
    us = np.array(times) * 1e6
    return {"p50": float(np.percentile(us, 50)), "p99": float(np.percentile(us, 99))}


def build_store(path: Path, frames: int, race_len: int) -> int:
    """A metadata-only store of races of `race_len` steps holding >= `frames`; the races."""
    store = open_store(path)
    with store.new_race(env="keys", fps=30) as writer:
        pass
    doc_path = path / fmt.race_key(writer.race_id) / fmt.METADATA
    doc = json.loads(doc_path.read_text())
    doc["attributes"]["length"] = race_len
    doc_path.write_text(json.dumps(doc))
    return grow_store(path, frames) // race_len


def _replay_figures(path: Path, repeats: int) -> dict[str, Any]:
    store = open_store(path, mode="r")
    start = time.perf_counter()
    uniform = store.sampler("uniform", batch_size=BATCH, seed=0)
    uniform.sample_keys()  # the index is read on the first draw
    load_s = time.perf_counter() - start
    sequences = store.sampler("uniform", batch_size=BATCH // SEQ_LEN, seq_len=SEQ_LEN, seed=0)
    start = time.perf_counter()
    prioritized = store.sampler("prioritized", batch_size=BATCH, seed=0, save_priorities=False)
    keys = prioritized.sample_keys()  # the index is read, the sum tree built, on the first draw
    build_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    figures = {
        "index_load_s": load_s,
        "index_bytes": uniform.index.memory,
        "uniform_us": _latency_us(uniform.sample_keys, repeats),
        "sequences_us": _latency_us(sequences.sample_keys, repeats),
        "prioritized_build_s": build_s,
        "prioritized_us": _latency_us(prioritized.sample_keys, repeats),
        "update_us": _latency_us(
            lambda: prioritized.update_priorities(keys.keys, rng.random(BATCH)), repeats
        ),
    }
    for sampler in (uniform, sequences, prioritized):
        sampler.close()
    return figures


def _torchrl_figures(frames: int, race_len: int, repeats: int) -> dict[str, Any]:
    import logging

    import torch
    from tensordict import TensorDict  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.data import LazyTensorStorage, ReplayBuffer  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.data.replay_buffers import PrioritizedSampler, SliceSampler  # type: ignore[import-untyped, import-not-found, unused-ignore]

    logging.getLogger("torchrl").setLevel(logging.WARNING)
    episodes = torch.arange(frames, dtype=torch.int64) // race_len
    items = TensorDict({"episode": episodes}, batch_size=[frames])

    def buffer(sampler: Any) -> Any:
        rb = ReplayBuffer(storage=LazyTensorStorage(frames), sampler=sampler, batch_size=BATCH)
        rb.extend(items)
        return rb

    figures: dict[str, Any] = {}
    for name, cache in (("slice_us", False), ("slice_cached_us", True)):
        rb = buffer(SliceSampler(slice_len=SEQ_LEN, traj_key="episode", cache_values=cache))
        figures[name] = _latency_us(rb.sample, repeats)
        del rb
    start = time.perf_counter()
    try:
        rb = buffer(PrioritizedSampler(max_capacity=frames, alpha=0.6, beta=0.4))
    except RuntimeError as e:  # torchrl built without its C++ sum tree (torchrl._torchrl)
        figures["prioritized_error"] = str(e)
        return figures
    figures["prioritized_build_s"] = time.perf_counter() - start
    figures["prioritized_us"] = _latency_us(rb.sample, repeats)
    index = torch.randint(0, frames, (BATCH,))
    figures["update_us"] = _latency_us(
        lambda: rb.update_priority(index, torch.rand(BATCH)), repeats
    )
    return figures


def run_keys_bench(
    work: Path,
    *,
    sizes: Sequence[int] = (10_000, 100_000, 1_000_000, 5_000_000),
    race_len: int = 1_000,
    repeats: int = 200,
    torchrl: bool = True,
) -> dict[str, Any]:
    """Key-drawing figures for each store size (frames), built in `work`."""
    torchrl = torchrl and torchrl_available()
    rows = []
    expect(len(sizes))
    for size in sizes:
        stage(f"keys: {size:,} frames")
        path = work / f"keys-{size}"
        races = build_store(path, size, race_len)
        row: dict[str, Any] = {
            "frames": races * race_len,
            "races": races,
            "replay": _replay_figures(path, repeats),
        }
        if torchrl:
            row["torchrl"] = _torchrl_figures(races * race_len, race_len, repeats)
            row["sequences_vs_torchrl_slice"] = (
                row["torchrl"]["slice_us"]["p50"] / row["replay"]["sequences_us"]["p50"]
            )
        rows.append(row)
        shutil.rmtree(path)
    return {
        "batch_size": BATCH,
        "seq_len": SEQ_LEN,
        "race_len": race_len,
        "torchrl_measured": torchrl,  # False: asked not to, or torchrl does not import
        "sizes": rows,
    }
