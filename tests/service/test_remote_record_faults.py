"""Recording through the service from outside Python's `replay`, and across failures:
a driver that speaks plain HTTP from docs/protocol.md, a service killed mid-race and
restarted, an actor that goes silent."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import simplejpeg
from click.testing import CliRunner

import replay
from capture.cli import record
from replay.codec.frames import ZstdFrames
from replay.errors import WriterFailedError
from replay.format import spec as fmt
from replay.maintenance.recovery import recover
from replay.remote.chunks import MEDIA_TYPE, Chunk, pack
from service.tools.process import ServerProcess

#: A driver in "another language": httpx, numpy and simplejpeg only, written from
#: docs/protocol.md ("Recording over HTTP"); it must not import replay.
PLAIN_DRIVER = r"""
import json, struct, sys
import httpx, numpy as np, simplejpeg

url, frames_path = sys.argv[1], sys.argv[2]
frames = np.load(frames_path)
race = httpx.post(f"{url}/v1/races", json={"env": "Plain-v0", "codec": "jpeg", "quality": 90,
    "subsampling": "420", "shard_size": 16, "height": 900, "width": 1600}).json()

def chunk(first, blobs, reward):
    data = b"".join(blobs)
    pad = -len(data) % 8
    steps = {"reward": {"dtype": "<f4", "shape": [len(blobs)], "offset": len(data) + pad,
                        "nbytes": 4 * len(blobs)}}
    data += b"\0" * pad + np.asarray(reward, "<f4").tobytes()
    header = json.dumps({"version": 1, "first_step": first, "n": len(blobs),
        "frames": {"offset": 0, "nbytes": [len(b) for b in blobs]},
        "steps": steps, "data_nbytes": len(data)}).encode()
    pad_header = b"\0" * (-(8 + len(header)) % 8)
    return b"RPLC" + struct.pack("<I", len(header)) + header + pad_header + data

step = 0
for start in range(0, len(frames), 5):
    blobs = [simplejpeg.encode_jpeg(np.ascontiguousarray(f), quality=90, colorspace="RGB",
             colorsubsampling="420") for f in frames[start:start + 5]]
    answer = httpx.post(f"{url}/v1/races/{race['race_id']}/chunks",
        content=chunk(step, blobs, range(step, step + len(blobs))),
        headers={"Content-Type": "application/vnd.replay.chunk.v1"})
    answer.raise_for_status()
    step = answer.json()["length"]
closed = httpx.post(f"{url}/v1/races/{race['race_id']}/close", json={"status": "complete"})
closed.raise_for_status()
assert not [m for m in sys.modules if m.split(".")[0] in ("replay", "service")]
print(race["race_id"])
"""

BODY = str(16 << 20)


def test_a_driver_that_speaks_plain_http_records_a_race(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    replay.open_store(tmp_path / "s")
    np.save(tmp_path / "frames.npy", np.stack(frames[:12]))
    with ServerProcess(tmp_path / "s", env={"REPLAY_MAX_CHUNK_BYTES": BODY}) as server:
        done = subprocess.run(
            [sys.executable, "-I", "-c", PLAIN_DRIVER, server.url, str(tmp_path / "frames.npy")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    race = replay.open_store(tmp_path / "s", mode="r").race(done.stdout.strip())
    assert (race.status, race.length, race.info.env) == ("complete", 12, "Plain-v0")
    np.testing.assert_array_equal(race.steps("reward"), np.arange(12, dtype=np.float32))
    for step in range(12):
        blob = simplejpeg.encode_jpeg(
            np.ascontiguousarray(frames[step]), quality=90, colorspace="RGB", colorsubsampling="420"
        )
        assert race.frame_bytes(step) == blob


def test_a_service_killed_mid_race_loses_nothing_it_acknowledged(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """SIGKILL of the service while an actor records; restarted on the same port, it takes
    the race back and the actor's writer goes on: every step once, frames byte-exact."""
    replay.open_store(tmp_path / "s")
    env = {"REPLAY_MAX_CHUNK_BYTES": BODY}
    server = ServerProcess(tmp_path / "s", env=env)
    port = int(server.url.rsplit(":", 1)[1])
    acked_at_kill = []

    def kill_and_restart() -> None:
        while writer.stats().written < 20:
            time.sleep(0.01)
        server.close(signal.SIGKILL)
        acked_at_kill.append(writer.stats().written)
        time.sleep(1.0)  # the actor's chunks meet a closed port meanwhile
        restarted.append(ServerProcess(tmp_path / "s", port=port, env=env))

    restarted: list[ServerProcess] = []
    n = len(frames)
    with replay.Client(server.url) as client:
        writer = client.new_race(env="x", codec="zstd", shard_size=16, flush_interval=0.05)
        killer = threading.Thread(target=kill_and_restart)
        killer.start()
        for step in range(3 * n):
            writer.append(frames[step % n], reward=step)
            time.sleep(0.01)
        killer.join()
        writer.close()
    restarted[0].close()
    assert acked_at_kill[0] >= 20
    assert writer.stats().written == 3 * n
    race = replay.open_store(tmp_path / "s", mode="r").race(writer.race_id)
    assert (race.status, race.length) == ("complete", 3 * n)
    np.testing.assert_array_equal(race.steps("reward"), np.arange(3 * n, dtype=np.float32))
    for step in range(0, 3 * n, 7):
        np.testing.assert_array_equal(race.frame(step), frames[step % n])


def test_a_silent_actors_race_is_aborted_by_recovery_after_its_lease(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    """The service holds a remote race's lease by heartbeat, not by its own pid: recovery
    leaves the race alone while the actor is heard, aborts it once the actor has been
    silent past the ttl (the service still alive), and the committed steps stay readable;
    the actor, back too late, is refused and its writer fails."""
    replay.open_store(tmp_path / "s")
    with (
        ServerProcess(tmp_path / "s", env={"REPLAY_MAX_CHUNK_BYTES": BODY}) as server,
        replay.Client(server.url) as client,
    ):
        writer = client.new_race(env="x", codec="zstd", flush_interval=0.05)
        for frame in frames[:5]:
            writer.append(frame)
        while writer.stats().written < 5:
            time.sleep(0.01)
        storage = replay.open_store(tmp_path / "s").storage
        assert writer.race_id in recover(storage).live
        ttl = fmt.lease_ttl(0.05)
        assert recover(storage, now=time.time() + ttl + 5).aborted == [writer.race_id]
        writer.append(frames[5])
        with pytest.raises(WriterFailedError, match="aborted"):
            writer.close()
    race = replay.open_store(tmp_path / "s", mode="r").race(writer.race_id)
    assert (race.status, race.length) == ("aborted", 5)
    np.testing.assert_array_equal(race.frame(4), frames[4])


def test_a_second_service_on_the_store_refuses_a_race_the_first_one_holds(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    replay.open_store(tmp_path / "s")
    env = {"REPLAY_MAX_CHUNK_BYTES": BODY}
    with (
        ServerProcess(tmp_path / "s", env=env) as first,
        ServerProcess(tmp_path / "s", env=env) as second,
        replay.Client(first.url) as client,
    ):
        writer = client.new_race(env="x", codec="zstd")
        body = b"".join(pack(Chunk(0, ZstdFrames().encode(frames[:1]), {})))
        headers = {"Content-Type": MEDIA_TYPE}
        url = f"{second.url}/v1/races/{writer.race_id}/chunks"
        refused = httpx.post(url, content=body, headers=headers, timeout=30)
        assert (refused.status_code, refused.headers.get("Retry-After")) == (503, "1")
        assert "held by another live replica" in refused.json()["detail"]
        writer.append(frames[0])
        writer.close()
    race = replay.open_store(tmp_path / "s", mode="r").race(writer.race_id)
    assert (race.status, race.length) == ("complete", 1)


def test_replay_record_to_a_service_records_a_real_game(tmp_path: Path) -> None:
    """``replay record --to URL --token ...``: CarRacing played here, committed there."""
    replay.open_store(tmp_path / "s")
    env = {"REPLAY_MAX_CHUNK_BYTES": BODY, "REPLAY_TOKEN": "s3cret"}
    with ServerProcess(tmp_path / "s", env=env) as server:
        args = ["--to", server.url, "--token", "s3cret", "--source", "carracing"]
        result = CliRunner().invoke(record, [*args, "--races", "1", "--steps", "12", "--seed", "3"])
    assert result.exit_code == 0, result.output
    (info,) = replay.open_store(tmp_path / "s", mode="r").races()
    assert (info.env, info.status, info.length, info.codec["name"]) == (
        "CarRacing-v3",
        "complete",
        12,
        "zstd",
    )
    assert info.meta == {"seed": 3}
