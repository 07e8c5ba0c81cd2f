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
    td["returns"], td["discount"]                 # n_step samplers (`replay.nstep`)
    td["next", "step"], td["next", "frames"]      # bootstrap steps and frames (TorchRL's "next")

The TensorDict is made by `replay.batch.to_tensordict`; `keys_of` turns its items back
into `Batch.keys` for `update_priorities`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tensordict import TensorDict


def keys_of(td: TensorDict) -> list[tuple[str, int]]:
    """(race id, first step) per item of a TensorDict batch: `Batch.keys`, the key of
    `update_priorities`."""
    race_ids = td.get_non_tensor("race_ids")
    index = td["race_index"][:, 0].tolist()
    firsts = td["step"][:, 0].tolist()
    return [(race_ids[i], int(s)) for i, s in zip(index, firsts, strict=True)]
