"""``replay export``: a race as a video, races as a Minari dataset.

The work is `replay.integrations.export`; this module is its command line.
"""

from __future__ import annotations

import click

from replay.errors import ReplayError
from replay.store import open_store


@click.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.argument("race_ids", metavar="[RACE]...", nargs=-1)
@click.option("--video", type=click.Path(dir_okay=False), help="Write RACE as an H.264 .mp4.")
@click.option("--fps", type=float, help="Video frame rate (default: the race's).")
@click.option("--crf", default=23, show_default=True, help="Video quality, 0 (lossless)..51.")
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
    matches). Without RACE, --minari exports every complete race. Needs replay[export].
    """
    from replay.integrations.export import export_minari, export_video

    if (video is None) == (dataset_id is None):
        raise click.UsageError("give one of --video FILE or --minari DATASET_ID")
    if video is not None and len(race_ids) != 1:
        raise click.UsageError("--video exports exactly one RACE")
    try:
        store = open_store(store_path, mode="r")
        race_ids = tuple(store.resolve(ref) for ref in race_ids)
        if video is not None:
            done = export_video(store.race(race_ids[0]), video, fps=fps, crf=crf)
            click.echo(
                f"wrote {done.frames} frames ({done.width}x{done.height} at {done.fps:g} fps) "
                f"to {done.path}"
            )
        else:
            assert dataset_id is not None
            n = export_minari(store, dataset_id, race_ids or None, path=minari_root)
            click.echo(f"wrote {n} races as Minari dataset {dataset_id}")
    except (ReplayError, ValueError) as e:
        raise click.ClickException(str(e)) from e
