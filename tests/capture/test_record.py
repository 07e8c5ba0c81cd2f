"""``replay record``, run in-process with click's CliRunner against real stores."""

from __future__ import annotations

import re
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

import replay
from capture.carracing import CarRacingSource
from capture.cli import parse_options, record
from capture.synthetic import SyntheticSource


def test_records_synthetic_races(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    args = ["--source", "synthetic", "--races", "2", "--steps", "10", "--seed", "3"]
    args += ["--store", str(store_path), "--shard-size", "4", "--quality", "95"]
    args += ["-o", "width=320", "-o", "height=180", "-o", "length=7"]
    result = CliRunner().invoke(record, args)
    assert result.exit_code == 0, result.output
    assert re.search(
        r"2 races\s*│\s*│\s*14\s*│\s*0\s*│", result.output
    )  # total: 14 frames, 0 dropped

    store = replay.open_store(store_path, mode="r")
    infos = sorted(store.races(), key=lambda info: info.meta["seed"])
    assert [info.meta["seed"] for info in infos] == [3, 4]
    source = SyntheticSource(width=320, height=180)
    for info in infos:
        assert (info.env, info.policy, info.status, info.length) == (
            "synthetic",
            "sine-v1",
            "complete",
            7,
        )
        assert (info.height, info.width, info.shard_size) == (180, 320, 4)
        race = store.race(info.race_id)
        assert race.steps("terminated").tolist() == [False] * 6 + [True]
        for t in (0, 6):
            stored = race.frame(t).astype(int)
            expected = source.frame_at(info.meta["seed"], t).astype(int)
            assert np.abs(stored - expected).mean() < 4  # JPEG at quality 95


def test_records_carracing_by_default_losslessly_with_its_seed(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    args = [str(store_path), "--races", "1", "--steps", "12", "--seed", "5"]
    result = CliRunner().invoke(record, args)
    assert result.exit_code == 0, result.output
    (info,) = replay.open_store(store_path, mode="r").races()
    assert (info.env, info.map, info.length, info.fps) == ("CarRacing-v3", "procedural:5", 12, 50)
    assert info.meta == {"seed": 5}
    assert info.codec["name"] == "zstd"  # the smaller for CarRacing's flat colours
    race = replay.open_store(store_path, mode="r").race(info.race_id)
    with CarRacingSource() as source:  # the seed drives the same track again
        first = next(source.race(max_steps=1, seed=info.meta["seed"]))
    np.testing.assert_array_equal(race.frame(0), first.frame)
    np.testing.assert_allclose(race.steps("action")[0], first.action)


def test_store_is_positional_or_store_and_the_seed_is_always_kept(tmp_path: Path) -> None:
    base = ["--source", "synthetic", "--races", "2", "--steps", "3", "-o", "width=320"]
    base += ["-o", "height=180"]
    result = CliRunner().invoke(record, [str(tmp_path / "a"), *base])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(record, ["--store", str(tmp_path / "a"), *base])
    assert result.exit_code == 0, result.output
    infos = replay.open_store(tmp_path / "a", mode="r").races()
    assert len(infos) == 4
    seeds = [info.meta["seed"] for info in infos]
    assert all(isinstance(seed, int) for seed in seeds)  # drawn, and kept
    assert seeds[1] == seeds[0] + 1
    assert seeds[3] == seeds[2] + 1
    assert {info.map for info in infos} == {"scrolling-landscape"}  # not a procedural map
    assert {info.codec["name"] for info in infos} == {"jpeg"}
    result = CliRunner().invoke(record, [str(tmp_path / "a"), "--store", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "two stores given" in result.output


def test_store_errors_exit_cleanly(tmp_path: Path) -> None:
    not_a_store = tmp_path / "photos"
    not_a_store.mkdir()
    (not_a_store / "cat.jpg").write_bytes(b"meow")
    args = ["--source", "synthetic", "--steps", "2", "--store", str(not_a_store)]
    result = CliRunner().invoke(record, args)
    assert result.exit_code == 1
    assert "Error:" in result.output
    assert "not a replay store" in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, replay.ReplayError)  # turned into a clean exit


def test_bad_source_options_are_usage_errors(tmp_path: Path) -> None:
    args = ["--source", "synthetic", "--store", str(tmp_path / "s"), "-o", "colour=blue"]
    result = CliRunner().invoke(record, args)
    assert result.exit_code == 2
    assert "colour" in result.output
    assert not (tmp_path / "s").exists()  # no store is made for a source that cannot start

    result = CliRunner().invoke(record, ["--source", "nope", "--store", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "carracing" in result.output


def test_parse_options() -> None:
    assert parse_options(["width=320", "display=:1", "scale=0.5", "flag=true", "name=basic"]) == {
        "width": 320,
        "display": ":1",
        "scale": 0.5,
        "flag": True,
        "name": "basic",
    }
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        parse_options(["width"])


def test_record_is_registered_in_the_replay_cli() -> None:
    from replay.cli.main import main

    result = CliRunner().invoke(main, ["record", "--help"])
    assert result.exit_code == 0, result.output
    assert "--shard-size" in result.output
