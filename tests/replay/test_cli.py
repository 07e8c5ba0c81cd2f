"""The replay CLI, run in-process with click's CliRunner on a real store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from PIL import Image

import replay
from replay.cli import main


@pytest.fixture(scope="module")
def store_path(
    tmp_path_factory: pytest.TempPathFactory, real_frames: npt.NDArray[np.uint8]
) -> Path:
    path = tmp_path_factory.mktemp("cli") / "store"
    store = replay.open_store(path)
    for n in (5, 3):
        with store.new_race(env="CarRacing-v3", map="track-1", shard_size=4) as writer:
            for step, frame in enumerate(real_frames[:n]):
                writer.append(frame, reward=step)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_every_command_has_help() -> None:
    code, out = invoke("--help")
    assert code == 0
    for command in ("inspect", "record", "bench", "serve", "soak", "verify", "recover", "prune"):
        assert command in out
    for command in (
        "inspect",
        "verify",
        "recover",
        "prune",
        "record",
        "serve",
        "soak",
        "bench",
        "bench ingest",
        "bench sample",
        "bench footprint",
        "bench scaling",
        "bench serve",
        "bench s3",
        "bench gpu",
        "bench plot",
    ):
        code, out = invoke(*command.split(), "--help")
        assert code == 0
        assert "Usage:" in out
        assert "needs: pip install" not in out  # the plugin loaded, extras installed


def test_inspect_store_table_and_json(store_path: Path) -> None:
    code, out = invoke("inspect", str(store_path))
    assert code == 0
    assert "2 races, 8 frames" in out
    assert "smaller than raw" in out
    code, out = invoke("inspect", str(store_path), "--json")
    assert code == 0
    doc = json.loads(out)
    assert [r["frames"] for r in doc["races"]] == [5, 3]
    assert doc["totals"]["frames"] == 8
    assert doc["races"][0]["compression"] > 15
    assert doc["races"][0]["status"] == "complete"


def test_inspect_one_race(store_path: Path) -> None:
    race_id = replay.open_store(store_path, mode="r").races()[0].race_id
    code, out = invoke("inspect", str(store_path), race_id, "--json")
    assert code == 0
    doc = json.loads(out)
    assert [s["frames"] for s in doc["shards"]] == [4, 1]
    assert doc["steps"]["reward"]["max"] == 4.0
    assert doc["attrs"]["map"] == "track-1"
    code, out = invoke("inspect", str(store_path), race_id)
    assert code == 0
    assert "per-step arrays" in out


def test_export_frame(store_path: Path, tmp_path: Path) -> None:
    store = replay.open_store(store_path, mode="r")
    race = store.race(store.races()[0].race_id)
    code, _ = invoke(
        "inspect", str(store_path), race.race_id, "--frame", "2", "--out", str(tmp_path / "f.png")
    )
    assert code == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "f.png")), race.frame(2))
    code, _ = invoke(
        "inspect", str(store_path), race.race_id, "--frame", "2", "--out", str(tmp_path / "f.jpg")
    )
    assert code == 0
    assert (tmp_path / "f.jpg").read_bytes() == race.frame_bytes(2)
    code, out = invoke(
        "inspect", str(store_path), race.race_id, "--frame", "99", "--out", str(tmp_path / "x.png")
    )
    assert code == 1
    assert "has 5 committed steps" in out


def test_inspect_errors(store_path: Path, tmp_path: Path) -> None:
    code, out = invoke("inspect", str(tmp_path / "nothing"))
    assert code == 1
    assert "is not a replay store" in out
    code, out = invoke("inspect", str(store_path), "../../etc/passwd")
    assert code == 1
    assert "not a race id" in out
    code, out = invoke("inspect", str(store_path), "--frame", "1")
    assert code == 2
    assert "need a RACE" in out
