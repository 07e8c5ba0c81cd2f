"""`replay.codec.transform`: crop, resize, grey, float NCHW on real CarRacing frames, each checked
against a straightforward NumPy (or PIL, or torch) computation; settings and shapes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from replay.codec import compiled
from replay.codec import transform as tf
from replay.codec.transform import Transform


@pytest.fixture(scope="module")
def frames(real_frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Two real frames from late in the clip (the track fills the view), (2, 900, 1600, 3)."""
    return real_frames[[-8, -1]]


def area(x: npt.NDArray[np.uint8], f: int) -> npt.NDArray[np.float64]:
    n, h, w, c = x.shape
    out: npt.NDArray[np.float64] = x.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))
    return out


def bilinear(x: npt.NDArray[np.uint8], out_h: int, out_w: int) -> npt.NDArray[np.float64]:
    """Per-pixel bilinear with half-pixel centres, clamped at the border (one image)."""
    h, w, c = x.shape
    out = np.empty((out_h, out_w, c))
    for i in range(out_h):
        y = min(max((i + 0.5) * h / out_h - 0.5, 0), h - 1)
        y0 = int(np.floor(y))
        y1, wy = min(y0 + 1, h - 1), y - y0
        for j in range(out_w):
            xx = min(max((j + 0.5) * w / out_w - 0.5, 0), w - 1)
            x0 = int(np.floor(xx))
            x1, wx = min(x0 + 1, w - 1), xx - x0
            top = (1 - wx) * x[y0, x0].astype(float) + wx * x[y0, x1]
            bottom = (1 - wx) * x[y1, x0].astype(float) + wx * x[y1, x1]
            out[i, j] = (1 - wy) * top + wy * bottom
    return out


def test_the_default_transform_is_the_identity(frames: npt.NDArray[np.uint8]) -> None:
    t = Transform()
    assert t.is_identity
    assert Transform(dct_scaling=False).is_identity
    assert not Transform(grey=True).is_identity
    out = tf.apply(frames, t)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, frames)
    assert out.flags.c_contiguous


def test_crop_area_resize_float_nchw_match_numpy(frames: npt.NDArray[np.uint8]) -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    t = Transform(
        crop=(100, 200, 400, 800),
        size=(100, 200),
        dtype="float32",
        layout="NCHW",
        mean=mean,
        std=std,
    )
    assert t.output_shape(900, 1600) == (3, 100, 200)
    out = tf.apply(frames, t)
    assert out.shape == (2, 3, 100, 200)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    crop = frames[:, 100:500, 200:1000]
    ref = ((area(crop, 4) / 255 - np.array(mean)) / np.array(std)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert out.std() > 0.1  # a real picture, not a flat one


def test_uint8_area_resize_rounds_to_nearest(frames: npt.NDArray[np.uint8]) -> None:
    out = tf.apply(frames, Transform(size=(450, 800)))
    assert (out.shape, out.dtype) == ((2, 450, 800, 3), np.uint8)
    np.testing.assert_array_equal(out, np.rint(area(frames, 2)).astype(np.uint8))


def test_grey_is_bt601_luma_like_pil(frames: npt.NDArray[np.uint8]) -> None:
    t = Transform(crop=(300, 400, 200, 300), grey=True)
    assert t.channels == 1
    out = tf.apply(frames, t)
    assert out.shape == (2, 200, 300, 1)
    crop = frames[:, 300:500, 400:700]
    for image, ours in zip(crop, out, strict=True):
        pil = np.asarray(Image.fromarray(image).convert("L"))
        assert np.abs(ours[..., 0].astype(int) - pil).max() <= 1
    luma = tf.apply(frames, Transform(crop=(300, 400, 200, 300), grey=True, dtype="float32"))
    np.testing.assert_allclose(luma[..., 0], crop @ np.array(tf.LUMA) / 255, atol=1e-6)
    nchw = tf.apply(frames, Transform(grey=True, layout="NCHW", dtype="float16", size=(90, 160)))
    assert (nchw.shape, nchw.dtype) == ((2, 1, 90, 160), np.float16)


def test_bilinear_resize_matches_a_per_pixel_reference(frames: npt.NDArray[np.uint8]) -> None:
    patch = np.ascontiguousarray(frames[:, 420:450, 760:810])  # 30 x 50 around the car
    for out_h, out_w in ((17, 23), (45, 70), (30, 33)):
        ours = tf.resize(patch, out_h, out_w)
        assert ours.dtype == np.float32
        for image, resized in zip(patch, ours, strict=True):
            np.testing.assert_allclose(resized, bilinear(image, out_h, out_w), atol=1e-3)


def test_resize_bilinear_for_fractional_factors() -> None:
    x = np.arange(2 * 5 * 7 * 3, dtype=np.uint8).reshape(2, 5, 7, 3)
    y = tf.resize(x, 5, 7)  # same size: bilinear taps land on the pixels
    np.testing.assert_allclose(y, x)
    up = tf.resize(x, 10, 14)
    assert up.shape == (2, 10, 14, 3)
    assert up.min() >= x.min()
    assert up.max() <= x.max()


def test_bilinear_resize_matches_torch_interpolate() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 30, 50, 3), dtype=np.uint8)
    for out_h, out_w in ((17, 23), (45, 70), (30, 33)):
        ours = tf.resize(x, out_h, out_w)
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(x).permute(0, 3, 1, 2).float(),
            size=(out_h, out_w),
            mode="bilinear",
            align_corners=False,
            antialias=False,
        ).permute(0, 2, 3, 1)
        np.testing.assert_allclose(ours, ref.numpy(), atol=1e-3)


def test_frames_decoded_at_a_reduced_scale(frames: npt.NDArray[np.uint8]) -> None:
    """`scale` says the frames came out of the decoder at 1/scale: the crop shrinks with it."""
    t = Transform(crop=(100, 200, 400, 800), size=(100, 200))
    assert t.dct_scale(900, 1600) == 4
    quarter = np.rint(area(frames, 4)).astype(np.uint8)  # stands in for a 1/4-scale decode
    out = tf.apply(quarter, t, scale=4)
    np.testing.assert_array_equal(out, quarter[:, 25:125, 50:250])


def test_dct_scale_choice() -> None:
    assert Transform().dct_scale(900, 1600) == 1  # no size: nothing to gain
    assert Transform(size=(450, 800)).dct_scale(900, 1600) == 2
    assert Transform(size=(225, 400)).dct_scale(900, 1600) == 4  # 900 is not a multiple of 8
    assert Transform(size=(100, 200)).dct_scale(800, 1600) == 8
    assert Transform(size=(100, 200), dct_scaling=False).dct_scale(800, 1600) == 1
    assert Transform(size=(300, 400)).dct_scale(900, 1600) == 2  # 1/4 would be too small
    assert Transform(crop=(1, 0, 400, 800), size=(50, 100)).dct_scale(900, 1600) == 1  # off-grid
    assert Transform(size=(1000, 2000)).dct_scale(900, 1600) == 1  # upscaling


def test_output_shapes() -> None:
    assert Transform().output_shape(900, 1600) == (900, 1600, 3)
    assert Transform(layout="NCHW").output_shape(900, 1600) == (3, 900, 1600)
    assert Transform(crop=(0, 0, 64, 32), grey=True).output_shape(900, 1600) == (64, 32, 1)
    assert Transform(crop=(0, 0, 64, 32), size=(8, 8)).output_hw(900, 1600) == (8, 8)
    assert Transform().crop_box(90, 160) == (0, 0, 90, 160)


def test_transform_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="crop"):
        Transform(crop=(0, 0, 0, 10))
    with pytest.raises(ValueError, match="size"):
        Transform(size=(0, 3))
    with pytest.raises(ValueError, match="float dtype"):
        Transform(mean=0.5)
    with pytest.raises(ValueError, match="std"):
        Transform(dtype="float32", std=0.0)
    with pytest.raises(ValueError, match="does not fit"):
        Transform(crop=(800, 0, 200, 10)).output_hw(900, 1600)
    with pytest.raises(ValueError, match=r"crop .*\(-1, 0, 10, 10\)"):
        Transform(crop=(-1, 0, 10, 10))
    with pytest.raises(ValueError, match="'float64'"):
        Transform(dtype="float64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'CHW'"):
        Transform(layout="CHW")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mean must have .*\(0\.1, 0\.2, 0\.3\)"):
        Transform(grey=True, dtype="float32", mean=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="std must be non-zero"):
        Transform(dtype="float32", std=(1.0, 0.0, 1.0))


def test_transform_takes_lists_and_numpy_numbers_and_refuses_wrong_types() -> None:
    """Bad types failed deep in the decode (a float size, a float crop) or at hashing (a
    list mean); NaN std made every value NaN."""
    t = Transform(
        size=[np.int64(24), 32],
        crop=np.array([0, 0, 48, 64]),
        mean=[0.5, 0.4, 0.3],
        dtype="float32",
    )
    assert (t.size, t.crop, t.mean) == ((24, 32), (0, 0, 48, 64), (0.5, 0.4, 0.3))
    assert type(t.size[0]) is int
    assert hash(t) == hash(Transform(**vars(t)))
    assert Transform(dtype="float32", std=np.float32(0.5)).std == 0.5
    refused: list[tuple[dict[str, Any], str]] = [
        ({"size": (24.0, 32.0)}, "size must be a whole number, got 24.0"),
        ({"size": (True, 3)}, "size must be a whole number, got True"),
        ({"size": (24, 32, 3)}, r"size must have 2 values, got \(24, 32, 3\)"),
        ({"crop": (0.0, 0, 8, 8)}, "crop must be a whole number, got 0.0"),
        ({"dtype": "float32", "std": math.nan}, "std must be finite, got nan"),
        ({"dtype": "float32", "mean": "0.5"}, "mean must be a number or a tuple"),
        ({"dtype": "float32", "grey": True, "mean": (0.1, 0.2)}, r"1 value \(grey\)"),
        ({"dtype": "float32", "mean": (0.1, 0.2)}, "mean must have 1 or 3 values"),
        ({"grey": 1}, "grey must be True or False, got 1"),
    ]
    for kwargs, message in refused:
        with pytest.raises(ValueError, match=message):
            Transform(**kwargs)


def old_transform(frames: npt.NDArray[np.uint8], t: Transform) -> npt.NDArray[np.float64]:
    """The transform as it was before the one-pass rewrite, in float64: every pixel to
    float, area mean (or bilinear), then luma, then ``(x / 255 - mean) / std``."""
    top, left, h, w = t.crop_box(*frames.shape[1:3])
    x = frames[:, top : top + h, left : left + w].astype(np.float64)
    out_h, out_w = t.size or (h, w)
    if (out_h, out_w) != (h, w) and h % out_h == 0 and w % out_w == 0:
        x = area(frames[:, top : top + h, left : left + w], h // out_h)
    elif (out_h, out_w) != (h, w):
        x = np.stack([bilinear(image, out_h, out_w) for image in x.astype(np.uint8)])
    if t.grey:
        x = x @ np.array(tf.LUMA)[:, None]
    if t.dtype != "uint8":
        x = (x / 255 - np.array(t.mean)) / np.array(t.std)
    return x.transpose(0, 3, 1, 2) if t.channels_first else x


@pytest.mark.parametrize(
    "t",
    [
        Transform(size=(225, 400), grey=True, dtype="float32", layout="NCHW"),  # the README's
        Transform(size=(225, 400)),
        Transform(size=(450, 800), dtype="float16", mean=0.5, std=0.25),
        Transform(crop=(100, 0, 800, 1600), size=(100, 200), grey=True, layout="stacked"),
        Transform(crop=(400, 700, 60, 90), size=(21, 32), grey=True, dtype="float32"),
    ],
    ids=["readme", "rgb-quarter", "half-float16", "crop-grey-uint8", "bilinear-grey"],
)
def test_the_one_pass_transform_matches_the_old_one_on_real_frames(
    frames: npt.NDArray[np.uint8], t: Transform
) -> None:
    """Tolerance: float32 within 1e-5 of float64 arithmetic (float16 within its rounding,
    1e-3 relative); uint8 the same rounding, so at most 1 level where the float result
    lies on a half (an area mean of 16 pixels can)."""
    ours = tf.apply(frames, t)
    ref = old_transform(frames, t)
    assert ours.shape == ref.shape
    if t.dtype == "uint8":
        diff = np.abs(ours.astype(np.float64) - np.rint(ref))
        assert diff.max() <= 1
        assert diff.mean() < 0.01
    elif t.dtype == "float16":
        np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3)
    else:
        np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert ours.astype(np.float64).std() > 0.01  # a real picture, not a flat one


def numpy_transform(frames: npt.NDArray[np.uint8], t: Transform) -> npt.NDArray[Any]:
    """`apply` spelled out in NumPy: `resize`'s float32 planes (area sums or bilinear
    taps), luma, then ``x / 255``, mean, std (or rounding), as `apply`'s NumPy path."""
    assert t.size is not None
    planes = tf.resize(tf.crop(frames, t), *t.size).transpose(0, 3, 1, 2)
    if t.grey:
        r, g, b = (np.float32(v) for v in tf.LUMA)
        planes = planes[:, 0:1] * r + planes[:, 1:2] * g + planes[:, 2:3] * b
    if t.dtype == "uint8":
        y: npt.NDArray[Any] = np.clip(np.rint(planes), 0, 255).astype(np.uint8)
    else:
        y = planes * np.float32(1 / 255) - np.asarray(t.mean, np.float32).reshape(-1, 1, 1)
        y = y / np.asarray(t.std, np.float32).reshape(-1, 1, 1)
        y = y.astype(np.float16) if t.dtype == "float16" else y
    return y if t.channels_first else y.transpose(0, 2, 3, 1)


#: Every setting the compiled kernels are built for, over the geometries that change them
COMPILED = [
    Transform(size=(225, 400), grey=True, dtype="float32", layout="NCHW"),  # the README's
    Transform(size=(225, 400)),  # RGB uint8 NHWC: integer rounding, ties to even
    Transform(size=(225, 400), layout="NCHW", dtype="bfloat16", mean=0.5),
    Transform(size=(450, 800), dtype="float32", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)),
    Transform(crop=(100, 200, 400, 800), size=(100, 200), grey=True),  # crop view, grey uint8
    Transform(crop=(100, 200, 400, 800), size=(100, 200), layout="NCHW"),
    Transform(crop=(0, 0, 900, 1500), size=(30, 50), dtype="float16", std=0.25),  # uint32 sums
    Transform(crop=(300, 400, 200, 300), size=(40, 100)),  # 5 x 3 cells: an odd area
    Transform(crop=(300, 400, 200, 300), size=(40, 100), grey=True, dtype="float32"),
    Transform(size=(84, 84), grey=True, dtype="float32", layout="stacked"),  # bilinear
    Transform(crop=(100, 200, 400, 800), size=(84, 84), mean=0.5, dtype="float32"),
    Transform(crop=(420, 760, 30, 50), size=(45, 70)),  # a bilinear upscale, uint8
]


@pytest.mark.parametrize("t", COMPILED, ids=[f"{t.size}-{t.crop}-{t.dtype}" for t in COMPILED])
def test_the_compiled_transform_equals_numpys_bit_for_bit(
    frames: npt.NDArray[np.uint8], t: Transform
) -> None:
    """The Numba kernels (the ``fast`` extra, in ``dev``) write what NumPy's passes give,
    bit for bit: the same integer sums, the float32 operations in the same order, uint8
    rounded half to even (in integers for RGB area means; ties occur in these frames),
    float16 through float32; so the fused GPU kernel and its host twin match either way."""
    assert compiled.numba_available()
    ours = tf.apply(frames, t)
    want = numpy_transform(frames, t)
    assert (ours.shape, ours.dtype) == (want.shape, want.dtype)
    np.testing.assert_array_equal(ours, want)
    assert ours.flags.c_contiguous
    assert ours.astype(np.float64).std() > 0.01  # a real picture, not a flat one
    if t.dtype == "uint8" and t.size == (225, 400):
        planes = tf.area_planes(frames, *t.size)
        assert np.any(planes - np.floor(planes) == 0.5)  # the ties the rounding must break


#: Transforms that keep the frames' size (after a crop, or a JPEG decoded at 1/scale,
#: luma only when grey): the compiled conversion, with the channels the frames have
SAME_SIZE = [
    (Transform(size=(225, 400), grey=True, dtype="float32", layout="NCHW"), 4, 1),  # README's
    (Transform(size=(225, 400), dtype="float16", mean=(0.5, 0.4, 0.3), std=0.25), 4, 3),
    (Transform(dtype="float32", layout="NCHW"), 1, 3),
    (Transform(grey=True), 1, 3),  # luma rounded to uint8
    (Transform(crop=(100, 200, 400, 800), grey=True, dtype="float32", mean=0.5, std=0.2), 1, 3),
]


@pytest.mark.parametrize(
    ("t", "scale", "channels"), SAME_SIZE, ids=[f"{t.dtype}-{s}-{c}" for t, s, c in SAME_SIZE]
)
def test_the_compiled_conversion_at_the_frames_size_equals_numpys(
    frames: npt.NDArray[np.uint8],
    t: Transform,
    scale: int,
    channels: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the frames' own size the kernel only converts (luma, ``x / 255``, mean and std,
    or rounding), bit for bit what NumPy's passes give (run here with Numba hidden)."""
    small = np.ascontiguousarray(frames[:, ::scale, ::scale, :channels])
    compiled._convert_kernel.cache_clear()
    ours = tf.apply(small, t, scale=scale)
    assert compiled._convert_kernel.cache_info().misses == 1  # the kernel ran, not NumPy
    monkeypatch.setattr(compiled, "numba_available", lambda: False)
    want = tf.apply(small, t, scale=scale)
    assert (ours.shape, ours.dtype) == (want.shape, want.dtype)
    np.testing.assert_array_equal(ours, want)
    assert ours.astype(np.float64).std() > 0.01  # a real picture, not a flat one


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float16"])
@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_apply_into_out_equals_apply(
    frames: npt.NDArray[np.uint8], dtype: tf.Dtype, layout: tf.Layout
) -> None:
    """Written straight into `out` (uint8 and float32 through its planes view, float16
    converted) or returned: the same values; crops and bilinear too."""
    for t in (
        Transform(size=(225, 400), dtype=dtype, layout=layout),
        Transform(crop=(400, 700, 60, 90), size=(21, 32), grey=True, dtype=dtype, layout=layout),
    ):
        want = tf.apply(frames, t)
        out = np.full_like(want, 3)
        assert tf.apply(frames, t, out=out) is out
        np.testing.assert_array_equal(out, want)
