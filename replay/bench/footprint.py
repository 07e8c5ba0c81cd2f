"""Footprint benchmark: disk bytes per frame, compression and fidelity per quality setting.

For each JPEG quality and chroma subsampling, the real frames are encoded exactly as
the writer does (nvImageCodec) and decoded back; we report bytes/frame, the ratio
to raw RGB, PSNR and SSIM. For the two codecs a race can store (`codecs`: JPEG at the
default quality 90, 4:2:0, and lossless zstd), bytes/frame and the time to decode one
frame on one core, as a sampler does, with zstd's ratios to JPEG from the same run.
SSIM is computed on luma with a 7x7 uniform window (scikit-image's default), in
NumPy, so the suite needs no image library.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.codec import jpeg
from replay.codec.frames import frame_codec
from replay.codec.subsampling import Subsampling

QUALITIES = (50, 70, 80, 90, 95)
SUBSAMPLINGS: tuple[Subsampling, ...] = ("420", "444")


def psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _box(x: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.float64]:
    """Mean over k x k windows (valid region), by summed-area tables."""
    s = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    mean: npt.NDArray[np.float64] = (s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]) / (k * k)
    return mean


def ssim(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], k: int = 7) -> float:
    """Structural similarity of the luma of two RGB images (1.0 = identical)."""
    weights = np.array([0.299, 0.587, 0.114])
    x = a.astype(np.float64) @ weights
    y = b.astype(np.float64) @ weights
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _box(x, k), _box(y, k)
    n = k * k
    cov = n / (n - 1)  # sample covariance, as scikit-image
    vx = cov * (_box(x * x, k) - mx * mx)
    vy = cov * (_box(y * y, k) - my * my)
    vxy = cov * (_box(x * y, k) - mx * my)
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def run_footprint_bench(
    frames: Sequence[npt.NDArray[np.uint8]],
    qualities: Sequence[int] = QUALITIES,
    subsamplings: Sequence[Subsampling] = SUBSAMPLINGS,
) -> dict[str, Any]:
    """Size and fidelity of every (quality, subsampling) on `frames`."""
    encoder, decoder = jpeg.encoder("cpu"), jpeg.decoder("cpu")
    raw = frames[0].nbytes
    rows = []
    for sub in subsamplings:
        for q in qualities:
            blobs = encoder.encode(list(frames), quality=q, subsampling=sub)
            decoded = decoder.decode(blobs)
            images = [d for d in decoded if d is not None]
            if len(images) != len(frames):
                raise RuntimeError(f"q{q} {sub}: {len(frames) - len(images)} frames did not decode")
            nbytes = float(np.mean([len(b) for b in blobs]))
            rows.append(
                {
                    "quality": q,
                    "subsampling": sub,
                    "bytes_per_frame": nbytes,
                    "compression": raw / nbytes,
                    "psnr_db": float(
                        np.mean([psnr(f, d) for f, d in zip(frames, images, strict=True)])
                    ),
                    "psnr_min_db": min(psnr(f, d) for f, d in zip(frames, images, strict=True)),
                    "ssim": float(
                        np.mean([ssim(f, d) for f, d in zip(frames, images, strict=True)])
                    ),
                }
            )
    return {
        "frames": len(frames),
        "raw_bytes_per_frame": raw,
        "settings": rows,
        "codecs": stored_codecs(frames),
    }


#: The codecs a race can store, as `Store.new_race` writes them by default.
STORED_CODECS = {
    "jpeg": {"name": "jpeg", "quality": 90, "subsampling": "420"},
    "zstd": {"name": "zstd", "level": 3},
}


def stored_codecs(frames: Sequence[npt.NDArray[np.uint8]], repeats: int = 3) -> dict[str, Any]:
    """Bytes/frame and one-core decode ms/frame (the best of `repeats` passes) per codec."""
    h, w = frames[0].shape[:2]
    out: dict[str, Any] = {}
    for name, attrs in STORED_CODECS.items():
        codec = frame_codec(attrs)
        blobs = codec.encode(list(frames))
        passes = []
        for _ in range(repeats):
            started = time.perf_counter()
            for blob in blobs:
                codec.decode(blob, h, w)
            passes.append((time.perf_counter() - started) / len(blobs))
        nbytes = float(np.mean([len(b) for b in blobs]))
        out[name] = {
            "bytes_per_frame": nbytes,
            "compression": frames[0].nbytes / nbytes,
            "decode_ms": min(passes) * 1e3,
        }
    out["zstd_over_jpeg"] = {
        "bytes": out["zstd"]["bytes_per_frame"] / out["jpeg"]["bytes_per_frame"],
        "decode_time": out["zstd"]["decode_ms"] / out["jpeg"]["decode_ms"],
    }
    return out
