"""Sampling benchmark: frames/s into a training batch, disk bytes per frame, peak RSS.

Compares, on the same real frames and in one run:

- ``replay``: `Sampler.sample()` from a replay store (JPEG in Zarr shards, batched
  ``pread``, nvImageCodec decode), at full resolution and at 1/4 size (the decoder's
  DCT-domain scaling, ``Transform(size=(H/4, W/4))``);
- ``jpeg_file`` / ``png_file``: one image file per frame loaded with PIL, by a pool
  of as many threads as cores;
- ``torchrl``: TorchRL's `ReplayBuffer` over `LazyMemmapStorage` holding the frames
  raw (`RandomSampler` for single frames, `SliceSampler` for sequences); skipped
  where TorchRL is not installed;
- ``raw_memmap``: a plain ``numpy.memmap`` of the raw frames, what
  `LazyMemmapStorage` is underneath;
- ``transforms``: replay's frames/s with and without the README's `Transform` and
  others, on a JPEG and a zstd race, and as a fraction of bare decoding on every
  core (`replay.bench.transform_speed`; under ``results["transforms"]``).

Each figure is measured in a fresh process (spawned), so peak RSS is that
approach's own. "warm": the data was just read, so it sits in the page cache;
"cold": the approach's files were evicted from the page cache
(``posix_fadvise(DONTNEED)``) just before the timed batches. TorchRL has no cold
figure: its storage is filled in the measuring process (it cannot be reopened
from disk without copying it into RAM) and pages mapped there cannot be
evicted; ``raw_memmap`` cold stands in for it.

    from replay.bench.sampling import run_sampling_bench
    results = run_sampling_bench("/tmp/bench", frames, n=256, batches=10)
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.bench.environment import torchrl_available
from replay.bench.report import expect, stage
from replay.bench.rss import PeakRss

Frame = npt.NDArray[np.uint8]
#: The approaches that read files per frame.
FILE_FORMATS = {"jpeg_file": ("JPEG", "jpg", {"quality": 90}), "png_file": ("PNG", "png", {})}


def run_sampling_bench(
    store_path: str | os.PathLike[str],
    frames: Sequence[Frame],
    *,
    n: int = 256,
    batches: int = 10,
    batch_size: int = 64,
    seq: tuple[int, int] = (16, 4),
    cold_batches: int = 2,
    approaches: Sequence[str] = (
        "replay",
        "jpeg_file",
        "png_file",
        "torchrl",
        "raw_memmap",
        "transforms",
    ),
    device: str = "cpu",
) -> dict[str, Any]:
    """Build every approach's storage of `frames` (cycled to `n`) under `store_path`
    (a scratch folder, created), then measure sampling; returns the figures.

    `batch_size` frames per batch for single frames; `seq` = (items, length) for
    sequence windows (16 x 4 = 64 frames). Needs 4.3 MB x `n` of disk for the raw
    baseline (1.1 GB at the default n=256). `device="cuda"` decodes replay's batches
    into device memory (nvJPEG) and waits for them; the baselines stay on the host.
    """
    work = Path(store_path)
    work.mkdir(parents=True, exist_ok=True)
    source = work / "frames.npy"
    np.save(source, np.stack(frames))
    h, w = frames[0].shape[:2]
    results: dict[str, Any] = {
        "frames": n,
        "distinct_frames": len(frames),
        "frame_shape": list(frames[0].shape),
        "batch_size": batch_size,
        "sequences": f"{seq[0]}x{seq[1]}",
        "batches_timed": batches,
        "cold_batches_timed": cold_batches,
        "approaches": {},
        "loadavg_before": os.getloadavg()[0],
    }
    expect(len(approaches))
    for approach in approaches:
        stage(f"sample: {approach}")
        if approach == "transforms":
            from replay.bench.transform_speed import run_transform_bench

            results["transforms"] = run_transform_bench(
                work / approach, frames, n=min(n, 64), batches=batches
            )
            continue
        if approach == "torchrl" and not torchrl_available():
            results["approaches"]["torchrl"] = "not installed (pip install torchrl tensordict)"
            continue
        path = work / approach
        built = _build(approach, source, n, path)
        figures: dict[str, Any] = {"bytes_per_frame": built["bytes"] / n, "build_s": built["s"]}
        configs: list[tuple[str, int, int, bool]] = [
            ("batch", batch_size, 1, False),
            ("sequences", seq[0], seq[1], False),
        ]
        if approach == "replay":
            configs.append(("quarter", batch_size, 1, True))
        for label, b, seq_len, quarter in configs:
            for cache in ("warm",) if approach == "torchrl" else ("warm", "cold"):
                job = {
                    "approach": approach,
                    "path": str(path),
                    "source": str(source),
                    "n": n,
                    "batch_size": b,
                    "seq_len": seq_len,
                    "quarter": (h // 4, w // 4) if quarter else None,
                    "batches": batches if cache == "warm" else cold_batches,
                    "cold": cache == "cold",
                    "device": device,
                }
                figures[f"{label}_{cache}"] = _in_fresh_process(job)
        results["approaches"][approach] = figures
    results["ratios"] = _ratios(results["approaches"])
    results["loadavg_after"] = os.getloadavg()[0]  # other work on the machine skews figures
    return results


def _ratios(a: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    ours = a.get("replay")
    if ours is None:
        return out
    raw = a.get("torchrl") if isinstance(a.get("torchrl"), dict) else a.get("raw_memmap")
    for name, other in a.items():
        if name == "replay" or not isinstance(other, dict):
            continue
        for key in ("batch_warm", "sequences_warm", "batch_cold", "sequences_cold"):
            if key in other:
                mine, theirs = ours[key]["frames_per_s"], other[key]["frames_per_s"]
                out[f"{key}_fps_vs_{name}"] = mine / theirs
        out[f"bytes_per_frame_{name}_over_replay"] = (
            other["bytes_per_frame"] / ours["bytes_per_frame"]
        )
    if raw is not None:
        out["quarter_warm_fps_vs_raw_batch_warm"] = (
            ours["quarter_warm"]["frames_per_s"] / raw["batch_warm"]["frames_per_s"]
        )
    return out


# -- building each approach's storage --------------------------------------------------------


def _build(approach: str, source: Path, n: int, path: Path) -> dict[str, float]:
    started = time.perf_counter()
    frames = np.load(source, mmap_mode="r")
    h, w = frames.shape[1:3]
    if approach == "replay":
        from replay.store import open_store

        store = open_store(path)
        with store.new_race(env="bench", height=h, width=w) as writer:
            for i in range(n):
                writer.append(frames[i % len(frames)])
    elif approach in FILE_FORMATS:
        from PIL import Image

        fmt, suffix, options = FILE_FORMATS[approach]
        path.mkdir(parents=True, exist_ok=True)

        def save(i: int) -> None:
            image = Image.fromarray(np.ascontiguousarray(frames[i % len(frames)]))
            image.save(path / f"{i:07d}.{suffix}", format=fmt, **options)

        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            list(pool.map(save, range(n)))
    elif approach == "raw_memmap":
        path.mkdir(parents=True, exist_ok=True)
        raw = np.lib.format.open_memmap(path / "frames.npy", "w+", np.uint8, (n, h, w, 3))
        for i in range(n):
            raw[i] = frames[i % len(frames)]
        raw.flush()
        del raw
    # torchrl's memmap storage is filled in the measuring process (it cannot be reopened)
    elapsed = time.perf_counter() - started
    nbytes = n * h * w * 3 if approach == "torchrl" else _du(path)
    return {"s": elapsed, "bytes": float(nbytes)}


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _evict(path: Path) -> None:
    """Drop a folder's files from the page cache (written back first, so they are clean)."""
    for p in path.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _warm(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass


# -- measuring, in a fresh process -----------------------------------------------------------


def _in_fresh_process(job: dict[str, Any]) -> dict[str, float]:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        result: dict[str, float] = pool.submit(_measure, job).result()
    return result


def _measure(job: dict[str, Any]) -> dict[str, float]:
    path = Path(job["path"])
    draw = _sampler_for(job)
    draw()  # warm-up: imports, thread pools, decoder
    if job["cold"]:
        _evict(path)
    else:
        _warm(path)
    frames = job["batch_size"] * job["seq_len"]
    with PeakRss() as rss:
        started = time.perf_counter()
        for _ in range(job["batches"]):
            draw()
        elapsed = time.perf_counter() - started
    return {
        "frames_per_s": job["batches"] * frames / elapsed,
        "ms_per_batch": elapsed / job["batches"] * 1000,
        "peak_rss_mb": rss.peak / 2**20,
        "rss_growth_mb": (rss.peak - rss.start) / 2**20,
    }


def _sampler_for(job: dict[str, Any]) -> Callable[[], Any]:
    approach = job["approach"]
    if approach == "replay":
        return _replay_sampler(job)
    if approach in FILE_FORMATS:
        return _file_sampler(job)
    if approach == "torchrl":
        return _torchrl_sampler(job)
    return _memmap_sampler(job)


def _replay_sampler(job: dict[str, Any]) -> Callable[[], Any]:
    from replay.codec.transform import Transform
    from replay.store import open_store

    store = open_store(job["path"], mode="r")
    sampler = store.sampler(batch_size=job["batch_size"], seq_len=job["seq_len"], seed=0)
    transform = Transform(size=tuple(job["quarter"])) if job["quarter"] else None
    if job.get("device", "cpu") == "cpu":
        return lambda: sampler.sample(transform=transform)
    import cupy

    def on_device() -> Any:
        batch = sampler.sample(transform=transform, device="cuda", out="cupy")
        cupy.cuda.get_current_stream().synchronize()  # the frames are really there
        return batch

    return on_device


def _windows(job: dict[str, Any], rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """(B * L,) frame numbers: B windows of L consecutive frames, uniformly placed."""
    n, b, seq = job["n"], job["batch_size"], job["seq_len"]
    starts = rng.integers(0, n - seq + 1, size=b)
    index: npt.NDArray[np.int64] = (starts[:, None] + np.arange(seq)).reshape(-1)
    return index


def _file_sampler(job: dict[str, Any]) -> Callable[[], Any]:
    from PIL import Image

    _, suffix, _ = FILE_FORMATS[job["approach"]]
    folder = Path(job["path"])
    h, w = np.load(job["source"], mmap_mode="r").shape[1:3]
    rng = np.random.default_rng(0)
    pool = ThreadPoolExecutor(os.cpu_count() or 2)

    def draw() -> Any:
        index = _windows(job, rng)
        out = np.empty((len(index), h, w, 3), dtype=np.uint8)

        def load(k: int) -> None:
            with Image.open(folder / f"{int(index[k]):07d}.{suffix}") as im:
                out[k] = np.asarray(im.convert("RGB"))

        list(pool.map(load, range(len(index))))
        return out.reshape(job["batch_size"], job["seq_len"], h, w, 3)

    return draw


def _memmap_sampler(job: dict[str, Any]) -> Callable[[], Any]:
    raw = np.load(Path(job["path"]) / "frames.npy", mmap_mode="r")
    rng = np.random.default_rng(0)

    def draw() -> Any:
        index = _windows(job, rng)
        return raw[np.sort(index)]

    return draw


def _torchrl_sampler(job: dict[str, Any]) -> Callable[[], Any]:
    import logging

    import torch
    from tensordict import TensorDict  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.data import LazyMemmapStorage, ReplayBuffer  # type: ignore[import-untyped, import-not-found, unused-ignore]
    from torchrl.data.replay_buffers import RandomSampler, SliceSampler  # type: ignore[import-untyped, import-not-found, unused-ignore]

    logging.getLogger("torchrl").setLevel(logging.WARNING)
    n, seq = job["n"], job["seq_len"]
    frames = np.load(job["source"], mmap_mode="r")
    path = Path(job["path"])
    path.mkdir(parents=True, exist_ok=True)
    storage = LazyMemmapStorage(n, scratch_dir=str(path), existsok=True)
    sampler = RandomSampler() if seq == 1 else SliceSampler(slice_len=seq, traj_key="episode")
    buffer = ReplayBuffer(storage=storage, sampler=sampler, batch_size=job["batch_size"] * seq)
    chunk = 16
    for start in range(0, n, chunk):
        idx = [i % len(frames) for i in range(start, min(n, start + chunk))]
        pixels = torch.from_numpy(np.ascontiguousarray(frames[idx]))
        episode = torch.zeros(len(idx), dtype=torch.int64)
        buffer.extend(TensorDict({"pixels": pixels, "episode": episode}, batch_size=[len(idx)]))
    return lambda: buffer.sample()["pixels"]
