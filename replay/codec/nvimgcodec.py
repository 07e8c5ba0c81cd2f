"""CUDA devices and nvImageCodec loading: what the GPU path needs before it encodes a frame.

- `cuda_available()`: CuPy is installed and sees a CUDA device.
- `parse_device("cuda:1")`: a device string as ``(kind, index)``; "cuda" is GPU 0.
- `on_device(index)`: make GPU `index` current in this thread. CuPy's current device
  and nvImageCodec's default device are per thread, and a background thread starts
  on GPU 0, so every thread that touches the GPU enters this first.
- `nvimgcodec()`: import nvImageCodec with only the extensions we use, and nvJPEG
  loaded so that its extension finds it; `load_report()` says what loaded and why not.

nvImageCodec picks its backends from the extension libraries in a folder. The wheel's
own folder also holds JPEG 2000 and TIFF extensions whose native libraries are separate
wheels (they print ERROR lines when missing), so we point it at a private folder of
links to the extensions we use. A link breaks one thing: ``libnvjpeg_ext`` finds
``libnvjpeg.so.13`` through ``$ORIGIN/../../cu13/lib``, and the loader takes
``$ORIGIN`` from the link's folder, not the file's. So we load nvJPEG first (ctypes,
``RTLD_GLOBAL``) from where that path points in the real folder; the extension's
``dlopen("libnvjpeg.so.13")`` then finds the library already loaded. The private
folder is named after the real files (path, size, mtime), so a recreated virtual
environment gets a new folder instead of dangling links.

    from replay.codec import nvimgcodec as gpu
    if cuda_available():
        nvi = gpu.nvimgcodec()
        print(gpu.load_report())
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from replay.codec.devices import cuda_available
from replay.errors import GpuCodecError

#: The extensions nvImageCodec may load: libjpeg-turbo (its CPU fallback, and the CPU
#: row of the GPU benchmark) and nvJPEG (hardware and CUDA decode, CUDA encode).
CPU_EXTENSIONS = ("libjpeg_turbo_ext",)
GPU_EXTENSIONS = ("libnvjpeg_ext",)
#: nvJPEG upsamples 4:2:0 chroma by repeating each sample unless asked for "fancy"
#: (interpolating) upsampling, which libjpeg-turbo, the CPU path, does by default. With
#: this option GPU and CPU decodes are one picture up to IDCT rounding; without it they
#: differ on CarRacing frames by p99.9 16 levels, max 111 (docs/benchmarks.md, "GPU").
DECODER_OPTIONS = ":fancy_upsampling=1"
#: What ``libnvjpeg_ext``'s RUNPATH finds from nvImageCodec's extensions folder.
NVJPEG_LIBRARY = ("cu13", "lib", "libnvjpeg.so.13")

_lock = threading.Lock()


@dataclass
class LoadReport:
    """What `nvimgcodec()` did: the folder it used, the extensions in it, nvJPEG's state."""

    folder: str | None = None
    extensions: list[str] = field(default_factory=list)
    nvjpeg: str | None = None  # the loaded libnvjpeg path
    #: why an extension will not work: nvJPEG not found, and nvImageCodec's own ERROR lines
    problems: list[str] = field(default_factory=list)


_report = LoadReport()


def load_report() -> LoadReport:
    """What the last `nvimgcodec()` loaded (empty before the first call)."""
    return _report


def _nvimgcodec_root() -> Path:
    spec = importlib.util.find_spec("nvidia.nvimgcodec")
    if spec is None or spec.origin is None:
        raise ImportError("nvidia-nvimgcodec-cu13 is not installed (pip install 'replay[gpu]')")
    return Path(spec.origin).parent


def nvjpeg_candidates(root: Path) -> list[Path]:
    """Where ``libnvjpeg_ext`` would look for nvJPEG (its ``$ORIGIN/../../cu13/lib``),
    then the same place in every other folder of the ``nvidia`` namespace package."""
    bases = [root.parent]
    spec = importlib.util.find_spec("nvidia")
    if spec is not None and spec.submodule_search_locations is not None:
        bases += [Path(p) for p in spec.submodule_search_locations if Path(p) != root.parent]
    return [base.joinpath(*NVJPEG_LIBRARY) for base in bases]


def preload_nvjpeg(tried: Sequence[Path]) -> tuple[str | None, str | None]:
    """Load the first of `tried` (libnvjpeg paths) globally; (its path, None) or (None, why)."""
    for path in tried:
        if path.is_file():
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                return None, f"libnvjpeg_ext: {path} does not load: {e}"
            return str(path), None
    return None, (
        "libnvjpeg_ext: nvJPEG is not installed (pip install 'nvidia-nvjpeg>=13.2,<14'); "
        f"looked in {', '.join(str(p.parent) for p in tried)}"
    )


def extension_folder(names: Sequence[str], root: Path | None = None) -> Path:
    """A folder of links to the chosen nvImageCodec extensions (made once, shared).

    Its name hashes each real file's path, size and mtime: a recreated or moved
    virtual environment gets a fresh folder, never one of dangling links. A folder
    whose links no longer resolve is rebuilt.
    """
    source = (root or _nvimgcodec_root()) / "extensions"
    files = sorted(p.resolve() for p in source.iterdir() if p.name.split(".so")[0] in names)
    tag = "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    target = (
        Path(tempfile.gettempdir())
        / f"replay-nvimgcodec-{os.getuid()}-{zlib.crc32(tag.encode()):08x}"
    )
    if target.is_dir() and not all(p.exists() for p in target.iterdir()):
        shutil.rmtree(target, ignore_errors=True)  # dangling links: build it again
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        for f in files:
            (staging / f.name).symlink_to(f)
        try:
            staging.rename(target)
        except OSError:  # another process won the race: use its folder
            shutil.rmtree(staging, ignore_errors=True)
    return target


@contextlib.contextmanager
def native_output() -> Iterator[list[str]]:
    """Collect what native code prints to fds 1 and 2 in the block (nvImageCodec prints
    why an extension did not load there); the lines are filled in when the block ends,
    and echoed to stderr as before."""
    lines: list[str] = []
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield lines
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = sink.read()
            if text:
                os.write(2, text)
            lines += [
                re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
                for line in text.decode(errors="replace").splitlines()
            ]


def nvimgcodec(gpu: bool | None = None) -> Any:
    """Import nvImageCodec with only our extensions visible (idempotent).

    `gpu` (default: `cuda_available()`) adds the nvJPEG extension and loads nvJPEG
    for it. The first call in a process decides: nvImageCodec reads its extension
    path once. A `NVIMGCODEC_EXTENSIONS_PATH` set outside replay is respected.
    """
    global _report
    with _lock:
        if _report.folder is None:
            root = _nvimgcodec_root()
            want_gpu = cuda_available() if gpu is None else gpu
            report = LoadReport()
            if want_gpu:
                report.nvjpeg, problem = preload_nvjpeg(nvjpeg_candidates(root))
                if problem:
                    report.problems.append(problem)
            outside = os.environ.get("NVIMGCODEC_EXTENSIONS_PATH")
            if outside is None:
                names = CPU_EXTENSIONS + (GPU_EXTENSIONS if want_gpu else ())
                folder = extension_folder(names, root)
                os.environ["NVIMGCODEC_EXTENSIONS_PATH"] = str(folder)
            else:
                folder = Path(outside)
            report.folder = str(folder)
            if folder.is_dir():
                report.extensions = sorted(p.name.split(".so")[0] for p in folder.iterdir())
            with native_output() as printed:  # extensions load (or fail) on import
                from nvidia import nvimgcodec as module
            report.problems += [line for line in printed if "ERROR" in line]
            _report = report
        from nvidia import nvimgcodec as module

        return module


def new_decoder(backends: Sequence[str], device_id: int) -> Any:
    """An nvImageCodec decoder on `device_id` limited to `backends` (``BackendKind``
    names), upsampling chroma as libjpeg-turbo does (`DECODER_OPTIONS`)."""
    nvi = nvimgcodec()
    return nvi.Decoder(
        device_id=device_id,
        backends=[nvi.Backend(getattr(nvi.BackendKind, name)) for name in backends],
        options=DECODER_OPTIONS,
    )


def require_nvjpeg() -> None:
    """Raise GpuCodecError unless `nvimgcodec()` loaded nvJPEG: without it nvImageCodec
    decodes nothing on the GPU, and every frame would look damaged."""
    nvimgcodec()
    if _report.nvjpeg is None:
        why = "; ".join(_report.problems) or "no CUDA device was visible when it loaded"
        raise GpuCodecError(f"device='cuda' JPEG decode needs nvJPEG, which did not load: {why}")
