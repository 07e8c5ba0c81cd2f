"""PyTorch integration: torch batches without copies, the DataLoader dataset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sampling_helpers import make_store, write_race

import replay
from replay.codec.transform import Transform

torch = pytest.importorskip("torch")
from replay.integrations.loader import START_METHOD, ReplayDataset, make_loader, to_device  # noqa: E402


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("loader") / "store"
    make_store(path, [12, 9, 15])
    return path


def test_torch_batches_share_the_decoded_buffer(store_path: Path) -> None:
    sampler = replay.open_store(store_path, mode="r").sampler(batch_size=4, seq_len=2, seed=0)
    batch = sampler.sample(out="torch")
    assert isinstance(batch.frames, torch.Tensor)
    assert batch.frames.shape == (4, 2, 90, 160, 3)
    assert batch.frames.dtype == torch.uint8
    assert batch.weights.dtype == torch.float32
    assert batch.reward.shape == (4, 2)
    assert batch.action.shape == (4, 2, 3)
    assert not batch.frames.numpy().flags.owndata  # a view of the decode buffer, not a copy
    again = replay.open_store(store_path, mode="r").sampler(batch_size=4, seq_len=2, seed=0)
    np.testing.assert_array_equal(batch.frames.numpy(), again.sample().frames)
    moved = to_device(batch, "cpu")
    assert moved.keys == batch.keys
    assert torch.equal(moved.frames, batch.frames)


def test_torch_transform_layouts(store_path: Path) -> None:
    sampler = replay.open_store(store_path, mode="r").sampler(batch_size=3, seed=1)
    t = Transform(size=(45, 80), dtype="float32", layout="NCHW", mean=0.5, std=0.5)
    batch = sampler.sample(out="torch", transform=t)
    assert batch.frames.shape == (3, 1, 3, 45, 80)
    assert batch.frames.dtype == torch.float32
    assert -1.0 <= float(batch.frames.min()) <= float(batch.frames.max()) <= 1.0
    bf16 = sampler.sample(out="torch", transform=Transform(grey=True, dtype="bfloat16"))
    assert bf16.frames.shape == (3, 1, 90, 160, 1)
    assert bf16.frames.dtype == torch.bfloat16


def test_dataset_in_process_and_in_spawned_workers(store_path: Path) -> None:
    dataset = ReplayDataset(store_path, batches=3, seed=0, batch_size=4)
    batches = list(dataset)
    assert len(batches) == 3
    assert all(isinstance(b.frames, torch.Tensor) for b in batches)
    assert [b.keys for b in ReplayDataset(store_path, batches=3, seed=0, batch_size=4)] == [
        b.keys for b in batches
    ]
    loader = make_loader(store_path, num_workers=2, batches=2, seed=0, batch_size=4, seq_len=2)
    got = list(loader)
    assert len(got) == 4  # two batches from each worker
    assert all(b.frames.shape == (4, 2, 90, 160, 3) for b in got)
    assert len({tuple(b.keys) for b in got}) == 4  # the workers draw different batches
    with pytest.raises(ValueError, match="learner's process"):
        ReplayDataset(store_path, "prioritized")


def test_priorities_from_torch_tensors(store_path: Path) -> None:
    sampler = replay.open_store(store_path).sampler("prioritized", batch_size=4, seed=0)
    batch = sampler.sample(out="torch")
    sampler.update_priorities(batch.keys, torch.full((4,), 7.0))
    assert sampler.selector.max_priority == 7.0  # type: ignore[union-attr]


def test_sampling_benchmark_runs(tmp_path: Path) -> None:
    from sampling_helpers import small_frames

    from replay.bench.sampling import run_sampling_bench

    results = run_sampling_bench(
        tmp_path,
        list(small_frames(4, h=96, w=160)),
        n=16,
        batches=1,
        batch_size=4,
        seq=(2, 2),
        cold_batches=1,
        approaches=("replay", "raw_memmap"),
    )
    ours = results["approaches"]["replay"]
    for key in ("batch_warm", "batch_cold", "sequences_warm", "quarter_warm"):
        assert ours[key]["frames_per_s"] > 0
        assert ours[key]["peak_rss_mb"] > 0
    assert ours["bytes_per_frame"] < 96 * 160 * 3
    assert results["ratios"]["bytes_per_frame_raw_memmap_over_replay"] > 1


BREAK_OUT = """
import sys
from replay.integrations.loader import make_loader

if __name__ == "__main__":
    loader = make_loader(sys.argv[1], num_workers=2, batch_size=8, seq_len=2, seed=0)
    assert loader.multiprocessing_context.get_start_method() == sys.argv[2]
    for i, batch in enumerate(loader):
        assert tuple(batch.frames.shape) == (8, 2, 900, 1600, 3)
        if i == 1:
            break  # the workers are still decoding and handing back batches
    print("left the loop", flush=True)
"""


def test_breaking_out_of_a_loader_loop_is_clean(
    real_frames: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    """Issue 13, item 13: leaving a make_loader loop with ``break`` printed "terminate
    called without an active exception" and a worker died of SIGABRT (its queue's feeder
    thread was inside torch's C++ tensor sharing when the worker exited)."""
    store = replay.open_store(tmp_path / "store")
    write_race(store, real_frames[:24])
    script = tmp_path / "break_out.py"
    script.write_text(BREAK_OUT)
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store"), START_METHOD],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[3],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )
    assert "left the loop" in run.stdout
    assert "terminate called" not in run.stderr
    assert "killed by signal" not in run.stderr
    assert run.returncode == 0, run.stderr[-2000:]
