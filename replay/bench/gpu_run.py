"""The steps of the one-command GPU run (scripts/gpu-run), each a short process that
writes one JSON file: what a lent GPU machine measures in its few minutes.

    python -m replay.bench.gpu_run frames --work .gpu-work            # real frames (.npy)
    python -m replay.bench.gpu_run ingest --work .gpu-work --out ingest.json
    python -m replay.bench.gpu_run sample --work .gpu-work --out sample.json
    python -m replay.bench.gpu_run codec  --work .gpu-work --out codec.json

- ``frames``: 48 CarRacing frames at 1600x900 (the tests' frames), saved once.
- ``ingest``: 300 CuPy frames (and 50 torch CUDA tensors) appended to a CUDA writer:
  append latency p50/p99 and frames/s until the shards are durable; replay only (the
  CPU baselines are measured on the CPU machine).
- ``sample``: uniform batches of 64 decoded into device memory with ``out="torch"``,
  full size and 1/4, with each decoder backend (hardware, CUDA); frames/s, and peak
  device memory per batch against the batch's own size.
- ``codec``: nvJPEG encode frames/s by batch size, decode by backend, and the fused
  transform in microseconds per frame (one kernel) beside the multi-kernel CuPy path.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.bench.environment import environment

Frame = npt.NDArray[np.uint8]
INGEST_FRAMES = 300
BATCH = 64


def record_frames(work: Path) -> dict[str, Any]:
    """Save 48 real CarRacing frames to work/frames.npy (kept when already there)."""
    path = work / "frames.npy"
    if not path.exists():
        from capture.carracing import CarRacingSource

        with CarRacingSource() as source:
            frames = np.stack([s.frame for s in source.race(max_steps=48, seed=7)])
        work.mkdir(parents=True, exist_ok=True)
        np.save(path, frames)
    frames = np.load(path, mmap_mode="r")
    return {"frames": int(frames.shape[0]), "shape": list(frames.shape[1:]), "path": str(path)}


def _frames(work: Path) -> npt.NDArray[np.uint8]:
    frames: npt.NDArray[np.uint8] = np.load(work / "frames.npy")
    return frames


def _summary(seconds: list[float]) -> dict[str, float]:
    us = np.asarray(seconds) * 1e6
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "max_us": float(us.max()),
    }


def run_ingest(work: Path, n: int = INGEST_FRAMES) -> dict[str, Any]:
    """CuPy frames into a CUDA writer: append latency, and frames/s to durable shards."""
    import cupy

    from replay.store import open_store

    host = _frames(work)
    frames = [cupy.asarray(f) for f in host]
    cupy.cuda.Device().synchronize()
    h, w = host.shape[1:3]
    store = open_store(work / "ingest-store")
    results: dict[str, Any] = {"frames": n, "distinct": len(frames)}
    latency: list[float] = []
    start = time.perf_counter()
    with store.new_race(env="CarRacing-v3", height=h, width=w, device="cuda") as writer:
        for i in range(n):
            t = time.perf_counter()
            writer.append(frames[i % len(frames)], reward=float(i))
            latency.append(time.perf_counter() - t)
    seconds = time.perf_counter() - start  # close() returned: every shard is durable
    stats = writer.stats()
    results["cupy"] = {
        "append": _summary(latency),
        "frames_per_s_durable": n / seconds,
        "written": stats.written,
        "dropped": stats.dropped,
        "encode_ms_mean": stats.encode_ms_mean,
        "encode_ms_p99": stats.encode_ms_p99,
        "bytes_per_frame": stats.bytes_written / max(1, stats.written),
    }
    try:
        import torch

        tensors = [torch.from_numpy(f).cuda() for f in host[:8]]
        latency = []
        with store.new_race(env="CarRacing-v3", height=h, width=w, device="cuda") as writer:
            for i in range(50):
                t = time.perf_counter()
                writer.append(tensors[i % len(tensors)])
                latency.append(time.perf_counter() - t)
        results["torch"] = {"append": _summary(latency), "written": writer.stats().written}
    except ImportError:
        results["torch"] = "not installed"
    results["race_id"] = writer.race_id
    return results


def _device_memory() -> int:
    import cupy

    free, total = cupy.cuda.runtime.memGetInfo()
    return int(total - free)


def run_sample(work: Path, batches: int = 8) -> dict[str, Any]:
    """Uniform batches decoded into device memory (out="torch"), by backend and size."""
    import cupy
    import torch

    from replay.codec import jpeg
    from replay.codec.transform import Transform
    from replay.store import open_store

    store_path = work / "ingest-store"
    if not store_path.exists():  # the ingest step did not run: write the frames here
        run_ingest(work, n=INGEST_FRAMES)
    store = open_store(store_path, mode="r")
    info = store.races()[0]
    h, w = info.height, info.width
    decoder = jpeg.decoder("cuda", 0)
    results: dict[str, Any] = {"batch": BATCH, "batches_timed": batches, "runs": []}
    for backend in decoder.backends:
        decoder.use_backend(backend)
        for label, transform in (("full", None), ("quarter", Transform(size=(h // 4, w // 4)))):
            sampler = store.sampler("uniform", batch_size=BATCH, seed=0)
            sampler.sample(device="cuda", out="torch", transform=transform)  # warm-up
            torch.cuda.synchronize()
            before = dict(decoder.decoded)
            torch.cuda.reset_peak_memory_stats()
            base_torch = torch.cuda.memory_allocated()
            base_device = _device_memory()
            peak_device = base_device
            start = time.perf_counter()
            for _ in range(batches):
                batch = sampler.sample(device="cuda", out="torch", transform=transform)
                torch.cuda.synchronize()
                peak_device = max(peak_device, _device_memory())
                out_bytes = batch.frames.numel() * batch.frames.element_size()
                del batch
            seconds = time.perf_counter() - start
            sampler.close()
            pool = cupy.get_default_memory_pool()
            results["runs"].append(
                {
                    "backend": backend,
                    "size": label,
                    "frames_per_s": BATCH * batches / seconds,
                    "decoded_by": {k: v - before.get(k, 0) for k, v in decoder.decoded.items()},
                    "batch_output_mb": out_bytes / 1e6,
                    "peak_torch_mb": (torch.cuda.max_memory_allocated() - base_torch) / 1e6,
                    "peak_device_growth_mb": (peak_device - base_device) / 1e6,
                    "cupy_pool_mb": pool.total_bytes() / 1e6,
                }
            )
            run = results["runs"][-1]
            run["peak_torch_over_output"] = run["peak_torch_mb"] / run["batch_output_mb"]
    decoder.use_backend(decoder.backends[0])
    return results


def run_codec(work: Path, repeats: int = 5) -> dict[str, Any]:
    """Encode by batch size, decode by backend, fused vs multi-kernel transform."""
    from replay.bench.gpu import run_gpu_bench

    return run_gpu_bench(list(_frames(work)[:16]), repeats=repeats)


STEPS = {"frames": record_frames, "ingest": run_ingest, "sample": run_sample, "codec": run_codec}


def main(argv: list[str] | None = None) -> int:
    """Run one step; print and write its JSON."""
    parser = argparse.ArgumentParser(prog="python -m replay.bench.gpu_run")
    parser.add_argument("step", choices=list(STEPS))
    parser.add_argument("--work", type=Path, default=Path(".gpu-work"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    results = STEPS[args.step](args.work)
    doc = {"benchmark": f"gpu-{args.step}", **environment(), "results": results}
    text = json.dumps(doc, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
