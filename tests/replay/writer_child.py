"""A writer in its own process, for crash, concurrency and live-read tests.

    python writer_child.py STORE FRAMES.npy --count 40 --fps 30 --shard-size 8

Appends frames from FRAMES.npy (cycling), with reward = step and action = step
* (1, 2, 3), at `fps`; prints the race id on the first line of stdout, then
"committed N" lines as the race grows, then "done". Tests kill it or wait.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

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
    args = parser.parse_args()
    frames = np.load(args.frames, mmap_mode="r")
    store = replay.open_store(args.store)
    writer = store.new_race(
        env=args.env,
        height=frames.shape[1],
        width=frames.shape[2],
        fps=args.fps,
        shard_size=args.shard_size,
        flush_interval=args.flush_interval,
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
            time.sleep(max(0.0, start + (step + 1) / args.fps - time.monotonic()))
    print("done", writer.stats().written, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
