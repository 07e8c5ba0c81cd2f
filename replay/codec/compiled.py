"""The CPU transform's resize kernels, compiled by Numba (the ``fast`` extra).

`replay.codec.transform.apply` runs these where Numba imports, else its NumPy passes;
each gives NumPy's result bit for bit (the same integer sums, the same float32
operations in the same order; no fastmath, so nothing is reordered or fused).

A shrinking transform on a zstd race's full frame (no DCT scaling shrinks it first)
costs little besides this resize, so the area kernel is built for throughput: each
output row's `fy` source rows are added in registers (one store per column, not one
per row), each position then gets the `fx` - 1 pixels to its right added (contiguous,
vectorised), and only the cell starts are read out. The conversion (luma, ``x / 255``,
mean and std; or rounding to uint8) happens right there, on the small result, one
output row at a time, copied into the batch's output: no float planes in between.

    write = Output(luma=(0.299, 0.587, 0.114), dtype="float32")
    area(rows, out, fy=4, fx=4, output=write)   # (N, 900, 4800) -> (N, 1, 225, 400)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Luma = tuple[float, float, float]


@functools.cache
def numba_available() -> bool:
    """True when Numba imports (``pip install 'replay[fast]'``)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Output:
    """What a kernel writes for each output pixel's channel means, and where.

    Attributes:
        luma: weights that make one grey plane of three channel means (in that order:
            ``(r * R + g * G) + b * B``), or None to write each channel.
        dtype: ``float32``: ``mean / 255``, minus `offset`, over `divisor` (per output
            channel, where `subtract` and `divide` say); ``uint8``: the mean rounded to
            nearest (ties to even) and clipped to 0..255.
        last: `out` is (N, h, w, C) (NHWC, written in memory order), else (N, C, h, w).
    """

    luma: Luma | None = None
    dtype: Literal["float32", "uint8"] = "float32"
    last: bool = False
    subtract: bool = False
    divide: bool = False
    offset: tuple[float, ...] = (0.0,)
    divisor: tuple[float, ...] = (1.0,)

    @property
    def compiled_in(self) -> tuple[Any, ...]:
        """The settings a kernel is compiled for (`offset` and `divisor` are passed in)."""
        return (self.luma, self.dtype, self.last, self.subtract, self.divide)

    @functools.cached_property
    def arrays(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """`offset` and `divisor` as the float32 arrays the kernels index by channel."""
        return np.asarray(self.offset, np.float32), np.asarray(self.divisor, np.float32)


def area(rows: npt.NDArray[np.uint8], out: Any, fy: int, fx: int, output: Output) -> None:
    """Area means of `fy` x `fx` cells of (N, H, W * C) uint8 `rows` (each row's pixels
    packed; rows may be strided, as a crop's are) into `out`: (N, C, h, w), or (N, h, w, C)
    where `output.last` says, of its dtype."""
    out_w = out.shape[2] if output.last else out.shape[3]
    c = rows.shape[2] // (fx * out_w)
    _area_kernel(fy, fx, c, *output.compiled_in)(rows, out, *output.arrays)


def convert(rows: npt.NDArray[np.uint8], out: Any, c: int, output: Output) -> None:
    """`output`'s conversion of (N, H, W * `c`) uint8 `rows` at their own size (a JPEG
    decoded at the transform's DCT scale) into `out`: 3x NumPy's uint8 to float32
    multiply, which casts through buffers."""
    _convert_kernel(c, *output.compiled_in)(rows, out, *output.arrays)


def bilinear(
    rows: npt.NDArray[np.uint8], c: int, taps: tuple[Any, ...], out: Any, output: Output
) -> None:
    """Bilinear resize of (N, H, W * `c`) uint8 `rows` into `out`: only each output
    pixel's four corners are read (NumPy's gathers take 0.6 ms for 84x84 from a full
    frame). `taps`: rows, column offsets into a row of pixels, and weights, as `resize`
    computes them; their float32 operations run in `resize`'s order."""
    _bilinear_kernel(c, *output.compiled_in)(rows, taps, out, *output.arrays)


def _store(dtype: str, subtract: bool, divide: bool) -> Callable[..., None]:
    """The compiled writer of channel `ch`'s mean `v` at `ox` of an output row (inlined)."""
    import numba

    scale = np.float32(1 / 255)
    floats = dtype == "float32"
    low, high = np.float32(0), np.float32(255)

    @numba.njit(nogil=True, cache=False, inline="always")
    def store(line: Any, ch: int, ox: int, v: Any, off: Any, div: Any) -> None:
        if floats:
            y = v * scale
            if subtract:
                y = y - off[ch]
            if divide:
                y = y / div[ch]
            line[ch, ox] = y
        else:
            line[ch, ox] = np.uint8(min(max(np.rint(v), low), high))

    return store


def _emit(last: bool) -> Callable[..., None]:
    """The compiled copy of one output row, (C, w) planes, into row `oy` of frame `k` of
    `out`, interleaved for NHWC (`last`): the kernels' loops writing NHWC value by value
    measured 0.34-0.39 ms a 1/4 RGB frame, through this copy 0.30 (NCHW 0.22)."""
    import numba

    @numba.njit(nogil=True, cache=False, inline="always")
    def emit(out: Any, k: int, oy: int, line: Any) -> None:
        planes, width = line.shape
        for ox in range(width):
            for ch in range(planes):
                if last:
                    out[k, oy, ox, ch] = line[ch, ox]
                else:
                    out[k, ch, oy, ox] = line[ch, ox]

    return emit


def _writing(
    luma: Luma | None, dtype: str, flags: tuple[bool, ...]
) -> tuple[bool, Any, tuple[Any, Any, Any], Callable[..., None], Callable[..., None]]:
    """What every kernel is compiled with for its output: grey (`luma` given), the output
    row's scalar type, the luma weights as float32, and the inlined `store` and `emit` for
    `flags` (`Output`'s last, subtract, divide)."""
    r, g, b = (np.float32(v) for v in (luma or (0.0, 0.0, 0.0)))
    return (
        luma is not None,
        np.dtype(dtype).type,
        (r, g, b),
        _store(dtype, *flags[1:]),
        _emit(flags[0]),
    )


@functools.cache
def _area_kernel(
    fy: int, fx: int, c: int, luma: Luma | None, dtype: str, *flags: bool
) -> Callable[..., None]:
    """The kernel for `fy` x `fx` cells of `c`-channel pixels (compiled on first use, ~1 s;
    the factors are constants in it, so the row and column loops unroll). `flags`: `Output`'s
    last, subtract, divide."""
    import numba

    cell = fy * fx
    area = np.float32(cell)
    acc = np.uint32 if cell > 257 else np.uint16  # 255 * cells past 257 overflows uint16
    span = fx * c
    grey, kind, (r, g, b), store, emit = _writing(luma, dtype, flags)
    # uint8 RGB: a float32 mean lands on the same side of every half as the exact one
    # while a half's distance from a non-tie mean, 1 / (2 * cell), exceeds its rounding
    # error (2^-16 below 256), so integer rounding is `rint`'s (and 2x faster)
    whole = dtype == "uint8" and not grey and cell < 2**15

    @numba.njit(nogil=True, cache=False)
    def kernel(src: Any, out: Any, off: Any, div: Any) -> None:
        n, h, width = src.shape
        out_h, out_w = h // fy, width // span
        run = np.zeros(width + span, acc)  # padded: the column pass reads past the row
        cells = np.empty(width, acc)
        line = np.empty((1 if grey else c, out_w), kind)
        for k in range(n):
            for oy in range(out_h):
                top = oy * fy
                for i in range(width):  # the cell row's fy rows at once: one store a column
                    s = acc(src[k, top, i])
                    for dy in range(1, fy):
                        s += acc(src[k, top + dy, i])
                    run[i] = s
                for i in range(width):  # each pixel plus the fx - 1 to its right
                    s = run[i]
                    for dx in range(1, fx):
                        s += run[i + dx * c]
                    cells[i] = s
                for ox in range(out_w):  # the cells' starts: their sums
                    j = ox * span
                    if grey:  # (r * R + g * G) + b * B of the means, as `apply` adds them
                        v = (np.float32(cells[j]) / area) * r
                        v = v + (np.float32(cells[j + 1]) / area) * g
                        store(line, 0, ox, v + (np.float32(cells[j + 2]) / area) * b, off, div)
                    elif whole:
                        for ch in range(c):
                            q, rest = divmod(np.int64(cells[j + ch]), cell)
                            up = 2 * rest > cell or (2 * rest == cell and q % 2 == 1)
                            line[ch, ox] = q + up
                    else:
                        for ch in range(c):
                            store(line, ch, ox, np.float32(cells[j + ch]) / area, off, div)
                emit(out, k, oy, line)

    return kernel


@functools.cache
def _convert_kernel(c: int, luma: Luma | None, dtype: str, *flags: bool) -> Callable[..., None]:
    """The kernel for `c`-channel pixels kept at their size (compiled on first use)."""
    import numba

    grey, kind, (r, g, b), store, emit = _writing(luma, dtype, flags)

    @numba.njit(nogil=True, cache=False)
    def kernel(src: Any, out: Any, off: Any, div: Any) -> None:
        n, h, width = src.shape
        line = np.empty((1 if grey else c, width // c), kind)
        for k in range(n):
            for oy in range(h):
                row = src[k, oy]
                for ox in range(width // c):
                    j = ox * c
                    if grey:  # (r * R + g * G) + b * B, as `apply` adds them
                        v = np.float32(row[j]) * r + np.float32(row[j + 1]) * g
                        store(line, 0, ox, v + np.float32(row[j + 2]) * b, off, div)
                    else:
                        for ch in range(c):
                            store(line, ch, ox, np.float32(row[j + ch]), off, div)
                emit(out, k, oy, line)

    return kernel


@functools.cache
def _bilinear_kernel(c: int, luma: Luma | None, dtype: str, *flags: bool) -> Callable[..., None]:
    """The kernel for `c`-channel pixels (taps and weights passed in; compiled on first use)."""
    import numba

    grey, kind, (r, g, b), store, emit = _writing(luma, dtype, flags)

    @numba.njit(nogil=True, cache=False)
    def kernel(src: Any, taps: Any, out: Any, off: Any, div: Any) -> None:
        y0, y1, vy, wy, x0, x1, vx, wx = taps
        line = np.empty((1 if grey else c, len(x0)), kind)
        for k in range(src.shape[0]):
            for oy in range(len(y0)):
                top, bottom = src[k, y0[oy]], src[k, y1[oy]]
                for ox in range(len(x0)):
                    v = np.float32(0)
                    for ch in range(c):
                        a, e = x0[ox] + ch, x1[ox] + ch
                        left = np.float32(top[a]) * vy[oy] + np.float32(bottom[a]) * wy[oy]
                        right = np.float32(top[e]) * vy[oy] + np.float32(bottom[e]) * wy[oy]
                        p = left * vx[ox] + right * wx[ox]
                        if not grey:
                            store(line, ch, ox, p, off, div)
                        elif ch == 0:
                            v = p * r
                        elif ch == 1:
                            v = v + p * g
                        else:
                            store(line, 0, ox, v + p * b, off, div)
                emit(out, k, oy, line)

    return kernel
