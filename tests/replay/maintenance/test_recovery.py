"""Recovery: dead writers' races are aborted, live writers (here or elsewhere) left alone."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import replay
from replay.cli.main import main
from replay.format import spec as fmt
from replay.format.catalogue import remove_race
from replay.maintenance.capacity import Capacity, plan_eviction
from replay.maintenance.recovery import recover, writer_is_dead

CHILD = Path(__file__).parents[1] / "writer_child.py"


def killed_race(store_path: Path, frames_file: Path) -> str:
    """A race whose writer process was SIGKILLed after committing some frames."""
    child = subprocess.Popen(
        [
            sys.executable,
            str(CHILD),
            str(store_path),
            str(frames_file),
            "--count",
            "200",
            "--fps",
            "50",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    race_id = child.stdout.readline().strip()
    store = replay.open_store(store_path, mode="r")
    deadline = time.monotonic() + 60
    while store.race(race_id).length < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    return race_id


def test_dead_writer_is_aborted_and_its_temp_files_removed(
    tmp_path: Path, frames_file: Path
) -> None:
    race_id = killed_race(tmp_path / "s", frames_file)
    store = replay.open_store(tmp_path / "s")
    length = store.race(race_id).length
    leftover = tmp_path / "s" / fmt.race_key(race_id) / "frames" / "c" / ".tmp-crashed"
    leftover.write_bytes(b"half a shard")
    with store.new_race(env="live", height=8, width=8) as live:  # alive in this process
        live.append(np.zeros((8, 8, 3), np.uint8))
        report = store.recover()
        assert report.aborted == [race_id]
        assert report.live == [live.race_id]
        # a SIGKILL mid-write may leave temp files of its own: all of them go
        assert str(leftover.relative_to(tmp_path / "s")) in report.temp_files_removed
    assert not leftover.exists()
    assert not list((tmp_path / "s" / fmt.race_key(race_id)).rglob(".tmp-*"))
    info = store.race(race_id).info
    assert (info.status, info.length, info.lease) == ("aborted", length, None)
    assert store.race(race_id).attrs["recovered"] is True
    assert store.race(live.race_id).status == "complete"
    assert store.recover().aborted == []  # idempotent


def test_lease_decides_for_writers_on_other_hosts(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    with store.new_race(env="e", height=8, width=8, flush_interval=0.5) as writer:
        info = store.race(writer.race_id).info
        assert info.lease is not None
        assert not writer_is_dead(info)
        elsewhere = replace_lease(info, host="actor-7.cluster", pid=1)
        assert not writer_is_dead(elsewhere)  # fresh heartbeat: alive, whatever its pid
        ttl = info.lease["ttl"]
        assert ttl == 30.0
        assert writer_is_dead(elsewhere, now=info.lease["heartbeat"] + ttl + 1)
        assert not writer_is_dead(elsewhere, now=info.lease["heartbeat"] + ttl - 1)


def replace_lease(info: replay.RaceInfo, **changes: object) -> replay.RaceInfo:
    from dataclasses import replace

    assert info.lease is not None
    return replace(info, lease={**info.lease, **changes})


def test_recover_cli(tmp_path: Path, frames_file: Path) -> None:
    race_id = killed_race(tmp_path / "s", frames_file)
    result = CliRunner().invoke(main, ["recover", str(tmp_path / "s"), "--dry-run"])
    assert result.exit_code == 0
    assert f"would mark {race_id} aborted" in result.output
    assert replay.open_store(tmp_path / "s").race(race_id).status == "recording"
    result = CliRunner().invoke(main, ["recover", str(tmp_path / "s")])
    assert f"marked {race_id} aborted" in result.output
    assert replay.open_store(tmp_path / "s").race(race_id).status == "aborted"
    result = CliRunner().invoke(main, ["recover", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "not a replay store" in result.output
    assert not (tmp_path / "missing").exists()  # not created as a side effect


@pytest.mark.parametrize("field", ["length", "status"])
def test_damaged_race_metadata_is_a_clear_error(tmp_path: Path, field: str) -> None:
    store = replay.open_store(tmp_path)
    with store.new_race(env="e", height=8, width=8) as writer:
        writer.append(np.zeros((8, 8, 3), np.uint8))
    key = tmp_path / fmt.race_key(writer.race_id) / fmt.METADATA
    doc = json.loads(key.read_text())
    del doc["attributes"][field]
    key.write_text(json.dumps(doc))
    with pytest.raises(
        replay.CorruptDataError, match=f"race {writer.race_id}: metadata .* damaged"
    ):
        store.race(writer.race_id)
    key.write_text('{"attributes": {"env": ')  # torn JSON
    with pytest.raises(replay.CorruptDataError, match="damaged"):
        store.race(writer.race_id)
    with store.new_race(env="fine", height=8, width=8) as other:
        other.append(np.zeros((8, 8, 3), np.uint8))
    assert [r.race_id for r in store.races()] == [other.race_id]  # one bad race hides nothing
    report = store.verify()
    assert [c.race_id for c in report.races if not c.ok] == [writer.race_id]


def test_a_paused_writer_on_this_host_is_alive_whatever_its_heartbeat(
    tmp_path: Path, frames_file: Path
) -> None:
    """SIGSTOP (a debugger, a laptop suspend): recover, prune and repair leave it alone,
    and it completes its race when it resumes. Issue 13, item 6."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(tmp_path / "s"), str(frames_file), "--count", "60"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    race_id = child.stdout.readline().strip()
    store = replay.open_store(tmp_path / "s")
    deadline = time.monotonic() + 60
    while store.race(race_id).length < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGSTOP)
    try:
        info = store.race(race_id).info
        assert info.lease is not None
        later = info.lease["heartbeat"] + info.lease["ttl"] + 3600  # long past its lease
        assert not writer_is_dead(info, now=later)
        report = recover(store.storage, now=later)
        assert (report.aborted, report.live) == ([], [race_id])
        plan = plan_eviction(store.storage, Capacity(max_age=1), now=later)
        assert plan.evictions == []
        with pytest.raises(replay.RaceBusyError, match="live writer"):
            remove_race(store.storage, race_id, now=later)
        assert store.race(race_id).status == "recording"
    finally:
        child.send_signal(signal.SIGCONT)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0, out
    race = store.race(race_id)
    assert (race.status, race.length) == ("complete", 60)


def test_a_writer_whose_race_was_aborted_elsewhere_stops_without_resurrecting_it(
    tmp_path: Path,
) -> None:
    """Another host's `replay recover` judged the writer dead (its heartbeat was old) and
    marked the race aborted: the writer notices at its next commit and stops."""
    store = replay.open_store(tmp_path)
    writer = store.new_race(env="e", height=8, width=8, shard_size=4, flush_interval=0.05)
    for _ in range(4):
        writer.append(np.zeros((8, 8, 3), np.uint8))
    deadline = time.monotonic() + 30
    while store.race(writer.race_id).length < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    key = tmp_path / fmt.race_key(writer.race_id) / fmt.METADATA
    doc = json.loads(key.read_text())
    doc["attributes"].update(status="aborted", lease=None, recovered=True)
    key.write_text(json.dumps(doc))  # what recover on another host writes
    while writer.stats().error is None and time.monotonic() < deadline:
        writer.append(np.zeros((8, 8, 3), np.uint8))
        time.sleep(0.01)
    assert "marked 'aborted' by another process" in (writer.stats().error or "")
    with pytest.raises(replay.WriterFailedError, match="stopped without writing"):
        writer.close()
    race = store.race(writer.race_id)
    assert (race.status, race.length, race.info.lease) == ("aborted", 4, None)


def test_a_writer_whose_race_was_pruned_does_not_recreate_it(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    writer = store.new_race(env="e", height=8, width=8, shard_size=4, flush_interval=0.05)
    writer.append(np.zeros((8, 8, 3), np.uint8))
    deadline = time.monotonic() + 30
    while store.race(writer.race_id).length < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    shutil.rmtree(tmp_path / fmt.race_key(writer.race_id))  # what prune elsewhere does
    while writer.stats().error is None and time.monotonic() < deadline:
        writer.append(np.zeros((8, 8, 3), np.uint8))
        time.sleep(0.01)
    assert "RaceTakenOverError" in (writer.stats().error or "")
    with pytest.raises(replay.WriterFailedError, match=r"was removed .* without recreating it"):
        writer.close()
    assert not (tmp_path / fmt.race_key(writer.race_id)).exists()
    assert store.races() == []
