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
from replay.format import spec as fmt
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


# -- issue 23: repaired races, Minari ids, bad output paths -------------------------------


@pytest.fixture(scope="module")
def repaired_store(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """A 12-step race whose step 5 was damaged (a flipped byte) and dropped by
    ``verify --repair``; the race is clean to verify afterwards."""
    path = tmp_path_factory.mktemp("repaired") / "store"
    race_id = write_race(replay.open_store(path), real_frames[:12], env="CarRacing-v3", fps=50)
    race = replay.open_store(path, mode="r").race(race_id)
    offset, nbytes = race.shard_index(0)[5]
    shard = path / fmt.frames_key(race_id, 0)
    data = bytearray(shard.read_bytes())
    data[offset + nbytes // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    assert CliRunner().invoke(main, ["verify", str(path), "--repair"]).exit_code == 0
    assert CliRunner().invoke(main, ["verify", str(path)]).exit_code == 0
    return path, race_id


def test_a_repaired_race_exports_as_a_video_holding_the_lost_frame(
    repaired_store: tuple[Path, str], real_frames: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    path, race_id = repaired_store
    out = tmp_path / "race.mp4"
    result = CliRunner().invoke(main, ["export", str(path), race_id, "--video", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 12 frames" in result.output
    assert "1 frames lost to damage show the frame before" in result.output
    frames, _ = _read_video(out)
    assert len(frames) == 12

    def error(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
        return float(np.abs(a.astype(int) - b).mean())

    assert error(frames[5], real_frames[4]) < error(frames[5], real_frames[5])  # held
    assert error(frames[6], real_frames[6]) < error(frames[6], real_frames[5])
    race = replay.open_store(path, mode="r").race(race_id)
    first_lost = export_video(race, tmp_path / "tail.mkv", start=5, stop=9)
    assert (first_lost.frames, first_lost.held) == (4, 1)  # step 5 shows step 6


def test_a_repaired_race_exports_to_minari_split_at_the_lost_step(
    repaired_store: tuple[Path, str], tmp_path: Path
) -> None:
    minari = pytest.importorskip("minari", reason="minari is not installed ('replay[export]')")
    path, race_id = repaired_store
    root = tmp_path / "minari"
    args = ["export", str(path), race_id, "--minari", "replay/repaired-v0"]
    result = CliRunner().invoke(main, [*args, "--minari-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "wrote 1 race (2 episodes)" in result.output
    assert "1 steps lost to damage left out" in result.output
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root))
        dataset = minari.load_dataset("replay/repaired-v0")
        assert dataset.total_steps == 11
        before, after = dataset[0], dataset[1]
    np.testing.assert_array_equal(before.rewards, np.arange(5))  # steps 0-4, cut at 5
    assert before.truncations.tolist() == [False] * 4 + [True]
    np.testing.assert_array_equal(after.rewards, np.arange(6, 12))
    assert after.observations.shape[0] == 7


@pytest.mark.parametrize(
    "dataset_id", ["../../escape-v0", "x", "a/../b-v0", "/abs/x-v0", "a//b-v0", "ns/name"]
)
def test_a_malformed_minari_id_creates_nothing(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset_id: str
) -> None:
    """Issue 23 item 10: was `../../escape-v0/data` outside the root, or a TypeError."""
    pytest.importorskip("minari", reason="minari is not installed ('replay[export]')")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "default-root"))
    for root in (["--minari-root", "minari"], []):
        result = CliRunner().invoke(
            main, ["export", str(store_path), "--minari", dataset_id, *root]
        )
        assert result.exit_code == 2, result.output
        assert f"malformed Minari dataset id {dataset_id!r}" in result.output
        assert "Traceback" not in result.output
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "a",
        "a/b",
    ]


def test_an_existing_minari_dataset_is_refused_and_kept(store_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("minari", reason="minari is not installed ('replay[export]')")
    args = ["export", str(store_path), "--minari", "ns/kept-v1", "--minari-root", str(tmp_path)]
    assert CliRunner().invoke(main, args).exit_code == 0
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "a Minari dataset 'ns/kept-v1' already exists" in result.output
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--video", "/nonexistent/dir/a.mp4"], "no folder /nonexistent/dir"),
        (["--video", "{tmp}/a.unknownext"], "give a file ending in .mp4, .mkv, .mov"),
        (["--video", "{tmp}/a.mp4", "--fps", "0"], "must be a positive number"),
        (["--video", "{tmp}/a.mp4", "--fps", "-5"], "must be a positive number"),
        (["--video", "{tmp}/a.mp4", "--fps", "nan"], "must be a positive number"),
        (["--video", "{tmp}/a.mp4", "--crf", "99"], "99 is not in the range 0<=x<=51"),
    ],
)
def test_bad_video_options_are_usage_errors(
    store_path: Path, tmp_path: Path, options: list[str], problem: str
) -> None:
    """Issue 23 item 11: one line, exit 2, nothing written (was an `av` traceback, and
    --fps 0 silently meant the race's rate)."""
    race_id = replay.open_store(store_path, mode="r").race_ids()[0]
    args = [o.replace("{tmp}", str(tmp_path)) for o in options]
    result = CliRunner().invoke(main, ["export", str(store_path), race_id, *args])
    assert result.exit_code == 2, result.output
    assert problem in result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_video_that_fails_half_way_leaves_nothing(
    store_path: Path, tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    """A damaged (not repaired) frame stops the export: no video, no temporary file."""
    path = tmp_path / "store"
    race_id = write_race(replay.open_store(path), real_frames[:10], env="CarRacing-v3")
    shard = path / fmt.frames_key(race_id, 0)
    offset, nbytes = replay.open_store(path, mode="r").race(race_id).shard_index(0)[6]
    data = bytearray(shard.read_bytes())
    data[offset + nbytes // 2] ^= 0x10
    shard.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(main, ["export", str(path), race_id, "--video", str(out / "a.mp4")])
    assert result.exit_code == 1
    assert "frame at step 6 is damaged" in result.output
    assert list(out.iterdir()) == []
