"""Writer benchmark: thread vs process writer, copying vs drawing in the ring.

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

`LAYOUTS` measures `append` for frames laid out in memory as other sources hand
them over (a transposed pygame surface, planar CHW, a reversed BGR view, an RGBA
slice) against NumPy's own copy of the same frames into a ring slot, the way an
`append` that did not look at the layout would copy them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from replay.bench.ingest import Frame, latency_summary, paced
from replay.bench.report import expect, stage
from replay.store import open_store
from replay.write.ring import FrameRing
from replay.write.settings import WriterKind


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


#: How sources other than a contiguous array hand a frame over (the same picture).
LAYOUTS: dict[str, Callable[[Frame], Frame]] = {
    "contiguous": lambda f: f,
    "pygame surface, transposed": lambda f: np.ascontiguousarray(f.transpose(1, 0, 2)).transpose(
        1, 0, 2
    ),
    "planar CHW, transposed": lambda f: np.ascontiguousarray(f.transpose(2, 0, 1)).transpose(
        1, 2, 0
    ),
    "BGR, reversed view": lambda f: f[..., ::-1].copy()[..., ::-1],
    "RGBA, sliced": lambda f: np.concatenate([f, f[..., :1]], axis=2)[..., :3],
}


def _layout_costs(store: Any, frames: Sequence[Frame], n: int, fps: float) -> dict[str, Any]:
    """Per layout: a process writer's `append` paced at `fps`, and NumPy's `copyto` of
    the same frames into a slot (what `append` cost before it looked at layouts)."""
    h, w = frames[0].shape[:2]
    slot = frames[0].copy()  # memory already faulted in, as a ring slot's is
    out: dict[str, Any] = {}
    for name, lay_out in LAYOUTS.items():
        laid = [lay_out(f) for f in frames[: min(len(frames), 4)]]
        copies = paced(laid, 3 * len(laid), 0.0, lambda _i, f: np.copyto(slot, f))
        with store.new_race(env="layouts", height=h, width=w, writer="process") as writer:
            appends = paced(laid, n, fps, lambda _i, f: writer.append(f))
        out[name] = {"append": latency_summary(appends), "numpy_copyto": latency_summary(copies)}
        out[name]["numpy_copyto_vs_append_p50"] = (
            out[name]["numpy_copyto"]["p50_us"] / out[name]["append"]["p50_us"]
        )
    return out


def cpu_seconds(pid: int) -> float:
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
    expect(len(frames_by_env) * len(drivers))
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
            stage(f"writers: {env}, {driver} driver")
            for label, kind, in_ring in WRITER_SETUPS:
                with race(kind) as writer:
                    lat = _driven(writer, frames, n, fps, driver, in_ring)
                figures.setdefault(driver, {})[label] = latency_summary(lat) | {
                    "dropped": writer.stats().dropped
                }
        for label, kind, in_ring in WRITER_SETUPS:
            with race(kind) as writer:
                pids = {os.getpid(), writer.pid}
                cpu = sum(cpu_seconds(pid) for pid in pids)
                started = time.perf_counter()
                _driven(writer, frames, n, 0.0, "sleep", in_ring)
            elapsed = time.perf_counter() - started  # closed: every frame durable
            cpu = sum(cpu_seconds(pid) for pid in pids) - cpu
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
    first = next(iter(frames_by_env.values()))
    results["layouts"] = _layout_costs(store, first, min(n, 30), fps)
    return results
