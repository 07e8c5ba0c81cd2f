"""A writer in its own process, for the service's live-refresh test.

    python live_writer.py STORE FRAMES.npy --count 40 --fps 30 --shard-size 8

Appends frames from FRAMES.npy (cycling) with reward = step, at `fps`; prints
the race id on the first line of stdout and "done N" at the end.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    frames = np.load(args.frames, mmap_mode="r")
    store = replay.open_store(args.store)
    writer = store.new_race(
        env="Live-v0", fps=args.fps, shard_size=args.shard_size, flush_interval=0.1
    )
    print(writer.race_id, flush=True)
    with writer:
        start = time.monotonic()
        for step in range(args.count):
            writer.append(frames[step % len(frames)], reward=float(step))
            time.sleep(max(0.0, start + (step + 1) / args.fps - time.monotonic()))
    print("done", writer.stats().written, flush=True)


if __name__ == "__main__":
    main()
