"""The ``replay`` command line: inspect stores, and (through plugins) record, serve, bench.

``record`` (in `capture`), ``serve`` and ``soak`` (in `service`) are plugins found
through the ``replay.commands`` entry point group (`replay.plugins`), so `replay`
itself never imports those packages.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import click
from rich.console import Console
from rich.table import Table

from replay import format as fmt
from replay.bench.cli import bench
from replay.doctor import doctor
from replay.errors import CorruptDataError, ReplayError
from replay.plugins import PluginGroup
from replay.race import Race, RaceInfo
from replay.store import Store, open_store

if TYPE_CHECKING:
    from replay.verify import RaceCheck

P = ParamSpec("P")


@click.group(
    cls=PluginGroup,
    entry_point_group="replay.commands",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="replay")
def main() -> None:
    """Replay memory for agents that learn to drive from full-resolution pixels.

    A store is a directory (a Zarr v3 group) of races: JPEG frames and per-step
    data (action, reward, ...). Typical use:

    \b
      replay record ./replay-data --source carracing --races 3 --steps 300
      replay inspect ./replay-data
      replay serve ./replay-data
    """


main.add_command(bench)
main.add_command(doctor)


def _open(path: str) -> Store:
    try:
        return open_store(path, mode="r")
    except ReplayError as e:
        raise click.ClickException(str(e)) from e


def human_bytes(nbytes: float) -> str:
    """Bytes in decimal units: ``5_691_972`` -> ``"5.7 MB"`` (also for `replay record`)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(nbytes) < 1000 or unit == "TB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def race_summary(store: Store, info: RaceInfo) -> dict[str, Any]:
    """One race's row of `replay inspect` (also its --json form)."""
    nbytes = store.race_nbytes(info.race_id)
    raw = info.raw_nbytes
    return {
        "race_id": info.race_id,
        "env": info.env,
        "map": info.map,
        "policy": info.policy,
        "status": info.status,
        "frames": info.length,
        "duration_s": round(info.duration_s, 3),
        "bytes": nbytes,
        "bytes_per_frame": nbytes / info.length if info.length else None,
        "compression": raw / nbytes if info.length and nbytes else None,
        "codec": info.codec,
        "started_at": info.started_at,
        "ended_at": info.ended_at,
    }


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.argument("race_id", metavar="[RACE]", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts instead of tables.")
@click.option("--frame", type=int, help="With RACE: export this step's frame (needs --out).")
@click.option(
    "--out", type=click.Path(dir_okay=False), help="File to write --frame to (.png/.jpg)."
)
def inspect(
    store_path: str, race_id: str | None, as_json: bool, frame: int | None, out: str | None
) -> None:
    """Show the races of STORE, or one RACE in detail.

    Without RACE: a table of races (id, env/map, status, frames, duration, size,
    bytes/frame, compression vs raw RGB) and store totals. With RACE (its full
    id or any unique start of it, as git takes hashes): its attributes, shards
    (bytes on disk, index state) and per-step array summaries; --frame N --out
    f.png exports one frame.
    """
    store = _open(store_path)
    console = Console(stderr=as_json, width=None if sys.stdout.isatty() else 160)
    try:
        if race_id is not None:
            race_id = store.resolve(race_id)
        if race_id is None:
            if frame is not None or out is not None:
                raise click.UsageError("--frame/--out need a RACE")
            _inspect_store(store, as_json, console)
        elif frame is not None or out is not None:
            _export_frame(store, race_id, frame, out)
        else:
            _inspect_race(store, race_id, as_json, console)
    except (ReplayError, IndexError, OSError) as e:
        raise click.ClickException(str(e)) from e


def _inspect_store(store: Store, as_json: bool, console: Console) -> None:
    with console.status("reading races..."):
        infos, damaged = store.scan()
        rows = [race_summary(store, info) for info in infos]
    frames = sum(r["frames"] for r in rows)
    nbytes = sum(r["bytes"] for r in rows)
    raw = sum(info.raw_nbytes for info in infos)
    totals = {
        "races": len(rows),
        "frames": frames,
        "bytes": nbytes,
        "compression": raw / nbytes if nbytes and frames else None,
    }
    if as_json:
        doc = {"store": str(store.root), "races": rows, "totals": totals, "damaged": damaged}
        click.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"replay store {store.root}")
    for col in ("race", "env / map", "status", "frames", "duration", "size", "per frame", "vs raw"):
        table.add_column(
            col, justify="right" if col not in ("race", "env / map", "status") else "left"
        )
    for r in rows:
        table.add_row(
            r["race_id"],
            f"{r['env']} / {r['map']}" if r["map"] else r["env"],
            r["status"],
            str(r["frames"]),
            f"{r['duration_s']:.1f} s",
            human_bytes(r["bytes"]),
            human_bytes(r["bytes_per_frame"]) if r["bytes_per_frame"] else "-",
            f"{r['compression']:.0f}x" if r["compression"] else "-",
        )
    console.print(table)
    ratio = f", {totals['compression']:.0f}x smaller than raw" if totals["compression"] else ""
    console.print(f"{len(rows)} races, {frames} frames, {human_bytes(nbytes)}{ratio}")
    for race_id, problem in damaged.items():
        console.print(f"left out {race_id}: {problem} (replay verify)")


def _inspect_race(store: Store, race_id: str, as_json: bool, console: Console) -> None:
    race = store.race(race_id)
    info = race.info
    shards = _shards_on_disk(store, race)
    arrays: dict[str, dict[str, Any]] = {}
    for name in info.step_arrays:
        values = race.steps(name)
        numeric = values.astype("float64") if values.size else values
        arrays[name] = {
            "dtype": str(values.dtype),
            "shape": list(values.shape),
            "min": float(numeric.min()) if values.size else None,
            "max": float(numeric.max()) if values.size else None,
            "mean": float(numeric.mean()) if values.size else None,
        }
    detail = {**race_summary(store, info), "attrs": race.attrs, "shards": shards, "steps": arrays}
    if as_json:
        click.echo(json.dumps(detail, indent=2, default=str))
        return
    table = Table(title=f"race {race_id}", show_header=False)
    for key in (
        "env",
        "map",
        "policy",
        "status",
        "frames",
        "duration_s",
        "codec",
        "started_at",
        "ended_at",
    ):
        table.add_row(key, str(detail[key]))
    size = human_bytes(detail["bytes"])
    table.add_row("size", f"{size} ({detail['compression'] or 0:.0f}x vs raw)")
    table.add_row("shards", f"{info.n_shards} x {info.shard_size} frames")
    for s in shards:
        table.add_row(
            f"  shard {s['shard']}",
            f"{s['frames']} frames, {human_bytes(s['bytes'])} on disk, index {s['index']}",
        )
    for key in ("repairs", "lost_steps"):
        if race.attrs.get(key):
            table.add_row(key.replace("_", " "), json.dumps(race.attrs[key]))
    table.add_row("meta", json.dumps(info.meta))
    console.print(table)
    steps = Table(title="per-step arrays")
    for col in ("array", "dtype", "shape", "min", "mean", "max"):
        steps.add_column(col)
    for name, a in arrays.items():
        steps.add_row(
            name,
            a["dtype"],
            str(a["shape"]),
            _num(a["min"]),
            _num(a["mean"]),
            _num(a["max"]),
        )
    console.print(steps)


def clean_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Turn the store's errors (and OS errors: a read-only mount, a failing disk) into a
    one-line CLI error instead of a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except (ReplayError, OSError) as e:
            raise click.ClickException(str(e)) from e

    return run


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.option(
    "--repair", is_flag=True, help="Rebuild damaged races from their intact frames (see docs)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@clean_errors
def verify(store_path: str, repair: bool, as_json: bool) -> None:
    """Check every shard index, frame, step chunk and array document, and every race's
    metadata; name orphan data (a race folder without zarr.json).

    Exits 1 if anything is damaged and was not repaired (so 0 after a --repair that
    repaired everything it found). With --repair, a damaged race keeps every intact
    frame; the damaged steps are removed, their bytes reclaimed, and listed in the
    race's "lost_steps" attribute. Races of live writers are never touched.
    """
    from rich.progress import Progress

    store = _open_for_writing(store_path, read_only=not repair)
    total = sum(r.length for r in store.races())
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("verifying frames", total=total)
        report = store.verify(progress=lambda n: bar.advance(task, n))
    repairs = {c.race_id: store.repair(c) for c in report.races if repair and not c.ok}
    if as_json:
        rows = [
            {
                **vars(c),
                "ok": c.ok,
                "repair": vars(repairs[c.race_id]) if c.race_id in repairs else None,
            }
            for c in report.races
        ]
        click.echo(json.dumps({"ok": report.ok, "races": rows}, indent=2))
    else:
        for c in report.races:
            state = "ok" if c.ok else _damage(c)
            click.echo(f"{c.race_id}  {c.frames_checked:>7} frames  {state}")
            for message in c.errors:
                click.echo(f"    {message}")
            done = repairs.get(c.race_id)
            if done is not None and done.refused:
                click.echo(f"    not repaired: {done.refused}")
            elif done is not None:
                click.echo(f"    repaired: {done.kept} steps intact, {done.lost} lost")
        click.echo(
            f"{len(report.races)} races, {report.frames_checked} frames checked: "
            + ("all good" if report.ok else "damage found")
        )
    unrepaired = [
        c
        for c in report.races
        if not c.ok and (c.race_id not in repairs or repairs[c.race_id].refused)
    ]
    if unrepaired:
        sys.exit(1)


def _as_dict(value: object) -> dict[str, Any] | None:
    return None if value is None else dict(vars(value))


def _damage(check: RaceCheck) -> str:
    if check.problem == "orphan":
        return "ORPHAN DATA (no zarr.json)"
    if check.problem == "metadata":
        return "DAMAGED metadata"
    parts = [f"shards {check.damaged_shards}"] if check.damaged_shards else []
    parts += [f"{name} {chunks}" for name, chunks in check.damaged_arrays.items()]
    return "DAMAGED " + ", ".join(parts)


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.option("--dry-run", is_flag=True, help="Only show what would be done.")
@clean_errors
def recover(store_path: str, dry_run: bool) -> None:
    """Mark races left 'recording' by dead writers as aborted; delete their temp files;
    add the group documents older stores lack.

    A writer on this host is dead when its process is gone (a paused one is alive);
    on another host, when its lease expired. Races of live writers are left alone;
    races whose metadata is damaged are named (`replay verify` tells more).
    """
    store = _open_for_writing(store_path, dry_run)
    report = store.recover(dry_run=dry_run)
    verb = "would mark" if dry_run else "marked"
    for race_id in report.aborted:
        click.echo(f"{verb} {race_id} aborted (writer dead)")
    for race_id in report.live:
        click.echo(f"left {race_id} alone (writer alive)")
    for race_id, problem in report.damaged.items():
        click.echo(f"skipped {race_id}: {problem}")
    for race_id in report.orphans:
        click.echo(f"orphan data in races/{race_id} (no zarr.json): `replay prune` removes it")
    click.echo(
        f"{len(report.temp_files_removed)} temp files {'to remove' if dry_run else 'removed'}"
    )


@main.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.option("--max-bytes", help="Byte budget, e.g. 500GB, 1.5TiB (default: saved in the store).")
@click.option("--max-age", help="Maximum age of a finished race, e.g. 12h, 7d (default: saved).")
@click.option("--save", is_flag=True, help="Save --max-bytes/--max-age in the store for writers.")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@clean_errors
def prune(
    store_path: str, max_bytes: str | None, max_age: str | None, save: bool, dry_run: bool
) -> None:
    """Remove orphan data, then the oldest finished races until STORE fits its capacity.

    Races being recorded by live writers are never removed. Samplers drop removed
    races on their next refresh.
    """
    from replay.capacity import Capacity, evict, parse_age, parse_size, plan_eviction, read_capacity

    store = _open_for_writing(store_path, dry_run and not save)
    saved = read_capacity(store.storage)
    try:
        capacity = Capacity(
            parse_size(max_bytes) if max_bytes else saved.max_bytes,
            parse_age(max_age) if max_age else saved.max_age,
        )
    except ValueError as e:
        raise click.BadParameter(str(e)) from e
    if save:
        store.set_capacity(capacity.max_bytes, capacity.max_age)
    plan = plan_eviction(store.storage, capacity)
    if capacity.unlimited and not plan.evictions:
        raise click.ClickException("no capacity given or saved: pass --max-bytes and/or --max-age")
    done = plan.evictions if dry_run else evict(store.storage, plan)
    verb = "would remove" if dry_run else "removed"
    for gone in done:
        click.echo(f"{verb} {gone.race_id}  {human_bytes(gone.nbytes)}  ({gone.reason})")
    after = plan.bytes_before - sum(e.nbytes for e in done)
    click.echo(f"store: {human_bytes(plan.bytes_before)} -> {human_bytes(after)}")


def _open_for_writing(path: str, read_only: bool) -> Store:
    """An existing store (never a new empty one), writable unless `read_only`."""
    try:
        store = open_store(path, mode="r")
        return store if read_only else open_store(path, mode="a")
    except ReplayError as e:
        raise click.ClickException(str(e)) from e


def _shards_on_disk(store: Store, race: Race) -> list[dict[str, Any]]:
    """Each frames shard as it is on disk: its file's size, committed frames, index state.

    Sizes are the files' (not the sum of the index's entries), so after
    ``verify --repair`` rebuilt a shard the bytes really on disk show, and shard files
    past the race's length are listed too (``"index": "past the race's length"``).
    """
    info = race.info
    on_disk: dict[int, int] = {}
    for key, size in store.storage.walk_sizes(f"{fmt.race_key(race.race_id)}/{fmt.FRAMES}/c"):
        shard = _shard_number(race.race_id, key)
        if shard is not None:
            on_disk[shard] = size
    out = []
    for shard in sorted(set(on_disk) | set(range(info.n_shards))):
        if shard >= info.n_shards:
            frames, state = 0, "past the race's length"
        else:
            frames = min(info.shard_size, info.length - shard * info.shard_size)
            try:
                race.shard_index(shard)
                state = "ok"
            except CorruptDataError as e:
                state = f"damaged ({e})"
        out.append(
            {"shard": shard, "frames": frames, "bytes": on_disk.get(shard, 0), "index": state}
        )
    return out


def _shard_number(race_id: str, key: str) -> int | None:
    """The shard a frames file key is (``.../frames/c/7/0/0/0`` -> 7), None for other files."""
    parts = key.rsplit(f"/{fmt.FRAMES}/c/", 1)
    if len(parts) != 2 or not parts[1].split("/", 1)[0].isdigit():
        return None
    shard = int(parts[1].split("/", 1)[0])
    return shard if fmt.frames_key(race_id, shard) == key else None


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _export_frame(store: Store, race_id: str, step: int | None, out: str | None) -> None:
    if step is None or out is None:
        raise click.UsageError("exporting a frame needs both --frame N and --out FILE")
    from PIL import Image

    from replay.frame_codec import JpegFrames

    race = store.race(race_id)
    target = Path(out)
    if target.suffix.lower() in (".jpg", ".jpeg") and isinstance(race.info.frame_codec, JpegFrames):
        target.write_bytes(race.frame_bytes(step))  # the stored JPEG, bit for bit
    else:
        Image.fromarray(race.frame(step)).save(target)
    click.echo(f"wrote step {step} of race {race_id} to {target}")
