"""JPEG encode and decode: nvImageCodec (nvJPEG) on the GPU, libjpeg-turbo on the CPU.

On the GPU, nvImageCodec encodes and decodes batches in device memory (the `gpu`
extra). On the CPU, libjpeg-turbo through simplejpeg beats nvImageCodec's CPU
backend on a 1600x900 frame (encode 1.95 vs 3.2 ms a core, decode 1.9 vs 2.8 ms,
the same sizes and PSNR), releases the GIL so threads work in parallel, decodes
straight into a caller's buffer, and decodes at 1/2, 1/4 or 1/8 scale in the DCT
domain.

nvImageCodec picks its backends from the extension libraries it finds. The bare
wheel ships extensions for JPEG 2000 and TIFF whose native libraries are separate
wheels, and prints ERROR lines when they are missing. We point it at a private
folder that holds only the extensions we use (nvJPEG with CUDA, and libjpeg-turbo
for its CPU fallback and the CPU row of the GPU benchmark), so a user never sees
those lines.

Use `encoder(...)` / `decoder(...)`: they return one cached instance per
configuration for the whole process, because creating an nvImageCodec
Encoder/Decoder per call or per thread leaks memory (nvImageCodec #22).

    enc = encoder(device="cpu")
    blobs = enc.encode([frame1, frame2], quality=90, subsampling="420")
    frames = decoder(device="cpu").decode(blobs)
    small = decode_host(blobs[0], scale=4)          # (225, 400, 3), a fraction of the cost
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import simplejpeg

from replay.cpus import usable_cpus

Device = Literal["cpu", "cuda"]
Subsampling = Literal["444", "422", "420"]

#: Chroma subsampling names and their factors as the Zarr jpeg codec spells them
#: (one ``[h, v]`` pair per component: Y, Cb, Cr).
SUBSAMPLING_FACTORS: dict[Subsampling, list[list[int]]] = {
    "444": [[1, 1], [1, 1], [1, 1]],
    "422": [[2, 1], [1, 1], [1, 1]],
    "420": [[2, 2], [1, 1], [1, 1]],
}

_CPU_EXTENSIONS = ("libjpeg_turbo_ext",)
_GPU_EXTENSIONS = ("libnvjpeg_ext",)
_import_lock = threading.Lock()


def subsampling_from_factors(factors: object) -> Subsampling:
    """The subsampling name for the codec spec's factor list; ValueError if unsupported."""
    for name, value in SUBSAMPLING_FACTORS.items():
        if factors == value or factors == [tuple(p) for p in value]:
            return name
    raise ValueError(
        f"unsupported JPEG chroma subsampling {factors!r}; "
        f"supported: {list(SUBSAMPLING_FACTORS.values())}"
    )


@functools.cache
def cuda_available() -> bool:
    """True when CuPy is installed and sees at least one CUDA device."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # no cupy, no driver, no device: all mean "no GPU here"
        return False


def resolve_device(device: str) -> Device:
    """Map ``"auto"`` to ``"cuda"`` or ``"cpu"``; refuse ``"cuda"`` without a GPU."""
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        if not cuda_available():
            raise RuntimeError("device='cuda' was asked for, but no CUDA device is visible")
        return "cuda"
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")


def _extension_folder(names: Sequence[str]) -> Path:
    """A folder of symlinks to the chosen nvImageCodec extensions (made once, shared)."""
    import importlib.util

    spec = importlib.util.find_spec("nvidia.nvimgcodec")
    if spec is None or spec.origin is None:
        raise ImportError("nvidia-nvimgcodec-cu13 is not installed (pip install 'replay[gpu]')")
    source = Path(spec.origin).parent / "extensions"
    files = sorted(p for p in source.iterdir() if p.name.split(".so")[0] in names)
    tag = "-".join(p.name for p in files).replace(".so", "")
    target = (
        Path(tempfile.gettempdir())
        / f"replay-nvimgcodec-{os.getuid()}-{zlib.crc32(tag.encode()):08x}"
    )
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        for f in files:
            (staging / f.name).symlink_to(f)
        try:
            staging.rename(target)
        except OSError:  # another process won the race: use its folder
            for f in staging.iterdir():
                f.unlink()
            staging.rmdir()
    return target


def nvimgcodec() -> Any:
    """Import nvImageCodec with only our extensions visible (idempotent)."""
    with _import_lock:
        if "NVIMGCODEC_EXTENSIONS_PATH" not in os.environ:
            names = _CPU_EXTENSIONS + (_GPU_EXTENSIONS if cuda_available() else ())
            os.environ["NVIMGCODEC_EXTENSIONS_PATH"] = str(_extension_folder(names))
        from nvidia import nvimgcodec as module

        return module


class JpegEncoder:
    """Batched JPEG encoder; thread-safe.

    On the CPU each image is one libjpeg-turbo call (simplejpeg; 1.95 ms for a
    1600x900 frame where nvImageCodec's CPU backend takes 3.2 ms, the same size and
    PSNR) and `encode` can split a batch over `lanes` threads, one core each (the GIL
    is released). On the GPU nvImageCodec encodes the whole batch with nvJPEG from
    device memory: one lane.
    """

    def __init__(self, device: Device) -> None:
        self.device = device
        self._lock = threading.Lock()
        if device == "cuda":
            self._nvi = nvimgcodec()
            self._encoder = self._nvi.Encoder()
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
            return [
                simplejpeg.encode_jpeg(
                    np.ascontiguousarray(image),
                    quality=quality,
                    colorspace="RGB",
                    colorsubsampling=subsampling,
                )
                for image in part
            ]

        if len(parts) == 1:
            return run(parts[0])
        return [blob for part in self._pool.map(run, parts) for blob in part]

    def _encode_cuda(
        self, images: Sequence[Any], quality: int, subsampling: Subsampling
    ) -> list[bytes]:
        params = self._nvi.EncodeParams(
            quality_type=self._nvi.QualityType.QUALITY,
            quality_value=float(quality),
            chroma_subsampling=self._css[subsampling],
        )
        with self._lock:
            streams = list(self._encoder.encode(list(images), "jpeg", params=params))
        out = []
        for i, stream in enumerate(streams):
            if stream is None:
                raise RuntimeError(f"nvImageCodec failed to encode image #{i} of the batch")
            out.append(bytes(stream))
        return out


def decode_host(
    blob: bytes, *, scale: int = 1, out: npt.NDArray[np.uint8] | None = None
) -> npt.NDArray[np.uint8] | None:
    """Decode one JPEG on the CPU to (ceil(H/scale), ceil(W/scale), 3) uint8 RGB.

    `scale` 2, 4 or 8 decodes in the DCT domain (a fraction of a full decode).
    With `out` (C-contiguous, the right shape) the pixels land there and `out`'s
    view is returned. None for a blob that does not decode, or decodes with errors
    libjpeg-turbo could recover from (a truncated frame is damaged, not grey).
    Thread-safe; releases the GIL.
    """
    try:
        if scale == 1:
            image = simplejpeg.decode_jpeg(blob, colorspace="RGB", buffer=out)
        else:
            h, w, _, _ = simplejpeg.decode_jpeg_header(blob)
            image = simplejpeg.decode_jpeg(
                blob,
                colorspace="RGB",
                min_height=h // scale,
                min_width=w // scale,
                min_factor=scale,
                buffer=out,
            )
    except ValueError:
        return None
    return image  # type: ignore[no-any-return]


class JpegDecoder:
    """Batched JPEG decoder to (H, W, 3) uint8 RGB; NumPy on cpu, CuPy on cuda."""

    def __init__(self, device: Device) -> None:
        self.device = device
        if device == "cuda":
            self._decoder = nvimgcodec().Decoder()
        self._lock = threading.Lock()

    def decode(self, blobs: Sequence[bytes]) -> list[Any | None]:
        """Decode each blob; None in place of a blob that does not decode."""
        if self.device == "cpu":
            return [decode_host(blob) for blob in blobs]
        if not blobs:
            return []
        import cupy

        with self._lock:
            images = self._decoder.decode(list(blobs))
        return [None if image is None else cupy.asarray(image) for image in images]

    def decode_one(self, blob: bytes) -> npt.NDArray[np.uint8] | None:
        """Decode one blob to a host array (None if it does not decode)."""
        (image,) = self.decode([blob])
        if image is None or self.device == "cpu":
            return image
        import cupy

        return cupy.asnumpy(image)  # type: ignore[no-any-return]


@functools.cache
def encoder(device: Device = "cpu") -> JpegEncoder:
    """The process-wide encoder for `device`."""
    return JpegEncoder(device)


@functools.cache
def decoder(device: Device = "cpu") -> JpegDecoder:
    """The process-wide decoder for `device`."""
    return JpegDecoder(device)
