"""Gymnasium wrappers that record every episode as a race (needs ``replay[capture]``).

Like Gymnasium's ``RecordVideo`` or Minari's ``DataCollector``, but into a store:
``reset`` starts a race, ``terminated``/``truncated`` completes it, each step's
action and reward go with its frame, the env's id is the race's ``env``, and
closing the env closes the writer::

    env = RecordRaces(gym.make("CarRacing-v3", render_mode="rgb_array"), store)
    obs, info = env.reset(seed=1)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    env.close()                                 # the race is committed and complete

`frames` picks what is stored: ``"render"`` (``env.render()``, so make the env with
``render_mode="rgb_array"``: full resolution for CarRacing), ``"observation"`` (an
image observation) or the key of a dict observation (``"pixels"``). Frames are
(H, W, 3) uint8; the first frame of a race fixes its size.

Step t of a race holds the frame the action was chosen on, the action, and the
reward, terminated and truncated flags that the env returned for it (the layout
of `replay.Batch`); the observation after the last step has no action and is not
stored. An episode cut short by a new ``reset`` or by ``close`` is committed as it is.

For a vector env, `RecordVectorRaces` records one race per sub-env episode
(``meta["sub_env"]`` says which); both of Gymnasium's autoreset modes,
``NEXT_STEP`` (the default) and ``SAME_STEP``, are followed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from replay.errors import FrameError

if TYPE_CHECKING:
    from replay.store import Store
    from replay.write.writer import Writer

#: ``env.metadata`` key of the env's frame rate (Gymnasium's convention).
FPS_KEY = "render_fps"
DEFAULT_FPS = 30.0


class _Recorder:
    """One sub-env's race in progress: the open writer and the frame awaiting its action."""

    def __init__(self, store: Store, options: dict[str, Any]) -> None:
        self.store = store
        self.options = options
        self.writer: Writer | None = None
        self.frame: npt.NDArray[np.uint8] | None = None
        self.races: list[str] = []

    def start(self, frame: npt.NDArray[np.uint8]) -> None:
        """A new episode: finish any open race and keep `frame` for the first action."""
        self.finish()
        self.frame = frame

    def step(self, action: Any, reward: Any, terminated: Any, truncated: Any) -> None:
        """Record the pending frame with what `action` brought."""
        if self.frame is None:
            return  # no reset seen: nothing to attach the action to
        if self.writer is None:
            self.writer = self._new_race(self.frame, action)
        self.writer.append(
            self.frame,
            action=np.array(action, copy=True),  # the caller may reuse its array
            reward=float(reward),
            terminated=bool(terminated),
            truncated=bool(truncated),
        )
        self.frame = None

    def finish(self) -> None:
        """Close the open race, if any (committed; complete)."""
        writer, self.writer, self.frame = self.writer, None, None
        if writer is not None:
            writer.close()

    def _new_race(self, frame: npt.NDArray[np.uint8], action: Any) -> Writer:
        h, w = frame.shape[:2]
        options = {"action_shape": np.shape(action), **self.options}
        writer = self.store.new_race(height=h, width=w, **options)
        self.races.append(writer.race_id)
        return writer


def _frame(value: Any, what: str) -> npt.NDArray[np.uint8]:
    frame = np.asarray(value)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise FrameError(
            f"frames={what!r} gives {frame.shape} {frame.dtype}; a race stores (H, W, 3) "
            "uint8 frames (use frames='render' with render_mode='rgb_array', or pick an "
            "image observation)"
        )
    return frame


def _pick(obs: Any, frames: str, i: int | None = None) -> npt.NDArray[np.uint8]:
    """The frame of an observation (sub-env `i` of a batched one)."""
    value = obs if frames == "observation" else _key(obs, frames)
    return _frame(value if i is None else value[i], frames)


def _key(obs: Any, key: str) -> Any:
    if not isinstance(obs, Mapping) or key not in obs:
        have = sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__
        raise FrameError(f"frames={key!r}: the observation has no such key (it has {have})")
    return obs[key]


def _race_options(env: Any, race_options: Mapping[str, Any]) -> dict[str, Any]:
    """`Store.new_race` keywords: the env's id and frame rate, overridden by the caller's."""
    spec = getattr(env, "spec", None)
    if spec is None and hasattr(env, "get_attr"):  # a vector env: its sub-envs' spec
        try:
            spec = env.get_attr("spec")[0]
        except (AttributeError, IndexError):
            spec = None
    env_id = spec.id if spec is not None else type(env.unwrapped).__name__
    fps = float(env.metadata.get(FPS_KEY) or DEFAULT_FPS)
    return {"env": env_id, "fps": fps, **race_options}


def _check_frames(frames: str) -> None:
    if not isinstance(frames, str) or not frames:
        raise ValueError(f"frames must be 'render', 'observation' or a key, got {frames!r}")


class RecordRaces(gym.Wrapper[Any, Any, Any, Any]):
    """Record every episode of `env` as a race of `store`; see the module doc.

    Args:
        env: a Gymnasium env.
        store: where the races go.
        frames: ``"render"``, ``"observation"`` or the key of a dict observation.
        race_options: `Store.new_race` keywords (``env``, ``map``, ``policy``, ``fps``,
            ``quality``, ``meta``, ...); ``env`` defaults to the env's id and ``fps``
            to its ``render_fps``.

    `race_ids` lists the races recorded so far.
    """

    def __init__(
        self, env: gym.Env[Any, Any], store: Store, frames: str = "render", **race_options: Any
    ) -> None:
        super().__init__(env)
        _check_frames(frames)
        self.frames = frames
        self._recorder = _Recorder(store, _race_options(env, race_options))

    @property
    def race_ids(self) -> list[str]:
        """Ids of the races this wrapper started, oldest first."""
        return list(self._recorder.races)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._recorder.start(self._current_frame(obs))
        return obs, info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._recorder.step(action, reward, terminated, truncated)
        if terminated or truncated:
            self._recorder.finish()
        else:
            self._recorder.frame = self._current_frame(obs)
        return obs, reward, terminated, truncated, info

    def close(self) -> None:
        """Commit the open race, then close the env."""
        try:
            self._recorder.finish()
        finally:
            self.env.close()

    def _current_frame(self, obs: Any) -> npt.NDArray[np.uint8]:
        if self.frames == "render":
            return _frame(self.env.render(), "render")
        return _pick(obs, self.frames)


class RecordVectorRaces(gym.vector.VectorWrapper):
    """Record every episode of every sub-env of a vector env, one race each.

    Same arguments as `RecordRaces`; ``frames="render"`` takes the sub-envs' frames
    from ``env.render()`` (a tuple, one per sub-env, with ``render_mode="rgb_array"``).
    Each race's ``meta`` holds ``sub_env``, the sub-env's index.
    """

    def __init__(
        self, env: gym.vector.VectorEnv, store: Store, frames: str = "render", **race_options: Any
    ) -> None:
        super().__init__(env)
        _check_frames(frames)
        mode = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
        if mode not in (gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP):
            raise ValueError(
                f"RecordVectorRaces follows autoreset modes NEXT_STEP and SAME_STEP, not {mode}"
            )
        self.frames = frames
        self._same_step = mode == gym.vector.AutoresetMode.SAME_STEP
        options = _race_options(env, race_options)
        meta = dict(options.pop("meta", None) or {})
        self._recorders = [
            _Recorder(store, {**options, "meta": {**meta, "sub_env": i}})
            for i in range(env.num_envs)
        ]
        self._resetting = np.zeros(env.num_envs, dtype=bool)  # NEXT_STEP: reset on next step

    @property
    def race_ids(self) -> list[str]:
        """Ids of the races recorded so far (sub-env by sub-env, oldest first)."""
        return [race for r in self._recorders for race in r.races]

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        frames = self._current_frames(obs)
        for recorder, frame in zip(self._recorders, frames, strict=True):
            recorder.start(frame)
        self._resetting[:] = False
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        frames = self._current_frames(obs)
        done = np.logical_or(terminated, truncated)
        for i, recorder in enumerate(self._recorders):
            if self._resetting[i]:  # NEXT_STEP: this step reset the sub-env
                recorder.start(frames[i])
                continue
            recorder.step(actions[i], rewards[i], terminated[i], truncated[i])
            if done[i]:
                recorder.finish()
                if self._same_step:  # obs already is the next episode's first
                    recorder.start(frames[i])
            else:
                recorder.frame = frames[i]
        self._resetting = done & (not self._same_step)
        return obs, rewards, terminated, truncated, info

    def close(self, **kwargs: Any) -> None:
        """Commit every open race, then close the env."""
        try:
            for recorder in self._recorders:
                recorder.finish()
        finally:
            self.env.close(**kwargs)

    def _current_frames(self, obs: Any) -> list[npt.NDArray[np.uint8]]:
        if self.frames == "render":
            rendered = self.env.render()
            if rendered is None:
                raise FrameError(
                    "frames='render' needs the sub-envs made with render_mode='rgb_array'"
                )
            return [_frame(f, "render") for f in rendered]
        return [_pick(obs, self.frames, i) for i in range(self.num_envs)]


__all__ = ["RecordRaces", "RecordVectorRaces"]
