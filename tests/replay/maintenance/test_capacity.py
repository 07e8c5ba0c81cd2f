"""Capacity: the oldest finished races go, live races never, samplers keep working."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import replay
from replay.cli.main import main
from replay.maintenance.capacity import (
    Capacity,
    parse_age,
    parse_size,
    plan_eviction,
    read_capacity,
)

FRAME = (48, 64, 3)


def race(store: replay.Store, n: int = 8, **kwargs: object) -> str:
    rng = np.random.default_rng(n)
    with store.new_race(env="e", height=FRAME[0], width=FRAME[1], shard_size=4, **kwargs) as w:  # type: ignore[arg-type]
        for _ in range(n):
            w.append(rng.integers(0, 255, FRAME, dtype=np.uint8))
    return w.race_id


def test_parse_size_and_age() -> None:
    assert parse_size("500MB") == 500_000_000
    assert parse_size("1.5GiB") == int(1.5 * 1024**3)
    assert parse_size("1000B") == 1000
    assert parse_size("2GiB") == 2 * 1024**3
    assert parse_size("50G") == 50_000_000_000
    assert parse_age("7d") == 7 * 86400
    assert parse_age("90s") == 90
    assert parse_age("12h") == 12 * 3600
    for bare in ("3", "1000", "1.5"):  # a bare number is refused: units are required
        with pytest.raises(ValueError, match=f"not a size: '{bare}'"):
            parse_size(bare)
        with pytest.raises(ValueError, match=f"not an age: '{bare}'"):
            parse_age(bare)
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    with pytest.raises(ValueError, match="not an age"):
        parse_age("soon")
    with pytest.raises(ValueError, match="positive"):
        Capacity(max_bytes=0)


def test_byte_budget_evicts_oldest_finished_races_not_live_ones(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    old = [race(store) for _ in range(3)]
    sizes = [store.race_nbytes(r) for r in old]
    with store.new_race(env="live", height=FRAME[0], width=FRAME[1]) as live:
        live.append(np.zeros(FRAME, np.uint8))
        budget = sizes[2] + store.race_nbytes(live.race_id) + 10
        plan = plan_eviction(store.storage, Capacity(max_bytes=budget))
        assert [e.race_id for e in plan.evictions] == old[:2]
        assert plan.bytes_after <= budget
        store.set_capacity(max_bytes=budget)
        store.enforce_capacity()
        assert [r.race_id for r in store.races()] == [old[2], live.race_id]
    assert not (tmp_path / "races" / old[0]).exists()


def test_age_limit(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    ids = [race(store) for _ in range(2)]
    plan = plan_eviction(store.storage, Capacity(max_age=60), now=time.time() + 3600)
    assert [e.race_id for e in plan.evictions] == ids
    assert plan_eviction(store.storage, Capacity(max_age=3600)).evictions == []


def test_writer_enforces_saved_capacity(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    first = race(store)
    store.set_capacity(max_bytes=store.race_nbytes(first) // 2)
    second = race(store, n=8)  # its full shards trigger maintenance: the old race goes
    assert [r.race_id for r in store.races()] == [second]


def test_sampler_survives_eviction(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    ids = [race(store) for _ in range(3)]
    sampler = store.sampler(batch_size=4, seed=1)
    sampler.sample()
    store.set_capacity(max_bytes=store.race_nbytes(ids[2]) + 10)
    store.enforce_capacity()
    sampler.refresh()
    for _ in range(5):
        batch = sampler.sample()
        assert {race_id for race_id, _ in batch.keys} == {ids[2]}


def test_prune_cli(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path)
    ids = [race(store) for _ in range(3)]
    size = store.race_nbytes(ids[0])
    budget = f"{size + 10}B"
    result = CliRunner().invoke(main, ["prune", str(tmp_path), "--max-bytes", budget, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"would remove {ids[0]}" in result.output
    assert f"would remove {ids[1]}" in result.output
    assert f"oldest kept: {ids[2]}" in result.output
    assert "dry run: nothing removed" in result.output
    assert len(store.races()) == 3
    result = CliRunner().invoke(main, ["prune", str(tmp_path), "--max-bytes", budget, "--save"])
    assert result.exit_code == 1  # not a terminal and no --yes: the plan only
    assert "pass --yes" in result.output
    assert len(store.races()) == 3
    assert read_capacity(store.storage).unlimited  # --save follows the same rule
    args = ["prune", str(tmp_path), "--max-bytes", budget, "--save", "--yes"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert [r.race_id for r in store.races()] == [ids[2]]
    assert read_capacity(store.storage).max_bytes == size + 10
    result = CliRunner().invoke(main, ["prune", str(tmp_path)])  # the saved budget: nothing to do
    assert result.exit_code == 0, result.output
    assert "plan: remove 0 races" in result.output
    result = CliRunner().invoke(main, ["prune", str(tmp_path), "--max-bytes", "lots"])
    assert result.exit_code == 2
    assert "not a size" in result.output


def test_prune_refuses_a_bare_number_and_says_when_a_plan_removes_most(tmp_path: Path) -> None:
    """The first-hour accident: ``--max-age 3`` meant 3 seconds and emptied the store."""
    store = replay.open_store(tmp_path)
    ids = [race(store) for _ in range(4)]
    result = CliRunner().invoke(main, ["prune", str(tmp_path), "--max-age", "3"])
    assert result.exit_code == 2
    assert "not an age: '3'" in result.output
    assert "14d" in result.output
    result = CliRunner().invoke(main, ["prune", str(tmp_path), "--max-bytes", "500"])
    assert result.exit_code == 2
    assert "not a size: '500'" in result.output
    result = CliRunner().invoke(main, ["prune", str(tmp_path), "--max-bytes", "1B"])
    assert result.exit_code == 1, result.output
    assert "WARNING: this plan removes EVERY race" in result.output
    assert [r.race_id for r in store.races()] == ids  # nothing removed
    size = store.race_nbytes(ids[0])
    result = CliRunner().invoke(main, ["prune", str(tmp_path), "--max-bytes", f"{size + 10}B"])
    assert "WARNING: this plan removes 75% of the store" in result.output
    assert f"newest kept: {ids[3]}" in result.output
    assert len(store.races()) == 4


def test_prune_asks_in_a_terminal(tmp_path: Path) -> None:
    """With a terminal as stdin (a real pty), prune asks: 'n' keeps every race, 'y' removes."""
    store = replay.open_store(tmp_path)
    ids = [race(store) for _ in range(2)]
    size = store.race_nbytes(ids[0])
    args = ["prune", str(tmp_path), "--max-bytes", f"{size + 10}B"]
    assert "Aborted" in _in_a_terminal(args, answer="n")
    assert len(store.races()) == 2
    out = _in_a_terminal(args, answer="y")
    assert f"removed {ids[0]}" in out
    assert [r.race_id for r in store.races()] == [ids[1]]


def _in_a_terminal(args: list[str], answer: str) -> str:
    """``replay ARGS`` with a pseudo-terminal as stdin and `answer` typed ahead; its output."""
    primary, secondary = pty.openpty()
    try:
        os.write(primary, f"{answer}\n".encode())  # waits in the terminal's line buffer
        proc = subprocess.run(
            [sys.executable, "-c", "from replay.cli.main import main; main()", *args],
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    return proc.stdout + proc.stderr
