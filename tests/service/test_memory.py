"""The service's memory is bounded by its batch slots: a batch costs little more than
its own bytes while read and sent, and clients that never read their answers cannot
make the service hold more than `max_batches_in_flight` batches."""

from __future__ import annotations

import socket
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from service_helpers import batches_drawn, non_reader

import replay
from replay.remote import protocol
from replay.sample.sampler import Drawn
from service.batch_response import CHUNK, BatchResponse, chunks
from service.models import SampleRequest
from service.routers.sample import Pixels, borrow_sampler, draw, sampler_params
from service.settings import Settings
from service.state import ServiceState
from service.tools.process import ServerProcess

#: The decoded view the RSS test asks for: 100 frames of 225 x 400 x 3 (27 MB a batch).
VIEW = {"size": [225, 400]}
VIEW_BATCH = 100 * 225 * 400 * 3


def test_chunks_are_the_parts_in_bounded_pieces() -> None:
    parts: list[bytes | memoryview] = [b"a" * 10, memoryview(b"b" * (3 * CHUNK + 5)), b"", b"c"]
    whole = b"".join(parts)
    pieces = list(chunks(parts))
    assert b"".join(pieces) == whole
    assert all(0 < len(p) <= CHUNK for p in pieces)
    assert parts == []  # emptied as it went


@pytest.mark.parametrize("decoded", [False, True])
def test_one_batch_costs_at_most_1_2x_its_size(served_store: Path, decoded: bool) -> None:
    """Python's allocations (frames read, step arrays, pixels, chunks) from drawing a
    batch to its last byte sent, against what it must hold: the answer, and for a
    decoded batch also the stored frames it decodes."""
    settings = Settings(store=served_store)
    state = ServiceState(4)
    store = replay.open_store(served_store, mode="r")

    # 100 items: every frame of the store once, stored or decoded at a quarter size
    def request(view: dict[str, Any]) -> SampleRequest:
        return SampleRequest.model_validate(
            {"batch_size": 100, "seed": 3, **({"decoded": view} if decoded else {})}
        )

    req = request(VIEW)
    sent: list[int] = []

    async def send(message: Any) -> None:
        sent.append(len(message.get("body", b"")))

    async def receive() -> Any:
        return {"type": "http.disconnect"}

    def draw_one(req: SampleRequest) -> Drawn[Pixels]:
        with borrow_sampler(store, state, sampler_params(req)) as entry:
            return draw(entry, req, settings, None)

    def one_batch() -> tuple[int, int]:
        drawn = draw_one(req)
        read = sum(len(blob) for row in drawn.encoded.frames for blob in row)
        parts = protocol.pack(drawn.encoded, drawn.decoded)
        del drawn  # as the route's frame is gone once it returns the response
        response = BatchResponse(parts, release=lambda: None)
        anyio.run(response, {"type": "http"}, receive, send)
        return response.nbytes, read

    # warm the sampler's index and step-array caches (with another view, so that the
    # measured batch's pixels are a new buffer, not one the decoder recycles)
    draw_one(request({"size": [224, 400]}))
    sent.clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        nbytes, read = one_batch()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert sum(sent) == nbytes
    size = nbytes + read if decoded else nbytes
    print(f"batch of {nbytes >> 10} KiB ({read >> 10} KiB read) peaked at {peak / size:.2f}x")
    assert peak <= 1.2 * size


def test_clients_that_never_read_keep_the_service_within_its_slots(served_store: Path) -> None:
    """10 clients ask for the largest batch allowed and read none of it; the service's
    RSS stays under 200 MB + 2 x max_batches_in_flight x that batch."""
    slots = 2
    env = {
        "REPLAY_MAX_BATCHES_IN_FLIGHT": str(slots),
        "REPLAY_MAX_DECODED_BYTES": str(VIEW_BATCH),  # the largest allowed batch
    }
    with ServerProcess(served_store, env=env) as server:
        base = server.rss()
        clients = [non_reader(server.url, 1, decoded=VIEW) for _ in range(10)]
        deadline = time.monotonic() + 60
        while batches_drawn(server.url) < slots and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)  # time for more batches, if the slots let them through
        drawn = batches_drawn(server.url)
        peak = server.peak_rss
        for c in clients:
            c.close()  # their slots come back: the service serves again
        r = httpx.post(f"{server.url}/v1/sample", json={"batch_size": 4}, timeout=60)
        assert r.status_code == 200
    limit = (200 << 20) + 2 * slots * VIEW_BATCH
    print(
        f"10 non-reading clients: RSS {base >> 20} MB at start, peak {peak >> 20} MB "
        f"(limit {limit >> 20} MB), {drawn} batches drawn"
    )
    assert drawn == slots
    assert peak <= limit


def test_a_client_that_reads_nothing_is_dropped_and_its_slot_freed(served_store: Path) -> None:
    env = {"REPLAY_MAX_BATCHES_IN_FLIGHT": "1", "REPLAY_TIMEOUT_SEND_S": "1"}
    with ServerProcess(served_store, env=env) as server:
        holder = non_reader(server.url, 1)
        deadline = time.monotonic() + 60
        while batches_drawn(server.url) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        # waits for the slot, which frees when the holder is dropped after 1 s
        r = httpx.post(f"{server.url}/v1/sample", json={"batch_size": 4}, timeout=60)
        assert r.status_code == 200
        received = read_until_closed(holder, timeout=30)
        holder.close()
    head, _, rest = received.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    assert head.startswith(b"HTTP/1.1 200")
    assert len(rest) < length  # dropped before its batch was sent


def read_until_closed(s: socket.socket, timeout: float) -> bytes:
    """Everything `s` receives until the server closes or resets it (within `timeout` s)."""
    s.settimeout(timeout)
    data = bytearray()
    try:
        while chunk := s.recv(1 << 20):
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)
