"""``out="tensordict"``: batches as `tensordict.TensorDict` of batch size [B, L], from
`Sampler.sample` and iteration, on real frames."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import replay
from replay.read.tensordicts import keys_of

pytest.importorskip("tensordict")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, carracing_frames: list[Any]) -> replay.Store:
    store = replay.open_store(tmp_path_factory.mktemp("td") / "store")
    for n in (48, 20):
        with store.new_race(env="CarRacing-v3", shard_size=8) as w:
            for i, step in enumerate(carracing_frames[:n]):
                w.append(step.frame, action=step.action, reward=step.reward, terminated=i == n - 1)
    return store


def test_sample_as_tensordict_holds_the_batch(store: replay.Store) -> None:
    params: dict[str, Any] = {"batch_size": 6, "seq_len": 3, "stride": 2, "seed": 5}
    with store.sampler("prioritized", **params) as a, store.sampler("prioritized", **params) as b:
        want = a.sample(device="cpu")
        td = b.sample(device="cpu", out="tensordict")
    assert tuple(td.batch_size) == (6, 3)
    np.testing.assert_array_equal(td["frames"].numpy(), want.frames)
    for name in ("action", "reward", "terminated", "truncated", "t_ns"):
        np.testing.assert_array_equal(td[name].numpy(), want.steps[name])
    np.testing.assert_array_equal(td["weights"][:, 0].numpy(), want.weights)
    assert keys_of(td) == want.keys
    steps = td["step"].numpy()
    np.testing.assert_array_equal(steps[:, 1:] - steps[:, :-1], np.full((6, 2), 2))
    race_ids = td["race_ids"]
    assert [race_ids[i] for i in td["race_index"][:, 0].tolist()] == [r for r, _ in want.keys]
    assert td.get("returns", None) is None


def test_nstep_tensordict_and_iteration(store: replay.Store) -> None:
    with (
        store.sampler(batch_size=4, seed=1, n_step=3, next_frames=True) as a,
        store.sampler(batch_size=4, seed=1, n_step=3, next_frames=True, out="tensordict") as b,
    ):
        want = a.sample(device="cpu")
        (td,) = list(b.batches(device="cpu", limit=1))
    np.testing.assert_array_equal(td["returns"].numpy(), want.returns)
    np.testing.assert_array_equal(td["discount"].numpy(), want.discount)
    np.testing.assert_array_equal(td["next", "step"].numpy(), want.next_steps)
    np.testing.assert_array_equal(td["next", "frames"].numpy(), want.next_frames)


def test_update_priorities_from_a_tensordict(store: replay.Store) -> None:
    with store.sampler("prioritized", batch_size=4, seed=2, out="tensordict") as s:
        td = s.sample(device="cpu")
        s.update_priorities(keys_of(td), np.zeros(4))
        assert s.selector.tree.total > 0  # the other items keep their priority
