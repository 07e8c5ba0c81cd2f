"""The sampler cache: least recently used out, closed only once no request uses it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from service_helpers import ThreadServer

from service.settings import Settings
from service.state import LRUCache


class Closable:
    def __init__(self, name: str, closed: list[str]) -> None:
        self.name, self.closed = name, closed

    def close(self) -> None:
        self.closed.append(self.name)


def test_lru_borrow_evict_close() -> None:
    closed: list[str] = []
    cache: LRUCache[Closable] = LRUCache(2, close=lambda v: v.close())
    with cache.borrow("a", {"n": "a"}, lambda: Closable("a", closed)) as a:
        with cache.borrow("b", {}, lambda: Closable("b", closed)):
            pass
        with cache.borrow("c", {}, lambda: Closable("c", closed)):
            pass
        assert closed == []  # "a" was pushed out but is still in use
        assert a.evicted
    assert closed == ["a"]  # closed when its borrower returned it
    with cache.borrow("b", {}, lambda: Closable("b2", closed)) as b:
        assert b.value.name == "b"  # cached
        assert b.params == {}
    with cache.borrow("d", {}, lambda: Closable("d", closed)):
        pass
    assert closed == ["a", "c"]  # least recently used
    assert [e.value.name for e in cache.entries()] == ["b", "d"]
    cache.clear()
    assert sorted(closed) == ["a", "b", "c", "d"]


def test_many_sampler_parameters_with_a_small_cache(served_store: Path) -> None:
    errors: list[BaseException] = []
    settings = Settings(store=served_store, sampler_cache_size=2)
    with ThreadServer(settings) as server:

        def hammer(worker: int) -> None:
            try:
                with httpx.Client(base_url=server.url, timeout=30) as http:
                    for i in range(12):  # 12 parameter sets per worker: constant eviction
                        body = {"batch_size": 2, "seed": worker * 100 + i % 6}
                        http.post("/v1/sample", json=body).raise_for_status()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=hammer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        samplers = httpx.get(f"{server.url}/v1/stats").json()["samplers"]
        assert len(samplers) == 2


def test_batches_in_flight_are_bounded_and_slots_come_back(served_store: Path) -> None:
    import json
    import socket

    settings = Settings(store=served_store, max_batches_in_flight=1)
    with ThreadServer(settings) as server:
        errors: list[BaseException] = []

        def client() -> None:
            try:
                with httpx.Client(base_url=server.url, timeout=60) as http:
                    for _ in range(4):
                        http.post("/v1/sample", json={"batch_size": 8}).raise_for_status()
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        # clients that hang up before reading the batch do not keep the slot
        host, port = server.url.removeprefix("http://").split(":")
        body = json.dumps({"batch_size": 32}).encode()
        for _ in range(3):
            with socket.create_connection((host, int(port))) as s:
                s.sendall(
                    b"POST /v1/sample HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
        r = httpx.post(f"{server.url}/v1/sample", json={"batch_size": 2}, timeout=60)
        assert r.status_code == 200
        slots = server.app.state.replay.batch_slots
        deadline = time.monotonic() + 10
        while slots.free != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert slots.free == 1  # the one slot is free again
