"""Recording through the service: `Client.new_race` on the actor, the insert routes on
the service, real uvicorn on loopback, real stores, real CarRacing frames."""

from __future__ import annotations

import json
import os
import struct
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import simplejpeg
from service_helpers import ThreadServer

import replay
from replay.codec.devices import cuda_available
from replay.codec.frames import JpegFrames, ZstdFrames
from replay.remote.chunks import EXPECTED_STEP_HEADER, MEDIA_TYPE, Chunk, pack
from service.settings import Settings

SHARD = 16


def _serve(path: Path, **settings: Any) -> ThreadServer:
    replay.open_store(path)
    return ThreadServer(Settings(store=path, **settings))


def _record(url: str, frames: list[npt.NDArray[np.uint8]], **race: Any) -> str:
    with replay.Client(url) as client:
        options = {"codec": "zstd", "shard_size": SHARD, "flush_interval": 0.05, **race}
        with client.new_race(env="CarRacing-v3", **options) as writer:
            for step, frame in enumerate(frames):
                assert writer.append(frame, action=np.full(3, step, np.float32), reward=step)
        stats = writer.stats()
    counts = (stats.appended, stats.written, stats.dropped, stats.error)
    assert counts == (len(frames), len(frames), 0, None)
    return writer.race_id


def _post_chunk(url: str, race_id: str, chunk: Chunk | bytes) -> httpx.Response:
    body = chunk if isinstance(chunk, bytes) else b"".join(pack(chunk))
    return httpx.post(
        f"{url}/v1/races/{race_id}/chunks",
        content=body,
        headers={"Content-Type": MEDIA_TYPE},
        timeout=30,
    )


def _create(url: str, **race: Any) -> str:
    body = {"env": "CarRacing-v3", "codec": "zstd", "shard_size": SHARD, **race}
    response = httpx.post(f"{url}/v1/races", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["race_id"])


def _zstd(frames: list[npt.NDArray[np.uint8]]) -> list[bytes]:
    return ZstdFrames().encode(frames)


def test_a_zstd_race_recorded_remotely_reads_back_byte_exact(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    with _serve(tmp_path / "s") as server:
        race_id = _record(server.url, frames)
    race = replay.open_store(tmp_path / "s", mode="r").race(race_id)
    assert (race.status, race.length) == ("complete", len(frames))
    for step, frame in enumerate(frames):
        np.testing.assert_array_equal(race.frame(step), frame)
    np.testing.assert_array_equal(race.steps("reward"), np.arange(len(frames), dtype=np.float32))
    assert race.steps("action")[7].tolist() == [7.0, 7.0, 7.0]
    assert replay.open_store(tmp_path / "s").verify().ok


def test_a_jpeg_race_decodes_as_a_local_encode_of_the_same_frames(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    few = frames[:20]
    with _serve(tmp_path / "s") as server:
        race_id = _record(server.url, few, codec="jpeg", quality=85, subsampling="420")
    race = replay.open_store(tmp_path / "s", mode="r").race(race_id)
    local = JpegFrames(85, "420").encode(few)
    assert race.length == len(few)
    for step, blob in enumerate(local):
        np.testing.assert_array_equal(race.frame(step), simplejpeg.decode_jpeg(blob))


def test_a_retried_chunk_is_applied_once_and_a_gap_is_refused(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    blobs = _zstd(frames[:20])
    with _serve(tmp_path / "s") as server:
        race_id = _create(server.url)
        first = Chunk(0, blobs[:12], {"reward": np.arange(12, dtype=np.float32)})
        assert _post_chunk(server.url, race_id, first).json()["length"] == 12
        assert _post_chunk(server.url, race_id, first).json()["length"] == 12  # a retry
        gap = _post_chunk(server.url, race_id, Chunk(14, blobs[14:], {}))
        assert gap.status_code == 409
        assert gap.headers[EXPECTED_STEP_HEADER] == "12"
        assert "expected step 12" in gap.json()["detail"]
        # overlapping a committed step: only the new steps are applied
        rest = Chunk(10, blobs[10:], {"reward": np.arange(10, 20, dtype=np.float32)})
        assert _post_chunk(server.url, race_id, rest).json()["length"] == 20
        for _ in range(2):  # a close retried answers as the first did
            closed = httpx.post(f"{server.url}/v1/races/{race_id}/close", json={}, timeout=30)
            assert closed.json() == {"race_id": race_id, "length": 20}
        late = _post_chunk(server.url, race_id, Chunk(20, blobs[:1], {}))
        assert late.status_code == 409
        assert "complete" in late.json()["detail"]
    race = replay.open_store(tmp_path / "s", mode="r").race(race_id)
    assert race.status == "complete"
    np.testing.assert_array_equal(race.steps("reward"), np.arange(20, dtype=np.float32))
    for step in range(20):
        np.testing.assert_array_equal(race.frame(step), frames[step])


def test_the_chunk_route_takes_bodies_up_to_max_chunk_bytes_the_others_max_body_bytes(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    blobs = _zstd(frames[:5])
    body = b"".join(pack(Chunk(0, blobs[:4], {})))
    limits = {"max_body_bytes": len(body) // 4, "max_chunk_bytes": len(body)}
    with _serve(tmp_path / "s", **limits) as server:
        created = httpx.post(f"{server.url}/v1/races", json={"env": "E", "codec": "zstd"})
        assert created.json()["max_chunk_bytes"] == len(body)  # what the writer packs to
        race_id = created.json()["race_id"]
        too_large = _post_chunk(server.url, race_id, Chunk(0, blobs, {}))  # 5 frames
        assert too_large.status_code == 413, too_large.text
        taken = _post_chunk(server.url, race_id, body)  # 4x the other routes' limit
        assert (taken.status_code, taken.json()["length"]) == (200, 4)
        json_type = {"content-type": "application/json"}
        other = httpx.post(f"{server.url}/v1/sample", content=b" " * len(body), headers=json_type)
        assert other.status_code == 413
        assert str(len(body) // 4) in other.json()["detail"]
    assert replay.open_store(tmp_path / "s", mode="r").race(race_id).length == 4


def _with_header(body: bytes, frames: dict[str, Any]) -> bytes:
    """`body` with its header's ``frames`` entries replaced (a client that lies)."""
    (n,) = struct.unpack_from("<I", body, 4)
    header = json.loads(body[8 : 8 + n])
    data = body[8 + n + (-(8 + n) % 8) :]
    header["frames"].update(frames)
    head = json.dumps(header).encode()
    return b"RPLC" + struct.pack("<I", len(head)) + head + b"\0" * (-(8 + len(head)) % 8) + data


def _bad_chunks(frames: list[npt.NDArray[np.uint8]]) -> dict[str, tuple[bytes, int, str]]:
    """Bodies that must be refused: (body, status, a word of the message)."""
    blobs = _zstd(frames[:2])
    good = b"".join(pack(Chunk(0, blobs, {"reward": np.zeros(2, np.float32)})))
    small = simplejpeg.encode_jpeg(np.ascontiguousarray(frames[0][::2, ::2]))
    sizes = [len(blobs[0]) - 10, len(blobs[1]) + 10]  # adds up, but cuts the frames wrong
    return {
        "wrong shape": (
            b"".join(pack(Chunk(0, blobs, {"action": np.zeros((2, 4), np.float32)}))),
            422,
            "shape",
        ),
        "wrong dtype": (
            b"".join(pack(Chunk(0, blobs, {"reward": np.zeros(2, np.float64)}))),
            422,
            "float32",
        ),
        "truncated": (good[:-100], 400, "cut short"),
        "lying lengths": (_with_header(good, {"nbytes": sizes}), 422, "frame of step 0"),
        "lengths past the end": (
            _with_header(good, {"nbytes": [len(good), 1]}),
            400,
            "outside the data section",
        ),
        "too few rewards": (
            b"".join(pack(Chunk(0, blobs, {"reward": np.zeros(3, np.float32)}))),
            400,
            "reward",
        ),
        "jpeg in a zstd race": (b"".join(pack(Chunk(0, [small], {}))), 422, "zstd"),
        "not finite": (
            b"".join(pack(Chunk(0, blobs, {"reward": np.array([0, np.nan], np.float32)}))),
            422,
            "non-finite",
        ),
        "unknown array": (
            b"".join(pack(Chunk(0, blobs, {"score": np.zeros(2, np.float32)}))),
            422,
            "score",
        ),
        "not a chunk": (b"RPLB" + b"\0" * 20, 400, "magic"),
    }


def test_bad_chunks_are_refused_naming_the_problem_and_nothing_is_written(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    with _serve(tmp_path / "s") as server:
        race_id = _create(server.url)
        for name, (body, status, word) in _bad_chunks(frames).items():
            response = _post_chunk(server.url, race_id, body)
            assert response.status_code == status, (name, response.text)
            assert word in response.json()["detail"], (name, response.text)
        jpeg_race = _create(server.url, codec="jpeg")
        small = simplejpeg.encode_jpeg(np.ascontiguousarray(frames[0][::2, ::2]))
        other = _post_chunk(server.url, jpeg_race, Chunk(0, [small], {}))
        assert other.status_code == 422
        assert "800x450 JPEG" in other.json()["detail"]
        unknown = _post_chunk(server.url, "0" * 26, Chunk(0, _zstd(frames[:1]), {}))
        assert unknown.status_code == 404
        as_json = httpx.post(f"{server.url}/v1/races/{race_id}/chunks", json={"n": 0})
        assert as_json.status_code == 415
    store = replay.open_store(tmp_path / "s", mode="r")
    assert [store.race(r).length for r in (race_id, jpeg_race)] == [0, 0]
    assert not list((tmp_path / "s" / "races" / race_id / "frames").glob("c/*"))


def test_a_local_writers_race_takes_no_chunks(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    store = replay.open_store(tmp_path / "s")
    with (
        store.new_race(env="CarRacing-v3", codec="zstd", writer="thread") as local,
        _serve(tmp_path / "s") as server,
    ):
        response = _post_chunk(server.url, local.race_id, Chunk(0, _zstd(frames[:1]), {}))
        assert response.status_code == 409
        assert "not remote" in response.json()["detail"]


def test_inserts_need_the_token_and_a_read_only_service_refuses_them(tmp_path: Path) -> None:
    body = {"env": "CarRacing-v3"}
    with _serve(tmp_path / "s", token="s3cret") as server:
        assert httpx.post(f"{server.url}/v1/races", json=body).status_code == 401
        with replay.Client(server.url, token="s3cret") as client:
            writer = client.new_race(env="CarRacing-v3", codec="zstd")
            writer.close()
        assert writer.stats().written == 0
    with _serve(tmp_path / "r", read_only=True) as server:
        refused = httpx.post(f"{server.url}/v1/races", json=body)
        assert refused.status_code == 403
        assert "read-only" in refused.json()["detail"]


def test_bad_race_arguments_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    with _serve(tmp_path / "s") as server:
        nan_meta = httpx.post(
            f"{server.url}/v1/races",
            content=b'{"env": "x", "extras": {"speed": ["float99", [1]]}}',
            headers={"Content-Type": "application/json"},
        )
        assert nan_meta.status_code == 422, nan_meta.text
        assert "float99" in nan_meta.json()["detail"]
    assert replay.open_store(tmp_path / "s", mode="r").race_ids() == []


def test_an_exception_in_the_actor_aborts_the_race(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    def crash(writer: replay.Writer) -> None:
        writer.append(frames[0])
        raise RuntimeError("the driver crashed")

    with _serve(tmp_path / "s") as server, replay.Client(server.url) as client:
        writer = client.new_race(env="x", codec="zstd")
        with pytest.raises(RuntimeError), writer:
            crash(writer)
    race = replay.open_store(tmp_path / "s", mode="r").race(writer.race_id)
    assert (race.status, race.length) == ("aborted", 1)


def test_several_actors_record_at_once_in_chunks_under_the_body_limit(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """Three actors at once through a service with the default 1 MiB body limit: each
    writer splits its frames into chunks that fit, and every race is whole."""
    replay.open_store(tmp_path / "s")
    ids: dict[int, str] = {}

    def actor(k: int) -> None:
        chosen = frames[k::2][:20]
        ids[k] = _record(server.url, chosen, codec="jpeg", flush_interval=0.5)

    with ThreadServer(Settings(store=tmp_path / "s")) as server:
        threads = [threading.Thread(target=actor, args=(k,)) for k in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        metrics = httpx.get(f"{server.url}/metrics").text
    # 20 JPEGs of ~85 KB each: at least 2 chunks per race
    line = 'route="/v1/races/{race_id}/chunks",status="200"} '
    chunks_sent = [float(m.split(line)[1]) for m in metrics.splitlines() if line in m]
    assert sum(chunks_sent) >= 6, metrics
    store = replay.open_store(tmp_path / "s", mode="r")
    assert len(ids) == 3
    for k, race_id in ids.items():
        race = store.race(race_id)
        assert (race.status, race.length) == ("complete", 20)
        np.testing.assert_array_equal(race.steps("reward"), np.arange(20, dtype=np.float32))
        local = JpegFrames(90, "420").encode([frames[k::2][19]])[0]
        assert race.frame_bytes(19) == local


@pytest.mark.skipif(cuda_available(), reason="checks the error of a machine without a GPU")
def test_a_device_that_is_not_there_is_refused_before_the_race_exists(tmp_path: Path) -> None:
    # The CUDA path itself: tests/service/test_remote_record_gpu.py (marked gpu).
    with _serve(tmp_path / "s") as server, replay.Client(server.url) as client:
        with pytest.raises(RuntimeError, match="no CUDA device is visible"):
            client.new_race(env="CarRacing-v3", codec="jpeg", device="cuda")
        with pytest.raises(ValueError, match="'tpu'"):
            client.new_race(env="CarRacing-v3", device="tpu")
        with client.new_race(env="CarRacing-v3", codec="jpeg", device="auto") as writer:
            assert writer.device == "cpu"  # no GPU here: libjpeg-turbo
    assert len(replay.open_store(tmp_path / "s", mode="r").race_ids()) == 1


def test_a_remote_race_is_recorded_by_the_local_writer_kinds(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """CPU frames go to a writer process by default (it sends with the client's token);
    a client given its own transport records in a thread of this process (the transport
    cannot go to another); asking for a process with one is refused before any race."""
    few = frames[:12]
    with _serve(tmp_path / "s", token="s3cret") as server:
        kinds = {}
        for transport in (None, httpx.HTTPTransport()):
            with replay.Client(server.url, token="s3cret", transport=transport) as client:
                with client.new_race(env="CarRacing-v3", codec="zstd", shard_size=SHARD) as w:
                    for step, frame in enumerate(few):
                        assert w.append(frame, reward=step)
                kinds[w.race_id] = w.pid != os.getpid()
                assert w.stats().written == len(few)
        own = replay.Client(server.url, transport=httpx.HTTPTransport())
        with own as client, pytest.raises(ValueError, match="own transport"):
            client.new_race(env="CarRacing-v3", writer="process")
    assert list(kinds.values()) == [True, False]  # a writer process, then a thread
    store = replay.open_store(tmp_path / "s", mode="r")
    assert sorted(store.race_ids()) == sorted(kinds)
    for race_id in kinds:
        race = store.race(race_id)
        assert (race.status, race.length) == ("complete", len(few))
        for step, frame in enumerate(few):
            np.testing.assert_array_equal(race.frame(step), frame)
