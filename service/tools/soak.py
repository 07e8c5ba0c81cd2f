"""Soak: a writer at game speed and several sampling clients against a real server.

Runs ``replay serve`` in its own process on 127.0.0.1 (loopback only), a writer
appending real frames at `fps` in this process, and `clients` threads sampling
batches through `replay.remote.client.Client`, for `duration` seconds. Reports errors,
batch latency per quarter of the run (stable or not), and the server's and this
process's RSS over time (flat or not).

    replay soak ./soak-store --frames-from ./replay-data --minutes 60 --clients 4
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import httpx
import numpy as np
import numpy.typing as npt
import psutil

from replay.bench.cli import load_frames, out_option, write_results
from replay.bench.report import advance_to, expect, progress
from replay.errors import ReplayError, SamplingError
from replay.remote.client import Client
from replay.store import Store, open_store
from service.tools.process import ServerProcess


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


@dataclass
class _Run:
    """What the soak's threads share: its clock, its stop signal and its figures."""

    start: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds)
    errors: list[str] = field(default_factory=list)


def _write(run: _Run, store: Store, frames: Sequence[npt.NDArray[np.uint8]], fps: float) -> None:
    """Record one race at `fps` (real time) until the run stops."""
    h, w = frames[0].shape[:2]
    with store.new_race(env="soak", height=h, width=w, fps=fps) as writer:
        i = 0
        while not run.stop.is_set():
            writer.append(frames[i % len(frames)], reward=float(i))
            i += 1
            time.sleep(max(0.0, run.start + i / fps - time.monotonic()))


def _sample(run: _Run, url: str, batch_size: int) -> None:
    """Sample batches from the server until the run stops, timing each."""
    with Client(url) as client:
        while not run.stop.is_set():
            t = time.monotonic()
            try:
                client.sample(batch_size=batch_size)
            except SamplingError:  # nothing committed yet
                time.sleep(0.05)
                continue
            except (ReplayError, httpx.HTTPError) as e:
                with run.lock:
                    run.errors.append(f"{type(e).__name__}: {e}")
                continue
            with run.lock:
                run.latencies.append((t - run.start, time.monotonic() - t))


def _watch_memory(run: _Run, server: ServerProcess, duration: float) -> list[dict[str, float]]:
    """The server's and this process's RSS (MB), sampled until `duration` has passed."""
    me = psutil.Process()
    rss = []
    expect(round(duration))
    while time.monotonic() - run.start < duration:
        elapsed = time.monotonic() - run.start
        advance_to(elapsed, f"soak: {len(run.latencies)} batches, {len(run.errors)} errors")
        rss.append(
            {
                "t": elapsed,
                "server_mb": server.last_rss / 1e6,
                "soak_mb": me.memory_info().rss / 1e6,
            }
        )
        time.sleep(min(1.0, duration / 20))
    return rss


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
    server = ServerProcess(str(store_path))
    run = _Run()
    threads = [threading.Thread(target=_write, args=(run, store, frames, fps), name="soak-writer")]
    threads += [
        threading.Thread(target=_sample, args=(run, server.url, batch_size), name=f"soak-{i}")
        for i in range(clients)
    ]
    try:
        for thread in threads:
            thread.start()
        rss = _watch_memory(run, server, duration)
    finally:
        run.stop.set()
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
        "batches": len(run.latencies),
        "frames_per_s": len(run.latencies) * batch_size / duration,
        "errors": len(run.errors),
        "first_errors": run.errors[:5],
        "latency_by_quarter": _quarters(run.latencies, duration),
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
@out_option
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
    with progress("soak"):
        results = run_soak(
            store, frames, duration=minutes * 60, fps=fps, clients=clients, batch_size=batch_size
        )
    write_results("soak", results, out)
    if results["errors"]:
        sys.exit(1)
