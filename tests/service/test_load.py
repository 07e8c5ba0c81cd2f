"""Load: concurrent clients for a bounded time against the real server; no errors, bounded RSS.

The service holds no frames between requests (the index keeps a few bytes per
frame, batches live only while they are sent), so its memory is its code plus
the batches in flight: the bound below does not depend on the store's size.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import replay
from replay.remote.client import Client
from service.tools.process import ServerProcess

SECONDS = 4.0
#: Resident memory the service may reach under this load (code ~110 MB + batches in flight).
RSS_LIMIT = 400 << 20
#: Growth allowed between the first and the last second of the run (no leak per request).
RSS_GROWTH_LIMIT = 64 << 20


@pytest.mark.slow
def test_concurrent_clients(server: ServerProcess, served_store: Path) -> None:
    store = replay.open_store(served_store, mode="r")
    races = [(info.race_id, info.length) for info in store.races()]
    deadline = time.monotonic() + SECONDS
    errors: list[BaseException] = []
    counts: dict[str, int] = {}
    rss: list[tuple[float, int]] = []
    opened: list[Client | httpx.Client] = []

    def loop(name: str, work: Callable[[], object]) -> None:
        n = 0
        try:
            while time.monotonic() < deadline:
                work()
                n += 1
        except BaseException as e:
            errors.append(e)
        counts[name] = n

    def sampler(seed: int) -> Callable[[], object]:
        client = Client(server.url)
        opened.append(client)
        rng = random.Random(seed)
        kinds = ["uniform", "recent", "prioritized"]
        return lambda: client.sample_encoded(
            kind=rng.choice(kinds), batch_size=32, seq_len=rng.choice([1, 2]), seed=seed
        )

    def frames() -> Callable[[], object]:
        http = httpx.Client(base_url=server.url, timeout=30)
        opened.append(http)
        rng = random.Random(7)

        def get() -> None:
            race_id, length = rng.choice(races)
            http.get(f"/v1/races/{race_id}/frames/{rng.randrange(length)}").raise_for_status()

        return get

    def browse() -> Callable[[], object]:
        http = httpx.Client(base_url=server.url, timeout=30)
        opened.append(http)
        paths = ["/v1/races", "/v1/stats", "/metrics", f"/v1/races/{races[0][0]}/steps"]
        return lambda: [http.get(p).raise_for_status() for p in paths]

    def watch() -> None:
        while time.monotonic() < deadline:
            rss.append((time.monotonic(), server.rss()))
            time.sleep(0.05)

    workers = {f"sample-{i}": sampler(i) for i in range(4)}
    workers |= {"frames-0": frames(), "frames-1": frames(), "browse": browse()}
    threads = [threading.Thread(target=loop, args=item) for item in workers.items()]
    threads.append(threading.Thread(target=watch))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 60)
    for c in opened:
        c.close()
    assert errors == []
    assert all(counts[name] > 0 for name in workers), counts
    peak = max(r for _, r in rss)
    assert peak < RSS_LIMIT, f"service RSS peaked at {peak / 2**20:.0f} MB"
    start = time.monotonic() - SECONDS
    first = max(r for t, r in rss if t < start + 1)
    last = max(r for t, r in rss if t >= start + SECONDS - 1)
    assert last - first < RSS_GROWTH_LIMIT, f"RSS grew from {first >> 20} to {last >> 20} MB"
    print(f"load: {counts}, service RSS peak {peak / 2**20:.0f} MB")
