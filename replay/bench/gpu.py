"""GPU micro-benchmarks (needs CUDA and CuPy): the codec and transform figures of the
benchmark issue, on real frames.

- encode frames/s from device memory, by batch size (nvJPEG through nvImageCodec);
- decode frames/s into device memory with the hardware decoder, the CUDA ("hybrid")
  decoder and the CPU, each checked for failed or all-zero images (a known failure
  mode of hardware decode on some inputs);
- the uint8 -> float32 NCHW normalized transform, microseconds per frame, as one
  kernel (`replay.codec.fused`; target 20 us per 1600x900 frame, the reference hand-written
  kernel took 400 us) and as the multi-kernel CuPy path of `replay.codec.transform.apply`;
- device memory held by CuPy's pool afterwards.

    replay bench gpu --frames-from ./replay-data --out docs/results/gpu-h100.json
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.codec import jpeg
from replay.codec import transform as tf
from replay.codec.devices import cuda_available
from replay.codec.nvimgcodec import new_decoder, nvimgcodec

Frame = npt.NDArray[np.uint8]
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
DECODE_BACKENDS = ("HW_GPU_ONLY", "GPU_ONLY", "HYBRID_CPU_GPU", "CPU_ONLY")
#: The transform figures, microseconds per frame: one fused kernel, the CuPy path.
TRANSFORM_FIGURES = ("fused_us_per_frame", "multi_kernel_us_per_frame")


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else 0.0


def _encode_sweep(frames: Sequence[Any], repeats: int) -> list[dict[str, float]]:
    import cupy

    encoder = jpeg.encoder("cuda")
    rows = []
    for batch in BATCH_SIZES:
        chunk = [frames[i % len(frames)] for i in range(batch)]
        encoder.encode(chunk, quality=90, subsampling="420")  # warm-up
        cupy.cuda.get_current_stream().synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            encoder.encode(chunk, quality=90, subsampling="420")
        rows.append(
            {"batch": batch, "frames_per_s": _rate(batch * repeats, time.perf_counter() - start)}
        )
    return rows


def _decode_backends(blobs: list[bytes], repeats: int) -> list[dict[str, Any]]:
    import cupy

    nvi = nvimgcodec()
    rows: list[dict[str, Any]] = []
    for name in DECODE_BACKENDS:
        device = nvi.NVIMGCODEC_DEVICE_CPU_ONLY if name == "CPU_ONLY" else 0
        try:
            decoder = new_decoder([name], device)
            images = decoder.decode(blobs)  # warm-up, and the correctness check
        except Exception as e:  # a backend this GPU or driver lacks
            rows.append({"backend": name, "error": f"{type(e).__name__}: {e}"})
            continue
        failed = sum(im is None for im in images)
        if failed == len(images):  # e.g. HW_GPU_ONLY on a GPU without a JPEG decoder
            rows.append({"backend": name, "error": f"decoded none of {failed} frames"})
            continue
        blank = sum(1 for im in images if im is not None and not np.asarray(im.cpu()).any())
        start = time.perf_counter()
        for _ in range(repeats):
            decoder.decode(blobs)
        cupy.cuda.Device().synchronize()
        rows.append(
            {
                "backend": name,
                "frames_per_s": _rate(len(blobs) * repeats, time.perf_counter() - start),
                "failed": failed,
                "all_zero": blank,
            }
        )
    return rows


def _transform_us(frames: Sequence[Frame], repeats: int) -> dict[str, float]:
    import cupy

    from replay.codec import fused

    batch = cupy.asarray(np.stack(frames))
    t = tf.Transform(dtype="float32", layout="NCHW", mean=0.5, std=0.25)
    out = cupy.empty((len(frames), *t.output_shape(*batch.shape[1:3])), dtype=cupy.float32)
    figures = {"frames": float(len(frames))}

    def one_kernel() -> Any:
        return fused.fused(batch, t, out=out)

    def multi_kernel() -> Any:
        return tf.apply(batch, t, cupy)

    for name, run in zip(TRANSFORM_FIGURES, (one_kernel, multi_kernel), strict=True):
        run()  # compile and warm up
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        cupy.cuda.Device().synchronize()
        figures[name] = (time.perf_counter() - start) / (repeats * len(frames)) * 1e6
    return figures


def run_gpu_bench(frames: Sequence[Frame], repeats: int = 10) -> dict[str, Any]:
    """All GPU figures on `frames` (host arrays; uploaded once). Needs CUDA."""
    if not cuda_available():
        raise RuntimeError("the GPU benchmark needs CuPy and a CUDA device")
    import cupy

    device_frames = [cupy.asarray(f) for f in frames]
    blobs = jpeg.encoder("cpu").encode(list(frames), quality=90, subsampling="420")
    blobs = [blobs[i % len(blobs)] for i in range(64)]
    props = cupy.cuda.runtime.getDeviceProperties(0)
    results = {
        "gpu": props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"]),
        "encode_by_batch": _encode_sweep(device_frames, repeats),
        "decode_batch_64": _decode_backends(blobs, repeats),
        "transform_uint8_to_float32_nchw": _transform_us(frames[:16], repeats),
        "decoder_backends": jpeg.decoder("cuda").backends,
    }
    pool = cupy.get_default_memory_pool()
    results["cupy_pool_mb"] = {"used": pool.used_bytes() / 1e6, "total": pool.total_bytes() / 1e6}
    return results
