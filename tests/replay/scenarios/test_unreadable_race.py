"""One race the reader cannot open costs only that race (issue 23, item 1).

The race's folder is ``chmod 000``, as a writer running as another user with
umask 077 leaves it. Tests run as root, who ignores permissions, so every reader
here runs under ``setpriv`` without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH: a
real ``PermissionError`` from the kernel for root too. Each reader is a child
process (the real CLI, the real server, a script using the public API).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest

import replay
from replay.format import spec as fmt
from service.tools.process import ServerProcess

#: Runs a command without the capabilities that let root ignore file permissions.
UNPRIVILEGED = (
    ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
)
ENVS = ["A-v0", "B-v0", "A-v0"]
#: ``replay ...`` as a child process.
REPLAY = [sys.executable, "-c", "from replay.cli.main import main; main()"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*UNPRIVILEGED, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def store(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> Iterator[tuple[Path, list[str]]]:
    """Three races of real frames; the second one's folder made unreadable (mode 000)."""
    assert not UNPRIVILEGED or shutil.which("setpriv"), "setpriv (util-linux) is needed as root"
    path = tmp_path / "store"
    s = replay.open_store(path)
    ids = []
    for env in ENVS:
        with s.new_race(env=env, fps=30, shard_size=8) as w:
            for step, frame in enumerate(real_frames[:12]):
                w.append(frame, action=np.zeros(3, np.float32), reward=1.0, terminated=step == 11)
        ids.append(w.race_id)
    folder = path / fmt.race_key(ids[1])
    folder.chmod(0)
    probe = _run(sys.executable, "-c", f"open({str(folder / fmt.METADATA)!r})")
    assert "PermissionError" in probe.stderr, probe  # the reader really cannot open it
    yield path, ids
    folder.chmod(0o755)


SCRIPT = """
import json, sys, time
import replay
from replay.maintenance.recovery import orphan_races, recover
s = replay.open_store(sys.argv[1], mode="r")
later = time.time() + 3600  # the races are old: a folder without a document is an orphan
assert orphan_races(s.storage, now=later) == []  # unreadable is not orphaned (prune keeps it)
report = recover(s.storage, dry_run=True, now=later)
infos, damaged = s.scan()
a = s.sampler(batch_size=8, seed=0, filters={"env": "A-v0"}).sample()
every = s.sampler(batch_size=8, seed=0)
every.sample()
print(json.dumps({"races": [i.race_id for i in s.races()], "damaged": damaged,
                  "sampled": sorted(set(r for r, _ in a.keys)),
                  "sampler_damaged": every.stats().damaged_races,
                  "recover_damaged": sorted(report.damaged)}))
"""


def test_the_api_and_samplers_lose_only_the_unreadable_race(
    store: tuple[Path, list[str]],
) -> None:
    path, (a, bad, c) = store
    run = _run(sys.executable, "-c", SCRIPT, str(path))
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["races"] == [a, c]
    assert list(out["damaged"]) == [bad]
    assert "PermissionError" in out["damaged"][bad]
    assert out["sampled"] == [a, c]  # a sampler filtered to the other races works
    assert out["sampler_damaged"] == 1  # and one over all races counts it
    assert out["recover_damaged"] == [bad]


def test_verify_and_inspect_name_the_race_and_the_cause(store: tuple[Path, list[str]]) -> None:
    path, (a, bad, c) = store
    verify = _run(*REPLAY, "verify", str(path), "--json")
    assert verify.returncode == 1, verify.stderr  # damage found, and named
    rows = {r["race_id"]: r for r in json.loads(verify.stdout)["races"]}
    assert (rows[a]["ok"], rows[c]["ok"], rows[bad]["ok"]) == (True, True, False)
    assert "PermissionError" in rows[bad]["errors"][0]
    inspect = _run(*REPLAY, "inspect", str(path), "--json")
    assert inspect.returncode == 0, inspect.stderr
    doc: dict[str, Any] = json.loads(inspect.stdout)
    assert [r["race_id"] for r in doc["races"]] == [a, c]
    assert "PermissionError" in doc["damaged"][bad]


def test_the_service_keeps_answering_and_health_is_degraded(
    store: tuple[Path, list[str]],
) -> None:
    path, (a, bad, c) = store
    with (
        ServerProcess(path, run_under=UNPRIVILEGED) as server,
        httpx.Client(base_url=server.url, timeout=30) as http,
    ):
        health = http.get("/v1/health")
        assert health.status_code == 200
        assert (health.json()["status"], health.json()["damaged_races"]) == ("degraded", 1)
        races = http.get("/v1/races")
        assert races.status_code == 200, races.text
        assert sorted(r["race_id"] for r in races.json()["items"]) == [a, c]
        stats = http.get("/v1/stats").json()
        assert stats["races"] == 2
        assert "PermissionError" in stats["damaged_races"][bad]
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        assert "replay_store_damaged_races 1.0" in metrics.text
        for body in ({"batch_size": 8}, {"batch_size": 8, "filters": {"env": "A-v0"}}):
            assert http.post("/v1/sample", json=body).status_code == 200, body
        assert http.get(f"/v1/races/{bad}").status_code == 409  # named, never a 500
