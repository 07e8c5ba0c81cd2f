"""One damaged race costs that race only: a torn or incomplete race zarr.json, and a race
folder whose zarr.json was deleted (orphan data). Issue 13, item 1."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sampling_helpers import make_store
from ulid import ULID

import replay
from replay.cli.main import main
from replay.format import spec as fmt


def damage(store_path: Path, race_id: str, how: str) -> None:
    """Tear a race's zarr.json, or remove its `length`."""
    key = store_path / fmt.race_key(race_id) / fmt.METADATA
    if how == "torn":
        key.write_text(key.read_text()[:50])
    else:
        doc = json.loads(key.read_text())
        del doc["attributes"]["length"]
        key.write_text(json.dumps(doc))


@pytest.mark.parametrize("how", ["torn", "no length"])
def test_a_damaged_race_drops_out_of_sampling_and_is_counted(tmp_path: Path, how: str) -> None:
    store, (a, b, c) = make_store(tmp_path / "s", [10, 12, 14])
    damage(tmp_path / "s", b, how)
    for options in ({}, {"skip_corrupt": True}, {"filters": {"race_ids": [a]}}):
        sampler = store.sampler(batch_size=4, seed=0, **options)  # type: ignore[arg-type]
        batch = sampler.sample()
        assert {r for r, _ in batch.keys} <= {a, c}
        stats = sampler.stats()
        assert stats.damaged_races == 1
        assert b in sampler.index.damaged
        assert stats.races == (1 if "filters" in options else 2)
        sampler.close()
    infos, damaged = store.scan()
    assert [i.race_id for i in infos] == [a, c]
    assert list(damaged) == [b]
    assert "damaged" in damaged[b]
    report = store.verify()
    assert [(r.race_id, r.problem) for r in report.races if not r.ok] == [(b, "metadata")]


def test_a_repaired_race_comes_back_to_the_index(tmp_path: Path) -> None:
    store, (_a, b) = make_store(tmp_path / "s", [10, 12])
    key = tmp_path / "s" / fmt.race_key(b) / fmt.METADATA
    good = key.read_text()
    key.write_text(good[:30])
    sampler = store.sampler(batch_size=2, seed=0)
    sampler.refresh()
    assert sampler.stats().damaged_races == 1
    key.write_text(good)
    sampler.refresh()
    assert sampler.stats().damaged_races == 0
    assert sampler.stats().races == 2
    sampler.close()


def test_recover_and_verify_name_a_damaged_race_without_a_traceback(tmp_path: Path) -> None:
    _store, (a, b) = make_store(tmp_path / "s", [10, 12])
    damage(tmp_path / "s", a, "torn")
    result = CliRunner().invoke(main, ["recover", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert f"skipped {a}: race {a}: metadata" in result.output
    assert result.exception is None
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "s"), "--repair"])
    assert result.exit_code == 1
    assert f"{a}        0 frames  DAMAGED metadata" in result.output
    assert "not repaired: its metadata" in result.output
    assert "12 frames checked: damage found" in result.output
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert f"left out {a}: race {a}: metadata" in result.output
    assert b in result.output


def old_race(store_path: Path, race_id: str) -> str:
    """Move a race to an id made an hour ago (as if it had been recorded then)."""
    old = str(ULID.from_timestamp(time.time() - 3600))
    shutil.move(store_path / fmt.race_key(race_id), store_path / fmt.race_key(old))
    return old


def test_a_race_without_zarr_json_is_orphan_data_that_prune_removes(tmp_path: Path) -> None:
    store, (a, b) = make_store(tmp_path / "s", [10, 12])
    orphan = old_race(tmp_path / "s", a)
    (tmp_path / "s" / fmt.race_key(orphan) / fmt.METADATA).unlink()
    # a race created a moment ago without its document yet is being created, not an orphan
    fresh = tmp_path / "s" / fmt.race_key(str(ULID())) / "frames"
    fresh.mkdir(parents=True)

    report = store.verify()
    assert [(r.race_id, r.problem) for r in report.races if not r.ok] == [(orphan, "orphan")]
    result = CliRunner().invoke(main, ["verify", str(tmp_path / "s")])
    assert f"{orphan}        0 frames  ORPHAN DATA" in result.output
    assert "`replay prune` removes it" in result.output
    assert store.recover(dry_run=True).orphans == [orphan]

    result = CliRunner().invoke(main, ["prune", str(tmp_path / "s"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"would remove {orphan}" in result.output
    assert "orphan data" in result.output
    result = CliRunner().invoke(main, ["prune", str(tmp_path / "s"), "--yes"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "s" / fmt.race_key(orphan)).exists()
    assert fresh.exists()
    assert [r.race_id for r in store.races()] == [b]
    assert store.verify().ok


def test_the_store_is_a_complete_zarr_hierarchy(tmp_path: Path) -> None:
    import zarr

    store, (a, b) = make_store(tmp_path / "s", [5, 6])
    root = zarr.open_group(tmp_path / "s", mode="r")
    assert sorted(name for name, _ in root.members()) == ["races", "samplers"]
    races = root["races"]
    assert isinstance(races, zarr.Group)
    assert sorted(name for name, _ in races.members()) == [a, b]
    assert races[a]["frames"].shape[0] == 5  # type: ignore[union-attr]
    assert store.zarr["races"][b].attrs["length"] == 6  # type: ignore[index]


def test_stores_written_before_get_their_group_documents(tmp_path: Path) -> None:
    import zarr

    _store, (a,) = make_store(tmp_path / "s", [5])
    for group in ("races", "samplers"):
        (tmp_path / "s" / group / fmt.METADATA).unlink()
    (tmp_path / "s" / "samplers").rmdir()
    # readers cope without them, and a read-only open writes nothing
    reader = replay.open_store(tmp_path / "s", mode="r")
    assert [r.race_id for r in reader.races()] == [a]
    assert reader.race(a).frame(4).shape == (90, 160, 3)
    assert not (tmp_path / "s" / "races" / fmt.METADATA).exists()
    with pytest.raises(KeyError):
        zarr.open_group(tmp_path / "s", mode="r")["races"]
    # recover adds them
    replay.open_store(tmp_path / "s", mode="r").recover(dry_run=True)
    assert not (tmp_path / "s" / "races" / fmt.METADATA).exists()
    result = CliRunner().invoke(main, ["recover", str(tmp_path / "s")])
    assert result.exit_code == 0
    assert isinstance(zarr.open_group(tmp_path / "s", mode="r")["races"], zarr.Group)
    # and so does opening for writing
    (tmp_path / "s" / "races" / fmt.METADATA).unlink()
    replay.open_store(tmp_path / "s")
    assert zarr.open_group(tmp_path / "s", mode="r")["races"][a].attrs["length"] == 5  # type: ignore[index]


def test_a_malformed_lease_is_judged_as_no_lease(tmp_path: Path) -> None:
    _store, (a,) = make_store(tmp_path / "s", [5])
    key = tmp_path / "s" / fmt.race_key(a) / fmt.METADATA
    doc = json.loads(key.read_text())
    doc["attributes"].update(status="recording", lease="garbage", started_at="2020-01-01T00:00")
    key.write_text(json.dumps(doc))
    result = CliRunner().invoke(main, ["recover", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert f"marked {a} aborted" in result.output
