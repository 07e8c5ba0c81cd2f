"""Batches as `tensordict.TensorDict` (``out="tensordict"``), for TorchRL-style learners.

`Sampler.sample`, iteration and `Client.sample` with ``out="tensordict"`` give a
TensorDict of batch size ``[B, L]`` (needs the ``torch`` extra)::

    td = store.sampler(batch_size=32, seq_len=4, n_step=3).sample(out="tensordict")
    td["frames"]        # (B, L, H, W, 3) uint8 (or the transform's layout)
    td["action"], td["reward"], td["terminated"], td["truncated"]   # and every step array
    td["step"]          # (B, L) int64 step of each frame in its race
    td["race_index"]    # (B, L) int64 position of the frame's race in td["race_ids"]
    td["race_ids"]      # NonTensorData: the batch's distinct race ids
    td["weights"]       # (B, L) float32 importance weights (ones unless prioritized)
    td["returns"], td["discount"]                 # n_step samplers (`replay.read.nstep`)
    td["next", "step"], td["next", "frames"]      # bootstrap steps and frames (TorchRL's "next")

The TensorDict is made by `replay.read.batch.to_tensordict`; `keys_of` turns its items back
into `Batch.keys` for `update_priorities`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from replay.read.batch import Batch, SampleKeys

if TYPE_CHECKING:
    from tensordict import TensorDict


def keys_of(td: TensorDict) -> list[tuple[str, int]]:
    """(race id, first step) per item of a TensorDict batch: `Batch.keys`, the key of
    `update_priorities`."""
    race_ids = td.get_non_tensor("race_ids")
    index = td["race_index"][:, 0].tolist()
    firsts = td["step"][:, 0].tolist()
    return [(race_ids[i], int(s)) for i, s in zip(index, firsts, strict=True)]


def to_tensordict(batch: Batch, keys: SampleKeys) -> TensorDict:
    """A torch `Batch` (and its `SampleKeys`) as a TensorDict of batch size [B, L]."""
    import torch
    from tensordict import TensorDict

    b, seq = keys.steps.shape
    race_ids = list(dict.fromkeys(keys.race_ids))
    where = {r: i for i, r in enumerate(race_ids)}
    race_index = np.repeat(
        np.array([where[r] for r in keys.race_ids], dtype=np.int64)[:, None], seq, axis=1
    )
    device = batch.frames.device
    data: dict[str, Any] = {
        "frames": batch.frames,
        **batch.steps,
        "step": torch.as_tensor(keys.steps, device=device),
        "race_index": torch.as_tensor(race_index, device=device),
        "weights": batch.weights[:, None].expand(b, seq),
    }
    if batch.returns is not None:
        data["returns"] = batch.returns
        data["discount"] = batch.discount
        nxt: dict[str, Any] = {"step": batch.next_steps}
        if batch.next_frames is not None:
            nxt["frames"] = batch.next_frames
        data["next"] = TensorDict(nxt, batch_size=[b, seq])
    td = TensorDict(data, batch_size=[b, seq])
    td.set_non_tensor("race_ids", race_ids)
    return td
