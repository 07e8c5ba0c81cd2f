"""Security: bearer token, bind refusal, path traversal, request limits, damaged shards."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pydantic
import pytest
from click.testing import CliRunner
from service_helpers import SHARD, ThreadServer, damage_shard_index, raw_get, write_race

import replay
from replay.format import spec as fmt
from replay.remote.client import Client
from replay.remote.retries import ServiceError
from service.cli import serve
from service.tools.process import ServerProcess
from service.settings import Settings, is_loopback

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def guarded(served_store: Path) -> object:
    with ThreadServer(Settings(store=served_store, token=TOKEN)) as server:
        yield server


def test_token_required_everywhere_but_the_probes(
    guarded: ThreadServer, served_store: Path
) -> None:
    race_id = replay.open_store(served_store, mode="r").race_ids()[0]
    protected = [
        ("GET", "/v1/stats"),
        ("GET", "/v1/races"),
        ("GET", f"/v1/races/{race_id}"),
        ("GET", f"/v1/races/{race_id}/steps"),
        ("GET", f"/v1/races/{race_id}/frames/0"),
        ("POST", "/v1/sample"),
        ("PUT", "/v1/priorities"),
        ("GET", "/metrics"),
    ]
    bodies = {"/v1/sample": {"batch_size": 2}, "/v1/priorities": {"keys": [], "priorities": []}}
    with httpx.Client(base_url=guarded.url) as http:
        for method, path in protected:
            body = bodies.get(path)
            none = http.request(method, path, json=body)
            assert none.status_code == 401, path
            assert none.headers["www-authenticate"] == "Bearer"
            assert none.json()["error"] == "Unauthorized"
            wrong = http.request(method, path, json=body, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
            basic = http.request(method, path, json=body, headers={"Authorization": "Basic eDp5"})
            assert basic.status_code == 401, path
            right = http.request(
                method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
            )
            assert right.status_code in (200, 422), (
                path,
                right.text,
            )  # 422: no prioritized sampler
        # open: the probes and the viewer shell, which holds no data
        for path in ("/v1/live", "/v1/health", "/", "/static/viewer.js"):
            assert http.get(path).status_code == 200, path
        frame = http.get(
            f"/v1/races/{race_id}/frames/0", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert frame.headers["cache-control"].startswith("private")


def test_client_with_token(guarded: ThreadServer) -> None:
    with Client(guarded.url, token=TOKEN) as client:
        assert client.sample(batch_size=2).frames.shape == (2, 1, 900, 1600, 3)
    with (
        Client(guarded.url, token="wrong") as client,
        pytest.raises(ServiceError, match="401") as e,
    ):
        client.stats()
    assert e.value.status == 401


def test_refuses_public_bind_without_token(served_store: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(serve, [str(served_store), "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1
    assert "refusing to bind '0.0.0.0' without a token" in result.output
    with pytest.raises(pydantic.ValidationError, match="refusing to bind"):
        Settings(store=served_store, host="::")
    with pytest.raises(pydantic.ValidationError, match="refusing to bind"):
        Settings(store=served_store, host="replay.example.com")
    assert Settings(store=served_store, host="0.0.0.0", token="t").host == "0.0.0.0"
    assert Settings(store=served_store, host="0.0.0.0", allow_public=True).allow_public
    assert [is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost")] == [
        True
    ] * 5
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "::", "example.com"))


def test_allow_public_without_a_token_warns(served_store: Path) -> None:
    """``replay serve --allow-public`` (bound to loopback here: tests reach no other
    address) says loudly that anyone who reaches it reads the store."""
    with ServerProcess(served_store, "--allow-public", stderr=subprocess.STDOUT) as server:
        assert httpx.get(f"{server.url}/v1/races").status_code == 200
        deadline = time.monotonic() + 10
        while "WARNING" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "WARNING: --allow-public and no token: anyone who can reach" in server.output()
    with ServerProcess(served_store, stderr=subprocess.STDOUT) as quiet:
        pass
    assert "WARNING" not in quiet.output()


def test_refuses_public_bind_from_the_environment(
    served_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLAY_HOST", "0.0.0.0")
    result = CliRunner().invoke(serve, [str(served_store), "--port", "0"])
    assert result.exit_code == 1
    assert "refusing to bind" in result.output


def test_serve_refuses_a_missing_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(serve, [str(tmp_path / "nothing"), "--port", "0"])
    assert result.exit_code == 1
    assert "not a replay store" in result.output


TRAVERSALS = [
    "/v1/races/../../../../etc/passwd",
    "/v1/races/..%2F..%2F..%2Fetc%2Fpasswd/frames/0",
    "/v1/races/%2e%2e/%2e%2e/etc/frames/0",
    "/v1/races/%2E%2E%2F%2E%2E%2Fzarr.json/frames/0",
    "/v1/races/%252e%252e%252fzarr.json/frames/0",
    "/v1/races//etc/passwd/frames/0",
    "/v1/races/%2Fetc%2Fpasswd/frames/0",
    "/v1/races/..%5C..%5Czarr.json/frames/0",
    "/v1/races/{rid}%00/frames/0",
    "/v1/races/{rid}/../{rid}/frames/0/../../../../zarr.json",
    "/v1/races/{rid}/frames/..%2F..%2Fzarr.json",
    "/v1/races/{rid}/frames/0%2F..%2F1",
    "/v1/races/{rid}/steps?names=../../zarr.json",
    "/v1/races/{rid}/steps?names=%2Fetc%2Fpasswd",
    "/v1/races/races%2F{rid}/frames/0",
    "/static/../../../../etc/passwd",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%2e%2e/%2e%2e/app.py",
    "/static/%2e%2e%2fapp.py",
    "//etc/passwd",
    "/v1/races/" + "A" * 5000 + "/frames/0",
]


def test_path_traversal_gets_4xx(url: str, served_store: Path) -> None:
    rid = replay.open_store(served_store, mode="r").race_ids()[0]
    secret = (served_store / fmt.METADATA).read_bytes()
    passwd = Path("/etc/passwd").read_bytes()
    app_source = Path(__file__).parents[2].joinpath("service", "app.py").read_bytes()
    for raw in TRAVERSALS:
        target = raw.replace("{rid}", rid)
        status, body = raw_get(url, target)
        assert 400 <= status < 500, (target, status, body[:200])
        for leaked in (secret, passwd[:64], app_source[:64]):
            assert leaked not in body, target


def test_damaged_shard_is_409_naming_race_and_shard(tmp_path: Path, frames: list[object]) -> None:
    store = replay.open_store(tmp_path / "store")
    race_id = write_race(store, frames[: SHARD * 2])
    damage_shard_index(tmp_path / "store", race_id, 1)
    with (
        ThreadServer(Settings(store=tmp_path / "store")) as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert http.get(f"/v1/races/{race_id}/frames/0").status_code == 200
        r = http.get(f"/v1/races/{race_id}/frames/{SHARD + 1}")
        assert r.status_code == 409
        body = r.json()
        assert body["error"] == "CorruptDataError"
        assert (body["race_id"], body["shard"]) == (race_id, 1)
        assert race_id in body["detail"]
        assert "shard 1" in body["detail"]
        failures = 0
        for seed in range(10):  # half the items sit in the damaged shard
            s = http.post("/v1/sample", json={"batch_size": 8, "seed": seed})
            assert s.status_code in (200, 409), s.text
            if s.status_code == 409:
                failures += 1
                assert s.json()["shard"] == 1
        assert failures > 0
        # The race disappearing under the service (evicted) is a 404, not a 500.
        shutil.rmtree(tmp_path / "store" / fmt.race_key(race_id))
        gone = http.get(f"/v1/races/{race_id}/frames/0")
        assert gone.status_code == 404
        assert http.get("/v1/stats").status_code == 200


def test_missing_store_is_503(tmp_path: Path) -> None:
    store = tmp_path / "store"
    replay.open_store(store)
    with ThreadServer(Settings(store=store)) as server:
        shutil.rmtree(store)  # before the service first opens it
        r = httpx.get(f"{server.url}/v1/health")
        assert r.status_code == 503
        assert r.json()["error"] == "StoreError"
        assert "not a replay store" in r.json()["detail"]


def test_live_answers_while_the_store_is_gone_and_health_does_not(tmp_path: Path) -> None:
    store = tmp_path / "store"
    replay.open_store(store)
    with (
        ThreadServer(Settings(store=store, token=TOKEN)) as server,
        httpx.Client(base_url=server.url, timeout=5) as http,
    ):
        assert http.get("/v1/health").status_code == 200  # the store is open from here on
        shutil.rmtree(store)
        for _ in range(3):
            started = time.perf_counter()
            live = http.get("/v1/live")  # no token, no storage
            assert time.perf_counter() - started < 0.5
            assert live.status_code == 200
            assert live.json()["status"] == "ok"
        ready = http.get("/v1/health")
        assert ready.status_code == 503
        assert ready.json()["error"] == "StoreError"
        assert f"{store} is no longer a replay store" in ready.json()["detail"]
        replay.open_store(store)  # back: ready again, without a restart
        assert http.get("/v1/health").status_code == 200
