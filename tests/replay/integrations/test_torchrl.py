"""replay.integrations.torchrl: TorchRL's ReplayBuffer and samplers over a store of real
CarRacing frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("torchrl", reason="torchrl is not installed (pip install 'replay[torch]')")

import torch
from sampling_helpers import write_race
from tensordict import TensorDict
from torchrl.data import ReplayBuffer
from torchrl.data.replay_buffers import PrioritizedSampler, RandomSampler, SliceSampler

import replay
from replay.errors import StoreError
from replay.integrations.torchrl import AppendWriter, ReplayStorage

RACE_LEN = 24


@pytest.fixture(scope="module")
def store_path(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Two races of 24 real 1600x900 frames; reward = step, the last step terminated."""
    path = tmp_path_factory.mktemp("torchrl") / "store"
    store = replay.open_store(path)
    write_race(store, real_frames[:RACE_LEN], env="CarRacing-v3")
    write_race(store, real_frames[RACE_LEN : 2 * RACE_LEN], env="CarRacing-v3")
    return path


@pytest.fixture
def storage(store_path: Path) -> Any:
    storage = ReplayStorage(replay.open_store(store_path, mode="r"), refresh_interval=0)
    yield storage
    storage.close()


def test_positions_map_to_race_steps(storage: ReplayStorage) -> None:
    store = storage.store
    ids = [info.race_id for info in store.races()]
    assert len(storage) == 2 * RACE_LEN
    assert storage.locate([0, RACE_LEN - 1, RACE_LEN, -1]) == [
        (ids[0], 0),
        (ids[0], RACE_LEN - 1),
        (ids[1], 0),
        (ids[1], RACE_LEN - 1),
    ]
    with pytest.raises(IndexError, match="48"):
        storage.get(2 * RACE_LEN)


def test_random_sampler_returns_decoded_real_frames(storage: ReplayStorage) -> None:
    buffer = ReplayBuffer(storage=storage, sampler=RandomSampler(), batch_size=4)
    torch.manual_seed(0)
    batch, info = buffer.sample(return_info=True)
    assert batch["pixels"].shape == (4, 900, 1600, 3)
    assert batch["pixels"].dtype == torch.uint8
    for i, (race_id, step) in enumerate(storage.locate(info["index"])):
        race = storage.store.race(race_id)
        np.testing.assert_array_equal(batch["pixels"][i].numpy(), race.frame(step))
        assert batch["next", "reward"][i].item() == step  # write_race: reward = step
        assert batch["step"][i].item() == step
        np.testing.assert_array_equal(batch["action"][i].numpy(), race.steps("action")[step])


def test_slice_sampler_windows_stay_inside_one_race(storage: ReplayStorage) -> None:
    buffer = ReplayBuffer(
        storage=storage, sampler=SliceSampler(slice_len=4, traj_key="episode"), batch_size=12
    )
    torch.manual_seed(1)
    for _ in range(3):
        batch = buffer.sample().reshape(3, 4)
        assert batch["pixels"].shape == (3, 4, 900, 1600, 3)
        assert (batch["episode"] == batch["episode"][:, :1]).all()
        assert (batch["step"].diff(dim=1) == 1).all()
        assert (batch["next", "reward"] == batch["step"].float()).all()
    # the last step of each race is terminated, and done follows it
    cols = storage[:]
    assert cols.get("pixels", None) is None
    assert cols["next", "done"].nonzero().flatten().tolist() == [RACE_LEN - 1, 2 * RACE_LEN - 1]


def test_slice_sampler_finds_races_without_a_traj_key(storage: ReplayStorage) -> None:
    buffer = ReplayBuffer(storage=storage, sampler=SliceSampler(num_slices=2), batch_size=8)
    batch = buffer.sample().reshape(2, 4)
    assert (batch["episode"] == batch["episode"][:, :1]).all()


def test_prioritized_sampler_draws_by_priority(storage: ReplayStorage) -> None:
    from torchrl.data.replay_buffers.samplers import prioritized

    if prioritized.SumSegmentTreeFp32 is None:  # torchrl's C++ extension did not load
        pytest.skip("TorchRL's PrioritizedSampler does not load here (no segment tree extension)")
    n = len(storage)
    sampler = PrioritizedSampler(max_capacity=n, alpha=1.0, beta=1.0)
    buffer = ReplayBuffer(storage=storage, sampler=sampler, batch_size=8)
    assert len(buffer) == n  # the storage told the sampler about every position
    priority = torch.full((n,), 1e-8)
    priority[[3, 30]] = 1.0
    buffer.update_priority(torch.arange(n), priority)
    torch.manual_seed(2)
    batch, info = buffer.sample(return_info=True)
    assert set(info["index"].tolist()) <= {3, 30}
    assert batch["pixels"].shape[0] == 8
    assert "priority_weight" in info


def test_extend_records_races_through_the_writer(
    real_frames: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    store = replay.open_store(tmp_path / "store")
    storage = ReplayStorage(store, race_options={"env": "torchrl-test", "quality": 95})
    buffer = ReplayBuffer(storage=storage, writer=AppendWriter(), batch_size=2)
    n = 10
    done = torch.zeros(n, 1, dtype=torch.bool)
    done[5] = True  # one episode ends at step 5: two races
    data = TensorDict(
        {
            "pixels": torch.from_numpy(real_frames[:n].copy()),
            "action": torch.arange(3 * n, dtype=torch.float32).reshape(n, 3),
            "next": {"reward": torch.arange(n, dtype=torch.float32), "terminated": done},
        },
        batch_size=[n],
    )
    index = buffer.extend(data)
    assert index.tolist() == list(range(n))
    races = store.races()
    assert [(r.env, r.length, r.status) for r in races] == [
        ("torchrl-test", 6, "complete"),
        ("torchrl-test", 4, "complete"),
    ]
    race = store.race(races[1].race_id)
    assert race.steps("reward").tolist() == [6, 7, 8, 9]
    diff = np.abs(race.frame(0).astype(int) - real_frames[6].astype(int)).mean()
    assert diff < 2  # JPEG at quality 95
    assert buffer.sample()["pixels"].shape == (2, 900, 1600, 3)
    assert buffer.extend(data[:2]).tolist() == [10, 11]  # appended after what is there
    storage.close()


def test_default_writer_cannot_overwrite(storage: ReplayStorage, tmp_path: Path) -> None:
    buffer = ReplayBuffer(storage=storage, batch_size=2)
    data = TensorDict({"pixels": torch.zeros(1, 900, 1600, 3, dtype=torch.uint8)}, [1])
    with pytest.raises(StoreError, match="AppendWriter"):
        buffer.extend(data)
    with pytest.raises(StoreError, match="cannot be emptied"):
        buffer.empty()


def test_new_steps_get_new_positions_and_old_ones_stay(
    real_frames: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    store = replay.open_store(tmp_path / "store")
    first = write_race(store, real_frames[:8])
    storage = ReplayStorage(store, refresh_interval=0)
    state = storage.state_dict()
    assert len(storage) == 8
    second = write_race(store, real_frames[8:12])
    assert len(storage) == 12
    assert storage.locate([7, 8]) == [(first, 7), (second, 0)]
    restored = ReplayStorage(store, refresh_interval=3600)
    restored.load_state_dict(state)
    assert len(restored) == 8  # the saved mapping, until the next refresh
    assert restored.locate([7]) == [(first, 7)]
    storage.close()
    restored.close()


@pytest.mark.slow
def test_bench_compares_with_lazy_memmap_storage(store_path: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from replay.bench.torchrl import command

    out = tmp_path / "torchrl.json"
    args = ["--frames-from", str(store_path), "--frames", "16", "--race-len", "8"]
    args += ["--batch", "4", "--seq-len", "2", "--batches", "2", "--key-frames", "400"]
    args += ["--key-race-len", "100"]
    result = CliRunner().invoke(command, [*args, "--work", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())["results"]
    for name in ("replay_storage", "lazy_memmap"):
        assert doc[name]["random"]["frames_per_s"] > 0
        assert doc[name]["slice"]["frames_per_s"] > 0
    # raw frames against JPEG: the memmap is several times larger on disk
    assert doc["ratios"]["disk_memmap_over_replay"] > 3
    assert doc["slice_keys"]["frames"] >= 400


def test_indexing_gives_step_data_and_get_decodes(storage: ReplayStorage) -> None:
    row = storage[RACE_LEN + 2]
    assert row.get("pixels", None) is None
    assert (row["episode"].item(), row["step"].item()) == (1, 2)
    assert storage.get(RACE_LEN + 2)["pixels"].shape == (900, 1600, 3)
    assert storage[[0, 5]]["next", "reward"].tolist() == [0, 5]
