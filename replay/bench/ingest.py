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

`run_writer_bench` compares the two writer kinds (``thread``: encoding in the
driver's process; ``process``: the writer process fed through shared memory)
under three drivers paced at `fps`, which wait for the next frame differently:
``sleep`` (sleeps: the GIL is free), ``busy`` (a Python busy-wait: holds the GIL)
and ``numpy`` (small NumPy feature extraction until the deadline: holds the GIL
between short releases). A writer thread starves under the last two. Each frame is
first drawn (untimed, as a game renders): into the driver's own screen array, which
`append` then copies into the writer's ring, or (the ``+frame_buffer`` rows) straight
into the ring slot `Writer.frame_buffer` lends, which `append` posts without a copy;
the timed cost is then `frame_buffer` plus `append`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.bench.environment import torchrl_available
from replay.bench.rss import PeakRss
from replay.ring import FrameRing
from replay.store import open_store
from replay.writer_process import WriterKind

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
            lat = _paced(frames, n, pace, lambda _i, f: writer.append(f))
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


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.perf_counter()))


def _busy_until(deadline: float) -> None:
    while time.perf_counter() < deadline:
        pass


_FEATURES = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)


def _numpy_until(deadline: float) -> None:
    while time.perf_counter() < deadline:  # many small ops, as in feature extraction
        x = _FEATURES.astype(np.float32) / 255.0
        float((x[1:] - x[:-1]).std() + x.mean(axis=(0, 1)).sum())


#: How a paced driver waits for its next frame.
DRIVERS: dict[str, Callable[[float], None]] = {
    "sleep": _sleep_until,
    "busy": _busy_until,
    "numpy": _numpy_until,
}


#: (label, writer kind, whether the driver draws into `Writer.frame_buffer`)
WRITER_SETUPS: list[tuple[str, WriterKind, bool]] = [
    ("thread", "thread", False),
    ("process", "process", False),
    ("thread+frame_buffer", "thread", True),
    ("process+frame_buffer", "process", True),
]


def _driven(
    writer: Any, frames: Sequence[Frame], n: int, fps: float, driver: str, in_ring: bool
) -> list[float]:
    """Seconds per frame the driver spends in the writer (`frame_buffer` + `append`)."""
    wait = DRIVERS[driver]
    screen = np.empty_like(frames[0])  # the game's own frame, when it does not draw in the ring
    out = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        target = writer.frame_buffer() if in_ring else screen
        spent = time.perf_counter() - t
        np.copyto(target, frames[i % len(frames)])  # the game draws its frame (untimed)
        t = time.perf_counter()
        writer.append(target)
        out.append(spent + time.perf_counter() - t)
        if fps:
            wait(start + (i + 1) / fps)
    return out


def _bare_copy(frames: Sequence[Frame], n: int) -> list[float]:
    """Seconds per copy of a drawn frame into a shared-memory ring, nothing else
    running: the floor under a copying `append` on this machine."""
    ring = FrameRing.create(8, frames[0].shape, {})
    ring.unlink()
    screen = np.empty_like(frames[0])
    out = []
    for i in range(n):
        np.copyto(screen, frames[i % len(frames)])
        t = time.perf_counter()
        np.copyto(ring.frames[i % ring.slots], screen)
        out.append(time.perf_counter() - t)
    ring.close()
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid`, its threads included (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_writer_bench(
    frames_by_env: Mapping[str, Sequence[Frame]],
    n: int,
    work: Path,
    fps: float = 30.0,
    drivers: Sequence[str] = tuple(DRIVERS),
) -> dict[str, Any]:
    """Thread vs process writer, copying or drawing in the ring, per env's frames: the
    driver's cost per frame under each driver at `fps` (`n` frames each) and sustained
    frames/s to durable (`n` frames, unpaced)."""
    store = open_store(work / "writers")
    results: dict[str, Any] = {"frames": n, "fps": fps, "first_new_race_s": {}}
    for env, frames in frames_by_env.items():
        h, w = frames[0].shape[:2]
        figures: dict[str, Any] = {
            "frame_shape": list(frames[0].shape),
            "bare_copy": latency_summary(_bare_copy(frames, n)),
        }

        def race(kind: WriterKind, env: str = env, h: int = h, w: int = w) -> Any:
            started = time.perf_counter()
            writer = store.new_race(env=env, height=h, width=w, writer=kind)
            results["first_new_race_s"].setdefault(kind, time.perf_counter() - started)
            return writer

        for driver in drivers:
            for label, kind, in_ring in WRITER_SETUPS:
                with race(kind) as writer:
                    lat = _driven(writer, frames, n, fps, driver, in_ring)
                figures.setdefault(driver, {})[label] = latency_summary(lat) | {
                    "dropped": writer.stats().dropped
                }
        for label, kind, in_ring in WRITER_SETUPS:
            with race(kind) as writer:
                pids = {os.getpid(), writer.pid}
                cpu = sum(_cpu_seconds(pid) for pid in pids)
                started = time.perf_counter()
                _driven(writer, frames, n, 0.0, "sleep", in_ring)
            elapsed = time.perf_counter() - started  # closed: every frame durable
            cpu = sum(_cpu_seconds(pid) for pid in pids) - cpu
            written = writer.stats().written
            figures.setdefault("sustained_frames_per_s", {})[label] = written / elapsed
            # CPU time of driver and writer per durable frame (the untimed drawing
            # included): what the frames cost whatever else the machine runs (frames/s
            # on c free cores ~ c / this)
            figures.setdefault("sustained_cpu_ms_per_frame", {})[label] = 1000 * cpu / written
        figures["append_p99_thread_vs_process"] = {
            d: figures[d]["thread"]["p99_us"] / figures[d]["process"]["p99_us"] for d in drivers
        }
        results[env] = figures
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

    from replay.codecs import JpegCodec, SingletonDimCodec

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
    lat = _paced(frames, n, fps, save)
    folder = work / f"{name}-sustained"
    started = time.perf_counter()
    save, finish = BASELINES[name](folder, n, frames[0])
    _paced(frames, n, 0.0, save)
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
        "replay": _bench_replay(frames, n, fps, work, device),
    }
    for name in baselines:
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
