"""A remote race is an ordinary race: while an actor records it through the service it is
listed by ``replay inspect`` (a real subprocess) and by the service's race list and
the viewer's data routes, growing between two reads, and it samples; once closed it
passes ``replay verify`` and its frames export (``replay inspect --frame --out``,
``replay export --video``)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from service_helpers import assert_sampled_from

import replay
from replay.codec.frames import ZstdFrames
from replay.format import spec as fmt
from replay.write.writer import Writer
from service.tools.process import ServerProcess

REPLAY = [sys.executable, "-c", "from replay.cli.main import main; main()"]
BODY = {"REPLAY_MAX_CHUNK_BYTES": str(16 << 20)}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REPLAY, *args], capture_output=True, text=True, timeout=120, check=False
    )


def _append_acknowledged(
    writer: Writer, frames: list[npt.NDArray[np.uint8]], start: int, stop: int
) -> None:
    """Append steps [start, stop) (frame k % n, reward k); return once all are committed."""
    for step in range(start, stop):
        assert writer.append(frames[step % len(frames)], reward=step)
    deadline = time.monotonic() + 60
    while writer.stats().written < stop:
        assert time.monotonic() < deadline, writer.stats()
        time.sleep(0.02)


def _listed(http: httpx.Client, race_id: str, at_least: int) -> dict[str, Any]:
    """The race's item of ``GET /v1/races`` once it shows `at_least` steps (the service
    refreshes its index of recording races every second)."""
    deadline = time.monotonic() + 30
    while True:
        items: dict[str, dict[str, Any]] = {
            r["race_id"]: r for r in http.get("/v1/races").json()["items"]
        }
        if race_id in items and items[race_id]["length"] >= at_least:
            return items[race_id]
        assert time.monotonic() < deadline, items
        time.sleep(0.1)


def _seen_live(
    http: httpx.Client, store: Path, race_id: str, length: int, frame: npt.NDArray[np.uint8]
) -> None:
    """The race as `inspect` and the viewer's routes show it, `length` steps committed."""
    inspected = _cli("inspect", str(store), "--json")
    assert inspected.returncode == 0, inspected.stderr
    (row,) = [r for r in json.loads(inspected.stdout)["races"] if r["race_id"] == race_id]
    assert (row["status"], row["frames"]) == (fmt.RECORDING, length)
    assert _listed(http, race_id, length)["status"] == fmt.RECORDING
    detail = http.get(f"/v1/races/{race_id}").json()
    assert (detail["status"], detail["length"]) == (fmt.RECORDING, length)
    steps = http.get(f"/v1/races/{race_id}/steps", params={"names": ["reward"]}).json()
    assert steps["arrays"]["reward"] == list(range(length))
    last = http.get(f"/v1/races/{race_id}/frames/{length - 1}")
    assert last.status_code == 200
    assert last.content == ZstdFrames().encode([frame])[0]  # the actor's bytes, as stored
    shown = http.get(f"/v1/races/{race_id}/frames/{length - 1}", params={"format": "jpeg"})
    assert shown.headers["content-type"] == "image/jpeg"
    assert http.get(f"/v1/races/{race_id}/frames/{length}").status_code == 404


@pytest.mark.slow
def test_a_remote_race_is_seen_live_then_verifies_exports_and_samples(
    tmp_path: Path, frames: list[npt.NDArray[np.uint8]]
) -> None:
    store = tmp_path / "s"
    replay.open_store(store)
    with (
        ServerProcess(store, env=BODY) as server,
        replay.Client(server.url) as client,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        writer = client.new_race(env="Live-v0", codec="zstd", shard_size=8, flush_interval=0.05)
        _append_acknowledged(writer, frames, 0, 10)
        _seen_live(http, store, writer.race_id, 10, frames[9])
        _append_acknowledged(writer, frames, 10, 27)
        _seen_live(http, store, writer.race_id, 27, frames[26])
        only = {"race_ids": [writer.race_id]}
        assert_sampled_from(client.sample(batch_size=8, filters=only), writer.race_id, frames)
        writer.close()
        assert _listed(http, writer.race_id, 27)["status"] == fmt.COMPLETE
    verified = _cli("verify", str(store))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "1 race" in verified.stdout, verified.stdout
    out = tmp_path / "frame-20.png"
    exported = _cli("inspect", str(store), writer.race_id, "--frame", "20", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(out.read_bytes()))), frames[20])
    video = tmp_path / "race.mp4"  # by a prefix of its id, as a user types it
    exported = _cli("export", str(store), writer.race_id[:12], "--video", str(video))
    assert exported.returncode == 0, exported.stderr
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 27
