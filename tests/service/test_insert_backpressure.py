"""Back-pressure on recording: the chunk bytes in flight are bounded per race (429) and
for the service (503), refusals carry Retry-After, and the actors' writers wait (block)
or drop (counted) and lose nothing they were given. Real uvicorn on loopback, real
stores, real CarRacing frames (zstd: byte-exact checks)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from service_helpers import ThreadServer

import replay
from replay.codec.frames import ZstdFrames
from replay.remote.chunks import MEDIA_TYPE, Chunk, pack
from service.cli import serve
from service.settings import Settings

BODY = 128 << 10  # the largest chunk: 2 to 5 zstd CarRacing frames
OTHER_RACE = "0" * 26  # a race id for bytes held by "another actor"


def _serve(path: Path, **limits: int) -> ThreadServer:
    """A service whose chunks in flight are bounded by `limits` (one largest body each)."""
    replay.open_store(path)
    per_race = limits.get("per_race", BODY)
    total = limits.get("total", BODY)
    settings = Settings(
        store=path, max_chunk_bytes=BODY, max_insert_bytes_per_race=per_race, max_insert_bytes=total
    )
    return ThreadServer(settings)


def _create(url: str) -> str:
    body = {"env": "CarRacing-v3", "codec": "zstd", "shard_size": 8}
    response = httpx.post(f"{url}/v1/races", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["race_id"])


def _post(url: str, race_id: str, chunk: Chunk) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/races/{race_id}/chunks",
        content=b"".join(pack(chunk)),
        headers={"Content-Type": MEDIA_TYPE},
        timeout=60,
    )


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def _chunk_statuses(url: str) -> dict[str, float]:
    """{status: answers} of the chunk route, from /metrics."""
    route = 'route="/v1/races/{race_id}/chunks",status="'
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("replay_http_requests_total{") and route in line:
            status = line.split(route)[1].split('"')[0]
            counts[status] = counts.get(status, 0) + float(line.split()[-1])
    return counts


def test_a_chunk_past_a_limit_is_refused_with_retry_after_and_nothing_written(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    blobs = ZstdFrames().encode(frames[1:3])
    chunk = Chunk(0, blobs, {"reward": np.arange(2, dtype=np.float32)})
    with _serve(tmp_path / "s", total=2 * BODY) as server:
        budget = server.app.state.inserts.budget
        race_id = _create(server.url)
        cases = [  # (chunks of which races are in flight, the answer, the limit named)
            ([race_id], 429, "max_insert_bytes_per_race"),
            ([OTHER_RACE, "1" * 26], 503, "max_insert_bytes"),
        ]
        for holders, status, limit in cases:
            with contextlib.ExitStack() as stack:
                for holder in holders:  # a largest chunk of each in flight
                    stack.enter_context(budget.held(holder, BODY))
                refused = _post(server.url, race_id, chunk)
            assert refused.status_code == status, refused.text
            assert refused.headers["Retry-After"] == "1"
            body = refused.json()
            assert body["error"] == "Busy"
            assert limit in body["detail"]
            assert str(len(b"".join(pack(chunk)))) in body["detail"]
            assert replay.open_store(tmp_path / "s", mode="r").race(race_id).length == 0
        assert budget.in_flight == 0  # refused chunks gave their bytes back
        accepted = _post(server.url, race_id, chunk)
        assert accepted.json()["length"] == 2
        assert budget.in_flight == 0  # and so did the committed one
    race = replay.open_store(tmp_path / "s", mode="r").race(race_id)
    for step in range(2):
        np.testing.assert_array_equal(race.frame(step), frames[1 + step])


def _sender(url: str, race_id: str, blobs: list[bytes], answers: list[httpx.Response]) -> None:
    """Send `blobs` two at a time, each chunk again after its Retry-After until committed."""
    step = 0
    while step < len(blobs):
        chunk = Chunk(step, blobs[step : step + 2], {"reward": np.full(2, step, np.float32)})
        response = _post(url, race_id, chunk)
        answers.append(response)
        if response.status_code in (429, 503):
            time.sleep(float(response.headers["Retry-After"]))
            continue
        assert response.status_code == 200, response.text
        step = int(response.json()["length"])


def test_concurrent_senders_stay_within_the_limits_and_lose_nothing_after_retries(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """Six plain-HTTP senders, two per race, through a service that holds one largest
    chunk at a time: refused chunks are sent again and every race ends whole."""
    blobs = ZstdFrames().encode(frames[:12])
    answers: list[httpx.Response] = []
    with _serve(tmp_path / "s") as server:
        races = [_create(server.url) for _ in range(3)]
        threads = [
            threading.Thread(target=_sender, args=(server.url, race_id, blobs, answers))
            for race_id in races * 2
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = _metric(server.url, "replay_insert_bytes_peak")
        assert _metric(server.url, "replay_insert_bytes_in_flight") == 0
        statuses = _chunk_statuses(server.url)
    assert 0 < peak <= BODY
    assert set(statuses) <= {"200", "429", "503"}, statuses
    busy = [a for a in answers if a.status_code in (429, 503)]
    assert busy, statuses  # six senders, room for one chunk: some must have waited
    assert all(a.headers["Retry-After"] == "1" and a.json()["error"] == "Busy" for a in busy)
    store = replay.open_store(tmp_path / "s", mode="r")
    for race_id in races:
        race = store.race(race_id)
        assert race.length == len(blobs)
        for step in range(len(blobs)):
            assert race.frame_bytes(step) == blobs[step]


def _record(url: str, frames: list[npt.NDArray[np.uint8]], **options: Any) -> replay.Writer:
    with replay.Client(url) as client:
        race = {"codec": "zstd", "shard_size": 8, "flush_interval": 0.05, **options}
        with client.new_race(env="CarRacing-v3", **race) as writer:
            for step, frame in enumerate(frames):
                assert writer.append(frame, reward=step)
    return writer


def test_remote_writers_that_block_wait_out_the_limit_and_write_everything(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """Four actors at once, room for one chunk in the service: each writer's background
    thread waits (Retry-After) and every frame appended is committed once."""
    writers: list[replay.Writer] = []

    def actor(k: int) -> None:
        writers.append(_record(server.url, frames[k::2][:20], on_full="block"))

    with _serve(tmp_path / "s") as server:
        threads = [threading.Thread(target=actor, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = _metric(server.url, "replay_insert_bytes_peak")
        statuses = _chunk_statuses(server.url)
    assert 0 < peak <= BODY
    assert set(statuses) <= {"200", "429", "503"}, statuses
    assert statuses.get("503", 0) > 0, statuses  # they met the limit, and waited it out
    store = replay.open_store(tmp_path / "s", mode="r")
    assert len(writers) == 4
    for writer in writers:
        stats = writer.stats()
        assert (stats.appended, stats.written, stats.dropped, stats.error) == (20, 20, 0, None)
        assert store.race(writer.race_id).length == 20


@pytest.mark.parametrize("on_full", ["block", "drop"])
def test_a_writer_applies_on_full_while_the_service_is_full(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]], on_full: str
) -> None:
    """Another actor's chunks fill the service for a while: a ``block`` writer's driver
    waits in `append` (nothing dropped), a ``drop`` writer's driver goes on and its
    dropped frames are counted; either way every frame taken is committed, in order."""
    chosen = (frames * 2)[:80]
    taken: list[int] = []
    with _serve(tmp_path / "s") as server, replay.Client(server.url) as client:
        budget = server.app.state.inserts.budget
        writer = client.new_race(
            env="CarRacing-v3", codec="zstd", flush_interval=0.05, queue_size=2, on_full=on_full
        )

        def driver() -> None:
            for step, frame in enumerate(chosen):
                if writer.append(frame, reward=step):
                    taken.append(step)

        thread = threading.Thread(target=driver)
        with budget.held(OTHER_RACE, budget.total):  # the service is full
            thread.start()
            time.sleep(1.5)  # the writer meets the 503 and waits its Retry-After
            held = writer.stats()
            assert held.written == 0
            if on_full == "block":
                assert thread.is_alive()
                assert held.appended < len(chosen)
        thread.join()
        writer.close()
    stats = writer.stats()
    assert stats.error is None
    assert stats.appended == stats.written == len(taken)
    assert stats.appended + stats.dropped == len(chosen)
    assert (stats.dropped > 0) == (on_full == "drop")
    race = replay.open_store(tmp_path / "s", mode="r").race(writer.race_id)
    assert race.length == len(taken)
    np.testing.assert_array_equal(race.steps("reward"), np.array(taken, np.float32))
    for step in (0, len(taken) - 1):
        np.testing.assert_array_equal(race.frame(step), chosen[taken[step]])


def test_a_writer_gives_up_after_retry_for_and_the_race_is_aborted(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """A service full for longer than the writer's `retry_for`: the writer fails (naming
    the 503 and the limit), `append` goes on dropping, and the race ends aborted."""
    with _serve(tmp_path / "s") as server, replay.Client(server.url) as client:
        budget = server.app.state.inserts.budget
        writer = client.new_race(env="CarRacing-v3", codec="zstd", flush_interval=0.05, retry_for=2)
        with budget.held(OTHER_RACE, budget.total):
            assert writer.append(frames[0], reward=0)
            _wait_for_error(writer)
            assert not writer.append(frames[1], reward=1)  # failed: dropped, never held
            with pytest.raises(replay.WriterFailedError, match="503") as failed:
                writer.close()
    assert "max_insert_bytes" in str(failed.value)
    assert "tries" in str(failed.value)
    stats = writer.stats()
    assert (stats.appended, stats.written, stats.dropped) == (1, 0, 1)
    race = replay.open_store(tmp_path / "s", mode="r").race(writer.race_id)
    assert (race.status, race.length) == ("aborted", 0)


def _wait_for_error(writer: replay.Writer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while writer.stats().error is None:
        assert time.monotonic() < deadline, "the writer never gave up"
        time.sleep(0.05)


def test_limits_that_no_chunk_could_fit_are_refused_at_start(tmp_path: Path) -> None:
    replay.open_store(tmp_path / "s")
    env = {"REPLAY_MAX_CHUNK_BYTES": str(BODY), "REPLAY_MAX_INSERT_BYTES_PER_RACE": str(BODY // 2)}
    result = CliRunner().invoke(serve, [str(tmp_path / "s"), "--port", "0"], env=env)
    assert result.exit_code != 0
    assert f"max_insert_bytes_per_race ({BODY // 2}) is below max_chunk_bytes" in result.output
    with pytest.raises(ValueError, match=rf"max_insert_bytes \({BODY}\) is below"):
        Settings(
            store=tmp_path / "s",
            max_chunk_bytes=BODY,
            max_insert_bytes=BODY,
            max_insert_bytes_per_race=2 * BODY,
        )
    assert Settings(store=tmp_path / "s", max_chunk_bytes=BODY).insert_limits() == (
        2 * BODY,
        8 * BODY,
    )
