"""JPEG encode and decode: nvJPEG (through nvImageCodec) on the GPU, libjpeg-turbo on the CPU.

GPU (the `gpu` extra; `replay.codec.nvimgcodec` loads nvImageCodec): batches in device memory,
decoded by the hardware JPEG decoder where the GPU has one (A100, H100, H200), else by
nvJPEG's CUDA backend, which a decoder picks by decoding one frame when it is created
(`JpegDecoder.decoded` counts each backend's frames). CPU: libjpeg-turbo (simplejpeg)
beats nvImageCodec's CPU backend on a 1600x900 frame (encode 1.95 vs 3.2 ms a core,
decode 1.9 vs 2.8 ms, same sizes and PSNR), releases the GIL, decodes into a caller's
buffer, and at 1/2, 1/4 or 1/8 scale in the DCT domain.

``device="auto"`` takes the GPU only when a one-frame round trip on it works (`gpu_check`,
once per process and GPU), else warns once and takes the CPU. `encoder()`/`decoder()` cache
one instance per configuration (a new nvImageCodec one per call leaks: its #22).

    enc = encoder(device="cpu")
    blobs = enc.encode([frame1, frame2], quality=90, subsampling="420")
    frames = decoder(device="cpu").decode(blobs)
    small = decode_host(blobs[0], scale=4)          # (225, 400, 3), a fraction of the cost
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import simplejpeg

from replay.codec.devices import Device, cuda_available, on_device
from replay.codec.nvimgcodec import new_decoder, nvimgcodec, require_nvjpeg
from replay.codec.pixel_order import contiguous
from replay.codec.subsampling import Subsampling
from replay.cpus import usable_cpus

__all__ = [
    "JpegDecoder",
    "JpegEncoder",
    "cuda_available",
    "decode_host",
    "decoder",
    "encoder",
    "nvimgcodec",
    "probe_frame",
]


class JpegEncoder:
    """Batched JPEG encoder; thread-safe.

    On the CPU each image is one libjpeg-turbo call (simplejpeg; 1.95 ms for a
    1600x900 frame where nvImageCodec's CPU backend takes 3.2 ms, the same size and
    PSNR) and `encode` can split a batch over `lanes` threads, one core each (the GIL
    is released). On the GPU nvImageCodec encodes the whole batch with nvJPEG from
    device memory: one lane.
    """

    def __init__(self, device: Device, index: int = 0) -> None:
        self.device = device
        self.index = index
        self._lock = threading.Lock()
        self._streams: list[Any] = []  # CodeStreams reused by every encode (pinned memory)
        if device == "cuda":
            self._nvi = nvimgcodec()
            with on_device(index):
                self._encoder = self._nvi.Encoder(device_id=index)
            self._css = {
                "444": self._nvi.ChromaSubsampling.CSS_444,
                "422": self._nvi.ChromaSubsampling.CSS_422,
                "420": self._nvi.ChromaSubsampling.CSS_420,
            }
        self._pool = ThreadPoolExecutor(self.max_lanes, thread_name_prefix="replay-encode")

    @property
    def max_lanes(self) -> int:
        """How many encodes can run at once (CPU: one per core)."""
        return 1 if self.device == "cuda" else usable_cpus()

    def encode(
        self, images: Sequence[Any], *, quality: int, subsampling: Subsampling, lanes: int = 1
    ) -> list[bytes]:
        """Encode (H, W, 3) uint8 images (NumPy, or CUDA arrays on a cuda encoder),
        split over up to `lanes` cores in parallel."""
        if self.device == "cuda":
            return self._encode_cuda(images, quality, subsampling)
        lanes = max(1, min(lanes, self.max_lanes, len(images)))
        step = -(-len(images) // lanes)
        parts = [images[i : i + step] for i in range(0, len(images), step)]

        def run(part: Sequence[Any]) -> list[bytes]:
            options = {"quality": quality, "colorspace": "RGB", "colorsubsampling": subsampling}
            return [simplejpeg.encode_jpeg(contiguous(image), **options) for image in part]

        if len(parts) == 1:
            return run(parts[0])
        return [blob for part in self._pool.map(run, parts) for blob in part]

    def _encode_cuda(
        self, images: Sequence[Any], quality: int, subsampling: Subsampling
    ) -> list[bytes]:
        import cupy

        params = self._nvi.EncodeParams(
            quality_type=self._nvi.QualityType.QUALITY,
            quality_value=float(quality),
            chroma_subsampling=self._css[subsampling],
        )
        with self._lock, on_device(self.index):
            stream = cupy.cuda.get_current_stream()
            targets = self.code_streams(len(images), _nbytes(images[0]) // 4 if images else 0)
            encoded = self._encoder.encode(
                list(images), "jpeg", code_stream_s=targets, params=params, cuda_stream=stream.ptr
            )
            out = []
            for i, code in enumerate(encoded):
                if code is None:
                    raise RuntimeError(f"nvImageCodec failed to encode image #{i} of the batch")
                out.append(bytes(code))  # copied out: the CodeStream is reused
        return out

    def code_streams(self, n: int, size_hint: int) -> list[Any]:
        """`n` CodeStreams from the pool, growing it: each encode reuses their pinned
        buffers instead of a cudaMallocHost/cudaFreeHost per frame. Call under the lock."""
        while len(self._streams) < n:
            self._streams.append(self._nvi.CodeStream(size_hint, pin_memory=True))
        return self._streams[:n]


def _nbytes(image: Any) -> int:
    return int(np.prod(image.shape)) * int(getattr(image, "itemsize", 1))


def decode_host(
    blob: bytes | memoryview,
    *,
    scale: int = 1,
    grey: bool = False,
    out: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8] | None:
    """Decode one JPEG on the CPU to (ceil(H/scale), ceil(W/scale), 3) uint8 RGB, or
    (..., 1) luma with `grey`.

    `scale` 2, 4 or 8 decodes in the DCT domain (a fraction of a full decode). `grey`
    decodes only the Y channel of a colour JPEG (its BT.601 luma, as encoded: the
    chroma is neither decoded nor upsampled).
    With `out` (C-contiguous, the right shape) the pixels land there and `out`'s
    view is returned. None for a blob that does not decode, or decodes with errors
    libjpeg-turbo could recover from (a truncated frame is damaged, not grey).
    Thread-safe; releases the GIL.
    """
    colorspace = "GRAY" if grey else "RGB"
    try:
        if scale == 1:
            image = simplejpeg.decode_jpeg(blob, colorspace=colorspace, buffer=out)
        else:
            h, w, _, _ = simplejpeg.decode_jpeg_header(blob)
            image = simplejpeg.decode_jpeg(
                blob,
                colorspace=colorspace,
                min_height=h // scale,
                min_width=w // scale,
                min_factor=scale,
                buffer=out,
            )
    except ValueError:
        return None
    return image  # type: ignore[no-any-return]


class JpegDecoder:
    """Batched JPEG decoder to (H, W, 3) uint8 RGB; NumPy on cpu, CuPy on cuda.

    On cuda it needs nvJPEG (GpuCodecError names what did not load, rather than every
    frame failing as if damaged) and decodes with the GPU's hardware JPEG decoder when
    one decodes a probe frame correctly at creation, else with nvJPEG's CUDA backend; a
    frame the hardware decoder refuses is retried on the CUDA backend. Chroma is
    upsampled as libjpeg-turbo does (`DECODER_OPTIONS`), so GPU and CPU decodes agree.
    `backend` names the first choice and `decoded` counts frames by the backend that
    decoded them.
    """

    def __init__(self, device: Device, index: int = 0) -> None:
        self.device = device
        self.index = index
        self._lock = threading.Lock()
        self.decoded: Counter[str] = Counter()
        self.backend = "libjpeg-turbo"
        self._hardware: Any = None
        self._hardware_decoder: Any = None  # kept when `use_backend("cuda")` sets it aside
        if device == "cuda":
            require_nvjpeg()
            with on_device(index):
                self._cuda = new_decoder(["GPU_ONLY", "HYBRID_CPU_GPU"], index)
                self.backend = "cuda"
                try:
                    hardware = new_decoder(["HW_GPU_ONLY"], index)
                    frame = probe_frame()
                    (blob,) = encoder("cpu").encode([frame], quality=90, subsampling="420")
                    (image,) = self._run(hardware, [blob])
                    if image is not None and same_picture(image.cpu(), frame):
                        self._hardware_decoder = hardware
                        self._hardware, self.backend = hardware, "hardware"
                except Exception:  # no hardware decoder on this GPU (RTX cards, T4...)
                    pass

    @property
    def backends(self) -> list[str]:
        """The backends this decoder can use: ["hardware", "cuda"] or ["cuda"] (GPU)."""
        if self.device == "cpu":
            return ["libjpeg-turbo"]
        return ["hardware", "cuda"] if self._hardware_decoder is not None else ["cuda"]

    def use_backend(self, name: str) -> None:
        """Decode with backend `name` (one of `backends`) from now on (benchmarks)."""
        if name not in self.backends:
            raise ValueError(f"backend {name!r} is not available here; available: {self.backends}")
        if self.device == "cuda":
            with self._lock:
                self._hardware = self._hardware_decoder if name == "hardware" else None
                self.backend = name

    def _run(self, decoder: Any, blobs: Sequence[bytes | memoryview]) -> list[Any]:
        """One nvImageCodec decode, synchronized on both sides: the hardware decoder
        is known to write before the caller's stream is done (pytorch/vision #9606),
        so nothing may be pending on the stream when it starts, and its output is
        complete when this returns."""
        import cupy

        stream = cupy.cuda.get_current_stream()
        stream.synchronize()
        # bytes, as nvImageCodec documents its input (the reader hands out memoryviews)
        encoded = [b if isinstance(b, bytes) else bytes(b) for b in blobs]
        images = decoder.decode(encoded, cuda_stream=stream.ptr)
        stream.synchronize()
        return list(images)

    def decode(self, blobs: Sequence[bytes | memoryview]) -> list[Any | None]:
        """Decode each blob; None in place of a blob that does not decode."""
        if self.device == "cpu":
            images = [decode_host(blob) for blob in blobs]
            self.decoded["libjpeg-turbo"] += sum(im is not None for im in images)
            return images
        if not blobs:
            return []
        import cupy

        with self._lock, on_device(self.index):
            first = self._hardware or self._cuda
            images = self._run(first, blobs)
            self.decoded[self.backend] += sum(im is not None for im in images)
            retry = [i for i, im in enumerate(images) if im is None]
            if retry and first is not self._cuda:
                again = self._run(self._cuda, [blobs[i] for i in retry])
                for i, image in zip(retry, again, strict=True):
                    images[i] = image
                self.decoded["cuda"] += sum(im is not None for im in again)
            return [None if image is None else cupy.asarray(image) for image in images]

    def decode_one(self, blob: bytes | memoryview) -> npt.NDArray[np.uint8] | None:
        """Decode one blob to a host array (None if it does not decode)."""
        (image,) = self.decode([blob])
        if image is None or self.device == "cpu":
            return image
        import cupy

        return cupy.asnumpy(image)  # type: ignore[no-any-return]


def encoder(device: Device = "cpu", index: int = 0) -> JpegEncoder:
    """The process-wide encoder for `device` (GPU `index` on cuda)."""
    return _encoder(device, index if device == "cuda" else 0)


def decoder(device: Device = "cpu", index: int = 0) -> JpegDecoder:
    """The process-wide decoder for `device` (GPU `index` on cuda)."""
    return _decoder(device, index if device == "cuda" else 0)


@functools.cache
def _encoder(device: Device, index: int) -> JpegEncoder:
    return JpegEncoder(device, index)


@functools.cache
def _decoder(device: Device, index: int) -> JpegDecoder:
    return JpegDecoder(device, index)


def probe_frame(height: int = 256, width: int = 256) -> npt.NDArray[np.uint8]:
    """A deterministic (height, width, 3) frame with gradients and edges, for round trips."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x ^ y) & 255])
    return np.ascontiguousarray(frame.transpose(1, 2, 0).astype(np.uint8))


def same_picture(decoded: Any, frame: npt.NDArray[np.uint8]) -> bool:
    """True when `decoded` (host array or None) is `frame` after a lossy round trip."""
    if decoded is None or tuple(decoded.shape) != frame.shape:
        return False
    diff = np.abs(np.asarray(decoded, dtype=np.int16) - frame.astype(np.int16))
    return float(diff.mean()) < 4.0
