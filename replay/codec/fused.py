"""The whole `Transform` as one CUDA kernel: decoded uint8 HWC frames in, the batch out.

`replay.codec.transform.apply` with CuPy runs about seven kernels with float32 temporaries
per chunk (crop, resize, grey, cast, scale, normalise, transpose). Here one kernel
reads each output element's source pixels and writes it once: crop, resize (area for
whole factors, else bilinear), grey, ``x / 255``, mean/std, uint8/float32/float16/
bfloat16, NHWC or NCHW. It reads frames with any row stride (nvImageCodec pads rows).

The source is generated per transform and frame size, and written to compile as CUDA
(NVRTC, through ``cupy.RawKernel``) and as C (the host twin, `host_twin`, compiled
with the system C compiler): the same arithmetic in the same order, no fused
multiply-add on either side, so the tests compare it with the NumPy path of
`replay.codec.transform.apply` on a machine without a GPU (bit for bit), and the GPU tests
and `replay doctor` compare the kernel with the NumPy path the same way.

    out = fused(frames, t)            # frames: (N, H, W, 3) uint8 CuPy; out: CuPy, t's layout

bfloat16 comes out as uint16 bit patterns (CuPy has no bfloat16); `replay.read.batch`
views them as ``torch.bfloat16``. float16 and bfloat16 are rounded by hand (to nearest
even), so neither NVRTC nor the C compiler needs a half-precision header.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from replay.codec.devices import on_device
from replay.codec.transform import LUMA, Transform, apply

_C_TYPES = {
    "uint8": "unsigned char",
    "float32": "float",
    "float16": "unsigned short",
    "bfloat16": "unsigned short",
}
_PRELUDE = r"""
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
#define REPLAY_FN __device__ __forceinline__
REPLAY_FN unsigned int float_bits(float v) { return __float_as_uint(v); }
#else
#include <math.h>
#include <string.h>
#define REPLAY_FN static inline
REPLAY_FN unsigned int float_bits(float v) { unsigned int u; memcpy(&u, &v, 4); return u; }
#endif
/* float32 -> float16 bits, round to nearest even, subnormals and infinities as
   NumPy's astype(float16); by hand, so neither side needs a half-precision header */
REPLAY_FN unsigned short to_half(float v) {
  unsigned int x = float_bits(v);
  unsigned int sign = (x >> 16) & 0x8000u, mag = x & 0x7FFFFFFFu;
  if (mag >= 0x7F800000u) return (unsigned short)(sign | (mag > 0x7F800000u ? 0x7E00u : 0x7C00u));
  if (mag >= 0x477FF000u) return (unsigned short)(sign | 0x7C00u); /* >= 65520: inf */
  if (mag < 0x38800000u) { /* below 2^-14: a subnormal half, or zero */
    if (mag < 0x33000000u) return (unsigned short)sign;
    unsigned int shift = 126u - (mag >> 23), m = (mag & 0x7FFFFFu) | 0x800000u;
    unsigned int h = m >> shift, rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (h & 1u))) h += 1u;
    return (unsigned short)(sign | h);
  }
  unsigned int r = mag - 0x38000000u; /* exponent bias 127 -> 15 */
  r += 0xFFFu + ((r >> 13) & 1u);
  return (unsigned short)(sign | (r >> 13));
}
/* float32 -> bfloat16 bits, round to nearest even (as torch's .bfloat16()) */
REPLAY_FN unsigned short to_bf16(float v) {
  unsigned int u = float_bits(v);
  return (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
"""


def output_dtype(t: Transform) -> np.dtype[Any]:
    """The array dtype the kernel writes for `t` (bfloat16 as uint16 bits)."""
    return np.dtype(
        {"uint8": np.uint8, "float32": np.float32, "float16": np.float16}.get(t.dtype, np.uint16)
    )


def _f(value: float) -> str:
    """A float32 constant as an exact C literal (hexadecimal: no decimal re-rounding)."""
    return f"{float(np.float32(value)).hex()}f"


def _per_channel(values: float | tuple[float, ...], channels: int) -> list[float]:
    array = np.broadcast_to(np.asarray(values, dtype=np.float32).reshape(-1), (channels,))
    return [float(v) for v in array]


def _taps(size: int, out: int, axis: str) -> str:
    """C code for the bilinear taps along one axis, as `_bilinear_taps` computes them."""
    return (
        f"  float c{axis} = ((float)o{axis} + 0.5f) * {_f(size / out)} - 0.5f;\n"
        f"  c{axis} = fminf(fmaxf(c{axis}, 0.0f), {_f(size - 1)});\n"
        f"  int {axis}0 = (int)floorf(c{axis});\n"
        f"  int {axis}1 = {axis}0 + 1 < {size - 1} ? {axis}0 + 1 : {size - 1};\n"
        f"  float w{axis} = c{axis} - (float){axis}0;\n"
    )


def kernel_source(t: Transform, height: int, width: int) -> str:
    """CUDA/C source of the kernel for `t` on (height, width, 3) frames (scale 1)."""
    out_t = _C_TYPES[t.dtype]
    lines = [f"/* replay fused transform: {t!r} on {height}x{width} */", _PRELUDE]
    lines += _sample_source(t, height, width)
    lines.append(
        "REPLAY_FN void element(const unsigned char* src, long long batch, long long row,\n"
        f"                       {out_t}* dst, long long i) {{\n"
        f"{_index_source(t, height, width)}\n  (void)c; /* unread when grey */\n"
        "  const unsigned char* img = src + n * batch;\n"
        f"  float v = {_value_source(t)};\n{_store_source(t)}\n}}"
    )
    lines.append(
        "#if defined(__CUDACC_RTC__) || defined(__CUDACC__)\n"
        'extern "C" __global__ void replay_fused(const unsigned char* src, long long batch,\n'
        f"    long long row, {out_t}* dst, long long total) {{\n"
        "  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;\n"
        "       i += (long long)blockDim.x * gridDim.x)\n"
        "    element(src, batch, row, dst, i);\n"
        "}\n#else\n"
        "void replay_fused_host(const unsigned char* src, long long batch, long long row,\n"
        f"    {out_t}* dst, long long total) {{\n"
        "  for (long long i = 0; i < total; ++i) element(src, batch, row, dst, i);\n"
        "}\n#endif"
    )
    return "\n\n".join(lines) + "\n"


def _sample_source(t: Transform, height: int, width: int) -> list[str]:
    """`pix` (a source pixel inside the crop) and `sample` (source channel k at output
    pixel (oy, ox), after crop and resize)."""
    top, left, ch, cw = t.crop_box(height, width)
    oh, ow = t.output_hw(height, width)
    pix = (
        "REPLAY_FN float pix(const unsigned char* img, long long row, int y, int x, int k) {\n"
        f"  return (float)img[(long long)({top} + y) * row + ({left} + x) * 3 + k];\n"
        "}"
    )
    body = [
        "REPLAY_FN float sample(const unsigned char* img, long long row, int oy, int ox, int k) {"
    ]
    if (oh, ow) == (ch, cw):
        body.append("  return pix(img, row, oy, ox, k);")
    elif ch % oh == 0 and cw % ow == 0:
        fy, fx = ch // oh, cw // ow
        body += [
            "  float s = 0.0f;",
            f"  for (int dy = 0; dy < {fy}; ++dy)",
            f"    for (int dx = 0; dx < {fx}; ++dx)",
            f"      s += pix(img, row, oy * {fy} + dy, ox * {fx} + dx, k);",
            f"  return s / {_f(fy * fx)};",  # integer sums: exact in any order, as NumPy's mean
        ]
    else:
        body += [
            _taps(ch, oh, "y") + _taps(cw, ow, "x").rstrip("\n"),
            "  float t0 = pix(img, row, y0, x0, k) * (1.0f - wy) + pix(img, row, y1, x0, k) * wy;",
            "  float t1 = pix(img, row, y0, x1, k) * (1.0f - wy) + pix(img, row, y1, x1, k) * wy;",
            "  return t0 * (1.0f - wx) + t1 * wx;",
        ]
    body.append("}")
    return [pix, "\n".join(body)]


def _value_source(t: Transform) -> str:
    """The C expression of output channel c at (oy, ox), before scaling: RGB or luma."""
    if not t.grey:
        return "sample(img, row, oy, ox, c)"
    r, g, b = (_f(w) for w in LUMA)
    return (
        f"sample(img, row, oy, ox, 0) * {r} + sample(img, row, oy, ox, 1) * {g}"
        f" + sample(img, row, oy, ox, 2) * {b}"
    )


def _store_source(t: Transform) -> str:
    """C statements storing value v into dst[i]: rounded uint8, or normalised floats."""
    if t.dtype == "uint8":
        return "  dst[i] = (unsigned char)fminf(fmaxf(rintf(v), 0.0f), 255.0f);"
    means = _per_channel(t.mean, t.channels)
    stds = _per_channel(t.std, t.channels)

    def pick(values: list[float]) -> str:
        return " : ".join(
            [f"c == {k} ? {_f(v)}" for k, v in enumerate(values[:-1])] + [_f(values[-1])]
        )

    convert = {"float32": "v", "float16": "to_half(v)", "bfloat16": "to_bf16(v)"}[t.dtype]
    return (
        f"  float mean = {pick(means)};\n  float std = {pick(stds)};\n"
        f"  v = (v * {_f(1 / 255)} - mean) / std;\n  dst[i] = {convert};"
    )


def _index_source(t: Transform, height: int, width: int) -> str:
    """C statements splitting flat output index i into (n, c, oy, ox) for `t.layout`
    (c is const: a grey kernel never reads it, and NVRTC warns of a set, unread int)."""
    oh, ow = t.output_hw(height, width)
    channels = t.channels
    if t.channels_first:
        return (
            f"  int ox = (int)(i % {ow}); long long r = i / {ow};\n"
            f"  int oy = (int)(r % {oh}); r /= {oh};\n"
            f"  const int c = (int)(r % {channels}); long long n = r / {channels};"
        )
    return (
        f"  const int c = (int)(i % {channels}); long long r = i / {channels};\n"
        f"  int ox = (int)(r % {ow}); r /= {ow};\n"
        f"  int oy = (int)(r % {oh}); long long n = r / {oh};"
    )


def _check_frames(frames: Any, t: Transform) -> tuple[int, int, int]:
    n, h, w, c = frames.shape
    if c != 3 or frames.dtype != np.uint8:
        raise ValueError(f"fused transform takes (N, H, W, 3) uint8 frames, got {frames.shape}")
    if frames.strides[3] != 1 or frames.strides[2] != 3:
        raise ValueError("fused transform needs frames whose pixels are packed (row stride free)")
    return n, h, w


@functools.cache
def _kernel(t: Transform, height: int, width: int) -> Any:
    import cupy

    return cupy.RawKernel(
        kernel_source(t, height, width), "replay_fused", options=("--fmad=false",)
    )


def fused(frames: Any, t: Transform, out: Any = None) -> Any:
    """Apply `t` to (N, H, W, 3) uint8 CuPy frames in one kernel on the current stream.

    `out` (C-contiguous, (N, *t.output_shape(H, W)), `output_dtype(t)`) receives the
    result, else a new array does. Rows may be padded; pixels must be packed.
    """
    import cupy

    n, h, w = _check_frames(frames, t)
    shape = (n, *t.output_shape(h, w))
    if out is None:
        out = cupy.empty(shape, dtype=output_dtype(t))
    elif tuple(out.shape) != shape or out.dtype != output_dtype(t) or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous {shape} {output_dtype(t)}")
    total = out.size
    if total:
        threads = 256
        blocks = min(-(-total // threads), 65535 * 4)
        _kernel(t, h, w)(
            (blocks,),
            (threads,),
            (
                frames,
                np.int64(frames.strides[0]),
                np.int64(frames.strides[1]),
                out,
                np.int64(total),
            ),
        )
    return out


#: What `check_on_device` runs: the benchmarks' uint8 -> normalised float32 NCHW.
CHECK_TRANSFORM = Transform(dtype="float32", layout="NCHW", mean=0.5, std=0.25)


def check_on_device(frame: npt.NDArray[np.uint8], index: int) -> str:
    """Compile and launch the kernel once on GPU `index` for one (H, W, 3) host frame and
    compare it with the NumPy path bit for bit (RuntimeError when they differ; CuPy's
    error when NVRTC is missing). `gpu_check` and `replay doctor` run it, so
    ``device="auto"`` never picks a GPU whose kernel cannot compile."""
    import cupy

    with on_device(index):
        got = cupy.asnumpy(fused(cupy.asarray(frame[None]), CHECK_TRANSFORM))
    if not np.array_equal(got, apply(frame[None], CHECK_TRANSFORM, np)):
        raise RuntimeError("the fused kernel and the NumPy path disagree")
    return "one kernel, equal to the NumPy path bit for bit"


HostTwin = Callable[[npt.NDArray[np.uint8]], npt.NDArray[Any]]


@functools.cache
def host_twin(t: Transform, height: int, width: int) -> HostTwin:
    """The kernel's source compiled for the CPU (the system C compiler, ``cc``).

    Returns a function of (N, height, width, 3) uint8 frames (rows may be padded) that
    gives what `fused` gives on the GPU. For tests; slow.
    """
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("the fused transform's host twin needs a C compiler (cc or gcc)")
    source = kernel_source(t, height, width)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    folder = Path(tempfile.gettempdir()) / "replay-fused"
    folder.mkdir(exist_ok=True)
    library = folder / f"{digest}.so"
    if not library.exists():
        c_file = folder / f"{digest}.c"
        c_file.write_text(source)
        staging = folder / f"{digest}.{id(t)}.so"
        subprocess.run(
            [
                compiler,
                "-O2",
                "-ffp-contract=off",
                "-shared",
                "-fPIC",
                "-o",
                str(staging),
                str(c_file),
                "-lm",
            ],
            check=True,
            capture_output=True,
        )
        staging.rename(library)
    function = ctypes.CDLL(str(library)).replay_fused_host
    function.restype = None
    function.argtypes = [
        ctypes.c_void_p,
        ctypes.c_longlong,
        ctypes.c_longlong,
        ctypes.c_void_p,
        ctypes.c_longlong,
    ]

    def run(frames: npt.NDArray[np.uint8]) -> npt.NDArray[Any]:
        n, h, w = _check_frames(frames, t)
        if (h, w) != (height, width):
            raise ValueError(f"this twin is for {height}x{width} frames, got {h}x{w}")
        out = np.empty((n, *t.output_shape(h, w)), dtype=output_dtype(t))
        function(
            frames.ctypes.data, frames.strides[0], frames.strides[1], out.ctypes.data, out.size
        )
        return out

    return run
