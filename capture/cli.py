"""``replay record``: play races with a source's built-in policy and write them into a store.

Registered into the ``replay`` command group through the ``replay.commands``
entry point (``record = capture.cli:record``). Each race goes through the
store's background writer, so the source runs at its own pace while frames
are encoded and committed beside it. A progress bar follows each race and a
table at the end says what it cost on disk::

    replay record ./replay-data --source carracing --races 3 --steps 300 --seed 0
    replay record ./replay-data --source vizdoom -o scenario=basic --races 5 --steps 300
    replay record ./replay-data --source screen -o display=:1 -o env=TrackMania --steps 1800

Every race's seed is kept in its meta (``{"seed": 7}``; drawn at random when
``--seed`` is not given) and, for procedural tracks, in its map
(``"procedural:7"``), so ``replay record --seed 7 --races 1`` drives that track
again.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import click
from rich.console import Console
from rich.filesize import decimal as human_bytes
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import replay
from capture.registry import DEFAULT_SOURCE, SOURCES, make_source
from capture.source import Source
from replay.errors import ReplayError

__all__ = ["RaceResult", "parse_options", "record"]

#: Where `replay record` records: a store, or a service (``--to``).
Target = replay.Store | replay.Client


@dataclass(frozen=True, slots=True)
class RaceResult:
    """What recording one race produced (a row of the summary table)."""

    race_id: str
    frames: int
    dropped: int
    nbytes: int
    raw_nbytes: int
    seconds: float
    total_reward: float
    status: str


def parse_options(options: Sequence[str]) -> dict[str, Any]:
    """``["scenario=basic", "width=800"]`` -> ``{"scenario": "basic", "width": 800}``.

    Values are read as JSON where they parse (numbers, ``true``, ``null``) and
    kept as strings otherwise, so ``-o display=:1`` needs no quoting.
    """
    parsed: dict[str, Any] = {}
    for option in options:
        key, sep, text = option.partition("=")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"expected KEY=VALUE, got {option!r}", param_hint="--option")
        try:
            parsed[key] = json.loads(text)
        except json.JSONDecodeError:
            parsed[key] = text
    return parsed


@click.command(name="record")
@click.argument("store_arg", metavar="[STORE]", required=False, type=click.Path(file_okay=False))
@click.option(
    "--source",
    "source_name",
    type=click.Choice(sorted(SOURCES)),
    default=DEFAULT_SOURCE,
    show_default=True,
    help="Where frames come from: a game with a built-in policy, the screen, or synthetic.",
)
@click.option(
    "--races", type=click.IntRange(min=1), default=3, show_default=True, help="Races to record."
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Most steps per race (a race that ends sooner is kept as it is).",
)
@click.option(
    "--store",
    "store_path",
    type=click.Path(file_okay=False),
    default=None,
    help="Same as the STORE argument (default ./replay-data): created if missing, "
    "appended to if present.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**31 - 1),
    default=None,
    help="Seed of the first race; race i uses SEED+i. Default: drawn at random. "
    "Kept in each race's meta (and map, for procedural tracks).",
)
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=90,
    show_default=True,
    help="JPEG quality of the stored frames.",
)
@click.option(
    "--codec",
    type=click.Choice(["auto", "jpeg", "zstd"]),
    default="auto",
    show_default=True,
    help="How frames are stored: JPEG, or lossless zstd; auto: the smaller for the "
    "source (zstd for CarRacing's flat colours, JPEG for the others).",
)
@click.option("--lossless", is_flag=True, help="Same as --codec zstd.")
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=None,
    help="Frames per shard (default: the store's).",
)
@click.option(
    "--to",
    "service_url",
    metavar="URL",
    default=None,
    help="Record through a replay service (http://host:8000) instead of into a store: "
    "frames are encoded here and sent in chunks (docs/protocol.md).",
)
@click.option(
    "--token",
    envvar="REPLAY_TOKEN",
    default=None,
    help="The service's bearer token (REPLAY_TOKEN), with --to.",
)
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Argument for the source, repeatable: -o scenario=basic, -o left=100, -o device=cuda.",
)
def record(
    store_arg: str | None,
    source_name: str,
    races: int,
    steps: int,
    store_path: str | None,
    seed: int | None,
    quality: int,
    codec: str,
    lossless: bool,
    shard_size: int | None,
    service_url: str | None,
    token: str | None,
    options: tuple[str, ...],
) -> None:
    """Record races from a frame source into a replay store.

    Each race is played by the source's built-in policy (CarRacing: a
    pure-pursuit driver; ViZDoom: aim and shoot; screen: whoever is playing)
    and written frame by frame through the store's background writer.
    """
    store_path = _store_path(store_arg, store_path)
    kwargs = parse_options(options)
    if seed is None:
        seed = random.SystemRandom().randrange(2**31 - races)
    console = Console(stderr=True)
    out = Console(width=None if sys.stdout.isatty() else 160)
    try:
        try:
            source = make_source(source_name, **kwargs)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ReplayError):
                raise
            raise click.BadParameter(str(exc), param_hint="--option") from exc
        with source:
            if service_url is not None:
                store_path = service_url
            target = _target(store_path, service_url, token)
            chosen = "zstd" if lossless else source.codec if codec == "auto" else codec
            console.print(
                f"recording {races} race(s) of {source!r} into {store_path} "
                f"({'lossless zstd' if chosen == 'zstd' else f'JPEG q{quality}'}, seeds "
                f"{seed}..{seed + races - 1})"
            )
            results = []
            for i in range(races):
                results.append(
                    _record_race(
                        target, source, steps, seed + i, quality, chosen, shard_size, console
                    )
                )
            if isinstance(target, replay.Client):
                target.close()
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from exc
    out.print(_summary(results, store_path))


def _target(store_path: str, service_url: str | None, token: str | None) -> Target:
    """Where races go: the store, or the service at `service_url` (``--to``)."""
    if service_url is None:
        return replay.open_store(store_path, mode="a")
    return replay.Client(service_url, token=token)


def _store_path(argument: str | None, option: str | None) -> str:
    """The store of ``replay record STORE`` or its alias ``--store STORE``."""
    if argument is not None and option is not None and argument != option:
        raise click.UsageError(f"two stores given: {argument} and --store {option}; give one")
    return argument or option or "./replay-data"


def race_map(source: Source, seed: int) -> str:
    """A race's map: the source's, with the seed where the seed draws the track."""
    return f"{source.map}:{seed}" if source.map == "procedural" else source.map


def _race_progress(console: Console) -> Progress:
    """The progress bar of one race: its id, steps played, reward so far, time."""
    return Progress(
        TextColumn("[bold]race {task.fields[race]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("reward {task.fields[reward]:.1f}"),
        TimeElapsedColumn(),
        console=console,
    )


def _record_race(
    target: Target,
    source: Source,
    max_steps: int,
    seed: int,
    quality: int,
    codec: str,
    shard_size: int | None,
    console: Console,
) -> RaceResult:
    """Play one race into a new writer, with a progress bar; returns its summary row."""
    extra: dict[str, Any] = {} if shard_size is None else {"shard_size": shard_size}
    extra["codec"] = codec
    started = time.perf_counter()
    played, total_reward = 0, 0.0
    progress = _race_progress(console)
    with (
        target.new_race(
            env=source.env,
            map=race_map(source, seed),
            policy=source.policy,
            fps=source.fps,
            height=source.height,
            width=source.width,
            action_shape=source.action_shape,
            quality=quality,
            meta={"seed": seed},
            **extra,
        ) as writer,
        progress,
    ):
        task = progress.add_task("race", total=max_steps, race=writer.race_id, reward=0.0)
        for step in source.race(max_steps, seed):
            writer.append(
                step.frame,
                action=step.action,
                reward=step.reward,
                terminated=step.terminated,
                truncated=step.truncated,
            )
            played += 1
            total_reward += step.reward
            progress.update(task, advance=1, reward=total_reward)
        progress.update(task, total=played)  # a race that ended early shows as done
    stats = writer.stats()
    if isinstance(target, replay.Client):
        info, nbytes = target.race(writer.race_id), stats.bytes_written
    else:
        info, nbytes = target.race(writer.race_id).info, target.race_nbytes(writer.race_id)
    return RaceResult(
        race_id=writer.race_id,
        frames=info.length,
        dropped=stats.dropped,
        nbytes=nbytes,
        raw_nbytes=info.raw_nbytes,
        seconds=time.perf_counter() - started,
        total_reward=total_reward,
        status=info.status,
    )


def _summary(results: Sequence[RaceResult], store_path: str) -> Table:
    """The end-of-run table: one row per race and a total."""
    table = Table(title=f"recorded into {store_path}")
    for column in ("race", "status", "frames", "dropped", "on disk", "per frame", "vs raw"):
        table.add_column(column, justify="left" if column in ("race", "status") else "right")
    table.add_column("seconds", justify="right")
    table.add_column("reward", justify="right")
    for r in results:
        table.add_row(
            *_cells(
                r.race_id,
                r.status,
                r.frames,
                r.dropped,
                r.nbytes,
                r.raw_nbytes,
                r.seconds,
                r.total_reward,
            )
        )
    table.add_section()
    table.add_row(
        *_cells(
            f"{len(results)} race{'' if len(results) == 1 else 's'}",
            "",
            sum(r.frames for r in results),
            sum(r.dropped for r in results),
            sum(r.nbytes for r in results),
            sum(r.raw_nbytes for r in results),
            sum(r.seconds for r in results),
            sum(r.total_reward for r in results),
        )
    )
    return table


def _cells(
    name: str,
    status: str,
    frames: int,
    dropped: int,
    nbytes: int,
    raw_nbytes: int,
    seconds: float,
    reward: float,
) -> list[str]:
    per_frame = human_bytes(round(nbytes / frames)) if frames else "-"
    ratio = f"{raw_nbytes / nbytes:.1f}x" if nbytes and frames else "-"
    return [
        name,
        status,
        str(frames),
        str(dropped),
        human_bytes(nbytes),
        per_frame,
        ratio,
        f"{seconds:.1f}",
        f"{reward:.1f}",
    ]
