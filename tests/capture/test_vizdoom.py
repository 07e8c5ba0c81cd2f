"""ViZDoom at 1600x900: frame layout, the aim-and-shoot policy, headless and tidy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from capture.source import Step

pytest.importorskip("vizdoom", reason="vizdoom is not installed (pip install 'replay[capture]')")

from capture.vizdoom import ViZDoomSource, aim_and_shoot

TURNS = ["TURN_LEFT", "TURN_RIGHT", "ATTACK"]
STRAFES = ["MOVE_LEFT", "MOVE_RIGHT", "ATTACK"]


def test_frames_have_the_declared_layout(vizdoom_frames: list[Step]) -> None:
    assert len(vizdoom_frames) == 16
    for step in vizdoom_frames:
        assert step.frame.shape == (900, 1600, 3)
        assert step.frame.dtype == np.uint8
        assert step.action.shape == (3,)
        assert step.action.dtype == np.float32
        assert step.action.sum() == 1.0  # one button at a time
    assert vizdoom_frames[-1].truncated
    assert vizdoom_frames[0].frame.std() > 10  # a rendered scene, not a blank buffer
    assert not np.array_equal(vizdoom_frames[0].frame, vizdoom_frames[-1].frame)


@pytest.mark.parametrize(
    ("buttons", "targets", "pressed"),
    [
        (TURNS, [800.0], "ATTACK"),
        (TURNS, [300.0, 1200.0], "TURN_RIGHT"),  # the nearer one is right of centre
        (TURNS, [600.0], "TURN_LEFT"),
        (TURNS, [], "TURN_RIGHT"),  # nothing in sight: look around
        (STRAFES, [200.0], "MOVE_LEFT"),
        (STRAFES, [790.0], "ATTACK"),
    ],
)
def test_aim_and_shoot(buttons: list[str], targets: list[float], pressed: str) -> None:
    action = aim_and_shoot(buttons, targets, width=1600)
    assert action.dtype == np.float32
    assert [buttons[i] for i in np.flatnonzero(action)] == [pressed]


def test_policy_wins_basic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # ViZDoom must not litter the working directory
    with ViZDoomSource(scenario="basic") as source:
        assert (source.env, source.map, source.fps) == ("ViZDoom", "basic", 35)
        assert source.buttons == STRAFES
        steps = list(source.race(max_steps=200, seed=1))
    # basic: one monster; killing it ends the episode with +100 (minus 1 per tic)
    assert steps[-1].terminated
    assert not steps[-1].truncated
    assert sum(s.reward for s in steps) > 0
    assert len(steps) < 200
    assert list(tmp_path.iterdir()) == []


def test_resolution_must_be_native() -> None:
    with pytest.raises(ValueError, match=r"1600x900") as info:
        ViZDoomSource(width=1600, height=901)
    assert "1600x901" in str(info.value)


def test_unknown_scenario_lists_bundled_ones() -> None:
    with pytest.raises(ValueError, match="defend_the_center"):
        ViZDoomSource(scenario="no_such_scenario")
