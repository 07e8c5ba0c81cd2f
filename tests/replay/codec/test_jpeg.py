"""`replay.codec.jpeg`: nvImageCodec encode/decode round trips on real frames, the subsampling
the encoder really writes, devices, cached instances and the private extension folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from replay.bench.footprint import psnr
from replay.codec import jpeg
from replay.codec.devices import cuda_available, device_index
from replay.codec.gpu_check import gpu_check, resolve_device
from replay.codec.nvimgcodec import nvimgcodec
from replay.codec.subsampling import SUBSAMPLING_FACTORS, Subsampling, subsampling_from_factors
from replay.cpus import usable_cpus


def start_of_frame(blob: bytes) -> tuple[int, int, list[list[int]]]:
    """(height, width, [[h, v] per component]) from a JPEG's SOF0/SOF2 marker segment."""
    i = 2
    while i < len(blob):
        marker, length = blob[i + 1], int.from_bytes(blob[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC2):
            seg = blob[i + 4 : i + 2 + length]
            height, width = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big")
            comps = seg[6 : 6 + 3 * seg[5]]
            return height, width, [[c >> 4, c & 15] for c in comps[1::3]]
        i += 2 + length
    raise AssertionError("no start-of-frame marker")


@pytest.fixture(scope="module")
def frames(real_frames: npt.NDArray[np.uint8]) -> list[npt.NDArray[np.uint8]]:
    """Three real CarRacing frames, (900, 1600, 3) uint8."""
    return [real_frames[i] for i in (0, 20, 47)]


def test_round_trip_quality_on_real_frames(frames: list[npt.NDArray[np.uint8]]) -> None:
    enc, dec = jpeg.encoder("cpu"), jpeg.decoder("cpu")
    sizes = {}
    for subsampling in ("420", "444"):
        blobs = enc.encode(frames, quality=90, subsampling=subsampling)
        assert all(b[:2] == b"\xff\xd8" and b[-2:] == b"\xff\xd9" for b in blobs)
        decoded = dec.decode(blobs)
        for image, frame in zip(decoded, frames, strict=True):
            assert isinstance(image, np.ndarray)
            assert (image.shape, image.dtype) == ((900, 1600, 3), np.uint8)
            assert psnr(image, frame) >= 38.0
        sizes[subsampling] = sum(map(len, blobs))
        assert sizes[subsampling] < sum(f.nbytes for f in frames) / 15
    low, high = (enc.encode(frames[:1], quality=q, subsampling="420")[0] for q in (30, 90))
    assert len(low) < len(high) / 1.5  # quality is honoured
    low_image, high_image = dec.decode_one(low), dec.decode_one(high)
    assert low_image is not None
    assert high_image is not None
    assert psnr(low_image, frames[0]) < psnr(high_image, frames[0])
    assert sizes["420"] < sizes["444"]  # less chroma, fewer bytes


@pytest.mark.parametrize("name", ["444", "422", "420"])
def test_the_encoder_writes_the_named_subsampling(
    frames: list[npt.NDArray[np.uint8]], name: Subsampling
) -> None:
    (blob,) = jpeg.encoder("cpu").encode(frames[:1], quality=90, subsampling=name)
    height, width, factors = start_of_frame(blob)
    assert (height, width) == (900, 1600)
    assert factors == SUBSAMPLING_FACTORS[name]  # [h, v] of Y, Cb, Cr as the codec spec
    assert subsampling_from_factors(factors) == name
    assert subsampling_from_factors([tuple(p) for p in factors]) == name


def test_unsupported_factors_are_named() -> None:
    for bad in ([[4, 1], [1, 1], [1, 1]], [[2, 2]], "420", None):
        with pytest.raises(
            ValueError, match=re.escape(f"unsupported JPEG chroma subsampling {bad!r}")
        ):
            subsampling_from_factors(bad)


def test_lanes_split_a_batch_without_changing_bytes_or_order(
    frames: list[npt.NDArray[np.uint8]],
) -> None:
    enc = jpeg.encoder("cpu")
    assert enc.max_lanes == usable_cpus()
    batch = [frames[i % 3] for i in range(5)]
    one = enc.encode(batch, quality=85, subsampling="420")
    many = enc.encode(batch, quality=85, subsampling="420", lanes=8)  # capped at the cores
    assert many == one
    assert one[0] == one[3]  # the same frame encodes to the same bytes
    assert one[0] != one[1]


def test_undecodable_blobs_come_back_as_none(frames: list[npt.NDArray[np.uint8]]) -> None:
    dec = jpeg.decoder("cpu")
    (good,) = jpeg.encoder("cpu").encode(frames[:1], quality=90, subsampling="420")
    out = dec.decode([b"not a jpeg", good, b"\xff\xd8\xff"])
    assert out[0] is None
    assert out[2] is None
    np.testing.assert_array_equal(out[1], dec.decode_one(good))  # type: ignore[arg-type]
    assert dec.decode([]) == []
    assert dec.decode_one(b"") is None


def test_one_cached_encoder_and_decoder_per_device() -> None:
    assert jpeg.encoder("cpu") is jpeg.encoder("cpu")
    assert jpeg.decoder("cpu") is jpeg.decoder("cpu")
    assert jpeg.encoder("cpu").device == jpeg.decoder("cpu").device == "cpu"


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    if cuda_available():
        assert resolve_device("auto") == ("cuda" if gpu_check(0).ok else "cpu")
        assert resolve_device("cuda") == resolve_device("cuda:0") == "cuda"
    else:
        assert resolve_device("auto") == "cpu"
        for name in ("cuda", "cuda:1"):
            with pytest.raises(RuntimeError, match=f"device='{name}' was asked for, but no CUDA"):
                resolve_device(name)
    for bad in ("gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "auto:0", ""):
        with pytest.raises(ValueError, match=re.escape(f"'cuda' or 'cuda:N', not {bad!r}")):
            resolve_device(bad)


def test_device_index() -> None:
    assert [device_index(d) for d in ("cpu", "auto", "cuda", "cuda:0", "cuda:3")] == [
        0,
        0,
        0,
        0,
        3,
    ]
    assert jpeg.encoder("cpu", 2) is jpeg.encoder("cpu")  # the index means nothing on the CPU


@pytest.mark.skipif(cuda_available(), reason="explains a machine without CUDA")
def test_gpu_check_without_cuda_says_why_and_does_not_warn() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check = gpu_check(0)
    assert not check.ok
    assert "no CUDA device is visible" in check.detail


def test_probe_frame_survives_a_cpu_round_trip() -> None:
    frame = jpeg.probe_frame()
    assert frame.shape == (256, 256, 3)
    assert len({int(v) for v in frame[..., 2].ravel()[:512]}) > 100  # not flat
    (blob,) = jpeg.encoder("cpu").encode([frame], quality=90, subsampling="420")
    assert jpeg.same_picture(jpeg.decoder("cpu").decode_one(blob), frame)
    assert not jpeg.same_picture(np.zeros_like(frame), frame)
    assert not jpeg.same_picture(None, frame)
    assert not jpeg.same_picture(frame[:10], frame)


def test_the_cpu_decoder_counts_what_it_decoded() -> None:
    dec = jpeg.JpegDecoder("cpu")
    (blob,) = jpeg.encoder("cpu").encode([jpeg.probe_frame()], quality=90, subsampling="420")
    dec.decode([blob, b"junk", blob])
    assert dec.backend == "libjpeg-turbo"
    assert dec.decoded == {"libjpeg-turbo": 2}


def test_only_the_chosen_extensions_are_visible() -> None:
    from replay.codec import nvimgcodec as gpu

    nvimgcodec()
    folder = Path(os.environ["NVIMGCODEC_EXTENSIONS_PATH"])
    names = {p.name.split(".so")[0] for p in folder.iterdir()}
    wanted = set(gpu.CPU_EXTENSIONS) | (set(gpu.GPU_EXTENSIONS) if cuda_available() else set())
    if not folder.name.startswith("replay-nvimgcodec-"):
        pytest.skip(f"NVIMGCODEC_EXTENSIONS_PATH was set outside replay: {folder}")
    assert names == wanted
    assert all(p.resolve().is_file() for p in folder.iterdir())  # links to the wheel's files
    assert gpu.load_report().extensions == sorted(wanted)
    assert nvimgcodec() is nvimgcodec()  # idempotent
