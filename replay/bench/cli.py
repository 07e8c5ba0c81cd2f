"""``replay bench``: run a benchmark on real recorded frames and write JSON results.

Each benchmark compares replay with the alternatives in one run. Every result carries
the machine, date, commit and command (`environment()`), so figures in
docs/benchmarks.md can be traced to how they were made.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.decorators import FC
from rich.console import Console

from replay.bench.environment import environment
from replay.bench.footprint import run_footprint_bench
from replay.bench.ingest import Frame, run_ingest_bench
from replay.bench.report import expect, progress, stage, summary_tables
from replay.bench.writers import run_writer_bench
from replay.cli.plugins import PluginGroup
from replay.codec.frames import ZstdFrames
from replay.errors import ReplayError
from replay.format.race import RaceInfo
from replay.store import Store, open_store

FRAMES_FROM_HELP = (
    "Store to take real frames from (record one first: "
    "replay record --source carracing --races 1 --steps 100 --store ./replay-data)."
)


def _frames_store(store_path: str) -> Store:
    try:
        return open_store(store_path, mode="r")
    except ReplayError as e:
        raise click.ClickException(f"{e}. {FRAMES_FROM_HELP}") from e


def load_frames(store_path: str, limit: int, env: str | None = None) -> list[Frame]:
    """Up to `limit` decoded frames from the races of a store (of one `env`), oldest first."""
    store = _frames_store(store_path)
    frames: list[Frame] = []
    for info in store.races():
        if env is not None and info.env != env:
            continue
        race = store.race(info.race_id)
        for step in range(min(info.length, limit - len(frames))):
            frames.append(race.frame(step))
        if len(frames) >= limit:
            break
    if not frames:
        raise click.ClickException(f"{store_path} has no committed frames. {FRAMES_FROM_HELP}")
    return frames


def write_results(name: str, results: dict[str, Any], out: str | None) -> None:
    """Print the results as tables for people, and save them (with the machine, date,
    commit and command) as JSON to `out` (``--json PATH``) for scripts and plots."""
    console = Console(width=None if sys.stdout.isatty() else 160)
    for table in summary_tables(name, results):
        console.print(table)
    if out:
        doc = {"benchmark": name, **environment(), "results": results}
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(doc, indent=2) + "\n")
        console.print(f"results (JSON) written to {out}")
    else:
        console.print("(--json PATH saves every figure as JSON)")


def frames_from_option(help: str = FRAMES_FROM_HELP) -> Callable[[FC], FC]:
    """``--frames-from STORE``: where a benchmark takes its real frames."""
    return click.option(
        "--frames-from", "frames_from", default="./replay-data", show_default=True, help=help
    )


work_option = click.option(
    "--work", type=click.Path(file_okay=False), help="Scratch folder (default: a temp dir)."
)
device_option = click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="cuda: frames on the GPU, nvJPEG encode/decode (a GPU machine).",
)
out_option = click.option(
    "--json",
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    help="Write every figure as JSON here, with the machine, date, commit and command.",
)


@click.group(cls=PluginGroup, entry_point_group="replay.bench")
def bench() -> None:
    """Benchmarks against the alternatives, on real frames, with ratios from one run.

    \b
      replay bench ingest --frames-from ./replay-data --frames 300
      replay bench ingest --frames-from ./replay-data --frames 300 --writers
      replay bench remote --frames-from ./replay-data
    """


@bench.command()
@frames_from_option()
@click.option("--frames", "n", default=300, show_default=True, help="Frames to write per approach.")
@click.option("--distinct", default=60, show_default=True, help="Distinct real frames to cycle.")
@click.option("--fps", default=30.0, show_default=True, help="Driver pace for the latency figures.")
@device_option
@click.option(
    "--writers",
    is_flag=True,
    help="Compare the thread and process writers under sleeping, busy-waiting and "
    "NumPy-heavy drivers, per env in --frames-from (instead of the baselines).",
)
@work_option
@out_option
def ingest(
    frames_from: str,
    n: int,
    distinct: int,
    fps: float,
    device: str,
    writers: bool,
    work: str | None,
    out: str | None,
) -> None:
    """Driver-visible append latency and sustained frames/s: replay vs one file per frame."""
    if n < 1 or distinct < 1:
        raise click.BadParameter("--frames and --distinct must be positive")
    if writers:
        envs = sorted({info.env for info in _frames_store(frames_from).races()})
        by_env = {env: load_frames(frames_from, distinct, env) for env in envs}
        with tempfile.TemporaryDirectory(dir=work) as scratch, progress("bench ingest --writers"):
            results = run_writer_bench(by_env, n, Path(scratch), fps=fps)
        write_results("ingest-writers", results | {"frames_from": frames_from}, out)
        return
    frames = load_frames(frames_from, distinct)
    click.echo(
        f"ingest: {n} frames of {frames[0].shape} per approach, paced at {fps} fps", err=True
    )
    with tempfile.TemporaryDirectory(dir=work) as scratch, progress("bench ingest"):
        results = run_ingest_bench(frames, n, Path(scratch), fps=fps, device=device)
    results["distinct_frames"] = len(frames)
    results["frames_from"] = frames_from
    write_results("ingest", results, out)


@bench.command()
@frames_from_option(FRAMES_FROM_HELP + " Lossless races (record --lossless) give true PSNR/SSIM.")
@click.option("--frames", "n", default=10, show_default=True, help="Frames per game.")
@click.option(
    "--quality",
    "qualities",
    multiple=True,
    type=click.IntRange(1, 100),
    default=(50, 70, 80, 90, 95),
    show_default=True,
    help="Qualities to try.",
)
@out_option
def footprint(frames_from: str, n: int, qualities: tuple[int, ...], out: str | None) -> None:
    """Bytes/frame, compression vs raw, PSNR and SSIM per JPEG quality, per game."""
    store = _frames_store(frames_from)
    races = store.races()
    envs = sorted({info.env for info in races})
    lossless = all(isinstance(info.frame_codec, ZstdFrames) for info in races)
    if not lossless:
        click.echo(
            "warning: some races are JPEG; PSNR/SSIM are then measured against "
            "already-compressed frames (record with --lossless for true figures)",
            err=True,
        )
    results: dict[str, Any] = {"lossless_reference": lossless, "games": {}}
    with progress("bench footprint"):
        expect(len(envs))
        for env in envs:
            frames = load_frames(frames_from, n * 10, env)[::10][:n]  # spread over the races
            stage(f"footprint: {env}")
            results["games"][env] = run_footprint_bench(frames, qualities=qualities)
    write_results("footprint", results, out)


@bench.command()
@frames_from_option()
@click.option("--distinct", default=64, show_default=True, help="Distinct real frames to cycle.")
@click.option("--frames", "n", default=256, show_default=True, help="Frames in each storage.")
@click.option("--batches", default=10, show_default=True, help="Timed batches (warm).")
@device_option
@work_option
@out_option
def sample(
    frames_from: str,
    distinct: int,
    n: int,
    batches: int,
    device: str,
    work: str | None,
    out: str | None,
) -> None:
    """Sampling frames/s (batch 64, sequences 16x4), warm and cold, vs files, TorchRL, memmap;
    with and without Transforms on a JPEG and a zstd race, and vs bare decoding (floor)."""
    from replay.bench.sampling import run_sampling_bench

    frames = load_frames(frames_from, distinct)
    with tempfile.TemporaryDirectory(dir=work) as scratch, progress("bench sample"):
        results = run_sampling_bench(Path(scratch), frames, n=n, batches=batches, device=device)
    write_results("sample", results, out)


@bench.command()
@click.argument("results", default="docs/results", type=click.Path(file_okay=False))
@click.option("--out", default="docs/plots", show_default=True, type=click.Path(file_okay=False))
def plot(results: str, out: str) -> None:
    """Draw PNG plots of the JSON results in RESULTS (ingest, sample, footprint)."""
    from replay.bench.plots import plot_all

    for path in plot_all(Path(results), Path(out)):
        click.echo(f"wrote {path}")


def _counts(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    """A comma-separated list of positive integers (``--sizes 1000,10000``)."""
    try:
        counts = [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected numbers like 1000,10000, got {value!r}") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"expected positive numbers, got {value!r}")
    return counts


@bench.command()
@frames_from_option()
@click.option(
    "--sizes",
    default="1000,10000,100000",
    show_default=True,
    callback=_counts,
    help="Store sizes in frames (grown by copying a recorded race).",
)
@click.option(
    "--processes",
    default="1,2,4,8",
    show_default=True,
    callback=_counts,
    help="Concurrent writer / reader processes.",
)
@work_option
@out_option
def scaling(
    frames_from: str, sizes: list[int], processes: list[int], work: str | None, out: str | None
) -> None:
    """Sampling vs store size, and ingest/sampling vs concurrent writers/readers."""
    from replay.bench.scaling import run_scaling_bench

    frames = load_frames(frames_from, 60)
    with tempfile.TemporaryDirectory(dir=work) as scratch, progress("bench scaling"):
        results = run_scaling_bench(
            Path(scratch),
            frames,
            sizes=sizes,
            processes=processes,
        )
    write_results("scaling", results, out)


@bench.command()
@click.option(
    "--sizes",
    default="10000,100000,1000000,5000000",
    show_default=True,
    callback=_counts,
    help="Store sizes in frames (metadata-only races: no pixels are needed to choose keys).",
)
@click.option(
    "--race-len",
    default=1000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Steps per race.",
)
@click.option(
    "--repeats",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed draws per figure.",
)
@click.option("--no-torchrl", is_flag=True, help="Skip the TorchRL samplers.")
@work_option
@out_option
def keys(
    sizes: list[int],
    race_len: int,
    repeats: int,
    no_torchrl: bool,
    work: str | None,
    out: str | None,
) -> None:
    """Key-drawing latency vs store size (to millions of frames) vs TorchRL's samplers."""
    from replay.bench.keys import run_keys_bench

    with tempfile.TemporaryDirectory(dir=work) as scratch, progress("bench keys"):
        results = run_keys_bench(
            Path(scratch), sizes=sizes, race_len=race_len, repeats=repeats, torchrl=not no_torchrl
        )
    write_results("keys", results, out)


@bench.command()
@frames_from_option()
@click.option("--frames", "n", default=120, show_default=True, help="Frames per actor.")
@click.option("--distinct", default=16, show_default=True, help="Distinct real frames to cycle.")
@click.option(
    "--actors",
    default="1,4",
    show_default=True,
    callback=_counts,
    help="Remote actors recording at once, compared with one local writer.",
)
@click.option("--paced-frames", default=90, show_default=True, help="Frames of the paced runs.")
@click.option("--fps", default=30.0, show_default=True, help="Pace of the append latency runs.")
@click.option(
    "--load-actors",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Actors recording at full speed while sample latency is measured.",
)
@click.option("--batch-size", default=8, show_default=True, help="Frames per sampled batch.")
@click.option("--batches", default=30, show_default=True, help="Timed batches per figure.")
@work_option
@out_option
def remote(
    frames_from: str,
    n: int,
    distinct: int,
    actors: list[int],
    paced_frames: int,
    fps: float,
    load_actors: int,
    batch_size: int,
    batches: int,
    work: str | None,
    out: str | None,
) -> None:
    """Recording through the service: frames/s of 1, 4 ... remote actors vs the local
    writer, bytes on the wire, actor CPU, append latency; sample latency under inserts.

    Sample latency is measured with no actor, with --load-actors at full speed, at
    nice 19, and pinned apart (os.sched_setaffinity): the actors and their child
    processes on half the usable CPUs, the service and the sampling client on the other
    half (2 CPUs: one each; skipped on 1 CPU); `pinned` in the output names them."""
    from replay.bench.remote import race_codec, run_remote_bench

    if min(n, distinct, paced_frames, batch_size, batches) < 1 or fps <= 0:
        raise click.BadParameter(
            "--frames, --distinct, --paced-frames, --batch-size, "
            "--batches and --fps must be positive"
        )
    first: dict[str, RaceInfo] = {}
    for info in _frames_store(frames_from).races():
        first.setdefault(info.env, info)
    games = {
        env: (load_frames(frames_from, distinct, env), race_codec(info))
        for env, info in sorted(first.items())
    }
    with tempfile.TemporaryDirectory(dir=work) as scratch, progress("bench remote"):
        results = run_remote_bench(
            games,
            Path(scratch),
            frames=n,
            actors=actors,
            paced_frames=paced_frames,
            fps=fps,
            load_actors=load_actors,
            batch_size=batch_size,
            batches=batches,
        )
    write_results("remote", results | {"frames_from": frames_from}, out)


@bench.command()
@frames_from_option()
@click.option("--repeats", default=10, show_default=True, help="Timed repetitions per figure.")
@out_option
def gpu(frames_from: str, repeats: int, out: str | None) -> None:
    """GPU codec figures: encode by batch size, HW/CUDA/CPU decode, fused transform."""
    from replay.bench.gpu import run_gpu_bench
    from replay.codec.jpeg import cuda_available

    if not cuda_available():
        raise click.ClickException(
            "replay bench gpu needs CuPy and a CUDA device (see scripts/gpu-run)"
        )
    with progress("bench gpu"):
        results = run_gpu_bench(load_frames(frames_from, 16), repeats=repeats)
    write_results("gpu", results, out)
