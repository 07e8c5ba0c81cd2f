"""What the API answers to odd requests, on the real server: non-finite numbers in
JSON bodies (422, never 500), priorities of unknown races (404), HEAD on GET routes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from service_helpers import ThreadServer, write_race

import replay
from replay.remote import protocol
from service.settings import Settings

BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400"]
#: Bodies with a field to spoil: each `$` is replaced by a non-finite number.
BODIES = {
    "/v1/sample": [
        '{"batch_size": $}',
        '{"seq_len": $}',
        '{"stride": $}',
        '{"seed": $}',
        '{"kind": $}',
        '{"skip_corrupt": $}',
        '{"filters": {"env": $}}',
        '{"filters": {"race_ids": [$]}}',
        '{"decoded": {"size": [$, 10]}}',
        '{"decoded": {"crop": [0, 0, 10, $]}}',
        '{"decoded": {"grey": $}}',
        '{"batch_size": 2, "extra": $}',
        '{"batch_size": 2, "timeout": $}',
        '{"batch_size": 2, "min_size": 1, "samples_per_insert": $}',
        '{"batch_size": 2, "samples_per_insert": 1, "error_margin": $}',
        '{"batch_size": 2, "n_step": 2, "gamma": $}',
    ],
    "/v1/priorities": [
        '{"keys": [["01JZ8X6T3N5W2Q7R9B4C1D0E2F", 0]], "priorities": [$]}',
        '{"keys": [["01JZ8X6T3N5W2Q7R9B4C1D0E2F", $]], "priorities": [1.0]}',
        '{"keys": [[$, 0]], "priorities": [1.0]}',
        '{"keys": $, "priorities": $}',
    ],
}
CASES = [
    (path, body, bad) for path, bodies in BODIES.items() for body in bodies for bad in BAD_NUMBERS
]


@pytest.mark.parametrize(("path", "template", "bad"), CASES)
def test_non_finite_numbers_are_422_with_a_message(
    http: httpx.Client, path: str, template: str, bad: str
) -> None:
    method = "POST" if path == "/v1/sample" else "PUT"
    body = template.replace("$", bad)
    r = http.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, (body, r.status_code, r.text)
    body = json.loads(r.text)  # standard JSON: no NaN in the answer
    assert body["error"] == "ValidationError"  # the shape of every error (docs/protocol.md)
    assert body["detail"]
    assert body["errors"]
    assert all(e["msg"] and e["loc"] for e in body["errors"])


#: Whole-number fields given a bool, text or a float (``true`` was one item, ``"64"`` 64).
NOT_WHOLE = [
    ("POST", "/v1/sample", '{"batch_size": true}'),
    ("POST", "/v1/sample", '{"batch_size": "64"}'),
    ("POST", "/v1/sample", '{"seq_len": 2.0}'),
    ("POST", "/v1/sample", '{"seed": "7"}'),
    ("POST", "/v1/sample", '{"filters": {"min_length": "3"}}'),
    ("POST", "/v1/sample", '{"filters": {"height": true}}'),
    (
        "PUT",
        "/v1/priorities",
        '{"keys": [["01JZ8X6T3N5W2Q7R9B4C1D0E2F", true]], "priorities": [1]}',
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), NOT_WHOLE)
def test_whole_number_fields_take_whole_numbers_only(
    http: httpx.Client, method: str, path: str, body: str
) -> None:
    r = http.request(method, path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, (body, r.status_code, r.text)
    assert r.json()["error"] == "ValidationError"
    assert "integer" in r.json()["detail"]


#: Places a lone surrogate (``\ud800``, valid JSON, not encodable as UTF-8) goes.
SURROGATE_BODIES = [
    ("POST", "/v1/sample", '{"kind": "\\ud800"}'),
    ("POST", "/v1/sample", '{"batch_size": "\\udfff"}'),
    ("POST", "/v1/sample", '{"filters": {"env": "a\\ud800b"}}'),
    ("POST", "/v1/sample", '{"filters": {"race_ids": ["\\ud800"]}}'),
    ("POST", "/v1/sample", '{"batch_size": 2, "\\ud800": 1}'),
    ("PUT", "/v1/priorities", '{"keys": [["\\ud800", 0]], "priorities": [1.0]}'),
]


@pytest.mark.parametrize(("method", "path", "body"), SURROGATE_BODIES)
def test_lone_surrogates_are_422_and_the_connection_lives_on(
    url: str, method: str, path: str, body: str
) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:  # one keep-alive connection
        r = http.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (body, r.status_code, r.text)
        answer = r.json()
        assert answer["error"] == "ValidationError"
        assert answer["detail"]
        assert http.get("/v1/live").status_code == 200  # the same connection still answers


def test_priorities_of_an_unknown_race_are_404(http: httpx.Client, served_store: Path) -> None:
    known = replay.open_store(served_store, mode="r").race_ids()[0]
    params = {"kind": "prioritized", "batch_size": 4, "seed": 77}
    http.post("/v1/sample", json=params).raise_for_status()
    unknown = "01JZ8X6T3N5W2Q7R9B4C1D0E2F"
    body = {"keys": [[known, 0], [unknown, 3]], "priorities": [1.0, 2.0]}
    r = http.put("/v1/priorities", json=body)
    assert r.status_code == 404
    assert r.json()["error"] == "RaceNotFoundError"
    assert unknown in r.json()["detail"]
    fine = http.put("/v1/priorities", json={"keys": [[known, 0]], "priorities": [1.0]})
    assert fine.json() == {"updated": 1}


def test_priorities_of_a_race_evicted_since_sampled_are_ignored(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """Capacity eviction removes races under a learner: its next update of their
    priorities must not fail (the embedded sampler ignores them too)."""
    store = replay.open_store(tmp_path / "store")
    old, new = (write_race(store, frames[:8], shard_size=8) for _ in range(2))
    with ThreadServer(Settings(store=tmp_path / "store")) as server:
        params = {"kind": "prioritized", "batch_size": 16, "seed": 1}
        batch = protocol.unpack(httpx.post(f"{server.url}/v1/sample", json=params).content)
        assert set(batch.keys.race_ids) == {old, new}
        store.set_capacity(max_bytes=store.race_nbytes(new))
        assert [e.race_id for e in store.enforce_capacity().evictions] == [old]
        keys = [[old, 0], [new, 0]]
        r = httpx.put(f"{server.url}/v1/priorities", json={"keys": keys, "priorities": [1, 2]})
        assert r.json() == {"updated": 2}


def test_head_answers_like_get_without_a_body(http: httpx.Client, served_store: Path) -> None:
    race_id = replay.open_store(served_store, mode="r").race_ids()[0]
    for path in [
        "/v1/live",
        "/v1/health",
        "/v1/stats",
        "/v1/races",
        f"/v1/races/{race_id}",
        f"/v1/races/{race_id}/frames/0",
        "/metrics",
        "/",
    ]:
        get, head = http.get(path), http.head(path)
        assert head.status_code == get.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        if path.endswith("/frames/0"):  # an unchanging body: the same length and ETag
            assert head.headers["content-length"] == get.headers["content-length"]
            assert head.headers["etag"] == get.headers["etag"]
    assert http.head("/v1/races/01JZ8X6T3N5W2Q7R9B4C1D0E2F").status_code == 404
    assert http.head("/v1/sample").status_code == 405  # POST only
