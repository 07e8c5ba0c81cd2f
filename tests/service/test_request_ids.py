"""Request ids are keyed on the request's content (issue 23, item 5): a reused id with
another body is a 422 naming it, never another request's answer; a failed request
never evicts another's entry; the memory cap counts the bytes entries really hold."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import anyio
import httpx
import numpy as np

import replay
from replay.read.batch import SampleKeys
from replay.remote import protocol
from service.request_ids import RequestIds, digest
from service.routers.sample import DrawnKeys

UNKNOWN = "01JZ8X6T3N5W2Q7R9B4C1D0E2F"


def _with_id(rid: str) -> dict[str, str]:
    return {protocol.REQUEST_ID_HEADER: rid}


def test_a_reused_sample_id_with_other_filters_is_422_and_the_first_survives(
    http: httpx.Client,
) -> None:
    first = {"batch_size": 4, "seed": 901}
    a = http.post("/v1/sample", json=first, headers=_with_id("sample-901"))
    assert a.status_code == 200, a.text
    other = {"batch_size": 4, "seed": 901, "filters": {"env": "Nowhere-v0"}}
    b = http.post("/v1/sample", json=other, headers=_with_id("sample-901"))
    assert b.status_code == 422, b.text
    assert b.json()["error"] == "RequestIdConflict"
    assert "'sample-901'" in b.json()["detail"]
    again = http.post("/v1/sample", json=first, headers=_with_id("sample-901"))
    assert again.content == a.content  # the first's answer, not a new batch
    assert http.post("/v1/sample", json=first).content != a.content  # the stream moved once


def test_a_reused_priorities_id_with_other_keys_is_refused_not_ignored(
    http: httpx.Client, served_store: Path
) -> None:
    known = replay.open_store(served_store, mode="r").race_ids()[0]
    http.post("/v1/sample", json={"kind": "prioritized", "batch_size": 4}).raise_for_status()
    body = {"keys": [[known, 0]], "priorities": [1.0]}
    ok = http.put("/v1/priorities", json=body, headers=_with_id("prio-1"))
    assert ok.json() == {"updated": 1}
    for changed in (
        {"keys": [[known, 1]], "priorities": [1.0]},
        {"keys": [[known, 0]], "priorities": [5.0]},
        {"keys": [[UNKNOWN, 0]], "priorities": [1.0]},  # was a 200 for an unknown race
    ):
        r = http.put("/v1/priorities", json=changed, headers=_with_id("prio-1"))
        assert r.status_code == 422, (changed, r.text)
        assert r.json()["error"] == "RequestIdConflict"
    fresh = {"keys": [[UNKNOWN, 0]], "priorities": [1.0]}
    assert http.put("/v1/priorities", json=fresh, headers=_with_id("prio-2")).status_code == 404
    assert http.put("/v1/priorities", json=body, headers=_with_id("prio-1")).json() == {
        "updated": 1
    }


def test_a_failed_repeat_never_evicts_the_first_answer() -> None:
    async def main() -> None:
        ids = RequestIds(ttl_s=60)
        content = digest("sample", "{}")
        first = await ids.claim(("sample", "x"), content)
        assert first.owner
        first.done("answer")
        repeat = await ids.claim(("sample", "x"), content)
        assert (repeat.owner, repeat.value) == (False, "answer")
        repeat.fail()  # e.g. re-reading its keys met damage
        assert (await ids.claim(("sample", "x"), content)).value == "answer"

    anyio.run(main)


def test_the_memory_cap_counts_what_entries_hold() -> None:
    batch = 64
    n = 300

    def answer(i: int) -> DrawnKeys:
        keys = SampleKeys(
            race_ids=[f"01JZ8X6T3N5W2Q7R9B4C1D{i:04d}"[:26] for _ in range(batch)],
            steps=np.arange(batch, dtype=np.int64)[:, None] + i,
            weights=np.ones(batch, np.float32),
            probabilities=np.full(batch, 1 / batch),
        )
        return DrawnKeys(keys, [])

    async def fill(ids: RequestIds) -> None:
        for i in range(n):
            ticket = await ids.claim(("sample", f"request-{i:08d}"), digest("sample", str(i)))
            ticket.done(answer(i))

    anyio.run(fill, RequestIds(ttl_s=60))  # warm: what the first run allocates for good
    ids = RequestIds(ttl_s=60)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        anyio.run(fill, ids)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ids) == n
    assert held <= ids.nbytes <= 2 * held, (held, ids.nbytes)  # counted: at least what is held
