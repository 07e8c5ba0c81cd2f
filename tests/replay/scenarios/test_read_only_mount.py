"""A store on a read-only mount (EROFS): every command that writes says so in one line.
Issue 13, item 7: only EACCES/EPERM were handled; a read-only mount gave tracebacks.

The mount is real: a tmpfs remounted read-only (needs root, as in CI).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from mounts import tmpfs
from sampling_helpers import make_store

import replay
from capture.cli import record
from replay.cli.main import main
from replay.format import spec as fmt


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture
def read_only_store(tmp_path: Path) -> Iterator[Path]:
    """A store with a damaged frame, a dead writer's race and a store written before the
    races group had a document, then remounted read-only."""
    with tmpfs(tmp_path / "ro", "16m") as mount:
        _store, (damaged, dead) = make_store(mount / "s", [10, 10])
        shard = mount / "s" / fmt.frames_key(damaged, 0)
        data = bytearray(shard.read_bytes())
        data[200] ^= 0x01
        shard.write_bytes(bytes(data))
        key = mount / "s" / fmt.race_key(dead) / fmt.METADATA
        doc = json.loads(key.read_text())
        lease = {"host": "elsewhere", "pid": dead_pid(), "heartbeat": 0.0, "ttl": 30.0}
        doc["attributes"].update(status="recording", ended_at=None, lease=lease)
        key.write_text(json.dumps(doc))
        (mount / "s" / "races" / fmt.METADATA).unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount / "s"


def clean_failure(args: list[str], command: object = main) -> str:
    result = CliRunner().invoke(command, args)  # type: ignore[arg-type]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert "Read-only file system" in result.output or "read-only" in result.output
    return result.output


def test_every_writing_command_fails_cleanly_on_a_read_only_mount(read_only_store: Path) -> None:
    path = str(read_only_store)
    store = replay.open_store(read_only_store)  # opening for writing still works
    assert len(store.races()) == 2
    with pytest.raises(replay.ReadOnlyStoreError, match="Read-only file system"):
        store.new_race(env="e", height=8, width=8)
    with pytest.raises(replay.ReadOnlyStoreError, match="cannot create a store"):
        replay.open_store(read_only_store / "inner")

    out = clean_failure(
        ["--source", "synthetic", "--races", "1", "--steps", "3", "--store", path], record
    )
    assert "cannot write a race" in out
    out = clean_failure(["verify", path, "--repair"])
    assert "cannot write" in out
    out = clean_failure(["recover", path])
    assert "cannot write" in out
    out = clean_failure(["prune", path, "--max-bytes", "1B", "--yes"])
    assert "cannot delete" in out
    out = clean_failure(["prune", path, "--max-bytes", "1GB", "--save"])
    assert "cannot write" in out
    # nothing changed, nothing was half-done
    store = replay.open_store(read_only_store, mode="r")
    assert sorted(r.status for r in store.races()) == ["complete", "recording"]
    result = CliRunner().invoke(main, ["verify", path])  # read-only commands still work
    assert result.exit_code == 1
    assert "DAMAGED shards [0]" in result.output
    assert np.asarray(store.race(store.races()[1].race_id).frame(3)).shape == (90, 160, 3)
