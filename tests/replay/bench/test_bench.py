"""Smoke run of the benchmarks on a tiny size, so the benchmark code cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner

import replay
from replay.cli.main import main


def test_bench_ingest_smoke(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> None:
    store = replay.open_store(tmp_path / "frames")
    with store.new_race(env="CarRacing-v3") as writer:
        for frame in real_frames[:4]:
            writer.append(frame)
    out = tmp_path / "ingest.json"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "ingest",
            "--frames-from",
            str(tmp_path / "frames"),
            "--frames",
            "6",
            "--fps",
            "0",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "ingest"
    assert doc["machine"]["cores"] >= 1
    assert doc["date"]
    figures = doc["results"]
    assert figures["replay"]["paced_writer_rss_mb"] > 0  # at least its ring
    baselines = ["png_file", "jpeg_file", "raw_memmap", "torchrl", "zarr_naive"]
    measured = [b for b in baselines if isinstance(figures[b], dict)]
    assert {"png_file", "jpeg_file", "raw_memmap", "zarr_naive"} <= set(measured)
    for approach in ["replay", *measured]:
        assert figures[approach]["append"]["p99_us"] > 0
        assert figures[approach]["frames_per_s"] > 0
        assert figures[approach]["bytes_per_frame"] > 0
    assert set(figures["ratios"]) == {
        f"{figure}_vs_{b}" for b in measured for figure in ("append_p99", "frames_per_s")
    }


def test_bench_ingest_writers_smoke(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> None:
    store = replay.open_store(tmp_path / "frames")
    for env in ("CarRacing-v3", "ViZDoom"):
        with store.new_race(env=env, height=90, width=160) as writer:
            for frame in real_frames[:3]:
                writer.append(np.ascontiguousarray(frame[::10, ::10]))
    out = tmp_path / "writers.json"
    args = ["--frames-from", str(tmp_path / "frames"), "--frames", "4", "--fps", "200"]
    result = CliRunner().invoke(main, ["bench", "ingest", *args, "--writers", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "ingest-writers"
    figures = doc["results"]
    assert set(figures["first_new_race_s"]) == {"thread", "process"}
    setups = ("thread", "process", "thread+frame_buffer", "process+frame_buffer")
    for env in ("CarRacing-v3", "ViZDoom"):
        assert figures[env]["frame_shape"] == [90, 160, 3]
        assert figures[env]["bare_copy"]["p99_us"] > 0
        for driver in ("sleep", "busy", "numpy"):
            for setup in setups:
                assert figures[env][driver][setup]["p99_us"] > 0
                assert figures[env][driver][setup]["dropped"] == 0
            assert figures[env]["append_p99_thread_vs_process"][driver] > 0
        for setup in setups:
            assert figures[env]["sustained_frames_per_s"][setup] > 0
            assert figures[env]["sustained_cpu_ms_per_frame"][setup] >= 0
    assert set(figures["layouts"]) == {
        "contiguous",
        "pygame surface, transposed",
        "planar CHW, transposed",
        "BGR, reversed view",
        "RGBA, sliced",
    }
    for costs in figures["layouts"].values():
        assert costs["append"]["p50_us"] > 0
        assert costs["numpy_copyto_vs_append_p50"] > 0


def test_bench_needs_recorded_frames(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["bench", "ingest", "--frames-from", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "record one first" in result.output


def test_bench_footprint_smoke(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> None:
    store = replay.open_store(tmp_path / "frames")
    with store.new_race(env="CarRacing-v3", codec="zstd") as writer:
        for frame in real_frames[:3]:
            writer.append(frame)
    out = tmp_path / "footprint.json"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "footprint",
            "--frames-from",
            str(tmp_path / "frames"),
            "--frames",
            "2",
            "--quality",
            "50",
            "--quality",
            "90",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    # people get tables: one row per setting, its figures as columns; scripts the file
    assert '"benchmark"' not in result.output
    header = next(line for line in result.output.splitlines() if "psnr_db" in line)
    assert "quality" in header
    assert "bytes_per_frame" in header
    rows = [line for line in result.output.splitlines() if "games.CarRacing-v3.settings." in line]
    assert len(rows) == 4
    assert f"results (JSON) written to {out}" in result.output.replace("\n", "")
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "footprint"
    assert doc["command"]
    assert doc["results"]["lossless_reference"] is True
    rows = doc["results"]["games"]["CarRacing-v3"]["settings"]
    assert {(r["quality"], r["subsampling"]) for r in rows} == {
        (50, "420"),
        (90, "420"),
        (50, "444"),
        (90, "444"),
    }
    by_q = {(r["quality"], r["subsampling"]): r for r in rows}
    assert by_q[(90, "420")]["psnr_db"] > by_q[(50, "420")]["psnr_db"]
    assert by_q[(90, "420")]["bytes_per_frame"] > by_q[(50, "420")]["bytes_per_frame"]
    assert 0.9 < by_q[(90, "444")]["ssim"] <= 1.0
    codecs = doc["results"]["games"]["CarRacing-v3"]["codecs"]
    for name in ("jpeg", "zstd"):
        assert codecs[name]["bytes_per_frame"] > 0
        assert codecs[name]["decode_ms"] > 0
    ratio = codecs["zstd_over_jpeg"]["bytes"]
    assert ratio == codecs["zstd"]["bytes_per_frame"] / codecs["jpeg"]["bytes_per_frame"]
    assert "games.CarRacing-v3.codecs.zstd" in result.output  # a row of the summary


def test_bench_plot_draws_what_was_measured(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = Path(__file__).parents[3] / "docs" / "results"
    result = CliRunner().invoke(main, ["bench", "plot", str(results), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert {"ingest-latency.png", "quality-size.png"} <= set(written)
    for name in written:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_labels_never_overprint() -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from replay.bench.plots import _drop_overlapping

    fig, ax = plt.subplots()
    texts = [ax.annotate(f"q{q}", (1.0, 1.0 + d)) for q, d in ((50, 0), (90, 0.001), (95, 0.5))]
    _drop_overlapping(fig, texts)
    assert [t.get_visible() for t in texts] == [True, False, True]
    plt.close(fig)


def test_bench_scaling_smoke(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> None:
    from replay.bench.scaling import run_scaling_bench

    small = [f[::10, ::10].copy() for f in real_frames[:4]]  # 90x160: the code path, not speed
    results = run_scaling_bench(
        tmp_path,
        small,
        sizes=(20, 60),
        processes=(1, 2),
        frames_per_writer=10,
        batches=2,
        batch_size=4,
    )
    assert [w["processes"] for w in results["writers"]] == [1, 2]
    assert [w["frames"] for w in results["writers"]] == [10, 20]
    assert [s["frames"] for s in results["store_size"]] == [20, 60]
    assert all(s["frames_per_s"] > 0 and s["index_bytes"] > 0 for s in results["store_size"])
    assert [r["processes"] for r in results["readers"]] == [1, 2]


def test_bench_keys_smoke(tmp_path: Path) -> None:
    pytest.importorskip("torchrl")
    out = tmp_path / "keys.json"
    args = ["--sizes", "300,1200", "--race-len", "100", "--repeats", "3", "--out", str(out)]
    result = CliRunner().invoke(main, ["bench", "keys", "--work", str(tmp_path), *args])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]["sizes"]
    assert [(r["frames"], r["races"]) for r in rows] == [(300, 3), (1200, 12)]
    for row in rows:
        assert row["replay"]["index_bytes"] > 0
        for key in ("uniform_us", "sequences_us", "prioritized_us", "update_us"):
            assert row["replay"][key]["p99"] >= row["replay"][key]["p50"] > 0
        torchrl = row["torchrl"]
        measured = ("slice_us", "slice_cached_us")
        if "prioritized_error" not in torchrl:  # a torchrl wheel without its C++ sum tree
            measured += ("prioritized_us", "update_us")
        for key in measured:
            assert torchrl[key]["p50"] > 0
        assert row["sequences_vs_torchrl_slice"] > 0
    plots = CliRunner().invoke(main, ["bench", "plot", str(tmp_path), "--out", str(tmp_path)])
    assert plots.exit_code == 0, plots.output
    assert (tmp_path / "keys.png").read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(main, ["bench", "keys", "--sizes", "10,x"])
    assert bad.exit_code == 2
    assert "expected numbers like 1000,10000" in bad.output


def test_bench_gpu_says_it_needs_cuda(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> None:
    from replay.codec.jpeg import cuda_available

    if cuda_available():
        pytest.skip("this machine has CUDA: the gpu-marked test below runs instead")
    result = CliRunner().invoke(main, ["bench", "gpu", "--frames-from", str(tmp_path)])
    assert result.exit_code == 1
    assert "needs CuPy and a CUDA device" in result.output


@pytest.mark.gpu
def test_bench_gpu_figures(real_frames: npt.NDArray[np.uint8]) -> None:
    from replay.bench.gpu import TRANSFORM_FIGURES, run_gpu_bench
    from replay.codec.jpeg import cuda_available

    if not cuda_available():
        pytest.skip("needs CuPy and a CUDA device")
    results = run_gpu_bench(list(real_frames[:4]), repeats=1)
    assert [r["batch"] for r in results["encode_by_batch"]] == [1, 2, 4, 8, 16, 32, 64]
    measured = [r for r in results["decode_batch_64"] if "frames_per_s" in r]
    assert measured, results["decode_batch_64"]
    assert all(r["failed"] == 0 and r["all_zero"] == 0 for r in measured)
    transform = results["transform_uint8_to_float32_nchw"]
    assert all(transform[name] > 0 for name in TRANSFORM_FIGURES), transform


def test_summary_tables_group_recurring_figures_and_list_the_rest() -> None:
    from rich.console import Console

    from replay.bench.report import summary_tables

    results = {
        "frames": 256,
        "frame_shape": [900, 1600, 3],
        "approaches": {
            "replay": {"build_s": 0.44, "warm": {"frames_per_s": 1227.9, "ms_per_batch": 52.1}},
            "jpeg_file": {"build_s": 0.49, "warm": {"frames_per_s": 477.9, "ms_per_batch": 133.9}},
        },
        "samples": [{"t": float(i)} for i in range(60)],
    }
    console = Console(width=120, record=True)
    for table in summary_tables("sample", results):
        console.print(table)
    text = console.export_text()
    replay_row = next(line for line in text.splitlines() if "approaches.replay.warm" in line)
    assert "1,228" in replay_row
    assert "52.1" in replay_row
    assert "frames_per_s" in text  # the columns of that table
    assert "ms_per_batch" in text
    assert "900, 1600, 3" in text
    assert "approaches.jpeg_file.build_s" in text
    assert "60 values (in the JSON)" in text  # a long series stays in the JSON


def test_bench_progress_is_silent_off_a_terminal(tmp_path: Path) -> None:
    """`expect`/`stage` outside a run, or with stderr not a terminal, print nothing."""
    import click

    from replay.bench.report import expect, progress, stage

    expect(3)  # no run: nothing to update
    stage("nothing")

    @click.command()
    def job() -> None:
        with progress("bench job"):
            expect(2)
            stage("one")
            stage("two")
        click.echo("done")

    result = CliRunner().invoke(job)
    assert result.exit_code == 0
    assert result.output == "done\n"


def test_bench_transform_rows_smoke(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> None:
    """The transform and floor rows of ``replay bench sample``: every row on both codecs,
    with its floor, and the ratios the report quotes."""
    from replay.bench.transform_speed import CODECS, run_transform_bench

    small = [np.ascontiguousarray(f[::5, ::5]) for f in real_frames[:4]]  # 180x320
    results = run_transform_bench(tmp_path, small, n=8, batches=1, batch_size=4)
    rows = {"raw", "readme", "rgb_quarter", "grey_84"}
    for codec in CODECS:
        assert set(results[codec]) == rows
        for row in results[codec].values():
            assert row["frames_per_s"] > 0
            assert row["floor_frames_per_s"] > 0
    ratios = results["ratios"]
    assert {f"{c}_readme_vs_raw" for c in CODECS} <= set(ratios)
    assert {f"{c}_raw_vs_floor" for c in CODECS} <= set(ratios)
    zstd = results["zstd"]
    bound = zstd["readme"]["floor_frames_per_s"] / zstd["raw"]["frames_per_s"]
    assert ratios["zstd_readme_floor_vs_raw"] == bound
    assert all(v > 0 for v in ratios.values())
    store = replay.open_store(tmp_path / "store", mode="r")
    assert sorted(r.codec["name"] for r in store.races()) == ["jpeg", "zstd"]
