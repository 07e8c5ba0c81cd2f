"""`replay doctor`: what this machine can do, checked by doing it.

It reports Python and package versions; CUDA devices and driver; which nvImageCodec
extensions loaded and, if one did not, why; whether each JPEG backend works, each by a
one-frame round trip (CPU libjpeg-turbo, nvJPEG CUDA encode, the hardware JPEG decoder,
nvJPEG's CUDA decoder, the fused transform kernel); and which path ``device="auto"``
takes. It exits 1 when that path does not work. Run it first on a new machine:

    replay doctor            # a readable report
    replay doctor --json     # the same as JSON (what scripts/gpu-run records)

A backend that does not apply (no GPU) is reported as skipped with the reason, not
as a failure: a CPU-only machine is healthy when its CPU path works.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from replay.codec import jpeg
from replay.codec import nvimgcodec as gpu
from replay.codec.devices import on_device
from replay.codec.gpu_check import GpuCheck, gpu_check

#: Distributions whose versions the report lists (the first cupy one found is shown).
PACKAGES = (
    "replay",
    "numpy",
    "zarr",
    "numcodecs",
    "simplejpeg",
    "nvidia-nvimgcodec-cu13",
    "nvidia-nvjpeg",
    "cupy-cuda13x",
    "cupy-cuda12x",
    "cupy",
    "torch",
)

#: One folder per NVIDIA GPU the kernel driver found (whether or not CuPy is installed).
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")
#: What to install for the GPU paths: said once, and only on a machine with a GPU.
GPU_EXTRA = "pip install 'replay[gpu]'"
NO_CUPY = "CuPy is not installed"


@dataclass(frozen=True)
class Check:
    """One backend's round trip: ok True/False, or None when it does not apply here."""

    name: str
    ok: bool | None
    detail: str


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def packages() -> dict[str, str | None]:
    """Installed versions (None: not installed); cupy variants only when present."""
    found = {name: _version(name) for name in PACKAGES}
    return {k: v for k, v in found.items() if v is not None or not k.startswith("cupy")}


def cuda_report() -> dict[str, Any]:
    """CUDA driver, runtime and devices as CuPy sees them, or why it sees none."""
    try:
        import cupy
    except ImportError:
        return {"available": False, "reason": NO_CUPY}
    try:
        runtime = cupy.cuda.runtime
        count = int(runtime.getDeviceCount())
        devices = []
        for i in range(count):
            props = runtime.getDeviceProperties(i)
            name = props["name"]
            devices.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_gb": round(props["totalGlobalMem"] / 1e9, 1),
                    "compute_capability": f"{props['major']}.{props['minor']}",
                }
            )
        report: dict[str, Any] = {
            "available": count > 0,
            "driver": runtime.driverGetVersion(),
            "runtime": runtime.runtimeGetVersion(),
            "devices": devices,
        }
        if not count:
            report["reason"] = "the CUDA driver sees no device"
        return report
    except Exception as e:  # no driver, driver too old, no device
        return {"available": False, "reason": f"CuPy finds no usable GPU: {type(e).__name__}: {e}"}


def nvimgcodec_report(with_gpu: bool) -> dict[str, Any]:
    """nvImageCodec's version, the extensions loaded, nvJPEG's state and the problems."""
    version = _version("nvidia-nvimgcodec-cu13")
    if version is None:
        return {"installed": False, "reason": "no nvidia-nvimgcodec-cu13 package"}
    report: dict[str, Any] = {"installed": True, "version": version}
    try:
        gpu.nvimgcodec()
    except Exception as e:
        report["error"] = f"{type(e).__name__}: {e}"
        return report
    loaded = gpu.load_report()
    report.update(folder=loaded.folder, extensions=loaded.extensions, problems=loaded.problems)
    if with_gpu:
        report["nvjpeg"] = loaded.nvjpeg
    else:  # nvJPEG is only loaded for a GPU; say whether it would load
        root = gpu._nvimgcodec_root()
        path, problem = gpu.preload_nvjpeg(gpu.nvjpeg_candidates(root))
        report["nvjpeg"] = path
        report["unused"] = "libnvjpeg_ext: not loaded, no CUDA device"
        if problem:
            report["problems"] = [*loaded.problems, problem]
    return report


class Absent(RuntimeError):
    """What a check raises when the part it checks does not exist here (the hardware
    JPEG decoder of an RTX card or a T4): the check is skipped, not failed."""


def _attempt(name: str, run: Callable[[], str]) -> Check:
    try:
        return Check(name, True, run())
    except Absent as e:
        return Check(name, None, f"skipped: {e}")
    except Exception as e:  # the report says what failed and goes on
        return Check(name, False, f"{type(e).__name__}: {e}")


def _round_trip_cpu() -> str:
    frame = jpeg.probe_frame()
    (blob,) = jpeg.encoder("cpu").encode([frame], quality=90, subsampling="420")
    if not jpeg.same_picture(jpeg.decoder("cpu").decode_one(blob), frame):
        raise RuntimeError("the decoded frame does not match")
    return f"encoded {frame.shape[1]}x{frame.shape[0]} to {len(blob)} bytes and back"


def _gpu_checks(index: int) -> list[Check]:
    import cupy

    frame = jpeg.probe_frame()
    (cpu_blob,) = jpeg.encoder("cpu").encode([frame], quality=90, subsampling="420")

    def transform() -> str:
        from replay.codec.fused import check_on_device

        return check_on_device(frame, index)

    names = [
        f"cuda:{index} encode (nvJPEG)",
        f"cuda:{index} decode (hardware JPEG decoder)",
        f"cuda:{index} decode (nvJPEG CUDA)",
        f"cuda:{index} fused transform",
    ]
    try:
        gpu.nvimgcodec()
    except ImportError as e:  # CuPy sees the GPU, but the codec is not installed
        return [Check(name, False, str(e)) for name in names[:3]] + [_attempt(names[3], transform)]

    def encode() -> str:
        with on_device(index):
            (blob,) = jpeg.encoder("cuda", index).encode(
                [cupy.asarray(frame)], quality=90, subsampling="420"
            )
        if not jpeg.same_picture(jpeg.decoder("cpu").decode_one(blob), frame):
            raise RuntimeError("libjpeg-turbo does not decode nvJPEG's frame to the original")
        return f"{len(blob)} bytes, decoded by libjpeg-turbo"

    def decode_with(kind: str) -> Callable[[], str]:
        def run() -> str:
            with on_device(index):
                decoder = gpu.new_decoder([kind], index)
                stream = cupy.cuda.get_current_stream()
                stream.synchronize()
                (image,) = decoder.decode([cpu_blob], cuda_stream=stream.ptr)
                stream.synchronize()
            if image is None and kind == "HW_GPU_ONLY":
                raise Absent("this GPU has no hardware JPEG decoder; the CUDA backend decodes")
            if image is None:
                raise RuntimeError(f"no {kind} decoder took the frame")
            if not jpeg.same_picture(np.asarray(image.cpu()), frame):
                raise RuntimeError("the decoded frame does not match")
            return "decoded libjpeg-turbo's frame into device memory"

        return run

    return [
        _attempt(names[0], encode),
        _attempt(names[1], decode_with("HW_GPU_ONLY")),
        _attempt(names[2], decode_with("GPU_ONLY")),
        _attempt(names[3], transform),
    ]


def auto_path(
    gpu_check: GpuCheck | None, cpu_ok: bool, cuda: dict[str, Any]
) -> tuple[str, str, bool]:
    """(device, why, works) for ``device="auto"``: the GPU when GPU 0 passed its round
    trip (`gpu_check`; None without a GPU), else the CPU, which works when `cpu_ok`."""
    if gpu_check is None:
        return "cpu", f"no GPU: {cuda.get('reason', 'none visible')}", cpu_ok
    if gpu_check.ok:
        return "cuda", f"GPU 0 passed a one-frame round trip ({gpu_check.detail})", True
    why = (
        f"GPU 0 is visible but its round trip failed ({gpu_check.detail}); the CPU is used instead"
    )
    return "cpu", why, cpu_ok


def diagnose() -> dict[str, Any]:
    """Everything `replay doctor` reports, as one JSON-ready dict; "ok" is the verdict."""
    cuda = cuda_report()
    with_gpu = bool(cuda["available"])
    checks = [_attempt("cpu encode+decode (libjpeg-turbo)", _round_trip_cpu)]
    if with_gpu:
        for device in cuda["devices"]:
            checks += _gpu_checks(device["index"])
    else:
        reason = f"skipped: {cuda['reason']}"
        checks += [
            Check(name, None, reason)
            for name in (
                "cuda encode (nvJPEG)",
                "cuda decode (hardware JPEG decoder)",
                "cuda decode (nvJPEG CUDA)",
                "cuda fused transform",
            )
        ]
    cpu_ok = bool(checks[0].ok)
    auto, why, works = auto_path(gpu_check(0) if with_gpu else None, cpu_ok, cuda)
    nvi = nvimgcodec_report(with_gpu)
    missing = cuda.get("reason") == NO_CUPY or not nvi["installed"]
    return {
        "ok": works,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "packages": packages(),
        "cuda": cuda,
        "nvimgcodec": nvi,
        "checks": [asdict(c) for c in checks],
        "auto": {"device": auto, "reason": why, "works": works},
        "install": GPU_EXTRA if missing and gpu_present() else None,
    }


def gpu_present() -> bool:
    """Whether the NVIDIA kernel driver sees a GPU (without CuPy, which may be missing)."""
    return NVIDIA_GPUS.is_dir() and any(NVIDIA_GPUS.iterdir())


def render(report: dict[str, Any]) -> str:
    """The report as text for a person."""
    lines = [f"Python {report['python']} ({report['executable']})", "Packages:"]
    lines += [f"  {k:24} {v or 'not installed'}" for k, v in report["packages"].items()]
    cuda = report["cuda"]
    if cuda["available"]:
        lines.append(f"CUDA: driver {cuda['driver']}, runtime {cuda['runtime']}")
        lines += [
            f"  cuda:{d['index']} {d['name']}, {d['memory_gb']} GB, sm {d['compute_capability']}"
            for d in cuda["devices"]
        ]
    else:
        lines.append(f"CUDA: none ({cuda['reason']})")
    nvi = report["nvimgcodec"]
    if nvi["installed"]:
        lines.append(f"nvImageCodec {nvi['version']}: extensions {nvi.get('extensions')}")
        lines.append(f"  nvJPEG library: {nvi.get('nvjpeg') or 'not found'}")
        if nvi.get("unused"):
            lines.append(f"  {nvi['unused']}")
        lines += [f"  problem: {p}" for p in nvi.get("problems", [])]
        if nvi.get("error"):
            lines.append(f"  does not load: {nvi['error']}")
    else:
        lines.append(f"nvImageCodec: not installed ({nvi['reason']})")
    lines.append("Backends (one-frame round trips):")
    marks = {True: "ok  ", False: "FAIL", None: "-   "}
    lines += [f"  {marks[c['ok']]} {c['name']}: {c['detail']}" for c in report["checks"]]
    auto = report["auto"]
    verdict = "works" if auto["works"] else "DOES NOT WORK"
    lines.append(
        f"device='auto' takes the {auto['device'].upper()} path ({verdict}): {auto['reason']}"
    )
    if report["install"]:
        lines.append(f"This machine has a GPU: {report['install']} for the GPU paths.")
    return "\n".join(lines)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def doctor(as_json: bool) -> None:
    """Check what this machine can do: packages, GPUs, JPEG backends, device='auto'.

    Exits 1 when the path device='auto' takes does not work.
    """
    report = diagnose()
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
    if not report["ok"]:
        raise SystemExit(1)
