"""``replay serve --read-only``: the real CLI in its own process refuses the recording
routes with 403 and a message, while reading and sampling work as ever."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

import replay
from replay.remote.chunks import MEDIA_TYPE, Chunk, pack
from service.cli import serve
from service.tools.process import ServerProcess


def test_a_read_only_service_refuses_every_insert_route_with_403(served_store: Path) -> None:
    before = replay.open_store(served_store, mode="r").race_ids()
    race_id = before[0]
    body = b"".join(pack(Chunk(0, [], {"reward": np.zeros(0, np.float32)})))
    with ServerProcess(served_store, "--read-only") as proc, httpx.Client(timeout=30) as http:
        assert any("read-only" in line for line in proc.output().splitlines())
        answers = [
            http.post(f"{proc.url}/v1/races", json={"env": "CarRacing-v3"}),
            http.post(
                f"{proc.url}/v1/races/{race_id}/chunks",
                content=body,
                headers={"Content-Type": MEDIA_TYPE},
            ),
            http.post(f"{proc.url}/v1/races/{race_id}/close", json={"status": "aborted"}),
        ]
        for answer in answers:
            assert answer.status_code == 403, answer.text
            assert answer.json()["error"] == "Forbidden"
            assert "--read-only" in answer.json()["detail"]
        assert http.get(f"{proc.url}/v1/races/{race_id}").json()["status"] == "complete"
        with replay.Client(proc.url) as client:
            assert client.sample(batch_size=2, seed=0).frames.shape[0] == 2
            with pytest.raises(replay.ReplayError, match="read-only"):
                client.new_race(env="CarRacing-v3", codec="zstd")
    after = replay.open_store(served_store, mode="r")
    assert after.race_ids() == before
    assert after.race(race_id).status == "complete"


def test_the_flag_is_in_the_help() -> None:
    result = CliRunner().invoke(serve, ["--help"])
    assert result.exit_code == 0
    assert "--read-only" in result.output
    assert "REPLAY_READ_ONLY" in result.output
