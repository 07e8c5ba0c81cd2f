"""Commands that run for seconds show a progress bar on a terminal's stderr (and nothing
when not a terminal), then a summary for people; their figures go to ``--json PATH``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from sampling_helpers import write_race

import replay
from replay.cli.main import main

#: What makes rich take CliRunner's stderr for a terminal (as a shell's would be).
TERMINAL = {"FORCE_COLOR": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120"}


@pytest.fixture(scope="module")
def store_path(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """One race of 10 real 1600x900 CarRacing frames."""
    path = tmp_path_factory.mktemp("long") / "store"
    write_race(replay.open_store(path), real_frames[:10], env="CarRacing-v3", fps=50)
    return path


def test_export_shows_frames_done_on_a_terminal_only(store_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'replay[export]')")
    race_id = replay.open_store(store_path, mode="r").races()[0].race_id
    args = ["export", str(store_path), race_id, "--video"]
    shown = CliRunner().invoke(main, [*args, str(tmp_path / "a.mp4")], env=TERMINAL)
    assert shown.exit_code == 0, shown.output
    assert "10/10" in shown.stderr  # the bar, finished
    assert "frames" in shown.stderr
    assert shown.stdout.startswith("wrote 10 frames")
    piped = CliRunner().invoke(main, [*args, str(tmp_path / "b.mp4")])
    assert piped.exit_code == 0, piped.output
    assert piped.stderr == ""


def test_export_tells_progress_in_frames(store_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("av", reason="PyAV is not installed (pip install 'replay[export]')")
    from replay.integrations.export import export_video

    store = replay.open_store(store_path, mode="r")
    told: list[tuple[int, int]] = []
    export_video(
        store.race(store.races()[0].race_id),
        tmp_path / "c.mp4",
        start=2,
        progress=lambda done, total: told.append((done, total)),
    )
    assert told == [(i, 8) for i in range(1, 9)]


def test_bench_shows_stages_on_a_terminal(store_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "footprint.json"
    args = ["bench", "footprint", "--frames-from", str(store_path), "--frames", "1"]
    result = CliRunner().invoke(main, [*args, "--quality", "80", "--json", str(out)], env=TERMINAL)
    assert result.exit_code == 0, result.output
    assert "footprint: CarRacing-v3" in result.stderr  # the stage shown
    assert "psnr_db" in result.stdout  # the summary table
    assert json.loads(out.read_text())["benchmark"] == "footprint"


def test_soak_prints_a_summary_and_writes_its_json(store_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="replay soak needs replay[service]")
    out = tmp_path / "soak.json"
    args = ["soak", str(tmp_path / "soak"), "--frames-from", str(store_path)]
    args += ["--minutes", "0.1", "--clients", "1", "--batch-size", "2", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "soak"
    assert doc["results"]["errors"] == 0
    assert len(doc["results"]["rss_samples"]) > 1
    rows = [line.split("│") for line in result.stdout.splitlines() if line.count("│") == 3]
    figures = {row[1].strip(): row[2].strip() for row in rows}
    assert figures["errors"] == "0"
    assert figures["batches"] == f"{doc['results']['batches']:,}"
    assert "values (in the JSON)" in figures["rss_samples"]
    assert '"benchmark"' not in result.stdout
