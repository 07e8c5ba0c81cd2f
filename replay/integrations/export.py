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
"""

from __future__ import annotations

import contextlib
import os
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


class ExportError(ReplayError):
    """An export that cannot be made (a missing library, races that do not fit together)."""


@dataclass(frozen=True)
class VideoExport:
    """What `export_video` wrote: the file, its frame count, size and rate."""

    path: Path
    frames: int
    width: int
    height: int
    fps: float


def race_frames(race: Race, start: int = 0, stop: int | None = None) -> Iterator[npt.NDArray[Any]]:
    """The race's decoded frames, steps [start, stop), each shard's index read once."""
    end = race.length if stop is None else min(stop, race.length)
    shard_size = race.info.shard_size
    index: Any = None
    for step in range(start, end):
        if index is None or step % shard_size == 0:
            index = race.shard_index(step // shard_size)
        yield race.frame(step, index)


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
    """Write the race's frames as an H.264 MP4 (yuv420p) at its fps (or `fps`).

    `crf` is x264's quality (0 lossless .. 51 worst; 23 default). H.264 needs even
    sizes: an odd last row or column is left out. `progress` is told after each frame.
    """
    try:
        import av
    except ImportError as e:
        raise ExportError("video export needs PyAV: pip install 'replay[export]'") from e
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf}")
    rate = Fraction(fps or race.info.fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    h, w = race.info.height // 2 * 2, race.info.width // 2 * 2
    if race.length == 0 or (stop is not None and stop <= start):
        raise ExportError(f"race {race.race_id} has no committed frames in that range to export")
    target = Path(path)
    count, total = 0, (race.length if stop is None else min(stop, race.length)) - start
    with av.open(str(target), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in race_frames(race, start, stop):
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
            container.mux(stream.encode(image))
            count += 1
            if progress is not None:
                progress(count, total)
        container.mux(stream.encode(None))
    return VideoExport(target, count, w, h, float(rate))


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
) -> int:
    """Write races (default: every complete race) as the Minari dataset `dataset_id`.

    `path` is the Minari datasets folder (default: Minari's own, ``MINARI_DATASETS_PATH``
    or ``~/.minari/datasets``). Each race is an episode; the races must share their
    frame size and action shape. Returns the number of episodes written. `progress`
    is told after each race.
    """
    try:
        import gymnasium as gym
        import minari
        from minari.data_collector import EpisodeBuffer
    except ImportError as e:
        raise ExportError(
            "Minari export needs minari with HDF5: pip install 'replay[export]'"
        ) from e
    races = _races_to_export(store, race_ids)
    first = races[0].info
    obs_space = gym.spaces.Box(0, 255, (first.height, first.width, 3), np.uint8)
    act_space = gym.spaces.Box(-np.inf, np.inf, first.action_shape, np.float32)
    envs = sorted({r.info.env for r in races})
    text = description or (
        f"{len(races)} races of {', '.join(envs)} exported from the replay store {store.root}"
    )
    total, done = sum(r.length for r in races), 0
    with minari_root(path):
        dataset = None
        for race in races:
            episode = _episode(race, EpisodeBuffer)
            if dataset is None:
                with warnings.catch_warnings():
                    # advice to fill optional metadata (permalink, email, eval env, ...)
                    warnings.filterwarnings("ignore", category=UserWarning, module="minari.utils")
                    dataset = minari.create_dataset_from_buffers(
                        dataset_id,
                        [episode],
                        action_space=act_space,
                        observation_space=obs_space,
                        algorithm_name=first.policy or None,
                        author=author,
                        description=text,
                        data_format="hdf5",
                    )
            else:
                dataset.update_dataset_from_buffer([episode])
            done += race.length
            if progress is not None:
                progress(done, total)
    return len(races)


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


def _episode(race: Race, buffer_type: Any) -> Any:
    """One race as a Minari episode buffer (the last frame doubles as the final observation)."""
    frames = np.stack(list(race_frames(race)))
    observations = np.concatenate([frames, frames[-1:]])
    return buffer_type(
        observations=observations,
        actions=race.steps("action"),
        rewards=race.steps("reward").astype(np.float64),
        terminations=race.steps("terminated"),
        truncations=race.steps("truncated"),
        infos={},
    )
