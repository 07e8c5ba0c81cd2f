"""The transform and floor rows of ``replay bench sample``: what a `Transform` costs on each
codec, and how close the sampler comes to bare decoding.

The same real frames are stored twice, as a JPEG race and as a lossless zstd race. For
each, in one fresh process, batches are drawn in turn (interleaved, so a busy machine
slows every row alike) without a transform ("raw") and with each of `TRANSFORMS`,
and the same stored frames are decoded by the bare decoder (libjpeg-turbo through
simplejpeg, or zstd) on every usable core with nothing else: the floor. A transform's
floor is the decode it needs (a JPEG at the transform's DCT scale, only its luma when
grey; a zstd frame whole). The ratios: each transform's frames/s over raw's, and the
sampler's frames/s as a fraction of its floor.

    from replay.bench.transform_speed import run_transform_bench
    results = run_transform_bench("/tmp/bench-t", frames, n=64, batches=10)
    results["ratios"]["zstd_readme_vs_raw"]      # >= 1: the transform costs nothing
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from numcodecs import Zstd

from replay.codec import jpeg
from replay.codec.frames import CodecName
from replay.codec.transform import Transform
from replay.cpus import usable_cpus

Frame = npt.NDArray[np.uint8]
CODECS: tuple[CodecName, ...] = ("jpeg", "zstd")
_ZSTD = Zstd()


def transforms(height: int, width: int) -> dict[str, Transform]:
    """The shrinking transforms measured: the README's (grey, 1/4 size, float NCHW), RGB at
    1/4 size (uint8), and DQN's 84x84 grey (bilinear, a fractional factor)."""
    quarter = (height // 4, width // 4)
    return {
        "readme": Transform(size=quarter, grey=True, dtype="float32", layout="NCHW"),
        "rgb_quarter": Transform(size=quarter),
        "grey_84": Transform(size=(84, 84), grey=True, dtype="float32", layout="stacked"),
    }


def run_transform_bench(
    work: str | Path,
    frames: Sequence[Frame],
    *,
    n: int = 64,
    batches: int = 10,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Frames/s raw, with each transform and at the floor, per codec; and their ratios."""
    from replay.store import open_store

    root = Path(work)
    store = open_store(root / "store")
    h, w = frames[0].shape[:2]
    out: dict[str, Any] = {"batch_size": batch_size, "batches": batches, "frames": n}
    for codec in CODECS:
        with store.new_race(env="bench", height=h, width=w, codec=codec) as writer:
            for i in range(n):
                writer.append(frames[i % len(frames)])
        job: dict[str, Any] = {"store": str(root / "store"), "race_id": writer.race_id}
        job |= {"batch_size": batch_size, "batches": batches}
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            out[codec] = pool.submit(_measure, job).result()
    out["ratios"] = ratios(out)
    return out


def ratios(figures: dict[str, Any]) -> dict[str, float]:
    """Each transform's frames/s over raw's, each row's fraction of its floor, and each
    transform's floor over raw's frames/s (its bound against raw)."""
    out: dict[str, float] = {}
    for codec in CODECS:
        rows = figures[codec]
        for name, row in rows.items():
            out[f"{codec}_{name}_vs_floor"] = row["frames_per_s"] / row["floor_frames_per_s"]
            if name != "raw":
                raw = rows["raw"]["frames_per_s"]
                out[f"{codec}_{name}_vs_raw"] = row["frames_per_s"] / raw
                out[f"{codec}_{name}_floor_vs_raw"] = row["floor_frames_per_s"] / raw
    return out


def _measure(job: dict[str, Any]) -> dict[str, dict[str, float]]:
    """In a fresh process: each row's sampler and floor frames/s, interleaved."""
    from replay.store import open_store

    store = open_store(job["store"], mode="r")
    race = store.race(job["race_id"])
    blobs = [race.frame_bytes(s) for s in range(race.length)]
    named: dict[str, Transform | None] = {
        "raw": None,
        **transforms(race.info.height, race.info.width),
    }
    pool = ThreadPoolExecutor(usable_cpus())
    codec = race.info.codec["name"]
    floors = {
        name: _floor(codec, t, race.info.height, race.info.width, pool) for name, t in named.items()
    }
    spent = dict.fromkeys(named, 0.0)
    floor_spent = dict.fromkeys(named, 0.0)
    rng = np.random.default_rng(0)
    b = job["batch_size"]
    filters = {"race_ids": [race.race_id]}
    with store.sampler(batch_size=b, seed=0, filters=filters) as sampler:
        for round_ in range(job["batches"] + 1):  # the first round warms up
            for name, t in named.items():
                started = time.perf_counter()
                sampler.sample(transform=t)
                middle = time.perf_counter()
                floors[name]([blobs[i] for i in rng.integers(0, len(blobs), b)])
                if round_:
                    spent[name] += middle - started
                    floor_spent[name] += time.perf_counter() - middle
    frames = job["batches"] * b
    return {
        name: {
            "frames_per_s": frames / spent[name],
            "floor_frames_per_s": frames / floor_spent[name],
        }
        for name in named
    }


def _floor(
    codec: str, t: Transform | None, height: int, width: int, pool: ThreadPoolExecutor
) -> Callable[[list[bytes]], None]:
    """Bare decoding of a batch's stored frames on every usable core (`pool`, one task
    of consecutive frames per core, as the sampler runs them), nothing else: the decode
    `t` needs (JPEG: its DCT scale, luma only when grey; zstd: whole frames). Without
    a transform each frame lands in its slot of a reused batch buffer, as it must;
    with one, in its thread's reused buffer (a transform's decode is scratch)."""
    scale = 1 if t is None or codec == "zstd" else t.dct_scale(height, width)
    grey = codec != "zstd" and t is not None and t.grey
    shape = (-(-height // scale), -(-width // scale), 1 if grey else 3)
    batch: list[npt.NDArray[np.uint8]] = []
    local = threading.local()

    def decode(blob: bytes, buf: npt.NDArray[np.uint8]) -> None:
        if codec == "zstd":
            _ZSTD.decode(blob, out=buf.reshape(-1))
        else:
            jpeg.decode_host(blob, scale=scale, grey=grey, out=buf)

    def part(first: int, blobs: list[bytes]) -> None:
        if t is None:
            for k, blob in enumerate(blobs):
                decode(blob, batch[0][first + k])
            return
        if getattr(local, "buf", None) is None:
            local.buf = np.empty(shape, dtype=np.uint8)
        for blob in blobs:
            decode(blob, local.buf)

    def run(blobs: list[bytes]) -> None:
        if t is None and not batch:
            batch.append(np.empty((len(blobs), *shape), dtype=np.uint8))
        step = -(-len(blobs) // usable_cpus())
        starts = range(0, len(blobs), step)
        list(pool.map(part, starts, [blobs[i : i + step] for i in starts]))

    return run
