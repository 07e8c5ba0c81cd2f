"""S3 benchmark: sampling from an S3-compatible object store vs local disk, in one run.

The same races (real frames, written once by the `Writer` to disk, then uploaded
object by object: the format is identical) are sampled from the local store and
from a SeaweedFS server on loopback (started here, unless `url` names a store).
Figures, all with the same keys (one seed):

- ``fetch``: batches of stored bytes (`Sampler.sample_keys` + `Sampler.fetch`: index,
  shard tables, ranged reads, step chunks; no decode) in frames/s and MB/s, for each
  reader thread count: the concurrency figure;
- ``coalescing``: the same on S3 with one GET per frame (``per_frame``: the reader's
  merging switched off and one ``get_range`` per frame), and with ranges merged
  (``merged``): by the reader where they touch (a window of consecutive frames is
  one range) and by obstore where they touch or lie within ``coalesce`` bytes
  (0, 64 KiB, 1 MiB), with the requests each batch took;
- ``decoded``: whole `Sampler.sample` batches decoded on the CPU, local vs S3;
- each S3 figure again behind a proxy that delays every request by
  `latency_ms` (an object store across a network, not on loopback).

Every figure is the best of `REPEATS` runs of `batches` batches after a warm-up
batch (index and shard tables loaded, as in a running learner); the local store
was just written, so it reads from the page cache.

    python -m replay.bench.s3 --frames-from ./replay-data --out docs/results/s3-cpu.json

(`command` is the click command; registered under the ``replay.bench`` entry
point group it is ``replay bench s3``.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import obstore

from replay.bench.cli import (
    frames_from_option,
    load_frames,
    out_option,
    work_option,
    write_results,
)
from replay.bench.delay_proxy import DelayProxy
from replay.bench.ingest import Frame
from replay.bench.report import progress
from replay.bench.seaweedfs import SeaweedFS
from replay.read import reader as reader_module
from replay.storage.s3 import COALESCE, ObjectStorage
from replay.store import Store, open_store

#: Each figure is the best of this many runs (the machine may be busy with other work).
REPEATS = 3


def run_s3_bench(
    frames: Sequence[Frame],
    work: Path,
    *,
    url: str | None = None,
    races: int = 4,
    race_frames: int = 256,
    shard_size: int = 64,
    batch_size: int = 32,
    seq_len: int = 4,
    batches: int = 8,
    decoded_batches: int = 2,
    threads: Sequence[int] = (1, 4, 16),
    coalesce: Sequence[int] = (0, 64 << 10, COALESCE),
    latency_ms: Sequence[float] = (0.0, 10.0),
    seed: int = 0,
) -> dict[str, Any]:
    """Sampling frames/s from S3 vs local disk; returns the figures (see the module doc).

    `url` (``s3://bucket/prefix``, credentials from the ``AWS_*`` environment) uses an
    existing server instead of starting SeaweedFS under `work`; its prefix must be empty.
    """
    if not frames:
        raise ValueError("no frames to write")
    local = open_store(work / "local")
    started = time.perf_counter()
    for r in range(races):
        with local.new_race(env="bench", map=f"race-{r}", shard_size=shard_size) as writer:
            for i in range(race_frames):
                writer.append(frames[(r * race_frames + i) % len(frames)], reward=float(i))
    write_s = time.perf_counter() - started
    total = races * race_frames
    results: dict[str, Any] = {
        "setup": {
            "races": races,
            "frames_per_race": race_frames,
            "shard_size": shard_size,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "batches_per_figure": batches,
            "store_bytes": sum(size for _, size in local.storage.walk_sizes("")),
            "local_write_frames_per_s": total / write_s,
        }
    }
    with contextlib.ExitStack() as stack:
        if url is None:
            server = stack.enter_context(SeaweedFS(work / "seaweedfs"))
            stack.enter_context(_environ(server.env()))
            url = f"s3://{server.bucket}/bench-{uuid.uuid4().hex[:8]}"
            results["setup"]["server"] = "SeaweedFS (weed mini) on 127.0.0.1"
        else:
            results["setup"]["server"] = os.environ.get("AWS_ENDPOINT_URL", "AWS S3")
        results["setup"]["upload_mb_per_s"] = _upload(local, url)
        args = dict(batch_size=batch_size, seq_len=seq_len, batches=batches, seed=seed)
        fetch: list[dict[str, Any]] = []
        for t in threads:
            fetch.append(
                {"store": "local", "threads": t, **_fetch_rate(local, io_threads=t, **args)}
            )
        rows: list[dict[str, Any]] = []
        for latency in latency_ms:
            with _endpoint(latency) as endpoint:
                for t in threads:
                    s3 = _s3_store(url, endpoint, COALESCE)
                    fetch.append(
                        {"store": "s3", "latency_ms": latency, "threads": t}
                        | _fetch_rate(s3, io_threads=t, **args)
                    )
                for gap in [None, *coalesce]:  # None: one GET per frame
                    s3 = _s3_store(url, endpoint, gap)
                    with _reader_merging(gap is not None):
                        row = _fetch_rate(s3, io_threads=max(threads), **args)
                    mode = "per_frame" if gap is None else "merged"
                    rows.append({"mode": mode, "latency_ms": latency, "coalesce": gap} | row)
        results["fetch"] = fetch
        results["coalescing"] = rows
        results["decoded"] = [
            {"store": name} | _decoded_rate(store, batch_size, seq_len, decoded_batches, seed)
            for name, store in (("local", local), ("s3", _s3_store(url, None, COALESCE)))
        ]
    return results


# -- measurements ----------------------------------------------------------------------------


def _fetch_rate(
    store: Store, *, io_threads: int, batch_size: int, seq_len: int, batches: int, seed: int
) -> dict[str, Any]:
    """Frames/s of fetching stored bytes (no decode): best of `REPEATS` runs."""
    sampler = store.sampler(
        batch_size=batch_size, seq_len=seq_len, seed=seed, io_threads=io_threads
    )
    counter = _CountingStorage.install(sampler)
    runs = []
    try:
        sampler.fetch(sampler.sample_keys())  # index and shard tables, as a running learner has
        for _ in range(REPEATS):
            counter.requests = nbytes = 0
            started = time.perf_counter()
            for _ in range(batches):
                encoded = sampler.fetch(sampler.sample_keys())
                nbytes += sum(len(b) for item in encoded.frames for b in item)
            runs.append((time.perf_counter() - started, nbytes, counter.requests))
    finally:
        sampler.close()
    seconds, nbytes, requests = min(runs)
    frames = batches * batch_size * seq_len
    return {
        "frames_per_s": frames / seconds,
        "mb_per_s": nbytes / seconds / 1e6,
        "ms_per_batch": seconds / batches * 1000,
        "requests_per_batch": requests / batches,
        "frames_per_s_runs": [frames / run[0] for run in runs],
    }


def _decoded_rate(
    store: Store, batch_size: int, seq_len: int, batches: int, seed: int
) -> dict[str, Any]:
    """Frames/s of whole decoded batches (`Sampler.sample`, CPU decode): best of `REPEATS`."""
    sampler = store.sampler(batch_size=batch_size, seq_len=seq_len, seed=seed)
    runs = []
    try:
        sampler.sample()
        for _ in range(REPEATS):
            started = time.perf_counter()
            for _ in range(batches):
                sampler.sample()
            runs.append(batches * batch_size * seq_len / (time.perf_counter() - started))
    finally:
        sampler.close()
    return {"frames_per_s": max(runs), "frames_per_s_runs": runs}


class _CountingStorage:
    """Counts the requests (GETs, or preads on disk) a sampler's reads turn into."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests = 0
        self._lock = threading.Lock()

    @classmethod
    def install(cls, sampler: Any) -> _CountingStorage:
        counter = cls(sampler.storage)
        sampler.storage = sampler.index.storage = sampler.reader.storage = counter
        return counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read(self, key: str) -> bytes:
        with self._lock:
            self.requests += 1
        data: bytes = self.inner.read(key)
        return data

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        positive = sorted(r for r in ranges if r[0] >= 0)
        if isinstance(self.inner, _PerFrameStorage):
            n = len(positive)
        else:  # obstore merges ranges that touch or lie within `coalesce` bytes
            gap = getattr(self.inner, "coalesce", 0)
            n = len(reader_module.coalesce(positive, gap))
        n += any(r[0] < 0 for r in ranges)
        with self._lock:
            self.requests += n
        out: list[bytes] = self.inner.read_ranges(key, ranges)
        return out


@contextlib.contextmanager
def _reader_merging(on: bool) -> Iterator[None]:
    """Switch the reader's merging of adjacent ranges off (one GET per frame) for a while."""
    if on:
        yield
        return
    original = reader_module.coalesce
    reader_module.coalesce = lambda ranges, gap=0: list(ranges)
    try:
        yield
    finally:
        reader_module.coalesce = original


def _upload(local: Store, url: str) -> float:
    """Copy every object of the local store to `url`; MB/s."""
    target = ObjectStorage(url)
    keys = sorted(local.storage.walk_sizes(""), key=lambda kv: kv[0].endswith("zarr.json"))
    started = time.perf_counter()
    nbytes = 0
    for key, _ in keys:  # data first, metadata last, as a writer commits
        data = local.storage.read(key)
        target.write(key, data)
        nbytes += len(data)
    return nbytes / (time.perf_counter() - started) / 1e6


class _PerFrameStorage(ObjectStorage):
    """One GET per range, one after another: a reader that never merges ranges."""

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if any(offset < 0 for offset, _ in ranges):
            return super().read_ranges(key, ranges)
        return [bytes(obstore.get_range(self.s3, key, start=o, length=n)) for o, n in ranges]


def _s3_store(url: str, endpoint: str | None, coalesce: int | None) -> Store:
    """A read-only S3 store; `coalesce` None reads one GET per frame."""
    config: Any = {"endpoint": endpoint} if endpoint else None
    storage: ObjectStorage
    if coalesce is None:
        storage = _PerFrameStorage(url, read_only=True, config=config)
    else:
        storage = ObjectStorage(url, read_only=True, coalesce=coalesce, config=config)
    return Store(storage, read_only=True)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _endpoint(latency_ms: float) -> Iterator[str | None]:
    """None (the environment's endpoint) without latency, else a delaying proxy's URL."""
    if not latency_ms:
        yield None
        return
    upstream = os.environ["AWS_ENDPOINT_URL"].removeprefix("http://").rstrip("/")
    host, _, port = upstream.rpartition(":")
    with DelayProxy(host, int(port), latency_ms / 1000) as proxy:
        yield proxy.endpoint


@click.command(name="s3")
@frames_from_option()
@click.option("--distinct", default=100, show_default=True, help="Distinct frames to cycle.")
@click.option("--url", help="s3://bucket/prefix on an existing server (default: SeaweedFS here).")
@click.option("--races", default=4, show_default=True, help="Races to write.")
@click.option("--race-frames", default=256, show_default=True, help="Frames per race.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--seq-len", default=4, show_default=True)
@click.option("--batches", default=8, show_default=True, help="Batches per figure.")
@click.option("--latency-ms", default="0,10", show_default=True, help="Request delays to add.")
@work_option
@out_option
def command(
    frames_from: str,
    distinct: int,
    url: str | None,
    races: int,
    race_frames: int,
    batch_size: int,
    seq_len: int,
    batches: int,
    latency_ms: str,
    work: str | None,
    out: str | None,
) -> None:
    """Sampling frames/s from an S3-compatible store vs local disk; coalescing; threads.

    \b
      replay bench s3 --frames-from ./replay-data --out docs/results/s3-cpu.json
    """
    frames = load_frames(frames_from, distinct)
    try:
        latencies = [float(x) for x in latency_ms.split(",") if x.strip()]
    except ValueError as e:
        raise click.BadParameter(f"--latency-ms takes numbers like 0,10: {e}") from None
    with tempfile.TemporaryDirectory(dir=work) as scratch, progress("bench s3"):
        results = run_s3_bench(
            frames,
            Path(scratch),
            url=url,
            races=races,
            race_frames=race_frames,
            batch_size=batch_size,
            seq_len=seq_len,
            batches=batches,
            latency_ms=latencies,
        )
    results["setup"]["distinct_frames"] = len(frames)
    results["setup"]["frame_shape"] = list(np.shape(frames[0]))
    results["setup"]["frames_from"] = frames_from
    write_results("s3", results, out)


if __name__ == "__main__":
    command()
