"""Soak: a writer at game speed and several sampling clients against a real server.

Runs ``replay serve`` in its own process on 127.0.0.1 (loopback only), a writer
appending real frames at `fps` in this process, and `clients` threads sampling
batches through `replay.client.Client`, for `duration` seconds. Reports errors,
batch latency per quarter of the run (stable or not), and the server's and this
process's RSS over time (flat or not).

    replay soak ./soak-store --frames-from ./replay-data --minutes 60 --clients 4
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import httpx
import numpy as np
import numpy.typing as npt
import psutil

from replay.bench.cli import load_frames, write_results
from replay.client import Client
from replay.errors import ReplayError, SamplingError
from replay.store import open_store
from service.process import ServerProcess


def _quarters(samples: Sequence[tuple[float, float]], duration: float) -> list[dict[str, float]]:
    """p50/p99 (ms) of (time, seconds) samples in each quarter of the run."""
    out = []
    for q in range(4):
        part = [v * 1000 for t, v in samples if q * duration / 4 <= t < (q + 1) * duration / 4]
        if part:
            out.append(
                {
                    "n": len(part),
                    "p50_ms": float(np.percentile(part, 50)),
                    "p99_ms": float(np.percentile(part, 99)),
                }
            )
    return out


def run_soak(
    store_path: Path,
    frames: Sequence[npt.NDArray[np.uint8]],
    *,
    duration: float = 60.0,
    fps: float = 30.0,
    clients: int = 3,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Run the soak and return its figures (see the module docstring)."""
    store = open_store(store_path)
    h, w = frames[0].shape[:2]
    server = ServerProcess(str(store_path))
    me = psutil.Process()
    stop = threading.Event()
    start = time.monotonic()
    latencies: list[tuple[float, float]] = []
    errors: list[str] = []
    rss: list[dict[str, float]] = []
    lock = threading.Lock()

    def write() -> None:
        with store.new_race(env="soak", height=h, width=w, fps=fps) as writer:
            i = 0
            while not stop.is_set():
                writer.append(frames[i % len(frames)], reward=float(i))
                i += 1
                time.sleep(max(0.0, start + i / fps - time.monotonic()))

    def sample() -> None:
        with Client(server.url) as client:
            while not stop.is_set():
                t = time.monotonic()
                try:
                    client.sample(batch_size=batch_size)
                except SamplingError:  # nothing committed yet
                    time.sleep(0.05)
                    continue
                except (ReplayError, httpx.HTTPError) as e:
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                with lock:
                    latencies.append((t - start, time.monotonic() - t))

    threads = [threading.Thread(target=write, name="soak-writer")]
    threads += [threading.Thread(target=sample, name=f"soak-{i}") for i in range(clients)]
    try:
        for thread in threads:
            thread.start()
        while time.monotonic() - start < duration:
            rss.append(
                {
                    "t": time.monotonic() - start,
                    "server_mb": server.last_rss / 1e6,
                    "soak_mb": me.memory_info().rss / 1e6,
                }
            )
            time.sleep(min(1.0, duration / 20))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        server.close()
    races = [r for r in store.races() if r.env == "soak"]
    warm = [r for r in rss if r["t"] >= duration / 4] or rss
    return {
        "duration_s": duration,
        "fps": fps,
        "clients": clients,
        "batch_size": batch_size,
        "frames_written": sum(r.length for r in races),
        "batches": len(latencies),
        "frames_per_s": len(latencies) * batch_size / duration,
        "errors": len(errors),
        "first_errors": errors[:5],
        "latency_by_quarter": _quarters(latencies, duration),
        "server_rss_mb": {
            "after_warmup": warm[0]["server_mb"],
            "end": rss[-1]["server_mb"],
            "max": max(r["server_mb"] for r in rss),
        },
        "rss_samples": rss,
    }


@click.command()
@click.argument("store", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--frames-from",
    default="./replay-data",
    show_default=True,
    help="Store of recorded races whose frames the soak writer replays.",
)
@click.option("--minutes", default=10.0, show_default=True, help="How long to run.")
@click.option("--fps", default=30.0, show_default=True, help="Writer pace.")
@click.option("--clients", default=3, show_default=True, help="Sampling clients.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write the JSON results here too.")
def soak(
    store: Path,
    frames_from: str,
    minutes: float,
    fps: float,
    clients: int,
    batch_size: int,
    out: str | None,
) -> None:
    """Soak a server: a writer at FPS and several sampling clients for MINUTES, on loopback.

    STORE receives the soak's race (use a scratch store). Reports errors, latency per
    quarter of the run and RSS over time; exits 1 on any error.
    """
    frames = load_frames(frames_from, 60)
    results = run_soak(
        store, frames, duration=minutes * 60, fps=fps, clients=clients, batch_size=batch_size
    )
    write_results("soak", results, out)
    if results["errors"]:
        sys.exit(1)
