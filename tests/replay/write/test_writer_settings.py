"""`WriterSettings`: validated when made, one value from `new_race` to both writer kinds;
rings sized by the race's frame rate (issue 23, item 12); the writer process's imports."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import replay
from replay.write.settings import MAX_SLOTS, MIN_SLOTS, WriterSettings

ROOT = Path(replay.__file__).parent


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("flush_interval", 0),
        ("flush_interval", -1.0),
        ("flush_interval", math.nan),
        ("flush_interval", math.inf),
        ("flush_interval", "1"),
        ("flush_interval", True),
        ("queue_size", 0),
        ("queue_size", 2.5),
        ("queue_size", True),
        ("on_full", "wait"),
        ("device", "gpu"),
        ("device", 0),
        ("writer", "fiber"),
    ],
)
def test_bad_settings_are_refused_naming_the_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field) as raised:
        WriterSettings(**{field: value})  # type: ignore[arg-type]
    assert repr(value) in str(raised.value) or str(value) in str(raised.value)


def test_settings_resolve_device_and_writer_kind_on_the_cpu() -> None:
    resolved = WriterSettings(device="cpu").resolved()
    assert (resolved.device, resolved.writer, resolved.kind, resolved.gpu) == (
        "cpu",
        "process",
        "cpu",
        0,
    )
    assert WriterSettings(device="cpu", writer="thread").resolved().writer == "thread"
    assert resolved.resolved() == resolved  # resolving again changes nothing


@pytest.mark.parametrize(
    ("fps", "slots"), [(30, 15), (60, 30), (1, MIN_SLOTS), (15.5, MIN_SLOTS), (10_000, MAX_SLOTS)]
)
def test_a_ring_holds_half_a_second_of_frames_unless_sized(fps: float, slots: int) -> None:
    assert WriterSettings().slots(fps) == slots
    assert WriterSettings(queue_size=3).slots(fps) == 3


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_both_writers_size_their_ring_by_the_race_fps(tmp_path: Path, kind: str) -> None:
    store = replay.open_store(tmp_path)
    frame = np.zeros((90, 160, 3), np.uint8)
    for fps, slots in [(60, 30), (10, MIN_SLOTS)]:
        with store.new_race(env="e", height=90, width=160, fps=fps, writer=kind) as writer:
            ring = writer._ring.frames if kind == "process" else writer._ring  # type: ignore[attr-defined]
            assert ring.shape == (slots, 90, 160, 3)
            for _ in range(slots + 5):
                writer.append(frame)
        assert store.race(writer.race_id).length == slots + 5


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports: at the top, under TYPE_CHECKING and in functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("replay.")}


def modules_reached(module: str) -> set[str]:
    """The replay modules `module` can load, following imports of every kind."""
    seen, todo = set(), [module]
    while todo:
        path = ROOT.joinpath(*todo.pop().split(".")[1:]).with_suffix(".py")
        for name in imports_of(path) - seen:
            if ROOT.joinpath(*name.split(".")[1:]).with_suffix(".py").exists():
                seen.add(name)
                todo.append(name)
    return seen


def test_the_writer_process_never_loads_the_store() -> None:
    """Capacity is enforced through `replay.maintenance.capacity.enforce(storage)`. The
    process loads its main, and the sink of a local race when it unpickles its setup."""
    reached = modules_reached("replay.write.process_main") | modules_reached(
        "replay.write.store_sink"
    )
    assert "replay.maintenance.capacity" in reached  # the helper sees the lazy import
    assert "replay.store" not in reached
    assert "replay.format.race_schema" in reached  # StepSpec lives in the format wing


def test_the_format_wing_imports_nothing_of_the_write_wing() -> None:
    for path in sorted((ROOT / "format").glob("*.py")):
        assert not any(m.startswith("replay.write") for m in imports_of(path)), path.name


def test_a_writer_process_enforces_the_store_capacity(tmp_path: Path) -> None:
    """Evicts the oldest finished race as its shards are committed (no Store there)."""
    store = replay.open_store(tmp_path)
    frame = np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)
    with store.new_race(env="old", height=90, width=160, shard_size=4, writer="thread") as w:
        for _ in range(8):
            w.append(frame)
    old = w.race_id
    store.set_capacity(max_bytes=store.race_nbytes(old) // 2)
    with store.new_race(env="new", height=90, width=160, shard_size=4, writer="process") as w:
        for _ in range(8):
            w.append(frame)
    assert old not in store.race_ids()
    assert store.race(w.race_id).length == 8
