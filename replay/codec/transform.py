"""The fused per-frame transform a consumer can ask a batch for.

Applied in this order to every decoded (H, W, 3) uint8 frame: crop, resize,
greyscale, then dtype conversion (``x / 255``, minus `mean`, over `std`) and
layout (``NHWC``, ``NCHW``, or ``stacked``: a window's frames as channels,
(B, L*C, H, W)). `apply` reads the full frames once, in integers (see there), and
does the float work on the small result. One implementation serves NumPy and CuPy
(`apply` takes the array module), so the CPU path is the GPU path's twin and the
reference its tests compare against.

    t = Transform(size=(225, 400), dtype="float32", layout="NCHW", mean=0.5, std=0.5)
    batch = sampler.sample(transform=t)      # frames: (B, L, 3, 225, 400) float32

When the output is at most 1/2, 1/4 or 1/8 of the (cropped) frame, the CPU decoder
decodes at that scale in the DCT domain (libjpeg-turbo through simplejpeg), a fraction
of a full decode's cost; `dct_scale` picks the factor, and a grey transform decodes
only the JPEG's luma. The result differs from "full decode, then area resize, then
luma" by the decoder's own downscaling filter and its luma (1/255 on average, 12/255
at worst on CarRacing frames).

Resize is an area average for whole factors (1/2, 1/4 ...), else bilinear (half-pixel
centres, as ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``).
Where the ``fast`` extra is installed, Numba's kernels (`replay.codec.compiled`) run the
resize, grey, dtype and layout in one pass into the output, equal to NumPy's passes bit
for bit; else (and for CuPy) NumPy's passes run.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from replay.arguments import whole_tuple
from replay.codec import compiled

Dtype = Literal["uint8", "float32", "float16", "bfloat16"]
Layout = Literal["NHWC", "NCHW", "stacked"]

#: ITU-R BT.601 luma weights, as in PIL's ``convert("L")``.
LUMA = (0.299, 0.587, 0.114)
#: The scales libjpeg-turbo decodes at directly (denominators).
DCT_SCALES = (8, 4, 2)


@dataclass(frozen=True)
class Transform:
    """What to do to each frame after decoding; the default does nothing.

    Attributes:
        crop: ``(top, left, height, width)`` in source pixels, or None.
        size: output ``(height, width)`` after the crop, or None to keep it.
        grey: reduce RGB to one luma channel.
        dtype: ``uint8`` (no scaling), or a float type: ``x / 255``, then ``(x - mean) / std``.
            ``bfloat16`` needs ``out="torch"``.
        layout: ``NHWC`` (frames (B, L, H, W, C)), ``NCHW`` (frames (B, L, C, H, W)), or
            ``stacked``: NCHW with the L frames of a window stacked as channels, frames
            (B, L*C, H, W) (DQN's frame stack: 4 grey frames are 4 channels).
        mean, std: per-channel (or scalar) normalisation on the [0, 1] scale.
        dct_scaling: allow decoding at 1/2, 1/4, 1/8 scale when the output is that small.
    """

    crop: tuple[int, int, int, int] | None = None
    size: tuple[int, int] | None = None
    grey: bool = False
    dtype: Dtype = "uint8"
    layout: Layout = "NHWC"
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    dct_scaling: bool = True

    def __post_init__(self) -> None:
        """Sizes as tuples of ints (lists and NumPy integers too), `mean` and `std` as
        floats or tuples of them; ValueError naming the field for anything else."""
        if self.crop is not None:
            crop = whole_tuple("crop", self.crop, 4)
            if min(crop[:2]) < 0 or min(crop[2:]) <= 0:
                raise ValueError(f"crop must be (top, left, height, width) >= 0, got {crop!r}")
            object.__setattr__(self, "crop", crop)
        if self.size is not None:
            size = whole_tuple("size", self.size, 2)
            if min(size) <= 0:
                raise ValueError(f"size must be a positive (height, width), got {size!r}")
            object.__setattr__(self, "size", size)
        if self.dtype not in ("uint8", "float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be uint8, float(16|32) or bfloat16, not {self.dtype!r}")
        if self.layout not in ("NHWC", "NCHW", "stacked"):
            raise ValueError(f"layout must be 'NHWC', 'NCHW' or 'stacked', not {self.layout!r}")
        for name in ("grey", "dct_scaling"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
            object.__setattr__(self, name, bool(getattr(self, name)))
        for name in ("mean", "std"):
            object.__setattr__(self, name, self._per_channel(name, getattr(self, name)))
        if np.any(np.asarray(self.std, dtype=np.float64) == 0):
            raise ValueError(f"std must be non-zero, got {self.std!r}")
        if self.dtype == "uint8" and (
            np.any(np.asarray(self.mean) != 0) or np.any(np.asarray(self.std) != 1)
        ):
            raise ValueError("mean/std normalisation needs a float dtype, not uint8")

    def _per_channel(self, name: str, value: object) -> float | tuple[float, ...]:
        """`mean` or `std`: one finite float, or one per output channel (a tuple)."""
        try:
            if isinstance(value, str | bytes):  # NumPy would read "0.5" as a number
                raise TypeError(name)
            values = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number or a tuple of them, got {value!r}") from None
        if values.ndim > 1:
            raise ValueError(f"{name} must be a number or a tuple of them, got {value!r}")
        many = values.ndim == 1
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if many and len(values) not in (1, self.channels):
            counts = "1 value (grey)" if self.grey else "1 or 3 values"
            raise ValueError(f"{name} must have {counts}, got {value!r}")
        return tuple(float(v) for v in values) if many else float(values)

    @functools.cached_property  # asked per frame while decoding; building a Transform is not free
    def is_identity(self) -> bool:
        """True when the transform leaves decoded frames as they are."""
        return self == Transform(dct_scaling=self.dct_scaling)

    @property
    def channels(self) -> int:
        """Output channels: 1 for grey, else 3."""
        return 1 if self.grey else 3

    @property
    def channels_first(self) -> bool:
        """True when a frame is laid out (C, H, W) (``NCHW`` and ``stacked``)."""
        return self.layout != "NHWC"

    def crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The crop as (top, left, height, width), checked against a (height, width) frame."""
        if self.crop is None:
            return (0, 0, height, width)
        top, left, h, w = self.crop
        if top + h > height or left + w > width:
            raise ValueError(f"crop {self.crop} does not fit a {height}x{width} frame")
        return self.crop

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """Height and width of a transformed (height, width) frame."""
        if self.size is not None:
            return self.size
        _, _, h, w = self.crop_box(height, width)
        return (h, w)

    def output_shape(self, height: int, width: int) -> tuple[int, ...]:
        """Per-frame output shape (H, W, C) or (C, H, W)."""
        h, w = self.output_hw(height, width)
        return (self.channels, h, w) if self.channels_first else (h, w, self.channels)

    def dct_scale(self, height: int, width: int) -> int:
        """The DCT decode scale denominator (1, 2, 4 or 8) for (height, width) frames."""
        if not self.dct_scaling or self.size is None:
            return 1
        box = self.crop_box(height, width)
        oh, ow = self.size
        for k in DCT_SCALES:
            # the crop must fall on whole pixels at scale 1/k and still cover the output
            if all(v % k == 0 for v in box) and box[2] // k >= oh and box[3] // k >= ow:
                return k
        return 1


def apply(frames: Any, t: Transform, xp: Any = np, *, scale: int = 1, out: Any = None) -> Any:
    """Transform a stack of (N, h, w, C) uint8 frames (NumPy or CuPy, module `xp`).

    C is 3 (RGB), or 1 for frames the decoder already made grey (a JPEG's luma).
    `scale` says the frames were decoded at 1/scale of the source size, so the
    crop box is divided by it. Returns (N, *t.output_shape) of `t`'s dtype (float32
    for ``bfloat16``; the caller converts), written into `out` when given.

    One pass over the full frames, in integers: an area resize sums rows, then
    columns, in uint16 (uint32 past 257 pixels a cell); a bilinear one gathers the
    rows it needs before converting them; grey and scaling then run on the small
    result, channel planes (N, C, h, w) throughout (with Numba, inside the resize
    kernel, straight into the output: `replay.codec.compiled`). The arithmetic after
    the sums is the float32 arithmetic of "mean, then luma, then scale", so the result
    equals it exactly (``x / 255`` of the area mean, to float32 rounding).
    """
    x = crop(frames, t, scale)
    _, ch, cw, _ = x.shape
    out_h, out_w = t.size if t.size is not None else (ch, cw)
    same = (out_h, out_w) == (ch, cw)
    converts = t.dtype != "uint8" or (t.grey and x.shape[3] == 3)
    done = _compiled(x, t, out_h, out_w, out) if xp is np and (converts or not same) else None
    if done is not None:
        return done
    if same:
        planes = x.transpose(0, 3, 1, 2)  # a view: uint8 until the dtype conversion
    elif ch % out_h == 0 and cw % out_w == 0:
        planes = area_planes(x, out_h, out_w, xp)
    else:
        planes = resize(x, out_h, out_w, xp).transpose(0, 3, 1, 2)
    if t.grey and planes.shape[1] == 3:
        r, g, b = (np.float32(v) for v in LUMA)
        planes = planes[:, 0:1] * r + planes[:, 1:2] * g + planes[:, 2:3] * b
    dest = None if out is None else out if t.channels_first else out.transpose(0, 3, 1, 2)
    y = _converted(planes, t, xp, dest)
    if y is dest:  # written straight into `out` (through its planes view when NHWC)
        return out
    if not t.channels_first:
        y = y.transpose(0, 2, 3, 1)
    if out is None:
        return xp.ascontiguousarray(y)
    out[...] = y
    return out


def _converted(planes: Any, t: Transform, xp: Any, dest: Any = None) -> Any:
    """(N, C, h, w) planes in `t`'s dtype: uint8 rounded to nearest, or ``(x / 255 - mean)
    / std`` in float32, in place: in `dest` (the output, as planes) for uint8 and
    float32, so the result is written once (uint8 planes cast inside the multiply)."""
    if t.dtype == "uint8":
        if planes.dtype == xp.uint8:
            return planes
        rounded = xp.clip(xp.rint(planes, out=planes), 0, 255, out=planes)
        if dest is None:
            return rounded.astype(xp.uint8)
        xp.copyto(dest, rounded, casting="unsafe")  # whole values in 0..255: exact
        return dest
    float_dest = dest is not None and dest.dtype == xp.float32
    y = dest if float_dest else xp.empty(planes.shape, dtype=xp.float32)
    xp.multiply(planes, np.float32(1 / 255), out=y)  # uint8 cast inside: exact
    if np.any(np.asarray(t.mean) != 0):  # x - 0 and x / 1 are x: skip those passes
        xp.subtract(y, xp.asarray(t.mean, dtype=xp.float32).reshape(-1, 1, 1), out=y)
    if np.any(np.asarray(t.std) != 1):
        xp.divide(y, xp.asarray(t.std, dtype=xp.float32).reshape(-1, 1, 1), out=y)
    return y if t.dtype != "float16" else y.astype(xp.float16)


def crop(frames: Any, t: Transform, scale: int = 1) -> Any:
    """The crop of (N, h, w, C) frames decoded at 1/`scale` (a view)."""
    _, h, w, _ = frames.shape
    top, left, ch, cw = t.crop_box(h * scale, w * scale)
    if (top, left, ch, cw) == (0, 0, h * scale, w * scale):
        return frames
    top, left, ch, cw = top // scale, left // scale, ch // scale, cw // scale
    return frames[:, top : top + ch, left : left + cw]


def area_planes(x: Any, out_h: int, out_w: int, xp: Any = np) -> Any:
    """(N, H, W, C) uint8 -> (N, C, out_h, out_w) float32 area means, for whole factors.

    Rows first, into channel planes, then columns (long strided runs); NumPy's own
    ``reshape(...).mean(axis=(2, 4))`` converts every pixel to float and reduces over
    short axes, 20x slower on full frames.
    """
    n, h, w, c = x.shape
    fy, fx = h // out_h, w // out_w
    acc = xp.uint16 if fy * fx <= 257 else xp.uint32
    rows = x.reshape(n, out_h, fy, w, c).transpose(0, 4, 1, 2, 3)  # (n, c, out_h, fy, w)
    sums = rows[:, :, :, 0].astype(acc)  # (n, c, out_h, w): channel planes from here on
    for k in range(1, fy):
        sums += rows[:, :, :, k]
    cells = sums.reshape(n, c, out_h, out_w, fx)
    total = cells[..., 0].copy()
    for k in range(1, fx):
        total += cells[..., k]
    return total.astype(xp.float32) / np.float32(fy * fx)


def _compiled(x: Any, t: Transform, out_h: int, out_w: int, out: Any) -> Any:
    """The resize, grey, dtype and layout of `apply` in one compiled pass over (N, H, W, C)
    `x` (`replay.codec.compiled`: area for whole factors, else bilinear; at `x`'s own size
    the conversion alone), straight into `out` (or a new array); None without Numba.
    float16 goes through float32."""
    if not compiled.numba_available():
        return None
    n, h, w, c = x.shape
    kind = np.uint8 if t.dtype == "uint8" else np.float32
    k = t.channels
    shape = (n, k, out_h, out_w) if t.channels_first else (n, out_h, out_w, k)
    result = out if out is not None and out.dtype == kind else np.empty(shape, kind)
    rows = x.reshape(n, h, w * c)  # a view for any crop: each row's pixels are packed
    write = _output(t, c)
    if (h, w) == (out_h, out_w):
        compiled.convert(rows, result, c, write)
    elif h % out_h == 0 and w % out_w == 0:
        compiled.area(rows, result, h // out_h, w // out_w, write)
    else:
        compiled.bilinear(rows, c, _kernel_taps(h, w, c, out_h, out_w), result, write)
    if t.dtype != "float16":
        return result
    if out is None:
        return result.astype(np.float16)
    out[...] = result
    return out


@functools.cache  # asked per frame; a Transform hashes in ~1 us
def _output(t: Transform, c: int) -> compiled.Output:
    """What the kernels write for `t` from `c`-channel frames: `_converted`'s arithmetic."""
    mean, std = (np.broadcast_to(np.asarray(v, np.float64), (t.channels,)) for v in (t.mean, t.std))
    return compiled.Output(
        luma=LUMA if t.grey and c == 3 else None,
        dtype="uint8" if t.dtype == "uint8" else "float32",
        last=not t.channels_first,
        subtract=bool(np.any(mean != 0)),
        divide=bool(np.any(std != 1)),
        offset=tuple(mean.tolist()),
        divisor=tuple(std.tolist()),
    )


@functools.cache
def _kernel_taps(h: int, w: int, c: int, out_h: int, out_w: int) -> tuple[Any, ...]:
    """Rows, columns (as offsets into a row of `c`-channel pixels) and weights, once."""
    y0, y1, wy = _bilinear_taps(h, out_h, np)
    x0, x1, wx = _bilinear_taps(w, out_w, np)
    return (y0, y1, 1 - wy, wy, x0 * c, x1 * c, 1 - wx, wx)


def resize(x: Any, out_h: int, out_w: int, xp: Any = np) -> Any:
    """(N, H, W, C) -> (N, out_h, out_w, C) float32: area for whole factors, else bilinear.

    Bilinear gathers the four corner pixels of every output pixel in uint8 first
    (rows, then columns: 84x84 from a full frame reads 0.5% of it) and converts only
    those; then ``(p00 (1 - wy) + p10 wy) (1 - wx) + (p01 (1 - wy) + p11 wy) wx``, the
    fused kernel's arithmetic in its order.
    """
    h, w = x.shape[1:3]
    if h % out_h == 0 and w % out_w == 0:
        return area_planes(x, out_h, out_w, xp).transpose(0, 2, 3, 1)
    y0, y1, wy = _bilinear_taps(h, out_h, xp)
    x0, x1, wx = _bilinear_taps(w, out_w, xp)
    wy, wx = wy[None, :, None, None], wx[None, None, :, None]
    top, bottom = x[:, y0], x[:, y1]  # (N, out_h, W, C) uint8: the rows read

    def column(rows: Any, cols: Any) -> Any:
        return rows[:, :, cols].astype(xp.float32)

    left = column(top, x0) * (1 - wy) + column(bottom, x0) * wy
    right = column(top, x1) * (1 - wy) + column(bottom, x1) * wy
    return left * (1 - wx) + right * wx


def _bilinear_taps(size: int, out: int, xp: Any) -> tuple[Any, Any, Any]:
    centres = (xp.arange(out, dtype=xp.float32) + 0.5) * np.float32(size / out) - 0.5
    centres = xp.clip(centres, 0, size - 1)
    lo = xp.floor(centres).astype(xp.int64)
    hi = xp.minimum(lo + 1, size - 1)
    return lo, hi, (centres - lo).astype(xp.float32)
