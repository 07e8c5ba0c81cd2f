"""``replay export``: a race as a video, races as a Minari dataset.

The work is `replay.integrations.export`; this module is its command line.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.progress import TextColumn

from replay.cli.common import plural, progress_bar
from replay.errors import ReplayError
from replay.store import open_store

if TYPE_CHECKING:
    from replay.integrations.export import VideoExport


def _positive_fps(ctx: click.Context, param: click.Parameter, fps: float | None) -> float | None:
    """--fps as given, or a usage error (exit 2) for 0, a negative or a non-finite rate."""
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise click.BadParameter(f"must be a positive number of frames per second, got {fps:g}")
    return fps


@contextlib.contextmanager
def _frames_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar of frames exported on stderr (a terminal only), and its update."""
    bar = progress_bar(TextColumn(description), TextColumn("frames"))
    with bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@click.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.argument("race_ids", metavar="[RACE]...", nargs=-1)
@click.option(
    "--video", type=click.Path(dir_okay=False), help="Write RACE as an H.264 .mp4 (.mkv, .mov)."
)
@click.option(
    "--fps", type=float, callback=_positive_fps, help="Video frame rate (default: the race's)."
)
@click.option(
    "--crf",
    default=23,
    show_default=True,
    type=click.IntRange(0, 51),
    help="Video quality, 0 (lossless)..51.",
)
@click.option("--minari", "dataset_id", help="Write the races as this Minari dataset id.")
@click.option(
    "--minari-root",
    type=click.Path(file_okay=False),
    help="Minari datasets folder (default: $MINARI_DATASETS_PATH or ~/.minari/datasets).",
)
def export(
    store_path: str,
    race_ids: tuple[str, ...],
    video: str | None,
    fps: float | None,
    crf: int,
    dataset_id: str | None,
    minari_root: str | None,
) -> None:
    """Export races of STORE: one RACE as a video, or races as a Minari dataset.

    \b
      replay export ./replay-data 01J... --video race.mp4
      replay export ./replay-data --minari replay/carracing-v0 --minari-root ./minari

    A RACE is its id or any unique start of it (an ambiguous one lists the races it
    matches). Without RACE, --minari exports every complete race. Steps a repair removed
    are held (video: the frame before shown again) or split the race into episodes
    (Minari). Needs replay[export].
    """
    from replay.integrations.export import (
        ExportError,
        check_dataset_id,
        check_video_path,
        export_minari,
        export_video,
    )

    if (video is None) == (dataset_id is None):
        raise click.UsageError("give one of --video FILE or --minari DATASET_ID")
    if video is not None and len(race_ids) != 1:
        raise click.UsageError("--video exports exactly one RACE")
    try:  # the paths first: a usage error (exit 2) before any work, nothing created
        if video is not None:
            check_video_path(video)
        else:
            check_dataset_id(str(dataset_id))
    except ExportError as e:
        raise click.UsageError(str(e)) from e
    try:
        store = open_store(store_path, mode="r")
        race_ids = tuple(store.resolve(ref) for ref in race_ids)
        if video is not None:
            with _frames_bar(f"video {Path(video).name}") as progress:
                race = store.race(race_ids[0])
                _video(export_video(race, video, fps=fps, crf=crf, progress=progress))
        else:
            with _frames_bar(f"Minari {dataset_id}") as progress:
                done = export_minari(
                    store, str(dataset_id), race_ids or None, path=minari_root, progress=progress
                )
            lost = f"; {done.lost_steps} steps lost to damage left out" if done.lost_steps else ""
            click.echo(
                f"wrote {plural(done.races, 'race')} ({plural(done.episodes, 'episode')}) "
                f"as Minari dataset {done.dataset_id}{lost}"
            )
    except (ReplayError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e


def _video(done: VideoExport) -> None:
    held = f"; {done.held} frames lost to damage show the frame before" if done.held else ""
    click.echo(
        f"wrote {done.frames} frames ({done.width}x{done.height} at {done.fps:g} fps) "
        f"to {done.path}{held}"
    )
