"""``replay bench torchrl``: TorchRL's ReplayBuffer over `ReplayStorage` vs over
`LazyMemmapStorage`, on the same real frames.

Both buffers hold the same `frames` real frames (cycled from the source store) in
races of `race_len` steps: `ReplayStorage` as JPEG races in a store, `LazyMemmapStorage`
as raw uint8 in a memory-mapped file. Per buffer, in one process, one after the other:

- ``fill_s`` and ``disk_bytes``: writing the frames (replay: `Store.new_race`;
  memmap: ``buffer.extend``) and what they take on disk;
- ``random`` and ``slice``: decoded frames/s of ``buffer.sample()`` with
  ``RandomSampler`` (batch `batch`) and ``SliceSampler(slice_len=seq_len)`` (the same
  number of frames as `batch` // `seq_len` slices), and the peak RSS growth while sampling.

Then ``slice_keys``: `SliceSampler` drawing positions (no frame read) through a
`ReplayStorage` over a store of `key_frames` steps (default 1M, races of `key_race_len`,
16x16 frames: only the step arrays matter): opening the storage, the memory of its
columns, and a draw's latency, with and without ``cache_values``; and the same draws
over TorchRL's `LazyTensorStorage` holding the same episode ids.

    replay bench torchrl --frames-from ./replay-data --out docs/results/torchrl-cpu.json
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt

from replay.bench.cli import frames_from_option, load_frames, out_option, work_option, write_results
from replay.bench.keys import _latency_us
from replay.bench.report import progress
from replay.bench.rss import PeakRss
from replay.bench.sampling import _du
from replay.bench.scaling import grow_store
from replay.store import open_store


def run_torchrl_bench(
    frames: Sequence[npt.NDArray[np.uint8]],
    work: Path,
    *,
    n: int = 96,
    race_len: int = 32,
    batch: int = 16,
    seq_len: int = 4,
    batches: int = 8,
    key_frames: int = 1_000_000,
    key_race_len: int = 1000,
) -> dict[str, Any]:
    """The figures described in the module doc, as a JSON-able dict."""
    from torchrl.data import LazyMemmapStorage

    from replay.integrations.torchrl import ReplayStorage

    logging.getLogger("torchrl").setLevel(logging.WARNING)
    source = [frames[i % len(frames)] for i in range(n)]
    results: dict[str, Any] = {
        "setup": {
            "frames": n,
            "race_len": race_len,
            "batch": batch,
            "seq_len": seq_len,
            "batches": batches,
            "frame_shape": list(source[0].shape),
        },
    }
    store_path = work / "store"
    start = time.perf_counter()
    store = open_store(store_path)
    for first in range(0, n, race_len):
        with store.new_race(env="bench", height=source[0].shape[0], width=source[0].shape[1]) as w:
            for i in range(first, min(n, first + race_len)):
                w.append(source[i], terminated=i == min(n, first + race_len) - 1)
    replay_storage = ReplayStorage(store)
    results["replay_storage"] = {
        "fill_s": time.perf_counter() - start,
        "disk_bytes": _du(store_path),
    }
    results["replay_storage"].update(_sampling(replay_storage, batch, seq_len, batches))
    replay_storage.close()

    memmap_path = work / "memmap"
    start = time.perf_counter()
    memmap = LazyMemmapStorage(n, scratch_dir=str(memmap_path), existsok=True)
    _fill_memmap(memmap, source, race_len)
    results["lazy_memmap"] = {"fill_s": time.perf_counter() - start, "disk_bytes": _du(memmap_path)}
    results["lazy_memmap"].update(_sampling(memmap, batch, seq_len, batches))

    r, m = results["replay_storage"], results["lazy_memmap"]
    results["ratios"] = {
        "disk_memmap_over_replay": m["disk_bytes"] / r["disk_bytes"],
        "random_fps_replay_over_memmap": r["random"]["frames_per_s"] / m["random"]["frames_per_s"],
        "slice_fps_replay_over_memmap": r["slice"]["frames_per_s"] / m["slice"]["frames_per_s"],
    }
    if key_frames:
        results["slice_keys"] = _slice_keys(work / "keys", key_frames, key_race_len, batch, seq_len)
    return results


def _fill_memmap(storage: Any, source: Sequence[npt.NDArray[np.uint8]], race_len: int) -> None:
    import torch
    from tensordict import TensorDict
    from torchrl.data import ReplayBuffer

    buffer = ReplayBuffer(storage=storage)
    chunk = 16
    for first in range(0, len(source), chunk):
        idx = list(range(first, min(len(source), first + chunk)))
        pixels = torch.from_numpy(np.stack([source[i] for i in idx]))
        episode = torch.tensor([i // race_len for i in idx])
        buffer.extend(TensorDict({"pixels": pixels, "episode": episode}, batch_size=[len(idx)]))


def _sampling(storage: Any, batch: int, seq_len: int, batches: int) -> dict[str, Any]:
    from torchrl.data import ReplayBuffer
    from torchrl.data.replay_buffers import RandomSampler, SliceSampler

    out: dict[str, Any] = {}
    samplers: dict[str, Callable[[], Any]] = {
        "random": RandomSampler,
        "slice": lambda: SliceSampler(slice_len=seq_len, traj_key="episode"),
    }
    for name, make in samplers.items():
        buffer = ReplayBuffer(storage=storage, sampler=make(), batch_size=batch)
        buffer.sample()  # warm: lazy structures, first decode
        with PeakRss() as rss:
            start = time.perf_counter()
            for _ in range(batches):
                pixels = buffer.sample()["pixels"]
                assert pixels.shape[0] == batch
            seconds = time.perf_counter() - start
        out[name] = {"frames_per_s": batch * batches / seconds, "rss_growth_mb": rss.growth_mb}
    return out


def _slice_keys(path: Path, frames: int, race_len: int, batch: int, seq_len: int) -> dict[str, Any]:
    from torchrl.data import LazyTensorStorage, ReplayBuffer
    from torchrl.data.replay_buffers import SliceSampler

    from replay.integrations.torchrl import ReplayStorage

    _index_only_store(path, frames, race_len)
    start = time.perf_counter()
    storage = ReplayStorage(open_store(path, mode="r"), refresh_interval=3600)
    open_s = time.perf_counter() - start
    columns = storage[:]
    sampler = SliceSampler(slice_len=seq_len, traj_key="episode")
    figures = {
        "frames": len(storage),
        "open_s": open_s,
        "columns_bytes": int(columns.bytes()),
        "draw_us": _latency_us(lambda: sampler.sample(storage, batch), 20),
    }
    cached = SliceSampler(slice_len=seq_len, traj_key="episode", cache_values=True)
    figures["draw_cached_us"] = _latency_us(lambda: cached.sample(storage, batch), 20)
    # the same draws over TorchRL's own storage holding the same episode ids
    baseline = LazyTensorStorage(len(storage))
    ReplayBuffer(storage=baseline).extend(columns.select("episode", ("next", "done")))
    plain = SliceSampler(slice_len=seq_len, traj_key="episode")
    figures["lazy_tensor_draw_us"] = _latency_us(lambda: plain.sample(baseline, batch), 20)
    storage.close()
    return figures


def _index_only_store(path: Path, frames: int, race_len: int) -> None:
    """Races of `race_len` steps of 16x16 frames, copied until the store holds >= `frames`
    steps: what `ReplayStorage` indexes (step arrays) at the size of a big store, without
    its pixels."""
    store = open_store(path)
    with store.new_race(env="keys", height=16, width=16) as writer:
        frame = np.zeros((16, 16, 3), dtype=np.uint8)
        for step in range(race_len):
            writer.append(frame, reward=float(step), terminated=step == race_len - 1)
    grow_store(path, frames)


@click.command(name="torchrl")
@frames_from_option()
@click.option("--frames", "n", default=96, show_default=True, help="Frames in each buffer.")
@click.option("--race-len", default=32, show_default=True, help="Steps per race (episode).")
@click.option("--batch", default=16, show_default=True, help="Frames per batch.")
@click.option("--seq-len", default=4, show_default=True, help="SliceSampler's slice length.")
@click.option("--batches", default=8, show_default=True, help="Timed batches per figure.")
@click.option(
    "--key-frames",
    default=1_000_000,
    show_default=True,
    help="Steps of the store for SliceSampler's key draws (0: skip).",
)
@click.option("--key-race-len", default=1000, show_default=True, help="Steps per race there.")
@work_option
@out_option
def command(
    frames_from: str,
    n: int,
    race_len: int,
    batch: int,
    seq_len: int,
    batches: int,
    key_frames: int,
    key_race_len: int,
    work: str | None,
    out: str | None,
) -> None:
    """TorchRL ReplayBuffer over ReplayStorage vs LazyMemmapStorage: frames/s, RSS, disk.

    \b
      replay bench torchrl --frames-from ./replay-data --out docs/results/torchrl-cpu.json
    """
    if min(n, race_len, batch, seq_len, batches) < 1 or batch % seq_len:
        raise click.BadParameter("sizes must be positive and --batch a multiple of --seq-len")
    frames = load_frames(frames_from, n)  # cycled if the store holds fewer
    with tempfile.TemporaryDirectory(dir=work) as scratch, progress("bench torchrl"):
        results = run_torchrl_bench(
            frames,
            Path(scratch),
            n=n,
            race_len=race_len,
            batch=batch,
            seq_len=seq_len,
            batches=batches,
            key_frames=key_frames,
            key_race_len=key_race_len,
        )
    results["setup"]["frames_from"] = frames_from
    write_results("torchrl", results, out)
