"""Every CUDA source `replay.codec.fused` generates for the transforms the GPU tests, the
benchmarks and the README use, compiled on the CPU for the lent GPUs: sm_75 (RTX 2070)
and sm_90 (H100, H200). The first GPU run must not be spent on a syntax error.

NVRTC (the ``nvidia-cuda-nvrtc`` wheel of the dev extra, the CUDA 13.0 the GPU machine
has) compiles each source with the options CuPy's ``RawKernel`` passes it (``fused``'s
``--fmad=false``, CuPy's ``--std=c++17``; CuPy's include folders are not needed: the
source includes nothing) to PTX, and ptxas (the ``nvidia-cuda-nvcc`` wheel) assembles
the PTX for the GPU, as the driver would. A warning from either fails the test.
"""

from __future__ import annotations

import ctypes
import importlib.util
import subprocess
from pathlib import Path

import pytest
from test_fused import CASES

from replay.codec import fused
from replay.codec.fused import CHECK_TRANSFORM
from replay.codec.transform import Transform

FULL = (900, 1600)  # the tests' and benchmarks' CarRacing frames
#: (transform, frame height, width): each GPU test's, benchmark's and README example's
KERNELS = {
    **{f"test_fused {name}": (t, 72, 128) for name, t in CASES.items()},
    "gpu_check / doctor probe": (CHECK_TRANSFORM, 256, 256),
    "bench codec": (Transform(dtype="float32", layout="NCHW", mean=0.5, std=0.25), *FULL),
    "bench sample quarter": (Transform(size=(225, 400)), *FULL),
    "test_decode bfloat16": (
        Transform(
            crop=(100, 200, 600, 1200),
            size=(150, 300),
            dtype="bfloat16",
            layout="NCHW",
            mean=0.5,
            dct_scaling=False,
        ),
        *FULL,
    ),
    "test_reader float32": (
        Transform(
            crop=(100, 0, 800, 1600),
            size=(200, 400),
            dtype="float32",
            layout="NCHW",
            mean=0.5,
            std=0.5,
            dct_scaling=False,
        ),
        *FULL,
    ),
    "test_reader bfloat16": (Transform(dtype="bfloat16"), *FULL),
    "README": (Transform(size=(225, 400), grey=True, dtype="float32", layout="NCHW"), *FULL),
}
ARCHS = (75, 90)


def cuda_file(*parts: str) -> Path:
    """A file of the nvidia-* wheels (``nvidia/cu13/...``); a failure names what to install."""
    spec = importlib.util.find_spec("nvidia")
    for base in spec.submodule_search_locations or [] if spec else []:
        if (path := Path(base, "cu13", *parts)).exists():
            return path
    pytest.fail(f"nvidia/cu13/{'/'.join(parts)} is missing: install the dev extra")


def nvrtc_ptx(source: str, arch: int) -> tuple[str, str]:
    """(PTX, compile log) for `source`, compiled by NVRTC as CuPy would, for `arch`."""
    # NVRTC dlopens its builtins by name: loaded first, the loader finds them loaded
    ctypes.CDLL(str(cuda_file("lib", "libnvrtc-builtins.so.13.0")), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(str(cuda_file("lib", "libnvrtc.so.13")))
    prog = ctypes.c_void_p()
    check = lambda code: code == 0 or pytest.fail(f"NVRTC error {code}")  # noqa: E731
    check(lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"fused.cu", 0, None, None))
    options = [b"--fmad=false", b"--std=c++17", f"-arch=compute_{arch}".encode()]
    compiled = lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * 3)(*options))
    size = ctypes.c_size_t()
    check(lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)))
    log = ctypes.create_string_buffer(size.value)
    check(lib.nvrtcGetProgramLog(prog, log))
    assert compiled == 0, log.value.decode()
    check(lib.nvrtcGetPTXSize(prog, ctypes.byref(size)))
    ptx = ctypes.create_string_buffer(size.value)
    check(lib.nvrtcGetPTX(prog, ptx))
    check(lib.nvrtcDestroyProgram(ctypes.byref(prog)))
    return ptx.value.decode(), log.value.decode().strip()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", KERNELS)
def test_the_fused_kernel_compiles_for_the_lent_gpus(name: str, arch: int, tmp_path: Path) -> None:
    t, height, width = KERNELS[name]
    ptx, log = nvrtc_ptx(fused.kernel_source(t, height, width), arch)
    assert log == "", log  # a warning is a failure
    assert ".entry replay_fused" in ptx
    (tmp_path / "k.ptx").write_text(ptx)
    done = subprocess.run(
        [str(cuda_file("bin", "ptxas")), f"-arch=sm_{arch}", "-o", str(tmp_path / "k.cubin"),
         str(tmp_path / "k.ptx")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr  # a warning is a failure
    assert (tmp_path / "k.cubin").stat().st_size > 0


def test_a_broken_source_fails_to_compile() -> None:
    """The compile check can fail: a source with a syntax error does not get through."""
    source = fused.kernel_source(CHECK_TRANSFORM, 8, 8).replace("}", "", 1)
    with pytest.raises(AssertionError, match="error"):
        nvrtc_ptx(source, 90)
