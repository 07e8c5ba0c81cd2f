"""The service benchmark: batches over loopback HTTP beside the embedded reader.

    replay bench serve ./replay-data --seconds 10
    results = service.tools.bench.run_service_bench("./replay-data", batch_size=64, seconds=10)

Runs, on one store and in one go: the embedded sampler (``store.sampler().sample()``:
read + decode in this process), then a `Client` of ``replay serve`` started in a
child process on 127.0.0.1 (the service reads and sends the stored JPEGs; the
client decodes them, on `device`), with and without the client's prefetch
thread, and the client taking the encoded batches only (what the wire
delivers). For each: frames/s, batches, p50/p99 batch latency. The service's
resident memory is sampled all along (peak and last).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import click
import numpy as np

from replay.bench.cli import out_option, write_results
from replay.bench.report import progress
from replay.remote.client import Client
from replay.store import open_store
from service.tools.process import ServerProcess


def _stats(latencies: list[float], frames_per_batch: int, wall: float) -> dict[str, float]:
    lat = np.asarray(latencies) * 1000
    return {
        "batches": len(latencies),
        "frames_per_s": round(len(latencies) * frames_per_batch / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1),
        "p99_ms": round(float(np.percentile(lat, 99)), 1),
    }


def _timed(
    step: Callable[[], object], seconds: float, warmup: int, frames: int
) -> dict[str, float]:
    for _ in range(warmup):
        step()
    latencies: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or not latencies:
        t = time.perf_counter()
        step()
        latencies.append(time.perf_counter() - t)
    return _stats(latencies, frames, time.perf_counter() - start)


def _timed_iter(
    batches: Iterator[object], seconds: float, warmup: int, frames: int
) -> dict[str, float]:
    for _ in range(warmup):
        next(batches)
    latencies: list[float] = []
    start = t = time.perf_counter()
    for _ in batches:
        now = time.perf_counter()
        latencies.append(now - t)  # time the learner waits for each batch
        t = now
        if now - start >= seconds:
            break
    return _stats(latencies, frames, time.perf_counter() - start)


def run_service_bench(
    store_path: str | os.PathLike[str],
    *,
    batch_size: int = 64,
    seq_len: int = 1,
    seconds: float = 10.0,
    warmup: int = 2,
    device: str = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """Frames/s and p50/p99 batch latency: embedded reader vs client over loopback.

    Returns ``{"embedded": {...}, "client": {...}, "client_prefetch": {...},
    "client_encoded": {...}, "client_vs_embedded": ratio, "service_rss_mb": {...},
    ...}``; each phase runs `seconds` after `warmup` batches.
    """
    store = open_store(store_path, mode="r")
    frames = batch_size * seq_len
    params: dict[str, Any] = {"batch_size": batch_size, "seq_len": seq_len, "seed": seed}
    results: dict[str, Any] = {
        "store": str(store.root),
        "frames_in_store": sum(info.length for info in store.races()),
        "batch_size": batch_size,
        "seq_len": seq_len,
        "device": device,
        "seconds_per_phase": seconds,
    }
    with store.sampler(**params, device=device) as sampler:
        results["embedded"] = _timed(sampler.sample, seconds, warmup, frames)
    server = ServerProcess(os.fspath(store_path))
    try:
        with Client(server.url, device=device) as client:
            results["client"] = _timed(lambda: client.sample(**params), seconds, warmup, frames)
            prefetched = client.batches(**params, prefetch=2)
            try:
                results["client_prefetch"] = _timed_iter(prefetched, seconds, warmup, frames)
            finally:
                prefetched.close()  # type: ignore[attr-defined]
            results["client_encoded"] = _timed(
                lambda: client.sample_encoded(**params), seconds, warmup, frames
            )
            results["batch_nbytes"] = client.sample_encoded(**params).nbytes
    finally:
        server.close()
    best = max(results["client"]["frames_per_s"], results["client_prefetch"]["frames_per_s"])
    results["client_vs_embedded"] = round(best / results["embedded"]["frames_per_s"], 3)
    results["service_rss_mb"] = {
        "peak": round(server.peak_rss / 2**20, 1),
        "last": round(server.last_rss / 2**20, 1),
    }
    return results


@click.command(name="serve")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--batch-size", default=64, show_default=True)
@click.option("--seq-len", default=1, show_default=True)
@click.option("--seconds", default=10.0, show_default=True, help="Per phase.")
@click.option("--device", default="cpu", show_default=True, help="Where the client decodes.")
@out_option
def serve_bench(
    store: str, batch_size: int, seq_len: int, seconds: float, device: str, out: str | None
) -> None:
    """Frames/s and batch latency over loopback HTTP vs the embedded reader, on STORE."""
    with progress("bench serve"):
        results = run_service_bench(
            store, batch_size=batch_size, seq_len=seq_len, seconds=seconds, device=device
        )
    write_results("serve", results, out)
