"""Races out of the store: as a video to watch or share, and as a Minari dataset.

Needs ``replay[export]`` (PyAV for video, Minari with its HDF5 backend for datasets).

    from replay.integrations.export import export_video, export_minari
    export_video(store.race(race_id), "race.mp4")            # H.264 at the race's fps
    export_minari(store, "replay/carracing-v0", path="./minari")
    dataset = minari.load_dataset("replay/carracing-v0")     # with MINARI_DATASETS_PATH=./minari

On the command line: ``replay export STORE RACE --video race.mp4`` and
``replay export STORE [RACE]... --minari replay/carracing-v0 --minari-root ./minari``.

Minari's episodes hold one more observation than actions (the observation after
the last action); a race stores the frame each action was chosen on, not the one
after the last, so the exported episode repeats the last frame there. Minari
JPEG-encodes image observations itself; an episode is held in memory as raw
frames while it is written (4.3 MB a 1600x900 frame), one race at a time.

A race repaired by ``replay verify --repair`` lacks the frames it lost (its
``lost_steps``): a video holds the frame before each lost one (the first good frame
for lost ones at the start) and says how many it held; a Minari export splits the
race there, one episode per run of kept steps, each cut marked truncated at its last
step (the episode did not end: its next steps are gone).

Nothing half-made is left: the video is written under a temporary name and renamed
when complete, a Minari dataset that fails half way is removed, and a dataset id is
checked before anything is created (never a path outside the datasets folder).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from replay.errors import ReplayError

if TYPE_CHECKING:
    from replay.format.race import Race
    from replay.store import Store

#: Told the frames exported so far and the frames to export in all (a progress bar).
Progress = Callable[[int, int], None]

#: Where Minari looks for (and writes) datasets.
MINARI_ROOT_ENV = "MINARI_DATASETS_PATH"
#: Minari's ``(namespace/)name-vN``, each part letters, digits, ``_`` and ``-`` (not first):
#: no empty, ``.`` or ``..`` segment can reach outside the datasets folder.
DATASET_ID = re.compile(r"(?:[A-Za-z0-9_][-\w]*/)*[A-Za-z0-9_][-\w]*-v\d+", re.ASCII)
#: Video files by extension, and the container PyAV writes for each (H.264 in all).
VIDEO_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}


class ExportError(ReplayError):
    """An export that cannot be made (a missing library, races that do not fit together)."""


@dataclass(frozen=True)
class VideoExport:
    """What `export_video` wrote: the file, its frame count, size and rate, and how many
    of those frames were lost to damage (`held`: the previous frame shown again)."""

    path: Path
    frames: int
    width: int
    height: int
    fps: float
    held: int = 0


@dataclass(frozen=True)
class MinariExport:
    """What `export_minari` wrote: races, the episodes they made (more than races where
    lost steps split one) and the steps left out as lost to damage."""

    dataset_id: str
    races: int
    episodes: int
    lost_steps: int


def check_video_path(path: str | os.PathLike[str]) -> Path:
    """`path` as a video file to write; ExportError unless its extension is one of
    `VIDEO_FORMATS` and its folder exists."""
    target = Path(path)
    if target.suffix.lower() not in VIDEO_FORMATS:
        raise ExportError(
            f"cannot write a video to {str(path)!r}: give a file ending in "
            f"{', '.join(VIDEO_FORMATS)}"
        )
    if not target.parent.is_dir():
        raise ExportError(f"cannot write a video to {str(path)!r}: no folder {target.parent}")
    return target


def check_dataset_id(dataset_id: str) -> str:
    """`dataset_id` if Minari takes it (``namespace/name-v0``); ExportError naming it."""
    if not DATASET_ID.fullmatch(dataset_id):
        raise ExportError(
            f"malformed Minari dataset id {dataset_id!r}: give (namespace/)name-vVERSION, "
            "e.g. replay/carracing-v0 (letters, digits, '_' and '-')"
        )
    return dataset_id


def race_frames(
    race: Race, start: int = 0, stop: int | None = None
) -> Iterator[npt.NDArray[Any] | None]:
    """The race's decoded frames, steps [start, stop), each shard's index read once;
    None for a step lost to damage (removed by a repair)."""
    end = race.length if stop is None else min(stop, race.length)
    shard_size = race.info.shard_size
    index: Any = None
    for step in range(start, end):
        if race.info.is_lost(step):
            yield None
            continue
        if index is None or step % shard_size == 0:
            index = race.shard_index(step // shard_size)
        yield race.frame(step, index)


def held_frames(race: Race, start: int, stop: int | None) -> Iterator[tuple[Any, bool]]:
    """(frame, held) per step: a lost step shows the frame before it (held=True), lost
    steps at the start the first good one; ExportError if every step is lost."""
    before: Any = None
    leading = 0
    for frame in race_frames(race, start, stop):
        if frame is None and before is None:
            leading += 1
            continue
        if frame is not None:
            for _ in range(leading):
                yield frame, True
            leading, before = 0, frame
        yield before, frame is None
    if leading:
        raise ExportError(f"race {race.race_id}: every frame in that range was lost to damage")


def export_video(
    race: Race,
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    crf: int = 23,
    start: int = 0,
    stop: int | None = None,
    progress: Progress | None = None,
) -> VideoExport:
    """Write the race's frames as an H.264 MP4 (yuv420p) at its fps (or `fps`); frames
    lost to damage hold the previous one (counted in `VideoExport.held`).

    `crf` is x264's quality (0 lossless .. 51 worst; 23 default). H.264 needs even
    sizes: an odd last row or column is left out. The file appears only when whole.
    `progress` is told after each frame (frames done, frames in all).
    """
    try:
        import av
    except ImportError as e:
        raise ExportError("video export needs PyAV: pip install 'replay[export]'") from e
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    rate = Fraction(race.info.fps if fps is None else fps).limit_denominator(1001)
    target = check_video_path(path)
    h, w = race.info.height // 2 * 2, race.info.width // 2 * 2
    if race.length == 0 or (stop is not None and stop <= start):
        raise ExportError(f"race {race.race_id} has no committed frames in that range to export")
    count = held = 0
    total = (race.length if stop is None else min(stop, race.length)) - start
    container_format = VIDEO_FORMATS[target.suffix.lower()]
    with (
        written_whole(target) as partial,
        av.open(partial, mode="w", format=container_format) as container,
    ):
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame, repeated in held_frames(race, start, stop):
            pixels = np.ascontiguousarray(frame[:h, :w])
            image = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            container.mux(stream.encode(image))
            count, held = count + 1, held + repeated
            if progress is not None:
                progress(count, total)
        container.mux(stream.encode(None))
    return VideoExport(target, count, w, h, float(rate), held)


@contextlib.contextmanager
def written_whole(target: Path) -> Iterator[str]:
    """A temporary file beside `target` to write; renamed to `target` when the block
    succeeds, removed when it fails (made as `open` would: the umask decides its mode)."""
    partial = target.with_name(f".{target.name}.{secrets.token_hex(8)}.partial")
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield str(partial)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)


@contextlib.contextmanager
def minari_root(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Point Minari at `path` for the block (it reads ``MINARI_DATASETS_PATH`` on each call)."""
    if path is None:
        yield
        return
    saved = os.environ.get(MINARI_ROOT_ENV)
    os.environ[MINARI_ROOT_ENV] = str(Path(path).resolve())
    try:
        yield
    finally:
        if saved is None:
            del os.environ[MINARI_ROOT_ENV]
        else:
            os.environ[MINARI_ROOT_ENV] = saved


def export_minari(
    store: Store,
    dataset_id: str,
    race_ids: Sequence[str] | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    author: str | None = None,
    description: str | None = None,
    progress: Progress | None = None,
) -> MinariExport:
    """Write races (default: every complete race) as the Minari dataset `dataset_id`.

    `path` is the Minari datasets folder (default: Minari's own, ``MINARI_DATASETS_PATH``
    or ``~/.minari/datasets``). Each race is an episode (split where a repair removed
    steps); the races must share their frame size and action shape. ExportError for a
    malformed id or one that exists, before anything is written. `progress` is told
    the steps written after each race (steps done, steps in all).
    """
    check_dataset_id(dataset_id)
    try:
        import gymnasium as gym
        import minari
        from minari.data_collector import EpisodeBuffer
        from minari.storage import get_dataset_path
    except ImportError as e:
        raise ExportError(
            "Minari export needs minari with HDF5: pip install 'replay[export]'"
        ) from e
    races = _races_to_export(store, race_ids)
    first = races[0].info
    envs = sorted({r.info.env for r in races})
    text = description or (
        f"{len(races)} races of {', '.join(envs)} exported from the replay store {store.root}"
    )
    settings = {
        "action_space": gym.spaces.Box(-np.inf, np.inf, first.action_shape, np.float32),
        "observation_space": gym.spaces.Box(0, 255, (first.height, first.width, 3), np.uint8),
        "algorithm_name": first.policy or None,
        "author": author,
        "description": text,
        "data_format": "hdf5",
    }
    with minari_root(path):
        target = Path(get_dataset_path(dataset_id))
        if target.exists():
            raise ExportError(f"a Minari dataset {dataset_id!r} already exists at {target}")
        try:
            episodes = _write_episodes(races, dataset_id, settings, minari, EpisodeBuffer, progress)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)  # no half-written dataset
            raise
    lost = sum(sum(min(b, r.length) - a for a, b in r.info.lost_steps) for r in races)
    return MinariExport(dataset_id, len(races), episodes, lost)


def _write_episodes(
    races: list[Race],
    dataset_id: str,
    settings: dict[str, Any],
    minari: Any,
    buffer: Any,
    progress: Progress | None,
) -> int:
    """Create the dataset from the first episode, add the others; returns how many."""
    dataset = None
    count = done = 0
    total = sum(r.length for r in races)
    for race in races:
        done += race.length
        if progress is not None:
            progress(done - race.length, total)
        for episode in _episodes(race, buffer):
            count += 1
            if dataset is not None:
                dataset.update_dataset_from_buffer([episode])
                continue
            with warnings.catch_warnings():
                # advice to fill optional metadata (permalink, email, eval env, ...)
                warnings.filterwarnings("ignore", category=UserWarning, module="minari.utils")
                dataset = minari.create_dataset_from_buffers(dataset_id, [episode], **settings)
    if progress is not None:
        progress(total, total)
    return count


def _races_to_export(store: Store, race_ids: Sequence[str] | None) -> list[Race]:
    """The races asked for (default: every complete one) that have committed frames;
    ExportError if there are none or they differ in frame size or action shape."""
    ids = (
        list(race_ids) if race_ids else [i.race_id for i in store.races() if i.status == "complete"]
    )
    races = [store.race(r) for r in ids]
    races = [r for r in races if r.length > 0]
    if not races:
        raise ExportError(f"no races with committed frames to export from {store.root}")
    first = races[0].info
    for race in races[1:]:
        info = race.info
        if (info.height, info.width, info.action_shape) != (
            first.height,
            first.width,
            first.action_shape,
        ):
            raise ExportError(
                f"race {info.race_id} ({info.height}x{info.width}, action {info.action_shape}) "
                f"differs from race {first.race_id} ({first.height}x{first.width}, action "
                f"{first.action_shape}); export races of one layout"
            )
    return races


def kept_runs(race: Race) -> list[tuple[int, int]]:
    """The [start, stop) runs of the race's steps that no repair removed."""
    runs, start = [], 0
    for a, b in sorted(race.info.lost_steps):
        if a > start:
            runs.append((start, min(a, race.length)))
        start = max(start, b)
    if start < race.length:
        runs.append((start, race.length))
    return [(a, b) for a, b in runs if b > a]


def _episodes(race: Race, buffer_type: Any) -> Iterator[Any]:
    """The race as Minari episode buffers, one per run of kept steps (the run's last
    frame doubles as its final observation; a run cut by lost steps ends truncated)."""
    columns = {name: race.steps(name) for name in ("action", "reward", "terminated", "truncated")}
    for a, b in kept_runs(race):
        frames = np.stack([f for f in race_frames(race, a, b) if f is not None])
        truncations = columns["truncated"][a:b].copy()
        truncations[-1] |= b < race.length  # its next step was lost: cut, not ended
        yield buffer_type(
            observations=np.concatenate([frames, frames[-1:]]),
            actions=columns["action"][a:b],
            rewards=columns["reward"][a:b].astype(np.float64),
            terminations=columns["terminated"][a:b],
            truncations=truncations,
            infos={},
        )
