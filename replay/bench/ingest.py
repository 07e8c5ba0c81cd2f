"""Ingest benchmark: what the driver pays per frame, and how fast frames become durable.

Compares, on the same real frames and in one run:

- ``replay``: `Writer.append` (ring copy; encode and disk in the background);
- ``png_file``: one PNG file per frame saved with PIL (the screenshot-to-disk
  approach this project replaces);
- ``jpeg_file``: one JPEG q90 file per frame saved with PIL;
- ``raw_memmap``: a preallocated ``numpy.memmap`` of raw frames (flushed at the end);
- ``torchrl``: TorchRL's `ReplayBuffer` over `LazyMemmapStorage` (raw, on disk),
  where TorchRL is installed;
- ``zarr_naive``: zarr-python writing each frame into a sharded array with the same
  JPEG codec through its own API (``array[i] = frame``): every write rewrites the
  whole shard.

Latency is measured with the driver paced at `fps` (what a game loop sees);
throughput ("sustained") with the driver appending as fast as it can, until the
last frame is durable (the writer closed, the files written and fsynced).
`replay.bench.writers` compares the writer kinds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.bench.environment import torchrl_available
from replay.bench.report import expect, stage
from replay.bench.rss import PeakRss
from replay.store import open_store

Frame = npt.NDArray[np.uint8]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/max in microseconds."""
    us = np.asarray(seconds) * 1e6
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "max_us": float(us.max()),
    }


def paced(
    frames: Sequence[Frame],
    n: int,
    fps: float,
    save: Callable[[int, Frame], Any],
    stop: Callable[[], bool] | None = None,
) -> list[float]:
    """Seconds per `save(i, frame)` of `n` frames (cycling), paced at `fps` (0: unpaced);
    fewer when `stop()` turns true first (a load that runs while something is measured)."""
    out = []
    start = time.perf_counter()
    for i in range(n):
        if stop is not None and stop():
            break
        t = time.perf_counter()
        save(i, frames[i % len(frames)])
        out.append(time.perf_counter() - t)
        if fps:
            time.sleep(max(0.0, start + (i + 1) / fps - time.perf_counter()))
    return out


def _bench_replay(
    frames: Sequence[Frame], n: int, fps: float, work: Path, device: str
) -> dict[str, Any]:
    store = open_store(work / "replay-store")
    h, w = frames[0].shape[:2]
    if device == "cuda":  # frames the driver already holds on the GPU
        import cupy

        frames = [cupy.asarray(f) for f in frames]
    results: dict[str, Any] = {}
    for label, pace in (("paced", fps), ("sustained", 0.0)):
        started = time.perf_counter()
        with (
            PeakRss() as rss,
            store.new_race(env="bench", height=h, width=w, device=device) as writer,
        ):
            lat = paced(frames, n, pace, lambda _i, f: writer.append(f))
        elapsed = time.perf_counter() - started
        results[f"{label}_writer_rss_mb"] = rss.growth_mb
        stats = writer.stats()
        if label == "paced":
            results["append"] = latency_summary(lat)
        else:
            results["frames_per_s"] = stats.written / elapsed
            results["bytes_per_frame"] = store.race_nbytes(writer.race_id) / stats.written
            results["dropped"] = stats.dropped
    return results


def _save_file(folder: Path, fmt: str) -> Callable[[int, Frame], None]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    suffix = {"PNG": "png", "JPEG": "jpg"}[fmt]
    options = {"quality": 90} if fmt == "JPEG" else {}

    def save(i: int, frame: Frame) -> None:
        Image.fromarray(frame).save(folder / f"{i:07d}.{suffix}", format=fmt, **options)

    return save


def _bench_files(
    frames: Sequence[Frame], n: int, fps: float, work: Path, fmt: str
) -> dict[str, Any]:
    lat = paced(frames, n, fps, _save_file(work / f"{fmt}-paced", fmt))
    folder = work / f"{fmt}-sustained"
    started = time.perf_counter()
    paced(frames, n, 0.0, _save_file(folder, fmt))
    for p in folder.iterdir():  # durable, like the writer's fsynced shards
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    elapsed = time.perf_counter() - started
    nbytes = sum(p.stat().st_size for p in folder.iterdir())
    return {
        "append": latency_summary(lat),
        "frames_per_s": n / elapsed,
        "bytes_per_frame": nbytes / n,
    }


Saver = Callable[[int, Frame], Any]
#: A baseline: given a folder, n and the first frame -> (save one frame, make all durable).
Baseline = Callable[[Path, int, Frame], tuple[Saver, Callable[[], None]]]


def _memmap(folder: Path, n: int, first: Frame) -> tuple[Saver, Callable[[], None]]:
    folder.mkdir(parents=True, exist_ok=True)
    mm = np.memmap(folder / "frames.raw", dtype=np.uint8, mode="w+", shape=(n, *first.shape))

    def save(i: int, frame: Frame) -> None:
        mm[i] = frame

    return save, mm.flush


def _torchrl(folder: Path, n: int, first: Frame) -> tuple[Saver, Callable[[], None]]:
    import torch
    from torchrl.data import LazyMemmapStorage, ReplayBuffer

    buffer = ReplayBuffer(storage=LazyMemmapStorage(n, scratch_dir=str(folder)))

    def save(_i: int, frame: Frame) -> None:
        buffer.add(torch.from_numpy(frame))

    def finish() -> None:
        for path in folder.rglob("*.memmap"):
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

    return save, finish


def _zarr_naive(folder: Path, n: int, first: Frame) -> tuple[Saver, Callable[[], None]]:
    import zarr

    from replay.codec.zarr_jpeg import JpegCodec
    from replay.codec.zarr_singleton_dim import SingletonDimCodec

    h, w, _ = first.shape
    array = zarr.create_array(
        str(folder),
        shape=(n, h, w, 3),
        chunks=(1, h, w, 3),
        shards=(64, h, w, 3),
        dtype="uint8",
        filters=[SingletonDimCodec()],
        serializer=JpegCodec(),
        compressors=None,
    )

    def save(i: int, frame: Frame) -> None:
        array[i] = frame

    return save, lambda: None


BASELINES: dict[str, Baseline] = {
    "raw_memmap": _memmap,
    "torchrl": _torchrl,
    "zarr_naive": _zarr_naive,
}


def _bench_baseline(
    frames: Sequence[Frame], n: int, fps: float, work: Path, name: str
) -> dict[str, Any]:
    save, _ = BASELINES[name](work / f"{name}-paced", n, frames[0])
    lat = paced(frames, n, fps, save)
    folder = work / f"{name}-sustained"
    started = time.perf_counter()
    save, finish = BASELINES[name](folder, n, frames[0])
    paced(frames, n, 0.0, save)
    finish()
    elapsed = time.perf_counter() - started
    nbytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return {
        "append": latency_summary(lat),
        "frames_per_s": n / elapsed,
        "bytes_per_frame": nbytes / n,
    }


def run_ingest_bench(
    frames: Sequence[Frame],
    n: int,
    work: Path,
    fps: float = 30.0,
    baselines: Sequence[str] = ("png_file", "jpeg_file", "raw_memmap", "torchrl", "zarr_naive"),
    device: str = "cpu",
) -> dict[str, Any]:
    """Run replay and the `baselines` on `frames` (cycled to `n`), in `work`; returns figures.

    `device="cuda"` hands the writer CuPy frames and encodes on the GPU (nvJPEG).
    """
    results: dict[str, Any] = {
        "frames": n,
        "frame_shape": list(frames[0].shape),
        "fps": fps,
        "device": device,
    }
    expect(1 + len(baselines))
    stage("ingest: replay")
    results["replay"] = _bench_replay(frames, n, fps, work, device)
    for name in baselines:
        stage(f"ingest: {name}")
        if name in ("png_file", "jpeg_file"):
            fmt = "PNG" if name == "png_file" else "JPEG"
            results[name] = _bench_files(frames, n, fps, work, fmt)
        elif name == "torchrl" and not torchrl_available():
            results[name] = "not installed (pip install torchrl tensordict)"
        else:
            results[name] = _bench_baseline(frames, n, fps, work, name)
    ours = results["replay"]
    measured = [b for b in baselines if isinstance(results[b], dict)]
    results["ratios"] = {
        f"append_p99_vs_{name}": results[name]["append"]["p99_us"] / ours["append"]["p99_us"]
        for name in measured
    } | {
        f"frames_per_s_vs_{name}": ours["frames_per_s"] / results[name]["frames_per_s"]
        for name in measured
    }
    return results
