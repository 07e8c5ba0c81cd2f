"""The replay CLI, run in-process with click's CliRunner on a real store."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from PIL import Image

import replay
from replay.cli.main import main
from replay.format import spec as fmt


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
    assert "jpeg (quality 90, subsampling 4:2:0)" in out  # not a Python dict
    assert "{'name'" not in out
    (t_ns,) = [line for line in out.splitlines() if "t_ns" in line]
    t = replay.open_store(store_path, mode="r").race(race_id).steps("t_ns")
    first = datetime.datetime.fromtimestamp(t.min() / 1e9, datetime.UTC)
    assert first.strftime("%Y-%m-%d %H:%M:%S") in t_ns  # a date, not 1.797e+18
    assert f"{np.diff(t).mean() / 1e6:.1f} ms/step" in t_ns
    assert "e+18" not in t_ns


def test_inspect_counts_in_words(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> None:
    store = replay.open_store(tmp_path / "one")
    with store.new_race(env="CarRacing-v3", codec="zstd") as writer:
        writer.append(real_frames[0])
    code, out = invoke("inspect", str(tmp_path / "one"))
    assert code == 0, out
    assert "1 race, 1 frame," in out
    code, out = invoke("inspect", str(tmp_path / "one"), store.races()[0].race_id)
    assert code == 0, out
    assert "zstd lossless (level 3)" in out


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


def test_race_ids_accept_a_unique_prefix(store_path: Path) -> None:
    ids = replay.open_store(store_path, mode="r").race_ids()
    shortest = next(
        n for n in range(1, 27) if len({i[:n] for i in ids}) == len(ids)
    )  # as git: the shortest prefix that tells the races apart
    code, out = invoke("inspect", str(store_path), ids[1][:shortest].lower(), "--json")
    assert code == 0, out
    assert json.loads(out)["race_id"] == ids[1]
    code, out = invoke("inspect", str(store_path), ids[0][: shortest - 1] if shortest > 1 else "0")
    assert code == 1
    assert "ambiguous" in out
    assert ids[0] in out
    assert ids[1] in out
    assert "Traceback" not in out


def test_export_takes_a_unique_prefix_and_lists_the_candidates_of_an_ambiguous_one(
    store_path: Path, tmp_path: Path
) -> None:
    ids = replay.open_store(store_path, mode="r").race_ids()
    shortest = next(n for n in range(1, 27) if len({i[:n] for i in ids}) == len(ids))
    video = tmp_path / "race.mp4"
    code, out = invoke("export", str(store_path), ids[1][:shortest].lower(), "--video", str(video))
    assert code == 0, out
    assert video.stat().st_size > 0
    assert f"wrote {3} frames" in out
    code, out = invoke("export", str(store_path), ids[0][: shortest - 1], "--video", str(video))
    assert code == 1, out
    assert "ambiguous" in out
    assert ids[0] in out
    assert ids[1] in out


def test_not_found_names_the_store_as_given(store_path: Path) -> None:
    code, out = invoke("inspect", str(store_path), "7ZZZZ")
    assert code == 1
    assert f"no race id starting with '7ZZZZ' in {store_path}" in out
    code, out = invoke("inspect", str(store_path), "7" + "Z" * 25)
    assert code == 1
    assert f"no race 7{'Z' * 25} in {store_path}" in out
    assert "LocalStorage" not in out


def test_inspect_after_a_repair_shows_the_bytes_on_disk(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path / "s")
    with store.new_race(env="CarRacing-v3", shard_size=4) as writer:
        for frame in real_frames[:10]:
            writer.append(frame, reward=1.0)
    race_id = writer.race_id
    shard1 = tmp_path / "s" / fmt.frames_key(race_id, 1)
    shard1.write_bytes(shard1.read_bytes()[:-100])  # shard 1's index is gone
    before = shard1.stat().st_size
    assert invoke("verify", str(tmp_path / "s"), "--repair")[0] in (0, 1)
    assert shard1.stat().st_size != before  # rebuilt: its intact frames and a new index

    code, out = invoke("inspect", str(tmp_path / "s"), race_id, "--json")
    assert code == 0, out
    doc = json.loads(out)
    files = {k: (tmp_path / "s" / fmt.frames_key(race_id, k)).stat().st_size for k in range(3)}
    assert [(s["shard"], s["bytes"]) for s in doc["shards"]] == sorted(files.items())
    assert [s["index"] for s in doc["shards"]] == ["ok"] * 3
    assert doc["bytes"] >= sum(files.values())
    code, out = invoke("inspect", str(tmp_path / "s"), race_id)
    assert code == 0
    assert "repairs" in out
    assert "Traceback" not in out


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("f.unknownext", "give a file ending in .png or .jpg"),
        ("-", "give a file ending in .png or .jpg"),
        ("no/such/folder/f.png", "no folder"),
    ],
)
def test_export_frame_to_a_bad_path_is_a_usage_error(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, problem: str
) -> None:
    """Issue 23 item 11: a one-line error, exit 2, nothing written (was a PIL traceback)."""
    monkeypatch.chdir(tmp_path)
    race_id = replay.open_store(store_path, mode="r").races()[0].race_id
    code, out = invoke("inspect", str(store_path), race_id, "--frame", "1", "--out", name)
    assert code == 2, out
    assert problem in out
    assert repr(name) in out
    assert "Traceback" not in out
    assert [line for line in out.splitlines() if line.startswith("Error")] == [
        next(line for line in out.splitlines() if problem in line)
    ]
    assert list(tmp_path.iterdir()) == []


def test_export_frame_leaves_nothing_when_the_frame_cannot_be_read(
    store_path: Path, tmp_path: Path
) -> None:
    race_id = replay.open_store(store_path, mode="r").races()[0].race_id
    for fmt_ in ("png", "jpg", "webp"):
        out_file = tmp_path / f"x.{fmt_}"
        code, out = invoke(
            "inspect", str(store_path), race_id, "--frame", "99", "--out", str(out_file)
        )
        assert code == 1, out
    assert list(tmp_path.iterdir()) == []
    code, _ = invoke("inspect", str(store_path), race_id, "--frame", "1", "--out", str(out_file))
    assert code == 0
    with Image.open(out_file) as image:
        assert image.format == "WEBP"
    assert [p.name for p in tmp_path.iterdir()] == ["x.webp"]  # no temporary file left
