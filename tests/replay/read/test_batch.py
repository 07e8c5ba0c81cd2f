"""`replay.read.batch`: sample keys and their views, and `make_batch`'s kinds of output."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sampling_helpers import keys_of, make_store

import replay
from replay.codec.transform import Transform
from replay.read.tensors import make_batch


def test_sample_keys_shapes_and_views() -> None:
    keys = keys_of("A" * 26, [3, 7], seq_len=3)
    assert (keys.batch_size, keys.seq_len) == (2, 3)
    assert keys.keys == [("A" * 26, 3), ("A" * 26, 7)]
    assert all(type(step) is int for _, step in keys.keys)
    with pytest.raises(ValueError, match=r"steps must be \(2, L\), got \(2,\)"):
        replace(keys, steps=np.array([3, 7]))
    with pytest.raises(ValueError, match=r"steps must be \(2, L\), got \(3, 3\)"):
        replace(keys, steps=np.zeros((3, 3), np.int64))
    with pytest.raises(ValueError, match="weights and probabilities"):
        replace(keys, weights=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="weights and probabilities"):
        replace(keys, probabilities=np.ones((2, 1)))


def test_make_batch_wraps_frames_keys_and_steps() -> None:
    keys = keys_of("A" * 26, [3, 7], seq_len=2)
    frames = np.arange(2 * 2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 2, 4, 5, 3)
    steps = {"reward": np.array([[1.0, 2.0], [3.0, 4.0]])}
    batch = make_batch(keys, frames, steps, out="numpy", transform=None)
    assert batch.frames is frames  # no copy on the host
    assert batch.keys == keys.keys
    np.testing.assert_array_equal(batch.weights, keys.weights)
    np.testing.assert_array_equal(batch.steps["reward"], steps["reward"])


def test_bad_outputs_are_refused() -> None:
    keys = keys_of("A" * 26, [0, 4])
    frames = np.zeros((2, 1, 3, 2, 2), np.float32)
    with pytest.raises(
        ValueError, match="out must be 'numpy', 'torch', 'cupy' or 'tensordict', not 'jax'"
    ):
        make_batch(keys, frames, {}, out="jax", transform=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bfloat16"):
        make_batch(keys, frames, {}, out="numpy", transform=Transform(dtype="bfloat16"))


@pytest.mark.parametrize(
    ("out", "missing", "hint"),
    [
        ("torch", "torch", "replay[torch]"),
        ("tensordict", "tensordict", "replay[torch]"),
        ("cupy", "cupy", "replay[gpu]"),
    ],
)
def test_an_out_whose_library_is_missing_is_refused_when_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str, missing: str, hint: str
) -> None:
    """A sampler or client asked for torch tensors where torch is not installed says so,
    and what to install, when it is made: not a bare ModuleNotFoundError at its first batch."""
    store, _ = make_store(tmp_path / "store", [8])
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    want = rf"out='{out}' needs {missing}, which is not installed: pip install '{hint}'"
    with pytest.raises(ImportError, match=want.replace("[", r"\[").replace("]", r"\]")):
        store.sampler(batch_size=2, out=out, save_priorities=False)  # type: ignore[arg-type]
    with pytest.raises(ImportError, match=f"out='{out}' needs {missing}"):
        replay.Client("http://127.0.0.1:9", out=out)  # type: ignore[arg-type]
    with store.sampler(batch_size=2, save_priorities=False) as sampler:  # numpy needs nothing
        assert sampler.sample().frames.shape[0] == 2
