"""Conversions between TorchRL's values and a store's steps, for `replay.integrations.torchrl`.

TorchRL indexes a storage with ints, slices, sequences, tensors or 1-tuples
(`index_array` makes them one array of positions), and lays a step out with the reward
and done flags under ``"next"`` (`as_transitions` builds that layout from step columns;
`step_arrays` reads it back for recording).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tensordict import TensorDict, TensorDictBase

from replay.errors import StoreError
from replay.format import spec as fmt

#: Keys of a step that came from the step after it, in TorchRL's layout.
NEXT_KEYS = ("reward", "terminated", "truncated")


def identity(data: Any) -> Any:
    """The collate function of a buffer over a `ReplayStorage`: its batches are TensorDicts."""
    return data


def index_array(index: Any, n: int) -> npt.NDArray[np.int64]:
    """An index as TorchRL passes it (int, slice, sequence, tensor, 1-tuple) as an array."""
    if isinstance(index, tuple):
        if len(index) != 1:
            raise IndexError(f"a ReplayStorage is one-dimensional, got index {index!r}")
        index = index[0]
    if isinstance(index, slice):
        return np.arange(*index.indices(n), dtype=np.int64)
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    return np.asarray(index, dtype=np.int64).reshape(-1)


def step_arrays(data: TensorDictBase) -> dict[str, npt.NDArray[Any]]:
    """The step arrays of a TensorDict of batch [n], from the top level or ``"next"``."""
    n = data.batch_size[0]
    out: dict[str, npt.NDArray[Any]] = {}
    for name, dtype in fmt.STANDARD_STEPS.items():
        if name == "t_ns":
            continue
        value = data.get(("next", name), None) if name in NEXT_KEYS else None
        if value is None:
            value = data.get(name, None)
        if value is None:
            if name == "action":
                raise StoreError("extend needs an 'action' entry")
            value = torch.zeros(n)
        array = value.detach().cpu().numpy().astype(dtype)
        out[name] = array.reshape(n) if name != "action" else array.reshape(n, -1)
    return out


def as_transitions(values: Mapping[str, Any], n: int) -> TensorDict:
    """Columns named as TorchRL names them: reward and done flags under ``"next"``."""
    tensors = {
        name: torch.as_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else v
        for name, v in values.items()
    }
    nxt = {name: tensors.pop(name) for name in NEXT_KEYS if name in tensors}
    if "terminated" in nxt and "truncated" in nxt:
        nxt["done"] = nxt["terminated"] | nxt["truncated"]
    return TensorDict({**tensors, "next": TensorDict(nxt, batch_size=[n])}, batch_size=[n])


def empty_columns() -> dict[str, npt.NDArray[Any]]:
    """The step columns of a storage that holds no step yet."""
    out: dict[str, npt.NDArray[Any]] = {
        name: np.zeros(0, dtype=dtype) for name, dtype in fmt.STANDARD_STEPS.items()
    }
    out["episode"] = np.zeros(0, dtype=np.int64)
    out["step"] = np.zeros(0, dtype=np.int64)
    return out
