"""ViZDoom scenarios rendered at 1600x900, played by a simple aim-and-shoot policy.

ViZDoom renders natively at 1600x900 (``ScreenResolution.RES_1600X900``), so
frames are never resized: other sizes are accepted only where ViZDoom has an
exact resolution for them. The game runs headless (no window), one frame per
35 Hz game tic.

The policy reads ViZDoom's labels buffer (which object is drawn where), picks
the target nearest the crosshair, turns or strafes towards it and fires when
it is centred; with nothing in sight it turns right to look for one. It works
with any scenario whose buttons include left/right turns or moves and ATTACK
(``defend_the_center``, ``basic``, ``defend_the_line``, ...).

Example::

    with ViZDoomSource(scenario="basic") as src:
        for step in src.race(max_steps=300, seed=1):
            ...
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from capture.deps import require
from capture.errors import CaptureError
from capture.source import Source, Step, check_max_steps

vzd = require("vizdoom", source="vizdoom")

__all__ = ["ViZDoomSource", "aim_and_shoot"]

#: Labelled objects that are not targets: the player, bullet puffs, blood, pickups.
NOT_TARGETS = frozenset({"DoomPlayer", "BulletPuff", "Blood", "Clip", "TeleportFog"})
_LEFT = ("TURN_LEFT", "MOVE_LEFT")
_RIGHT = ("TURN_RIGHT", "MOVE_RIGHT")


def aim_and_shoot(
    buttons: Sequence[str], targets_x: Sequence[float], width: int, tolerance: float = 0.03
) -> NDArray[np.float32]:
    """One button vector: fire at a centred target, else turn towards the nearest one.

    Args:
        buttons: the scenario's button names, in order (``"TURN_LEFT"``, ``"ATTACK"``, ...).
        targets_x: screen x of each visible target's centre, pixels.
        width: screen width, pixels.
        tolerance: how far off centre still counts as aimed, as a fraction of `width`.
    """
    action = np.zeros(len(buttons), dtype=np.float32)
    centre = width / 2.0
    if targets_x:
        dx = min(targets_x, key=lambda x: abs(x - centre)) - centre
        if abs(dx) <= tolerance * width:
            wanted: tuple[str, ...] = ("ATTACK",)
        else:
            wanted = _LEFT if dx < 0 else _RIGHT
    else:
        wanted = _RIGHT
    for i, name in enumerate(buttons):
        if name in wanted:
            action[i] = 1.0
            break
    return action


class ViZDoomSource(Source):
    """ViZDoom races (episodes) of a bundled scenario, headless, at full resolution.

    Args:
        scenario: a bundled scenario name (``"defend_the_center"``, ``"basic"``, ...)
            or a path to a ``.cfg`` file.
        width: frame width; with `height` it must be one of ViZDoom's resolutions.
        height: frame height.
        skill: Doom skill level 1-5; ``None`` keeps the scenario's.
    """

    def __init__(
        self,
        scenario: str = "defend_the_center",
        width: int = 1600,
        height: int = 900,
        skill: int | None = None,
    ) -> None:
        config = scenario if scenario.endswith(".cfg") else f"{scenario}.cfg"
        if not os.path.isabs(config) and not os.path.exists(config):
            config = os.path.join(vzd.scenarios_path, config)
        if not os.path.exists(config):
            bundled = sorted(f[:-4] for f in os.listdir(vzd.scenarios_path) if f.endswith(".cfg"))
            raise ValueError(f"no ViZDoom scenario {scenario!r}; bundled ones: {bundled}")
        resolution = _resolution(width, height)
        # ViZDoom writes its engine settings (_vizdoom.ini) to the working directory
        # unless told otherwise; keep them in a directory of our own.
        self._tmp = tempfile.TemporaryDirectory(prefix="replay-vizdoom-")
        # The engine also makes an empty ./_vizdoom/ (hard-coded); remove it if it was ours.
        engine_dir = os.path.abspath("_vizdoom")
        made_engine_dir = not os.path.exists(engine_dir)
        game = vzd.DoomGame()
        try:
            game.load_config(config)
            game.set_doom_config_path(os.path.join(self._tmp.name, "_vizdoom.ini"))
            game.set_screen_resolution(resolution)
            game.set_screen_format(vzd.ScreenFormat.RGB24)
            game.set_window_visible(False)
            game.set_sound_enabled(False)
            game.set_labels_buffer_enabled(True)
            game.set_mode(vzd.Mode.PLAYER)
            if skill is not None:
                game.set_doom_skill(skill)
            game.init()
        except Exception as exc:
            self._tmp.cleanup()
            raise CaptureError(f"ViZDoom could not start scenario {config}: {exc}") from exc
        finally:
            if made_engine_dir:
                with contextlib.suppress(OSError):  # not empty, or already gone: leave it
                    os.rmdir(engine_dir)
        self._game: Any = game
        self._buttons = [b.name for b in game.get_available_buttons()]
        self.env = "ViZDoom"
        self.map = os.path.basename(config)[: -len(".cfg")]
        self.policy = "aim-and-shoot-v1"
        self.fps = int(game.get_ticrate())
        self.width = width
        self.height = height
        self.action_shape = (len(self._buttons),)

    @property
    def buttons(self) -> list[str]:
        """The button each action element presses, in order."""
        return list(self._buttons)

    def race(self, max_steps: int, seed: int | None = None) -> Iterator[Step]:
        """Play one episode; see `Source.race`. The episode's own timeout truncates it."""
        check_max_steps(max_steps)
        game = self._require_game()
        if seed is not None:
            game.set_seed(seed)
        game.new_episode()
        for i in range(max_steps):
            state = game.get_state()
            if state is None:  # the episode ended before its first frame
                return
            targets = [
                label.x + label.width / 2.0
                for label in state.labels
                if label.object_name not in NOT_TARGETS
            ]
            action = aim_and_shoot(self._buttons, targets, self.width)
            reward = game.make_action(action.tolist())
            finished = game.is_episode_finished()
            timed_out = finished and game.is_episode_timeout_reached()
            yield Step(
                frame=state.screen_buffer,
                action=action,
                reward=float(reward),
                terminated=finished and not timed_out,
                truncated=timed_out or (i == max_steps - 1 and not finished),
            )
            if finished:
                return

    def close(self) -> None:
        if self._game is not None:
            self._game.close()
            self._game = None
        self._tmp.cleanup()

    def _require_game(self) -> Any:
        if self._game is None:
            raise RuntimeError("this ViZDoomSource is closed")
        return self._game


def _resolution(width: int, height: int) -> Any:
    """ViZDoom's ScreenResolution for exactly `width` x `height`, or a clear error."""
    name = f"RES_{width}X{height}"
    if not hasattr(vzd.ScreenResolution, name):
        names = [r[4:].split("X") for r in dir(vzd.ScreenResolution) if r.startswith("RES_")]
        sizes = sorted((int(w), int(h)) for w, h in names)
        raise ValueError(
            f"ViZDoom cannot render {width}x{height}; its resolutions are "
            + ", ".join(f"{w}x{h}" for w, h in sizes)
        )
    return getattr(vzd.ScreenResolution, name)
