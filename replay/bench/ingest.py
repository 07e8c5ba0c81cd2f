"""Ingest benchmark: what the driver pays per frame, and how fast frames become durable.

Compares, on the same real frames and in one run:

- ``replay``: `Writer.append` (ring copy; encode and disk in the background);
- ``png_file``: one PNG file per frame saved with PIL (the screenshot-to-disk
  approach this project replaces);
- ``jpeg_file``: one JPEG q90 file per frame saved with PIL.

Latency is measured with the driver paced at `fps` (what a game loop sees);
throughput ("sustained") with the driver appending as fast as it can, until the
last frame is durable (the writer closed, the files written and fsynced).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

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


def _paced(
    frames: Sequence[Frame], n: int, fps: float, save: Callable[[int, Frame], Any]
) -> list[float]:
    out = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        save(i, frames[i % len(frames)])
        out.append(time.perf_counter() - t)
        if fps:
            time.sleep(max(0.0, start + (i + 1) / fps - time.perf_counter()))
    return out


def _bench_replay(frames: Sequence[Frame], n: int, fps: float, work: Path) -> dict[str, Any]:
    store = open_store(work / "replay-store")
    h, w = frames[0].shape[:2]
    results: dict[str, Any] = {}
    for label, pace in (("paced", fps), ("sustained", 0.0)):
        started = time.perf_counter()
        with store.new_race(env="bench", height=h, width=w) as writer:
            lat = _paced(frames, n, pace, lambda _i, f: writer.append(f))
        elapsed = time.perf_counter() - started
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
    lat = _paced(frames, n, fps, _save_file(work / f"{fmt}-paced", fmt))
    folder = work / f"{fmt}-sustained"
    started = time.perf_counter()
    _paced(frames, n, 0.0, _save_file(folder, fmt))
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


def run_ingest_bench(
    frames: Sequence[Frame], n: int, work: Path, fps: float = 30.0
) -> dict[str, Any]:
    """Run all ingest approaches on `frames` (cycled to `n`), in `work`; returns figures."""
    results: dict[str, Any] = {
        "frames": n,
        "frame_shape": list(frames[0].shape),
        "fps": fps,
        "replay": _bench_replay(frames, n, fps, work),
        "png_file": _bench_files(frames, n, fps, work, "PNG"),
        "jpeg_file": _bench_files(frames, n, fps, work, "JPEG"),
    }
    ours = results["replay"]
    results["ratios"] = {
        f"append_p99_vs_{name}": results[name]["append"]["p99_us"] / ours["append"]["p99_us"]
        for name in ("png_file", "jpeg_file")
    } | {
        f"frames_per_s_vs_{name}": ours["frames_per_s"] / results[name]["frames_per_s"]
        for name in ("png_file", "jpeg_file")
    }
    return results
