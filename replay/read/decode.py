"""Stored frames to pixels: `decode_batch`, the one decoder of batches.

Embedded samplers and the remote client both decode here, so both give equal
pixels. Frames come out (B, L, H, W, 3) uint8, or the transform's layout and
dtype, on the CPU (libjpeg-turbo on every core, straight into the batch buffer,
at 1/2-1/8 scale in the DCT domain when the transform shrinks frames that much)
or the GPU (nvJPEG into device memory, the transform applied there by one kernel,
`replay.codec.fused`; ``device="cuda:N"`` decodes on GPU N; bfloat16 frames come out as
their uint16 bit patterns, which `make_batch` views as ``torch.bfloat16``).

    batch = decode_batch(encoded, device="cuda", out="torch", transform=t)
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from replay.codec import fused, jpeg
from replay.codec import transform as tf
from replay.codec.devices import device_index, on_device
from replay.codec.frames import FrameCodec, JpegFrames, ZstdFrames, frame_codec
from replay.codec.gpu_check import resolve_device
from replay.codec.transform import Transform
from replay.cpus import usable_cpus
from replay.errors import SamplingError
from replay.read.batch import Blob, EncodedBatch, FrameFormat, Out, Sampled, corrupt_frame_error
from replay.read.nstep import with_next_frames
from replay.read.tensors import make_batch

#: Most frames decoded per nvJPEG call (batched decode is faster; memory bounds it).
DECODE_CHUNK = 16
#: Fewest frames per nvJPEG call, whatever the memory bound says.
MIN_DECODE_CHUNK = 4


def decode_chunk(out_bytes: int, frame_bytes: int) -> int:
    """Frames per nvJPEG call: the decoder's full-size frames of one call stay within a
    fifth of the batch's output (peak device memory <= 1.2x the output for full-size
    batches), between `MIN_DECODE_CHUNK` and `DECODE_CHUNK`."""
    return max(MIN_DECODE_CHUNK, min(DECODE_CHUNK, out_bytes // (5 * max(1, frame_bytes))))


def decode_batch(
    encoded: EncodedBatch,
    *,
    device: str = "cpu",
    out: Out = "numpy",
    transform: Transform | None = None,
) -> Sampled:
    """Decode an `EncodedBatch` into a `Batch` on `device` ("cpu", "cuda" or "auto")
    (with its bootstrap frames, in the same decode, for ``next_frames`` batches).

    Raises `CorruptDataError` naming race, shard and step for a frame that does
    not decode. `out` picks NumPy, torch or CuPy (CuPy needs CUDA).
    """
    frames, failed = decode_frames(with_next_frames(encoded), device=device, transform=transform)
    if failed:
        raise corrupt_frame_error(encoded, failed[0])
    return make_batch(
        encoded.keys, frames, encoded.steps, out=out, transform=transform, nstep=encoded.nstep
    )


def decode_frames(
    encoded: EncodedBatch, *, device: str = "cpu", transform: Transform | None = None
) -> tuple[Any, list[int]]:
    """Decode every frame: ((B, L, *frame shape) array, flat indexes that failed).

    Each frame decodes by its race's codec (a batch may mix JPEG and zstd races);
    races of different frame sizes need a transform with a `size`. Frames that fail
    are left as zeros; the caller raises or redraws them.
    """
    t = transform or Transform()
    dev = resolve_device(device)
    keys = encoded.keys
    blobs = [b for row in encoded.frames for b in row]
    if len(blobs) != keys.batch_size * keys.seq_len:
        raise ValueError(f"{len(blobs)} frames for a {keys.batch_size}x{keys.seq_len} batch")
    groups = _by_format(encoded, keys.seq_len)
    shapes = {t.output_shape(f.height, f.width) for f, _ in groups}
    if len(shapes) > 1:
        sizes = ", ".join(sorted({f"{f.height}x{f.width}" for f, _ in groups}))
        raise SamplingError(f"frames of sizes {sizes} in one batch need a Transform(size=...)")
    shape = shapes.pop()
    if dev == "cuda":
        flat, failed = _decode_cuda(blobs, groups, t, shape, device_index(device))
    else:
        dtype = (
            np.uint8 if t.dtype == "uint8" else np.float16 if t.dtype == "float16" else np.float32
        )
        flat = _host_buffers.get((len(blobs), *shape), np.dtype(dtype))
        failed = [i for f, members in groups for i in _decode_host(blobs, members, f, t, flat)]
    if failed:  # zeros, not a recycled buffer's earlier batch or a transform of black
        flat[failed] = 0
    return flat.reshape(keys.batch_size, keys.seq_len, *shape), sorted(failed)


def _by_format(encoded: EncodedBatch, seq_len: int) -> list[tuple[FrameFormat, list[int]]]:
    """Each frame format of the batch (one for most batches) with its flat frame indexes."""
    if not encoded.formats:  # every race of the batch stores its frames alike
        first = FrameFormat(encoded.codec, encoded.height, encoded.width)
        return [(first, list(range(encoded.keys.batch_size * seq_len)))]
    groups: list[tuple[FrameFormat, list[int]]] = []
    for item, f in enumerate(encoded.item_formats()):
        members = next((m for g, m in groups if g == f), None)
        if members is None:
            groups.append((f, members := []))
        members.extend(range(item * seq_len, (item + 1) * seq_len))
    return groups


# -- host (CPU) decoding -----------------------------------------------------------------


def _decode_host(
    blobs: Sequence[Blob],
    members: list[int],
    f: FrameFormat,
    t: Transform,
    out: npt.NDArray[Any],
) -> list[int]:
    """Decode frames `members` of one format into `out` on every core (libjpeg-turbo and
    zstd release the GIL); the failed indexes.

    One task per run of consecutive frames (`_runs`), not per frame: a JPEG decoded
    at 1/4 scale takes ~0.8 ms, so a per-frame task and transform call would weigh.
    The calling thread decodes the first run itself (one hand-off fewer), and returns
    only once every run is done, so no task writes into `out` after it is handed out.
    """
    plan = _HostPlan(frame_codec(f.codec), f, t)
    first, *rest = _runs(members)
    later = [_pool().submit(plan.decode, blobs, run, out) for run in rest]
    try:
        failed = plan.decode(blobs, first, out)
    finally:
        for future in later:  # every task done (its error, if any, raised below)
            future.exception()
    return failed + [i for future in later for i in future.result()]


def _runs(members: list[int]) -> list[list[int]]:
    """`members` cut into one run per core (fewer, longer runs measured faster than
    two or four per core, or one per frame, on both codecs)."""
    step = -(-len(members) // usable_cpus())
    return [members[i : i + step] for i in range(0, len(members), step)]


class _HostPlan:
    """How one frame format decodes under transform `t` on the CPU.

    JPEG decodes at the DCT scale `t` allows, only its luma for a grey `t`. Where
    that decode is already the output (no transform; or a uint8 resize to exactly
    that scale, with no crop) it lands straight in the batch's slot ("direct");
    otherwise a run's frames decode into a reused scratch stack and `t` runs once
    over the run. A zstd frame decodes straight into its slot without a transform,
    else into a reused frame buffer (kept in cache) that `t` reads at once.
    """

    def __init__(self, codec: FrameCodec, f: FrameFormat, t: Transform) -> None:
        self.codec, self.t = codec, t
        self.jpeg = isinstance(codec, JpegFrames)
        self.scale = t.dct_scale(f.height, f.width) if self.jpeg else 1
        self.luma = self.jpeg and t.grey  # the Y channel only: chroma neither decoded nor used
        h, w = -(-f.height // self.scale), -(-f.width // self.scale)
        self.decoded = (h, w, 1 if self.luma else 3)
        whole = t.crop_box(f.height, f.width) == (0, 0, f.height, f.width)
        self.direct = t.is_identity or (
            self.jpeg
            and whole
            and t.dtype == "uint8"
            and t.output_hw(f.height, f.width) == (h, w)
            and (t.layout == "NHWC" or self.luma)  # one channel: NCHW is NHWC's bytes
        )

    def decode(self, blobs: Sequence[Blob], run: list[int], out: npt.NDArray[Any]) -> list[int]:
        """Decode (and transform) the frames `run` into `out`; those that failed."""
        if self.direct:
            return [i for i in run if not self._decode(blobs[i], out[i].reshape(self.decoded))]
        if not self.jpeg:  # full frames: one at a time, each transformed while in cache
            frame = _scratch((1, *self.decoded))
            failed = []
            for i in run:
                if self._decode(blobs[i], frame[0]):
                    tf.apply(frame, self.t, np, out=out[i : i + 1])
                else:
                    failed.append(i)
            return failed
        stack = _scratch((len(run), *self.decoded))
        failed = [i for j, i in enumerate(run) if not self._decode(blobs[i], stack[j])]
        if run == list(range(run[0], run[-1] + 1)):
            tf.apply(stack, self.t, np, scale=self.scale, out=out[run[0] : run[-1] + 1])
        else:
            out[run] = tf.apply(stack, self.t, np, scale=self.scale)
        return failed

    def _decode(self, blob: Blob, slot: npt.NDArray[np.uint8]) -> bool:
        """One frame into `slot` (its decoded shape); False if it does not decode so."""
        if not self.jpeg:
            return cast(ZstdFrames, self.codec).decode_into(blob, slot)
        image = jpeg.decode_host(blob, scale=self.scale, grey=self.luma, out=slot)
        return image is not None and image.shape == self.decoded


_local = threading.local()


def _scratch(shape: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    """This thread's reused uint8 buffer of `shape` (grown when a larger one is asked)."""
    size = int(np.prod(shape))
    buf: npt.NDArray[np.uint8] | None = getattr(_local, "buf", None)
    if buf is None or buf.size < size:
        buf = _local.buf = np.empty(size, dtype=np.uint8)
    return buf[:size].reshape(shape)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=usable_cpus(), thread_name_prefix="replay-decode")


class _HostBuffers:
    """Recycles output buffers once nothing outside the pool refers to them.

    A fresh 276 MB buffer per batch of 64 full frames costs its page faults on
    every batch; a buffer is handed out again only when no array, view or tensor
    made from it is alive (CPython reference count), so a batch a caller still
    holds is never overwritten. The last `keep` buffers are kept: a loop that holds
    its batch while the next one decodes needs two of one shape; four let up to four
    shapes take turns (a learner and its evaluation; the benchmark's interleaved
    transform rows) without a fresh buffer each turn.
    """

    def __init__(self, keep: int = 4) -> None:
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
    blobs: Sequence[Blob],
    groups: list[tuple[FrameFormat, list[int]]],
    t: Transform,
    shape: tuple[int, ...],
    index: int,
) -> tuple[Any, list[int]]:
    """Decode on GPU `index` and transform each frame with one kernel (`replay.codec.fused`)
    straight from the decoder's output into the batch; the failed indexes.

    The batch is allocated by torch when torch is installed (its caching allocator
    can reuse the memory for the model; CuPy's pool would keep it) and by CuPy
    otherwise. The stream is synchronized before returning, so a batch decoded in a
    prefetch thread is complete when another thread's stream reads it.
    """
    import cupy

    with on_device(index):
        flat = _device_buffer((len(blobs), *shape), fused.output_dtype(t), index)
        failed: list[int] = []
        for f, members in groups:
            failed += _decode_cuda_format(blobs, members, f, t, index, flat)
        cupy.cuda.get_current_stream().synchronize()
    return flat, sorted(failed)


def _decode_cuda_format(
    blobs: Sequence[Blob], members: list[int], f: FrameFormat, t: Transform, index: int, flat: Any
) -> list[int]:
    """Decode frames `members` of one format into `flat` (nvJPEG for JPEG, zstd on the
    host); the failed indexes."""
    import cupy

    h, w = f.height, f.width
    codec = frame_codec(f.codec)
    gpu_jpeg = isinstance(codec, JpegFrames)
    failed: list[int] = []
    step = decode_chunk(flat.nbytes, h * w * 3)
    for start in range(0, len(members), step):
        at = members[start : start + step]
        chunk = [blobs[i] for i in at]
        if gpu_jpeg:
            images = jpeg.decoder("cuda", index).decode(chunk)
        else:
            host = [codec.decode(b, h, w) for b in chunk]
            images = [None if a is None else cupy.asarray(a) for a in host]
        good = [im is not None and tuple(im.shape) == (h, w, 3) for im in images]
        if gpu_jpeg:
            _confirm_blank(images, chunk, good)
        for i, image, ok in zip(at, images, good, strict=True):
            if ok and image is not None:
                fused.fused(image[None], t, out=flat[i : i + 1])
        failed += [i for i, ok in zip(at, good, strict=True) if not ok]
    return failed


def _device_buffer(shape: tuple[int, ...], dtype: np.dtype[Any], index: int) -> Any:
    """An uninitialised CuPy array on GPU `index`, its memory from torch when available."""
    import cupy

    try:
        import torch
    except ImportError:
        return cupy.empty(shape, dtype=dtype)
    # uint8, uint16 (bfloat16 bits), float16, float32: torch has each under NumPy's name
    tensor = torch.empty(shape, dtype=getattr(torch, dtype.name), device=f"cuda:{index}")
    return cupy.from_dlpack(tensor)


def _confirm_blank(images: list[Any], blobs: Sequence[Blob], good: list[bool]) -> None:
    """Re-decode on the CPU the frames the GPU decoded as all zeros (a known failure mode
    of hardware decode on some inputs); one host sync for the chunk."""
    import cupy

    checked = [j for j, ok in enumerate(good) if ok]
    if not checked:
        return
    peaks = cupy.stack([images[j].max() for j in checked]).get().tolist()
    for j, peak in zip(checked, peaks, strict=True):
        if peak == 0:
            image = jpeg.decoder("cpu").decode_one(blobs[j])
            if image is None:
                good[j] = False
            else:
                images[j] = cupy.asarray(image)
