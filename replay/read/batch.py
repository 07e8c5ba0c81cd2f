"""What a sampler hands out: keys, encoded batches, decoded batches.

Sampling runs in three steps, each with its own value type, so the service can
stop after the second and let its client do the third on its own GPU:

    keys = sampler.sample_keys()          # SampleKeys: which (race, steps), weights
    encoded = sampler.fetch(keys)         # EncodedBatch: the stored JPEG bytes + step arrays
    batch = decode_batch(encoded, device="cuda", out="torch", transform=t)   # Batch

This module holds the three value types and `make_batch`, which wraps decoded
frames as NumPy, torch (zero-copy from NumPy / DLPack from CuPy), CuPy or a
`tensordict.TensorDict` (`replay.read.tensordicts`); `replay.read.decode` turns stored bytes
into pixels. n-step values (`replay.read.nstep`) ride along in both batch types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from replay.errors import CorruptDataError

if TYPE_CHECKING:
    from tensordict import TensorDict

Out = Literal["numpy", "torch", "cupy", "tensordict"]
#: What sampling gives: a `Batch`, or a `tensordict.TensorDict` for ``out="tensordict"``.
Sampled: TypeAlias = "Batch | TensorDict"

#: Draws a ``skip_corrupt`` sampler (embedded or over HTTP) tries before it gives up.
MAX_REDRAWS = 100


#: One stored frame's bytes: a view into the read that fetched it (the reader copies
#: nothing), or bytes. A view keeps that whole read alive; ``bytes(blob)`` keeps one frame.
Blob = bytes | memoryview


@dataclass(frozen=True)
class NStepArrays:
    """The n-step values of a batch, each (B, L).

    Attributes:
        returns: float32 discounted sums of the next m <= n rewards.
        discount: float32 gamma^m, 0 where the race terminated within those m steps.
        next_steps: int64 step of the bootstrap frame (t + m), in the item's race.
        next_frames: B x L stored bytes of the bootstrap frames (``next_frames=True``).
    """

    returns: npt.NDArray[np.float32]
    discount: npt.NDArray[np.float32]
    next_steps: npt.NDArray[np.int64]
    next_frames: list[list[Blob]] | None = None


@dataclass(frozen=True)
class SampleKeys:
    """Which frames a sampler chose, before any byte is read.

    Attributes:
        race_ids: the race of each item (B).
        steps: (B, L) int64, the step of every frame of each item's window.
        weights: (B,) float32 importance weights (ones unless prioritized).
        probabilities: (B,) float64, the probability with which each item was drawn.
    """

    race_ids: list[str]
    steps: npt.NDArray[np.int64]
    weights: npt.NDArray[np.float32]
    probabilities: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        b = len(self.race_ids)
        if self.steps.ndim != 2 or self.steps.shape[0] != b:
            raise ValueError(f"steps must be ({b}, L), got {self.steps.shape}")
        if self.weights.shape != (b,) or self.probabilities.shape != (b,):
            raise ValueError(f"weights and probabilities must be ({b},)")

    @property
    def batch_size(self) -> int:
        """Items in the batch (B)."""
        return len(self.race_ids)

    @property
    def seq_len(self) -> int:
        """Frames per item (L)."""
        return int(self.steps.shape[1])

    @property
    def keys(self) -> list[tuple[str, int]]:
        """(race id, first step) of each item: the key for `update_priorities`."""
        return [(r, int(s)) for r, s in zip(self.race_ids, self.steps[:, 0].tolist(), strict=True)]


@dataclass(frozen=True)
class FrameFormat:
    """How one race of a batch stores its frames: its codec attributes and frame size."""

    codec: dict[str, Any]
    height: int
    width: int


@dataclass(frozen=True)
class EncodedBatch:
    """A batch as stored: JPEG bytes per frame and the step arrays, not yet decoded.

    Attributes:
        keys: the `SampleKeys` this batch holds.
        frames: B x L stored frames (JPEG bytes for jpeg races) as on disk, CRC32C checked
            and removed by the reader: each a `Blob` (a memoryview from the reader).
        height, width: the frames' size (of the first item's race; see `formats`).
        steps: per-step arrays, each (B, L, ...): action, reward, terminated,
            truncated, t_ns and the extras common to all races of the batch.
        codec: the first item's race's codec attributes (``{"name": "jpeg", ...}``).
        shard_size: frames per shard, to name the shard in errors (0: unknown).
        nstep: n-step returns, discounts, bootstrap steps (and frames) of an ``n_step``
            sampler (`replay.read.nstep`); None otherwise.
        formats: `FrameFormat` per race id when the races of the batch differ in codec
            or frame size (a store holding JPEG and zstd races); empty when they all
            match `codec`, `height` and `width`. Each frame decodes by its race's codec.
    """

    keys: SampleKeys
    frames: list[list[Blob]]
    height: int
    width: int
    steps: dict[str, npt.NDArray[Any]]
    codec: dict[str, Any]
    shard_size: int = 0
    nstep: NStepArrays | None = None
    formats: dict[str, FrameFormat] = field(default_factory=dict)

    def item_formats(self) -> list[FrameFormat]:
        """The `FrameFormat` of each item (B), by its race."""
        first = FrameFormat(self.codec, self.height, self.width)
        return [self.formats.get(r, first) for r in self.keys.race_ids]

    @property
    def nbytes(self) -> int:
        """Bytes of the encoded frames."""
        return sum(len(b) for row in self.frames for b in row)


@dataclass(frozen=True)
class Batch:
    """A decoded batch, ready to train on.

    Attributes:
        frames: (B, L, H, W, 3) uint8, or the transform's layout and dtype; a NumPy
            array, torch tensor or CuPy array as asked.
        keys: (race id, first step) per item, for `update_priorities`.
        weights: (B,) float32 importance weights, same kind and device as `frames`.
        steps: per-step arrays, each (B, L, ...), same kind and device as `frames`.
        returns, discount: (B, L) float32 n-step returns and bootstrap discounts
            (``n_step`` samplers, `replay.read.nstep`; None otherwise).
        next_steps: (B, L) int64 bootstrap step of every step (``n_step``).
        next_frames: the bootstrap frames, shaped like `frames` (``next_frames=True``).
    """

    frames: Any
    keys: list[tuple[str, int]]
    weights: Any
    steps: dict[str, Any] = field(default_factory=dict)
    returns: Any = None
    discount: Any = None
    next_steps: Any = None
    next_frames: Any = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def action(self) -> Any:
        """(B, L, *action_shape) float32 actions."""
        return self.steps["action"]

    @property
    def reward(self) -> Any:
        """(B, L) float32 rewards."""
        return self.steps["reward"]

    @property
    def terminated(self) -> Any:
        """(B, L) bool: the race ended at this step by its own rules."""
        return self.steps["terminated"]

    @property
    def truncated(self) -> Any:
        """(B, L) bool: the race was cut short at this step."""
        return self.steps["truncated"]

    @property
    def t_ns(self) -> Any:
        """(B, L) int64 wall-clock time of each step (ns since the epoch)."""
        return self.steps["t_ns"]

    @property
    def next_keys(self) -> list[tuple[str, int]] | None:
        """(race id, bootstrap step of the first step) per item, as `keys` (``n_step``)."""
        if self.next_steps is None:
            return None
        firsts = self.next_steps[:, 0].tolist()
        return [(r, int(s)) for (r, _), s in zip(self.keys, firsts, strict=True)]

    def pin_memory(self) -> Batch:
        """Page-locked copies of torch tensors (``DataLoader(pin_memory=True)`` calls this)."""

        def pin(value: Any) -> Any:
            return value.pin_memory() if hasattr(value, "is_pinned") else value

        return Batch(
            frames=pin(self.frames),
            keys=self.keys,
            weights=pin(self.weights),
            steps={name: pin(value) for name, value in self.steps.items()},
            returns=pin(self.returns),
            discount=pin(self.discount),
            next_steps=pin(self.next_steps),
            next_frames=pin(self.next_frames),
        )


def corrupt_frame_error(encoded: EncodedBatch, flat_index: int) -> CorruptDataError:
    """The error for frame `flat_index` (row-major over B x L, or B x 2L where the
    bootstrap frames follow each window: `replay.read.nstep.with_next_frames`) of a batch."""
    steps = encoded.keys.steps
    if encoded.nstep is not None and encoded.nstep.next_frames is not None:
        steps = np.concatenate([steps, encoded.nstep.next_steps], axis=1)
    item, pos = divmod(flat_index, steps.shape[1])
    race_id = encoded.keys.race_ids[item]
    step = int(steps[item, pos])
    shard = step // encoded.shard_size if encoded.shard_size else -1
    return CorruptDataError.at(
        race_id, shard, f"frame at step {step} is damaged or does not decode", step
    )
