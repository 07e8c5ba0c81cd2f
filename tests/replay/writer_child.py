"""A writer in its own process, for crash, concurrency and live-read tests.

    python writer_child.py STORE FRAMES.npy --count 40 --fps 30 --shard-size 8

Appends frames from FRAMES.npy (cycling), with reward = step and action = step
* (1, 2, 3), at `fps`; prints the race id on the first line of stdout, then
"done N" (N committed) at the end. Tests kill it or wait. ``--writer`` picks the
writer kind (default: thread, for a remote actor too); ``--hang-after N`` prints
"appended N" after N appends and then waits forever without closing (for a test to
SIGKILL it at a known count).

STORE may be a service's URL (``http://127.0.0.1:PORT``): the child is then a remote
actor recording through `replay.Client.new_race`. ``--codec zstd`` makes frames
lossless (byte-exact checks); ``--progress`` prints "appended A written W" (the
writer's counters, W acknowledged) after every append.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the replay under test
import replay


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("frames")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--flush-interval", type=float, default=0.2)
    parser.add_argument("--env", default="child")
    # thread (not the library's auto) by default: the crash and recovery tests kill a
    # writer that dies with its process; the writer-process tests ask for "process"
    parser.add_argument("--writer", default="thread", choices=["auto", "thread", "process"])
    parser.add_argument("--hang-after", type=int, default=None)
    parser.add_argument("--codec", default="jpeg", choices=["jpeg", "zstd"])
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    frames = np.load(args.frames, mmap_mode="r")
    new_race: Any
    if args.store.startswith("http://"):
        new_race = partial(replay.Client(args.store).new_race, writer=args.writer)
    else:
        new_race = partial(replay.open_store(args.store).new_race, writer=args.writer)
    writer = new_race(
        env=args.env,
        height=frames.shape[1],
        width=frames.shape[2],
        fps=args.fps,
        shard_size=args.shard_size,
        flush_interval=args.flush_interval,
        codec=args.codec,
    )
    print(writer.race_id, flush=True)
    with writer:
        start = time.monotonic()
        for step in range(args.count):
            writer.append(
                frames[step % len(frames)],
                action=np.array([1, 2, 3], dtype=np.float32) * step,
                reward=float(step),
            )
            if args.progress:
                stats = writer.stats()
                print("appended", stats.appended, "written", stats.written, flush=True)
            if step + 1 == args.hang_after:
                print("appended", step + 1, flush=True)
                while True:
                    time.sleep(1)
            time.sleep(max(0.0, start + (step + 1) / args.fps - time.monotonic()))
    print("done", writer.stats().written, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
