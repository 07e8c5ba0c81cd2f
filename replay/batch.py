"""What a sampler hands out: keys, encoded batches, decoded batches.

Sampling runs in three steps, each with its own value type, so the service can
stop after the second and let its client do the third on its own GPU:

    keys = sampler.sample_keys()          # SampleKeys: which (race, steps), weights
    encoded = sampler.fetch(keys)         # EncodedBatch: the stored JPEG bytes + step arrays
    batch = decode_batch(encoded, device="cuda", out="torch", transform=t)   # Batch

`decode_batch` is the one decoder of batches, embedded or remote, so both give
equal pixels. Frames come out (B, L, H, W, 3) uint8 (or the transform's layout
and dtype) as NumPy, torch (zero-copy from NumPy / DLPack from CuPy) or CuPy.
"""

from __future__ import annotations

import functools
import io
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from replay import jpeg
from replay import transform as tf
from replay.errors import CorruptDataError
from replay.transform import Transform

Out = Literal["numpy", "torch", "cupy"]
#: Frames decoded per nvImageCodec call: bounds the decoder's own buffers.
DECODE_CHUNK = 16


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
class EncodedBatch:
    """A batch as stored: JPEG bytes per frame and the step arrays, not yet decoded.

    Attributes:
        keys: the `SampleKeys` this batch holds.
        frames: B x L stored frames (JPEG bytes for jpeg races), as on disk, CRC32C checked
            and removed by the reader.
        height, width: the frames' size (all races of a batch share it).
        steps: per-step arrays, each (B, L, ...): action, reward, terminated,
            truncated, t_ns and the extras common to all races of the batch.
        codec: the races' codec attributes (``{"name": "jpeg", "quality": 90, ...}``).
        shard_size: frames per shard, to name the shard in errors (0: unknown).
    """

    keys: SampleKeys
    frames: list[list[bytes]]
    height: int
    width: int
    steps: dict[str, npt.NDArray[Any]]
    codec: dict[str, Any]
    shard_size: int = 0

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
    """

    frames: Any
    keys: list[tuple[str, int]]
    weights: Any
    steps: dict[str, Any] = field(default_factory=dict)

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

    def pin_memory(self) -> Batch:
        """Page-locked copies of torch tensors (``DataLoader(pin_memory=True)`` calls this)."""

        def pin(value: Any) -> Any:
            return value.pin_memory() if hasattr(value, "is_pinned") else value

        return Batch(
            frames=pin(self.frames),
            keys=self.keys,
            weights=pin(self.weights),
            steps={name: pin(value) for name, value in self.steps.items()},
        )


def decode_batch(
    encoded: EncodedBatch,
    *,
    device: str = "cpu",
    out: Out = "numpy",
    transform: Transform | None = None,
) -> Batch:
    """Decode an `EncodedBatch` into a `Batch` on `device` ("cpu", "cuda" or "auto").

    Raises `CorruptDataError` naming race, shard and step for a frame that does
    not decode. `out` picks NumPy, torch or CuPy (CuPy needs CUDA).
    """
    frames, failed = decode_frames(encoded, device=device, transform=transform)
    if failed:
        raise corrupt_frame_error(encoded, failed[0])
    return make_batch(encoded.keys, frames, encoded.steps, out=out, transform=transform)


def corrupt_frame_error(encoded: EncodedBatch, flat_index: int) -> CorruptDataError:
    """The error for frame `flat_index` (row-major over B x L) of a batch."""
    item, pos = divmod(flat_index, encoded.keys.seq_len)
    race_id = encoded.keys.race_ids[item]
    step = int(encoded.keys.steps[item, pos])
    shard = step // encoded.shard_size if encoded.shard_size else -1
    return CorruptDataError(
        f"race {race_id}, shard {shard}: frame at step {step} is damaged or does not decode",
        race_id=race_id,
        shard=shard,
        step=step,
    )


def decode_frames(
    encoded: EncodedBatch, *, device: str = "cpu", transform: Transform | None = None
) -> tuple[Any, list[int]]:
    """Decode every frame: ((B, L, *frame shape) array, flat indexes that failed).

    Frames that fail are left as zeros; the caller raises or redraws them.
    """
    t = transform or Transform()
    dev = jpeg.resolve_device(device)
    keys = encoded.keys
    blobs = [b for row in encoded.frames for b in row]
    if len(blobs) != keys.batch_size * keys.seq_len:
        raise ValueError(f"{len(blobs)} frames for a {keys.batch_size}x{keys.seq_len} batch")
    h, w = encoded.height, encoded.width
    shape = t.output_shape(h, w)
    dtype = np.uint8 if t.dtype == "uint8" else np.float16 if t.dtype == "float16" else np.float32
    if dev == "cuda":
        flat, failed = _decode_cuda(blobs, encoded, t, shape, dtype)
    else:
        flat = _host_buffers.get((len(blobs), *shape), np.dtype(dtype))
        failed = _decode_host(blobs, encoded, t, flat)
    if failed:  # zeros, not a recycled buffer's earlier batch or a transform of black
        flat[failed] = 0
    return flat.reshape(keys.batch_size, keys.seq_len, *shape), failed


def make_batch(
    keys: SampleKeys,
    frames: Any,
    steps: dict[str, npt.NDArray[Any]],
    *,
    out: Out,
    transform: Transform | None,
) -> Batch:
    """Wrap decoded frames and host step arrays as a `Batch` of kind `out`."""
    on_cuda = not isinstance(frames, np.ndarray)
    if out not in ("numpy", "torch", "cupy"):
        raise ValueError(f"out must be 'numpy', 'torch' or 'cupy', not {out!r}")
    bf16 = transform is not None and transform.dtype == "bfloat16"
    if bf16 and out != "torch":
        raise ValueError("dtype='bfloat16' needs out='torch' (NumPy and CuPy have no bfloat16)")
    convert = _converter(out, on_cuda)
    frames_out = convert(frames)
    if bf16:
        frames_out = frames_out.bfloat16()
    return Batch(
        frames=frames_out,
        keys=keys.keys,
        weights=convert(keys.weights),
        steps={name: convert(value) for name, value in steps.items()},
    )


def _converter(out: Out, on_cuda: bool) -> Callable[[Any], Any]:
    if out == "numpy":
        if not on_cuda:
            return lambda a: a
        import cupy

        return lambda a: a if isinstance(a, np.ndarray) else cupy.asnumpy(a)
    if out == "torch":
        import torch

        if not on_cuda:
            from_numpy: Callable[[Any], Any] = torch.from_numpy
            return from_numpy
        from torch.utils.dlpack import from_dlpack

        return lambda a: (
            torch.as_tensor(a, device="cuda") if isinstance(a, np.ndarray) else from_dlpack(a)
        )
    import cupy

    asarray: Callable[[Any], Any] = cupy.asarray  # uploads host arrays; no-op for CuPy ones
    return asarray


# -- host (CPU) decoding -----------------------------------------------------------------


def _decode_host(
    blobs: Sequence[bytes], encoded: EncodedBatch, t: Transform, out: npt.NDArray[Any]
) -> list[int]:
    h, w = encoded.height, encoded.width
    codec = encoded.codec.get("name", "jpeg")
    scale = t.dct_scale(h, w) if codec == "jpeg" else 1
    pool = _pool()
    identity = t.is_identity

    def store(i: int, image: npt.NDArray[np.uint8] | None, at_scale: int) -> bool:
        expect = (-(-h // at_scale), -(-w // at_scale), 3)
        if image is None or image.shape != expect:
            return False
        if identity:
            out[i] = image
        else:
            out[i] = tf.apply(image[None], t, np, scale=at_scale)[0]
        return True

    if codec != "jpeg" or scale > 1:
        decode_one = _pil_decoder(scale) if codec == "jpeg" else zstd_frame_decoder(h, w)
        ok = list(pool.map(lambda i: store(i, decode_one(blobs[i]), scale), range(len(blobs))))
        return [i for i, good in enumerate(ok) if not good]
    failed = []
    decoder = host_decoder()
    for start in range(0, len(blobs), DECODE_CHUNK):
        chunk = list(range(start, min(start + DECODE_CHUNK, len(blobs))))
        with decoder.decode([blobs[i] for i in chunk]) as images:
            if identity:  # a plain copy: memory bound, threads would not help
                ok = [store(i, im, 1) for i, im in zip(chunk, images, strict=True)]
            else:
                ok = list(pool.map(lambda p: store(p[0], p[1], 1), zip(chunk, images, strict=True)))
        failed += [i for i, good in zip(chunk, ok, strict=True) if not good]
    return failed


class HostDecoder:
    """nvImageCodec's CPU decoder, reusing its output images between calls.

    Reusing the decoded images' buffers (instead of allocating 4 MB per frame per
    call) roughly doubles throughput on a 2-core machine. One per process
    (`host_decoder`); calls are serialised.
    """

    def __init__(self) -> None:
        nvi = jpeg.nvimgcodec()
        self._decoder = nvi.Decoder(
            device_id=nvi.NVIMGCODEC_DEVICE_CPU_ONLY,
            backends=[nvi.Backend(nvi.BackendKind.CPU_ONLY)],
        )
        self._lock = threading.Lock()
        self._images: list[Any] = []

    def decode(self, blobs: Sequence[bytes]) -> _Decoded:
        """Decode; use the result as a context manager and copy out inside it."""
        self._lock.acquire()
        try:
            n = len(blobs)
            reuse = self._images[:n] if len(self._images) >= n else None
            images = self._decoder.decode(list(blobs), images=reuse) if reuse else None
            if images is None:
                images = self._decoder.decode(list(blobs))
            if len(images) > len(self._images) and all(im is not None for im in images):
                self._images = list(images)
            arrays = [None if im is None else np.asarray(im.cpu()) for im in images]
        except BaseException:
            self._lock.release()
            raise
        return _Decoded(arrays, self._lock)


class _Decoded:
    def __init__(self, arrays: list[npt.NDArray[np.uint8] | None], lock: threading.Lock) -> None:
        self.arrays = arrays
        self._lock = lock

    def __enter__(self) -> list[npt.NDArray[np.uint8] | None]:
        return self.arrays

    def __exit__(self, *exc: object) -> None:
        self.arrays = []
        self._lock.release()


@functools.cache
def host_decoder() -> HostDecoder:
    """The process-wide `HostDecoder`."""
    return HostDecoder()


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="replay-decode")


def _pil_decoder(scale: int) -> Callable[[bytes], npt.NDArray[np.uint8] | None]:
    from PIL import Image

    def decode(blob: bytes) -> npt.NDArray[np.uint8] | None:
        try:
            with Image.open(io.BytesIO(blob)) as im:
                if scale > 1:
                    im.draft("RGB", (-(-im.width // scale), -(-im.height // scale)))
                return np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError):
            return None

    return decode


def zstd_frame_decoder(h: int, w: int) -> Callable[[bytes], npt.NDArray[np.uint8] | None]:
    """A decoder of a lossless (zstd) race's stored (h, w, 3) frames; None for a bad one."""
    from numcodecs import Zstd

    def decode(blob: bytes) -> npt.NDArray[np.uint8] | None:
        try:
            return np.frombuffer(Zstd().decode(blob), dtype=np.uint8).reshape(h, w, 3)
        except (RuntimeError, ValueError):
            return None

    return decode


class _HostBuffers:
    """Recycles output buffers once nothing outside the pool refers to them.

    A fresh 276 MB buffer per batch of 64 full frames costs its page faults on
    every batch; a buffer is handed out again only when no array, view or tensor
    made from it is alive (CPython reference count), so a batch a caller still
    holds is never overwritten.
    """

    def __init__(self, keep: int = 2) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._free: list[npt.NDArray[Any]] = []

    def get(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        """A buffer of this shape and dtype that nothing else refers to."""
        with self._lock:
            for i in range(len(self._free)):
                # unused: referred to only by the list (and getrefcount's argument)
                free = sys.getrefcount(self._free[i]) == 2
                if free and self._free[i].shape == shape and self._free[i].dtype == dtype:
                    buf = self._free.pop(i)
                    break
            else:
                buf = np.empty(shape, dtype=dtype)
            self._free.append(buf)
            if len(self._free) > self._keep:
                self._free.pop(0)
            return buf


_host_buffers = _HostBuffers()


# -- CUDA decoding -----------------------------------------------------------------------


def _decode_cuda(
    blobs: Sequence[bytes],
    encoded: EncodedBatch,
    t: Transform,
    shape: tuple[int, ...],
    dtype: type[np.generic],
) -> tuple[Any, list[int]]:
    import cupy

    h, w = encoded.height, encoded.width
    flat = cupy.empty((len(blobs), *shape), dtype=dtype)
    failed: list[int] = []
    codec = encoded.codec.get("name", "jpeg")
    for start in range(0, len(blobs), DECODE_CHUNK):
        chunk = blobs[start : start + DECODE_CHUNK]
        if codec == "jpeg":
            images = jpeg.decoder("cuda").decode(chunk)
        else:
            zstd = zstd_frame_decoder(h, w)
            images = [None if (a := zstd(b)) is None else cupy.asarray(a) for b in chunk]
        good = [im is not None and tuple(im.shape) == (h, w, 3) for im in images]
        stacked = cupy.stack(
            [
                im if ok else cupy.zeros((h, w, 3), cupy.uint8)
                for im, ok in zip(images, good, strict=True)
            ]
        )
        if codec == "jpeg":
            _confirm_blank(stacked, chunk, good)
        flat[start : start + len(chunk)] = stacked if t.is_identity else tf.apply(stacked, t, cupy)
        failed += [start + j for j, ok in enumerate(good) if not ok]
    return flat, failed


def _confirm_blank(stacked: Any, blobs: Sequence[bytes], good: list[bool]) -> None:
    """Re-decode on the CPU the frames the GPU decoded as all zeros (a known failure mode)."""
    import cupy

    blank = cupy.asnumpy(stacked.reshape(len(blobs), -1).max(axis=1) == 0).tolist()
    for j, is_blank in enumerate(blank):
        if is_blank and good[j]:
            image = jpeg.decoder("cpu").decode_one(blobs[j])
            if image is None:
                good[j] = False
            else:
                stacked[j] = cupy.asarray(image)
