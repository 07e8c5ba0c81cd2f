"""The ``replay`` command line: inspect stores, and (through plugins) record, serve, bench.

``record`` (in `capture`), ``serve`` and ``soak`` (in `service`) and ``bench``
(`replay.bench`) are plugins found through the ``replay.commands`` entry point group
(`replay.cli.plugins`), so the command line never imports those packages.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.table import Table

from replay.cli.common import human_bytes, open_for_reading, plural
from replay.cli.doctor import doctor
from replay.cli.export import export
from replay.cli.maintenance import prune, recover, verify
from replay.cli.plugins import PluginGroup
from replay.errors import CorruptDataError, ReplayError
from replay.format import spec as fmt
from replay.format.race import Race, RaceInfo
from replay.store import Store


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


main.add_command(doctor)
main.add_command(export)
for _command in (verify, recover, prune):  # replay.cli.maintenance
    main.add_command(_command)


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
    store = open_for_reading(store_path)
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
    console.print(
        f"{plural(len(rows), 'race')}, {plural(frames, 'frame')}, {human_bytes(nbytes)}{ratio}"
    )
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
        "started_at",
        "ended_at",
    ):
        table.add_row(key, str(detail[key]))
    table.add_row("codec", codec_text(info.codec))
    size = human_bytes(detail["bytes"])
    table.add_row("size", f"{size} ({detail['compression'] or 0:.0f}x vs raw)")
    table.add_row("shards", f"{info.n_shards} x {info.shard_size} frames")
    for s in shards:
        frames, on_disk = plural(s["frames"], "frame"), human_bytes(s["bytes"])
        table.add_row(f"  shard {s['shard']}", f"{frames}, {on_disk} on disk, index {s['index']}")
    for key in ("repairs", "lost_steps"):
        if race.attrs.get(key):
            table.add_row(key.replace("_", " "), json.dumps(race.attrs[key]))
    table.add_row("meta", json.dumps(info.meta))
    console.print(table)
    steps = Table(title="per-step arrays")
    for col in ("array", "dtype", "shape", "min", "mean", "max"):
        steps.add_column(col)
    for name, a in arrays.items():
        if name == "t_ns" and a["min"] is not None:
            figures = _times(race.steps(name))
        else:
            figures = (_num(a["min"]), _num(a["mean"]), _num(a["max"]))
        steps.add_row(name, a["dtype"], str(a["shape"]), *figures)
    console.print(steps)


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


def codec_text(codec: dict[str, Any]) -> str:
    """A race's codec attribute for people: ``jpeg (quality 90, subsampling 4:2:0)``."""
    settings = {k: v for k, v in codec.items() if k != "name"}
    if "subsampling" in settings and len(str(settings["subsampling"])) == 3:
        settings["subsampling"] = ":".join(str(settings["subsampling"]))
    text = ", ".join(f"{k} {v}" for k, v in settings.items())
    lossless = " lossless" if codec.get("name") == "zstd" else ""
    return f"{codec.get('name')}{lossless} ({text})" if text else f"{codec.get('name')}{lossless}"


def _times(t_ns: npt.NDArray[Any]) -> tuple[str, str, str]:
    """(first, mean step, last) of a race's step times: dates (UTC, ms) and a duration."""

    def date(ns: int) -> str:
        when = datetime.datetime.fromtimestamp(ns / 1e9, datetime.UTC)
        return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"

    steps = np.diff(t_ns.astype("int64"))
    mean = f"{steps.mean() / 1e6:.1f} ms/step" if steps.size else "-"
    return date(int(t_ns.min())), mean, date(int(t_ns.max()))


def _export_frame(store: Store, race_id: str, step: int | None, out: str | None) -> None:
    """Write one frame to `out` (its format by extension), whole or not at all."""
    if step is None or out is None:
        raise click.UsageError("exporting a frame needs both --frame N and --out FILE")
    target = Path(out)
    image_format = _image_format(target)
    from PIL import Image

    from replay.codec.frames import JpegFrames
    from replay.integrations.export import written_whole

    race = store.race(race_id)
    stored_jpeg = image_format == "JPEG" and isinstance(race.info.frame_codec, JpegFrames)
    data = race.frame_bytes(step) if stored_jpeg else None  # the stored JPEG, bit for bit
    image = None if stored_jpeg else Image.fromarray(race.frame(step))
    with written_whole(target) as partial, open(partial, "wb") as f:
        if data is not None:
            f.write(data)
        else:
            assert image is not None
            image.save(f, format=image_format)
    click.echo(f"wrote step {step} of race {race_id} to {target}")


def _image_format(target: Path) -> str:
    """The image format Pillow writes for `target`'s extension; a usage error (exit 2)
    for a name without one it writes, or a folder that does not exist."""
    from PIL import Image

    formats = {ext: f for ext, f in Image.registered_extensions().items() if f in Image.SAVE}
    image_format = formats.get(target.suffix.lower())
    if image_format is None:
        raise click.BadParameter(
            f"cannot write an image to {str(target)!r}: give a file ending in .png or .jpg "
            f"(or another extension Pillow writes: {', '.join(sorted(formats)[:8])}, ...)",
            param_hint="'--out'",
        )
    if not target.parent.is_dir():
        raise click.BadParameter(
            f"cannot write {str(target)!r}: no folder {target.parent}", param_hint="'--out'"
        )
    return image_format
