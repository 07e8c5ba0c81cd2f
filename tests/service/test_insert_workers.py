"""Chunks are committed at most ``insert_workers`` at a time in the whole service
(REPLAY_INSERT_WORKERS): the others wait their turn, and nothing is lost or refused;
the insert routes count what they receive. Real uvicorn on loopback, real stores, real
CarRacing frames (zstd: byte-exact checks)."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pydantic
import pytest
from service_helpers import ThreadServer

import replay
from replay.codec.frames import ZstdFrames
from replay.remote.chunks import MEDIA_TYPE, Chunk, pack
from service.settings import Settings

ACTORS = 6
CHUNKS = 4  # per actor, sent together with the other actors' (a barrier each round)
PER_CHUNK = 2  # frames


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _create(client: httpx.Client) -> str:
    body = {"env": "CarRacing-v3", "codec": "zstd", "shard_size": 4}
    response = client.post("/v1/races", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["race_id"])


def _actor(
    url: str, blobs: list[bytes], barrier: threading.Barrier, answers: list[httpx.Response]
) -> None:
    """Create a race and send `blobs` in CHUNKS chunks, each round with the other actors."""
    with httpx.Client(base_url=url, timeout=120) as client:
        race_id = _create(client)
        for i in range(CHUNKS):
            step = i * PER_CHUNK
            rewards = np.arange(step, step + PER_CHUNK, dtype=np.float32)
            chunk = Chunk(step, blobs[step : step + PER_CHUNK], {"reward": rewards})
            barrier.wait(timeout=120)
            answers.append(
                client.post(
                    f"/v1/races/{race_id}/chunks",
                    content=b"".join(pack(chunk)),
                    headers={"Content-Type": MEDIA_TYPE},
                )
            )


@pytest.mark.parametrize("workers", [1, 2])
def test_chunks_past_the_insert_workers_wait_their_turn_and_nothing_is_lost(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]], workers: int
) -> None:
    n = CHUNKS * PER_CHUNK
    blobs = ZstdFrames().encode(frames[:n])
    replay.open_store(tmp_path / "s")
    answers: list[httpx.Response] = []
    with ThreadServer(Settings(store=tmp_path / "s", insert_workers=workers)) as server:
        barrier = threading.Barrier(ACTORS)
        actors = [
            threading.Thread(target=_actor, args=(server.url, blobs, barrier, answers))
            for _ in range(ACTORS)
        ]
        for actor in actors:
            actor.start()
        for actor in actors:
            actor.join()
        commits = server.app.state.inserts.commits
        assert commits.n == workers
        assert 1 <= commits.peak <= workers  # never more chunks committed at once
        assert commits.running == 0
        assert commits.waited > 0  # chunks did arrive together, and waited their turn
        assert _metric(server.url, "replay_insert_commits_peak") == commits.peak
        assert _metric(server.url, "replay_insert_commits_waited") == commits.waited
    assert len(answers) == ACTORS * CHUNKS
    assert sorted({r.status_code for r in answers}) == [200]  # no refusal, no 500
    store = replay.open_store(tmp_path / "s", mode="r")
    races = list(store.races())
    assert len(races) == ACTORS
    for info in races:
        race = store.race(info.race_id)
        assert race.length == n
        for step in range(n):
            np.testing.assert_array_equal(race.frame(step), frames[step])


def test_the_insert_routes_count_the_bytes_they_receive(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """Request line, headers and body of every insert request, as HTTP/1.1 sends them."""
    replay.open_store(tmp_path / "s")
    chunk = Chunk(0, ZstdFrames().encode(frames[:2]), {"reward": np.zeros(2, np.float32)})
    with ThreadServer(Settings(store=tmp_path / "s")) as server, httpx.Client() as client:
        sent = 0

        def send(request: httpx.Request) -> httpx.Response:
            nonlocal sent
            line = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n"
            head = len(line) + sum(len(k) + len(v) + 4 for k, v in request.headers.raw) + 2
            sent += head + len(request.read())
            return client.send(request)

        created = send(
            client.build_request(
                "POST", f"{server.url}/v1/races", json={"env": "e", "codec": "zstd"}
            )
        )
        race_id = created.json()["race_id"]
        for _ in range(2):  # the second is a retry: acknowledged again, counted again
            answer = send(
                client.build_request(
                    "POST",
                    f"{server.url}/v1/races/{race_id}/chunks",
                    content=b"".join(pack(chunk)),
                    headers={"Content-Type": MEDIA_TYPE},
                )
            )
            assert answer.json()["length"] == 2
        url = f"{server.url}/v1/races/{race_id}/close"
        send(client.build_request("POST", url, json={"status": "complete"}))
        assert _metric(server.url, "replay_insert_requests_total") == 4
        assert _metric(server.url, "replay_insert_request_bytes_total") == sent


def test_insert_workers_come_from_the_environment_and_refuse_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPLAY_INSERT_WORKERS", raising=False)
    assert Settings(store=tmp_path).insert_workers == 2
    monkeypatch.setenv("REPLAY_INSERT_WORKERS", "3")
    assert Settings(store=tmp_path).insert_workers == 3
    monkeypatch.setenv("REPLAY_INSERT_WORKERS", "0")
    with pytest.raises(pydantic.ValidationError, match="insert_workers"):
        Settings(store=tmp_path)
