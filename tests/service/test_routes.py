"""Every route of the real server (``replay serve`` in its own process) on a real store."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from service_helpers import RACES, SHARD

import replay
from replay.read.batch import EncodedBatch
from replay.remote import protocol
from service.routers.frames import etag_of


@pytest.fixture(scope="module")
def store(served_store: Path) -> replay.Store:
    return replay.open_store(served_store, mode="r")


#: Every route of the API, as the OpenAPI schema lists it.
ROUTES = (
    "/v1/live",
    "/v1/health",
    "/v1/stats",
    "/v1/races",
    "/v1/races/{race_id}",
    "/v1/races/{race_id}/steps",
    "/v1/races/{race_id}/frames/{step}",
    "/v1/races/{race_id}/chunks",
    "/v1/races/{race_id}/close",
    "/v1/sample",
    "/v1/priorities",
    "/metrics",
)


def test_health(http: httpx.Client) -> None:
    r = http.get("/v1/health")
    assert r.status_code == 200
    expected = {"status": "ok", "version": replay_version(), "races": len(RACES)}
    assert r.json() == {**expected, "damaged_races": 0}


def test_live(http: httpx.Client) -> None:
    r = http.get("/v1/live")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "version": replay_version()}


def replay_version() -> str:
    from service import __version__

    return __version__


def test_stats(http: httpx.Client, store: replay.Store) -> None:
    s = http.get("/v1/stats").json()
    frames = sum(n for *_, n, _ in RACES)
    assert s["races"] == len(RACES)
    assert s["races_by_status"] == {"complete": len(RACES)}
    assert s["frames"] == frames
    assert s["raw_nbytes"] == frames * 900 * 1600 * 3
    assert s["nbytes"] == sum(store.race_nbytes(r) for r in store.race_ids())
    assert s["compression"] > 10  # JPEG q90 of CarRacing: tens of times smaller
    assert s["requests"] >= 1
    assert s["uptime_s"] > 0


def test_races_list_paging_and_filters(http: httpx.Client, store: replay.Store) -> None:
    ids = store.race_ids()  # oldest first
    page = http.get("/v1/races").json()
    assert page["total"] == 3
    assert [r["race_id"] for r in page["items"]] == ids[::-1]  # newest first
    first = page["items"][-1]
    assert (first["env"], first["map"], first["length"], first["status"]) == (
        "CarRacing-v3",
        "procedural",
        48,
        "complete",
    )
    assert first["step_arrays"] == ["action", "reward", "terminated", "truncated", "t_ns"]

    oldest = http.get("/v1/races", params={"order": "oldest", "limit": 2, "offset": 1}).json()
    assert [r["race_id"] for r in oldest["items"]] == ids[1:3]
    assert (oldest["total"], oldest["offset"], oldest["limit"]) == (3, 1, 2)

    def ids_for(**params: object) -> list[str]:
        r = http.get("/v1/races", params={"order": "oldest", **params})
        assert r.status_code == 200, r.text
        return [item["race_id"] for item in r.json()["items"]]

    assert ids_for(env="CarRacing-v3") == ids[:2]
    assert ids_for(map="arena") == ids[2:]
    assert ids_for(policy="random") == ids[1:]
    assert ids_for(status="complete") == ids
    assert ids_for(status="recording") == []
    assert ids_for(min_length=30) == ids[:2]
    assert ids_for(started_after="2000-01-01T00:00:00") == ids
    assert ids_for(started_before="2000-01-01T00:00:00Z") == []
    assert http.get("/v1/races", params={"limit": 100_000}).status_code == 422
    assert http.get("/v1/races", params={"status": "bogus"}).status_code == 422
    assert http.get("/v1/races", params={"offset": -1}).status_code == 422


@pytest.mark.parametrize(
    "params",
    [
        {"env": "CarRacing-v3"},
        {"env": ["Other-v0", "CarRacing-v3"], "policy": "random"},
        {"map": ["arena", "track-b"], "min_length": 25},
        {"status": ["complete", "aborted"], "q": "RACK"},
        {"since": "2000-01-01T00:00:00", "until": "2999-01-01T00:00:00+02:00"},
        {"until": "2000-01-01T00:00:00Z"},
    ],
)
def test_race_list_filters_are_the_samplers_filters(
    http: httpx.Client, store: replay.Store, params: dict[str, object]
) -> None:
    """One filter rule: the HTTP list keeps exactly the races `replay.Filters` keeps."""
    names = {"q": "contains"}
    filters = replay.Filters(**{names.get(k, k): v for k, v in params.items()})  # type: ignore[arg-type]
    embedded = [info.race_id for info in store.races() if filters.matches(info)]
    r = http.get("/v1/races", params={"order": "oldest", **params})
    assert r.status_code == 200, r.text
    assert [item["race_id"] for item in r.json()["items"]] == embedded


def test_race_list_takes_both_time_spellings(http: httpx.Client) -> None:
    def total(**params: str) -> int:
        r = http.get("/v1/races", params=params)
        assert r.status_code == 200, r.text
        return int(r.json()["total"])

    assert total(since="2999-01-01T00:00:00Z") == total(started_after="2999-01-01T00:00:00Z") == 0
    assert total(until="2999-01-01T00:00:00Z") == total(started_before="2999-01-01T00:00:00Z") == 3
    both = {"since": "2000-01-01T00:00:00Z", "started_after": "2000-01-01T00:00:00Z"}
    r = http.get("/v1/races", params=both)
    assert r.status_code == 422
    assert "started_after" in r.text


def test_the_api_version_is_written_once(http: httpx.Client) -> None:
    """Every API route is under ``/v1``, which `service.routers.API_PREFIX` alone spells."""
    import inspect

    from service.routers import API_PREFIX, frames, health, insert, races, sample, stats

    paths = set(http.get("/openapi.json").json()["paths"])
    assert paths == set(ROUTES)
    assert API_PREFIX == "/v1"
    for module in (health, stats, races, frames, sample, insert):
        source = inspect.getsource(module)
        assert '"/v1' not in source, module.__name__
        assert module.router.prefix.startswith(API_PREFIX)


def test_one_race(http: httpx.Client, store: replay.Store) -> None:
    race_id = store.race_ids()[0]
    r = http.get(f"/v1/races/{race_id}")
    assert r.status_code == 200
    d = r.json()
    assert d["race_id"] == race_id
    assert d["length"] == 48
    assert d["n_shards"] == 48 // SHARD
    assert d["nbytes"] == store.race_nbytes(race_id)
    assert d["raw_nbytes"] == 48 * 900 * 1600 * 3
    assert d["compression"] == pytest.approx(d["raw_nbytes"] / d["nbytes"], rel=1e-3)
    assert d["codec"]["name"] == "jpeg"

    missing = "0" * 26
    r = http.get(f"/v1/races/{missing}")
    assert r.status_code == 404
    assert r.json()["error"] == "RaceNotFoundError"
    assert missing in r.json()["detail"]
    assert http.get("/v1/races/not-a-race-id").status_code == 422


def test_steps(http: httpx.Client, store: replay.Store) -> None:
    race_id = store.race_ids()[0]
    race = store.race(race_id)
    d = http.get(f"/v1/races/{race_id}/steps").json()
    assert (d["start"], d["stop"]) == (0, 48)
    assert d["arrays"]["reward"] == race.steps("reward").tolist()
    np.testing.assert_array_equal(np.array(d["arrays"]["action"], np.float32), race.steps("action"))
    assert d["arrays"]["terminated"][-1] is True

    part = http.get(
        f"/v1/races/{race_id}/steps", params={"names": ["reward"], "start": 10, "stop": 13}
    ).json()
    assert part == {"race_id": race_id, "start": 10, "stop": 13, "arrays": {"reward": [10, 11, 12]}}
    past = http.get(f"/v1/races/{race_id}/steps", params={"start": 100, "stop": 200}).json()
    assert (past["start"], past["stop"]) == (48, 48)
    bad = http.get(f"/v1/races/{race_id}/steps", params={"names": ["nope"]})
    assert bad.status_code == 422
    assert bad.json()["error"] == "StepDataError"


def test_frame_is_the_stored_chunk(http: httpx.Client, store: replay.Store) -> None:
    for race_id in store.race_ids():
        race = store.race(race_id)
        for step in (0, SHARD - 1, SHARD, race.length - 1):
            r = http.get(f"/v1/races/{race_id}/frames/{step}")
            assert r.status_code == 200
            assert r.headers["content-type"] == "image/jpeg"
            assert r.content == race.frame_bytes(step)
            assert r.content[:2] == b"\xff\xd8"  # a JPEG, untouched
            assert r.headers["etag"] == etag_of(r.content)
            assert "immutable" in r.headers["cache-control"]


def test_frame_conditional_and_missing(http: httpx.Client, store: replay.Store) -> None:
    race_id = store.race_ids()[0]
    r = http.get(f"/v1/races/{race_id}/frames/3")
    again = http.get(f"/v1/races/{race_id}/frames/3", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    other = http.get(f"/v1/races/{race_id}/frames/3", headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200
    past = http.get(f"/v1/races/{race_id}/frames/48")
    assert past.status_code == 404
    detail = past.json()["detail"]  # the last step, one past it: which steps exist
    assert detail == f"race {race_id} has 48 committed steps (0..47); there is no step 48"
    assert http.get(f"/v1/races/{race_id}/frames/-1").status_code == 422
    assert http.get(f"/v1/races/{race_id}/frames/{2**62}").status_code == 422
    assert http.get(f"/v1/races/{'0' * 26}/frames/0").status_code == 404


def test_sample_binary_batch(http: httpx.Client, store: replay.Store) -> None:
    r = http.post("/v1/sample", json={"batch_size": 8, "seq_len": 3, "stride": 2, "seed": 11})
    assert r.status_code == 200
    assert r.headers["content-type"] == protocol.MEDIA_TYPE
    batch = protocol.unpack(r.content)
    assert isinstance(batch, EncodedBatch)
    assert batch.keys.steps.shape == (8, 3)
    assert (batch.height, batch.width) == (900, 1600)
    for b, race_id in enumerate(batch.keys.race_ids):
        race = store.race(race_id)
        steps = batch.keys.steps[b]
        assert np.all(np.diff(steps) == 2)
        for j, step in enumerate(steps.tolist()):
            assert batch.frames[b][j] == race.frame_bytes(step)
            assert batch.steps["reward"][b, j] == step
    assert batch.steps["action"].shape == (8, 3, 3)


def test_sample_filters_and_limits(http: httpx.Client, store: replay.Store) -> None:
    other = store.race_ids()[2]
    r = http.post("/v1/sample", json={"batch_size": 16, "filters": {"env": "Other-v0"}})
    batch = protocol.unpack(r.content)
    assert set(batch.keys.race_ids) == {other}

    def status(body: object) -> int:
        return http.post("/v1/sample", json=body).status_code

    assert status({"batch_size": 100_000}) == 422
    assert status({"seq_len": 10_000}) == 422
    assert status({"batch_size": 0}) == 422
    assert status({"kind": "nope"}) == 422
    assert status({"unknown": 1}) == 422
    assert status({"filters": {"since": "not a time"}}) == 422
    assert status({"filters": {"race_ids": ["../../etc"]}}) == 422
    nothing = http.post("/v1/sample", json={"filters": {"env": "Nope-v0"}})
    assert nothing.status_code == 422
    assert nothing.json()["error"] == "SamplingError"
    too_long = http.post("/v1/sample", json={"batch_size": 1, "seq_len": 49})
    assert too_long.status_code == 422
    assert "seq_len=49" in too_long.json()["detail"]
    json_type = {"content-type": "application/json"}
    assert http.post("/v1/sample", content=b"{not json", headers=json_type).status_code == 422
    huge = http.post("/v1/sample", content=b" " * (2 << 20), headers=json_type)
    assert huge.status_code == 413


def test_sample_decoded_view(http: httpx.Client, store: replay.Store) -> None:
    body = {"batch_size": 2, "seed": 3, "decoded": {"size": [225, 400]}}
    r = http.post("/v1/sample", json=body)
    assert r.status_code == 200
    raw = protocol.unpack(r.content)
    assert isinstance(raw, protocol.RawBatch)
    assert raw.frames.shape == (2, 1, 225, 400, 3)
    assert raw.frames.dtype == np.uint8
    view = {"crop": [0, 0, 450, 800], "grey": True}
    grey = http.post("/v1/sample", json={"batch_size": 1, "decoded": view})
    assert protocol.unpack(grey.content).frames.shape == (1, 1, 450, 800, 1)  # type: ignore[union-attr]
    full = http.post("/v1/sample", json={"batch_size": 100, "decoded": {}})  # 432 MB
    assert full.status_code == 422
    assert "over the limit" in full.json()["detail"]
    off_frame = {"crop": [800, 0, 450, 10]}
    bad_crop = http.post("/v1/sample", json={"batch_size": 1, "decoded": off_frame})
    assert bad_crop.status_code == 422


def test_priorities(http: httpx.Client, store: replay.Store) -> None:
    ids = store.race_ids()
    params = {"kind": "prioritized", "batch_size": 32, "seed": 5}
    http.post("/v1/sample", json=params).raise_for_status()
    # Silence every item of the first two races: only the third can be drawn.
    keys = [[r, s] for r in ids[:2] for s in range(48)]
    r = http.put("/v1/priorities", json={"keys": keys, "priorities": [0.0] * len(keys)})
    assert r.status_code == 200
    assert r.json() == {"updated": len(keys)}
    batch = protocol.unpack(http.post("/v1/sample", json=params).content)
    assert set(batch.keys.race_ids) == {ids[2]}

    bad = http.put("/v1/priorities", json={"keys": [[ids[0], 0]], "priorities": [1.0, 2.0]})
    assert bad.status_code == 422
    negative = {"keys": [[ids[0], 0]], "priorities": [-1]}
    assert http.put("/v1/priorities", json=negative).status_code == 422
    not_an_id = {"keys": [["../x", 0]], "priorities": [1]}
    assert http.put("/v1/priorities", json=not_an_id).status_code == 422
    stats = http.get("/v1/stats").json()
    assert any(s["kind"] == "prioritized" and s["batches"] >= 2 for s in stats["samplers"])


def test_metrics(http: httpx.Client, store: replay.Store) -> None:
    race_id = store.race_ids()[0]
    http.get(f"/v1/races/{race_id}/frames/0").raise_for_status()
    http.post("/v1/sample", json={"batch_size": 4}).raise_for_status()
    http.get(f"/v1/races/{'0' * 26}")
    text = http.get("/metrics").text
    frame_route = 'route="/v1/races/{race_id}/frames/{step}"'
    assert (
        f'replay_http_request_duration_seconds_bucket{{le="0.005",method="GET",{frame_route}}}'
        in text
    )
    assert 'replay_frames_served_total{route="sample"}' in text
    assert 'replay_frames_served_total{route="frame"}' in text
    assert "replay_batch_bytes_count" in text
    assert 'replay_errors_total{error="RaceNotFoundError"}' in text
    assert "replay_store_races 3.0" in text
    assert f"replay_store_frames {float(sum(n for *_, n, _ in RACES))}" in text


def test_viewer_shell_and_docs(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert '<script src="/static/viewer.js"' in page.text
    assert http.get("/static/viewer.js").status_code == 200
    assert http.get("/static/viewer.css").status_code == 200
    assert http.get("/docs").status_code == 200


def test_openapi_lists_every_route_with_examples(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ROUTES:
        assert path in paths, path
    assert protocol.MEDIA_TYPE in paths["/v1/sample"]["post"]["responses"]["200"]["content"]
    frame = paths["/v1/races/{race_id}/frames/{step}"]["get"]
    assert "image/jpeg" in frame["responses"]["200"]["content"]
    components = schema["components"]["schemas"]
    for model in ("SampleRequest", "PrioritiesRequest", "RaceSummary", "Stats", "Health", "Live"):
        text = str(components[model])
        assert "example" in text, model
