"""The ``replay`` commands that look after a store: ``verify`` (and ``--repair``),
``recover`` and ``prune`` (registered on the ``replay`` group in `replay.cli.main`)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from replay.cli.common import clean_errors, human_bytes, open_for_writing, plural

if TYPE_CHECKING:
    from replay.format.race import RaceInfo
    from replay.maintenance.capacity import EvictionPlan
    from replay.maintenance.verify import RaceCheck


@click.command()
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

    store = open_for_writing(store_path, read_only=not repair)
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
            f"{plural(len(report.races), 'race')}, {plural(report.frames_checked, 'frame')} "
            "checked: " + ("all good" if report.ok else "damage found")
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


@click.command()
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
    store = open_for_writing(store_path, dry_run)
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


@click.command()
@click.argument("store_path", metavar="STORE", type=click.Path())
@click.option("--max-bytes", help="Byte budget with a unit: 500GB, 2GiB (default: saved).")
@click.option("--max-age", help="Age limit with a unit: 12h, 14d (default: saved).")
@click.option("--save", is_flag=True, help="Save --max-bytes/--max-age in the store for writers.")
@click.option("--dry-run", is_flag=True, help="Only show the plan.")
@click.option("--yes", is_flag=True, help="Remove without asking (scripts).")
@clean_errors
def prune(
    store_path: str,
    max_bytes: str | None,
    max_age: str | None,
    save: bool,
    dry_run: bool,
    yes: bool,
) -> None:
    """Remove orphan data, then the oldest finished races until STORE fits its capacity.

    \b
      replay prune ./replay-data --max-bytes 500GB --max-age 14d --dry-run  # the plan only
      replay prune ./replay-data --max-bytes 500GB --max-age 14d            # the plan, then asks
      replay prune ./replay-data --max-bytes 500GB --max-age 14d --save --yes

    Sizes and ages need a unit (a bare number is refused). The plan (races, bytes, the
    oldest and newest race kept) is printed first; races are removed (and --save saves
    the capacity, which writers then enforce) only with --yes or after you confirm in a
    terminal. Races being recorded by live writers are never removed. Samplers drop
    removed races on their next refresh.
    """
    from replay.maintenance.capacity import Capacity, evict, plan_eviction, read_capacity

    store = open_for_writing(store_path, dry_run)
    saved = read_capacity(store.storage)
    try:
        capacity = Capacity(
            _parsed("--max-bytes", max_bytes, saved.max_bytes),
            _parsed("--max-age", max_age, saved.max_age),
        )
    except ValueError as e:  # zero or negative
        raise click.BadParameter(str(e)) from e
    plan = plan_eviction(store.storage, capacity)
    if capacity.unlimited and not plan.evictions:
        raise click.ClickException("no capacity given or saved: pass --max-bytes and/or --max-age")
    _show_plan(store.races(), plan)
    if dry_run:
        click.echo("dry run: nothing removed" + (", nothing saved" if save else ""))
        return
    if plan.evictions and not yes:
        if not sys.stdin.isatty():
            raise click.ClickException(
                "nothing removed: pass --yes to remove these races (a terminal is asked)"
            )
        click.confirm(f"remove {len(plan.evictions)} races?", abort=True)
    if save:
        store.set_capacity(capacity.max_bytes, capacity.max_age)
        click.echo("capacity saved: writers keep the store within it")
    done = evict(store.storage, plan)
    for gone in done:
        click.echo(f"removed {gone.race_id}  {human_bytes(gone.nbytes)}  ({gone.reason})")
    after = plan.bytes_before - sum(e.nbytes for e in done)
    click.echo(f"store: {human_bytes(plan.bytes_before)} -> {human_bytes(after)}")


def _parsed(option: str, text: str | None, saved: float | None) -> Any:
    """`text` parsed as a size (--max-bytes) or an age, or the saved value when absent."""
    from replay.maintenance.capacity import parse_age, parse_size

    if text is None:
        return saved
    try:
        return parse_size(text) if option == "--max-bytes" else parse_age(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=option) from e


def _show_plan(races: list[RaceInfo], plan: EvictionPlan) -> None:
    """What prune would remove and keep, with a warning when that is most of the store."""
    going = {e.race_id for e in plan.evictions}
    for e in plan.evictions:
        click.echo(f"would remove {e.race_id}  {human_bytes(e.nbytes)}  ({e.reason})")
    kept = [r for r in races if r.race_id not in going]  # oldest first (ids sort by time)
    removed = plan.bytes_before - plan.bytes_after
    click.echo(
        f"plan: remove {len(going)} races ({human_bytes(removed)}), keep {len(kept)} races "
        f"({human_bytes(plan.bytes_after)}) of {human_bytes(plan.bytes_before)}"
    )
    if kept:
        click.echo(f"  oldest kept: {kept[0].race_id} (started {kept[0].started_at})")
        click.echo(f"  newest kept: {kept[-1].race_id} (started {kept[-1].started_at})")
    if races and not kept:
        click.echo("WARNING: this plan removes EVERY race in the store")
    elif plan.bytes_before and removed > plan.bytes_before / 2:
        click.echo(f"WARNING: this plan removes {removed / plan.bytes_before:.0%} of the store")
