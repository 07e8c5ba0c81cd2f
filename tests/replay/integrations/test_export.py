"""replay export: real CarRacing races as an MP4 (read back with PyAV) and as a Minari
dataset (loaded back with Minari)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner
from sampling_helpers import write_race

import replay
from replay.cli.main import main
from replay.integrations.export import export_video

av = pytest.importorskip("av", reason="PyAV is not installed (pip install 'replay[export]')")


@pytest.fixture(scope="module")
def store_path(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Two races of real 1600x900 frames (12 and 8 steps); reward = step."""
    path = tmp_path_factory.mktemp("export") / "store"
    store = replay.open_store(path)
    write_race(store, real_frames[:12], env="CarRacing-v3", policy="pure-pursuit-v1", fps=50)
    write_race(store, real_frames[12:20], env="CarRacing-v3", policy="pure-pursuit-v1", fps=50)
    return path


def _read_video(path: Path) -> tuple[list[npt.NDArray[np.uint8]], float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, float(stream.average_rate)


def test_cli_exports_a_race_as_a_video(
    store_path: Path, real_frames: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    race_id = replay.open_store(store_path, mode="r").race_ids()[0]
    out = tmp_path / "race.mp4"
    result = CliRunner().invoke(main, ["export", str(store_path), race_id, "--video", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 12 frames (1600x900 at 50 fps)" in result.output
    frames, rate = _read_video(out)
    assert len(frames) == 12
    assert frames[0].shape == (900, 1600, 3)
    assert rate == 50
    # the pictures are the race's: close to the originals after JPEG then H.264
    assert np.abs(frames[5].astype(int) - real_frames[5]).mean() < 6
    assert (
        np.abs(frames[5].astype(int) - real_frames[40]).mean()
        > 3 * np.abs(frames[5].astype(int) - real_frames[5]).mean()
    )


def test_video_of_a_range_at_another_rate(store_path: Path, tmp_path: Path) -> None:
    store = replay.open_store(store_path, mode="r")
    race = store.race(store.race_ids()[1])
    done = export_video(race, tmp_path / "part.mp4", fps=29.97, start=2, stop=6)
    frames, rate = _read_video(done.path)
    assert (done.frames, len(frames)) == (4, 4)
    assert rate == pytest.approx(29.97, abs=0.01)


def test_cli_refuses_bad_requests_cleanly(store_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(store_path), "--video", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2
    assert "exactly one RACE" in result.output
    missing = "01JAAAAAAAAAAAAAAAAAAAAAAA"
    result = runner.invoke(
        main, ["export", str(store_path), missing, "--video", str(tmp_path / "x.mp4")]
    )
    assert result.exit_code == 1
    assert f"no race {missing}" in result.output
    assert "Traceback" not in result.output


def test_cli_exports_races_as_a_minari_dataset(
    store_path: Path, real_frames: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    minari = pytest.importorskip("minari", reason="minari is not installed ('replay[export]')")
    root = tmp_path / "minari"
    result = CliRunner().invoke(
        main,
        [
            "export",
            str(store_path),
            "--minari",
            "replay/carracing-test-v0",
            "--minari-root",
            str(root),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "wrote 2 races" in result.output
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        dataset = minari.load_dataset("replay/carracing-test-v0")
        assert dataset.total_episodes == 2
        assert dataset.total_steps == 20
        first, second = dataset[0], dataset[1]
    assert first.observations.shape == (13, 900, 1600, 3)  # 12 frames + the last repeated
    assert first.actions.shape == (12, 3)
    np.testing.assert_array_equal(first.rewards, np.arange(12))
    assert first.terminations.tolist() == [False] * 11 + [True]
    np.testing.assert_array_equal(second.actions[:, 0], np.arange(8))
    assert np.abs(second.observations[0].astype(int) - real_frames[12]).mean() < 6


def test_export_is_a_replay_command_with_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "export" in result.output
    result = CliRunner().invoke(main, ["export", "--help"])
    assert result.exit_code == 0
    assert "--video" in result.output
    assert "--minari" in result.output


def test_cli_needs_one_kind_of_export(store_path: Path) -> None:
    result = CliRunner().invoke(main, ["export", str(store_path)])
    assert result.exit_code == 2
    assert "one of --video FILE or --minari DATASET_ID" in result.output
