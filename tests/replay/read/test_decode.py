"""`replay.read.decode`: encoded batches of real stored JPEGs decode to the same pixels as the
race reader; damaged frames named; lossless frames; buffers; bad batches refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import simplejpeg
from numcodecs import Zstd
from pixels import assert_same_decode
from sampling_helpers import keys_of, write_race

import replay
from replay.codec import jpeg
from replay.codec.devices import cuda_available
from replay.codec.frames import ZstdFrames, content_size
from replay.errors import GpuCodecError
from replay.read.batch import Batch, EncodedBatch, FrameFormat, SampleKeys, corrupt_frame_error
from replay.read.decode import decode_batch, decode_frames

SHARD = 4


@pytest.fixture(scope="module")
def store_path(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A store of one race of 12 real CarRacing frames in shards of 4 (reward = step)."""
    path = tmp_path_factory.mktemp("batch") / "store"
    write_race(replay.open_store(path), real_frames[:12], env="CarRacing-v3", shard_size=SHARD)
    return path


@pytest.fixture(scope="module")
def race(store_path: Path) -> replay.Race:
    store = replay.open_store(store_path, mode="r")
    (info,) = store.races()
    return store.race(info.race_id)


def fetch(store_path: Path, keys: SampleKeys) -> EncodedBatch:
    """The stored bytes of `keys`, read by a sampler's reader as `Sampler.sample` does."""
    with replay.open_store(store_path, mode="r").sampler() as sampler:
        return sampler.fetch(keys)


def test_decoded_batch_equals_the_race_reader(store_path: Path, race: replay.Race) -> None:
    keys = keys_of(race.race_id, [2, 6, 9], seq_len=2)  # windows across shard boundaries
    encoded = fetch(store_path, keys)
    assert (encoded.height, encoded.width, encoded.shard_size) == (900, 1600, SHARD)
    assert encoded.codec["name"] == "jpeg"
    for row, steps in zip(encoded.frames, keys.steps.tolist(), strict=True):
        assert row == [race.frame_bytes(s) for s in steps]  # the stored bytes, checksum removed
    assert encoded.nbytes == sum(len(race.frame_bytes(s)) for s in keys.steps.flat)
    batch = decode_batch(encoded)
    assert isinstance(batch, Batch)
    assert (batch.frames.shape, batch.frames.dtype) == ((3, 2, 900, 1600, 3), np.uint8)
    for frames, steps in zip(batch.frames, keys.steps.tolist(), strict=True):
        for frame, step in zip(frames, steps, strict=True):
            np.testing.assert_array_equal(frame, race.frame(step))
    assert len(batch) == 3
    assert batch.keys == keys.keys
    np.testing.assert_array_equal(batch.weights, keys.weights)
    np.testing.assert_array_equal(batch.reward, keys.steps.astype(np.float32))
    np.testing.assert_array_equal(batch.action[..., 2], 3 * keys.steps)
    np.testing.assert_array_equal(batch.terminated, keys.steps == 11)
    assert batch.truncated.shape == batch.t_ns.shape == (3, 2)
    assert np.all(np.diff(batch.t_ns, axis=1) > 0)
    pinned = batch.pin_memory()  # NumPy arrays have nothing to pin: the same arrays back
    assert pinned.frames is batch.frames
    assert pinned.steps["reward"] is batch.steps["reward"]


def test_damaged_frame_is_named_by_race_shard_and_step(store_path: Path, race: replay.Race) -> None:
    keys = keys_of(race.race_id, [1, 5], seq_len=2)
    encoded = fetch(store_path, keys)
    good = encoded.frames[0][0]
    damaged = replace(encoded, frames=[encoded.frames[0], [encoded.frames[1][0], good[:200]]])
    frames, failed = decode_frames(damaged)
    assert failed == [3]  # row-major over (B, L): item 1, position 1 = step 6
    np.testing.assert_array_equal(frames[1, 0], race.frame(5))
    with pytest.raises(replay.CorruptDataError, match=rf"race {race.race_id}, shard 1: .*step 6"):
        decode_batch(damaged)
    error = corrupt_frame_error(damaged, 3)
    assert (error.race_id, error.shard, error.step) == (race.race_id, 1, 6)
    unknown = corrupt_frame_error(replace(damaged, shard_size=0), 2)  # shard size not known
    assert (unknown.shard, unknown.step) == (-1, 5)


def test_a_failed_frame_is_left_as_zeros(store_path: Path, race: replay.Race) -> None:
    keys = keys_of(race.race_id, [1, 5], seq_len=2)
    encoded = fetch(store_path, keys)
    held = decode_batch(encoded)  # two batches of the same shape: the pool keeps the
    earlier = decode_batch(encoded)  # last two buffers, and gives back the free one
    assert earlier.frames[1, 1].any()
    del earlier
    damaged = replace(encoded, frames=[encoded.frames[0], [encoded.frames[1][0], b"junk"]])
    frames, failed = decode_frames(damaged)
    assert failed == [3]
    assert not np.shares_memory(frames, held.frames)  # the held batch is left alone
    assert not frames[1, 1].any()


@pytest.mark.parametrize(
    "t", [None, replay.Transform(size=(225, 400), grey=True, dtype="float32", layout="NCHW")]
)
def test_damaged_frames_in_every_run_are_named_and_zeroed(
    store_path: Path, race: replay.Race, t: replay.Transform | None
) -> None:
    """The calling thread decodes the first run and the pool the others: a damaged frame
    in the first run and one in the last are both reported, and the good ones decoded."""
    keys = keys_of(race.race_id, [0, 3, 6, 9], seq_len=1)
    encoded = fetch(store_path, keys)
    rows = [row[:] for row in encoded.frames]
    rows[0][0], rows[3][0] = b"junk", rows[3][0][:300]
    frames, failed = decode_frames(replace(encoded, frames=rows), transform=t)
    assert failed == [0, 3]
    assert not frames[0].any()
    assert not frames[3].any()
    good, _ = decode_frames(encoded, transform=t)
    np.testing.assert_array_equal(frames[1:3], good[1:3])
    assert good[1:3].std() > 0.01


def test_held_batches_are_not_overwritten_by_later_ones(
    store_path: Path, race: replay.Race
) -> None:
    first = decode_batch(fetch(store_path, keys_of(race.race_id, [0, 1])))
    copy = first.frames.copy()
    later = fetch(store_path, keys_of(race.race_id, [10, 11]))
    for _ in range(6):  # more batches of the same shape than the buffer pool keeps (4)
        other = decode_batch(later)
        assert not np.shares_memory(other.frames, first.frames)
    np.testing.assert_array_equal(first.frames, copy)


def test_lossless_zstd_frames_decode_bit_exact(real_frames: npt.NDArray[np.uint8]) -> None:
    frames = real_frames[:4]
    keys = keys_of("A" * 26, [0, 2], seq_len=2)
    blobs = [bytes(Zstd().encode(np.ascontiguousarray(f))) for f in frames]
    encoded = EncodedBatch(keys, [blobs[:2], blobs[2:]], 900, 1600, {}, {"name": "zstd"}, SHARD)
    batch = decode_batch(encoded)
    np.testing.assert_array_equal(batch.frames, frames.reshape(2, 2, 900, 1600, 3))
    codec = ZstdFrames()
    np.testing.assert_array_equal(codec.decode(blobs[3], 900, 1600), frames[3])
    assert codec.decode(b"not zstd", 900, 1600) is None
    assert codec.decode(blobs[0], 900, 1599) is None  # the wrong frame size


def test_zstd_frames_decode_into_a_buffer_only_at_their_declared_size(
    real_frames: npt.NDArray[np.uint8],
) -> None:
    """numcodecs fills a larger buffer without saying how much it wrote: the header's
    declared size is checked, so a short frame does not pass for a whole one."""
    codec = ZstdFrames()
    frame = real_frames[0]
    (blob,) = codec.encode([frame])
    assert content_size(blob) == frame.nbytes
    small = np.ascontiguousarray(frame[:, :800])
    (short,) = codec.encode([small])
    assert content_size(short) == small.nbytes
    out = np.full_like(frame, 7)
    assert codec.decode_into(blob, out)
    np.testing.assert_array_equal(out, frame)
    assert not codec.decode_into(short, out)  # half a frame's bytes into a whole frame
    assert not codec.decode_into(blob[:-9], out)  # truncated
    assert not codec.decode_into(b"\x28\xb5\x2f\xfd" + blob[4:40], out)  # damaged body
    assert content_size(b"junk junk") is None
    for n in (5, 255, 300, 65_791, 70_000):  # every size field: 1, 2 (+256) and 4 bytes
        (tiny,) = codec.encode([np.zeros((1, n, 1), dtype=np.uint8)])
        assert content_size(tiny) == n


@pytest.mark.parametrize(
    "t",
    [
        None,
        replay.Transform(size=(225, 400)),  # JPEG at 1/4 straight into the batch
        replay.Transform(size=(225, 400), grey=True, dtype="float32", layout="NCHW"),
        replay.Transform(size=(84, 84), grey=True, dtype="float32", layout="stacked"),
        replay.Transform(crop=(100, 200, 400, 800), size=(100, 200), layout="NCHW"),
    ],
    ids=["raw", "rgb-quarter", "readme", "grey-84", "crop-nchw"],
)
def test_every_host_path_equals_decoding_then_transforming_each_frame(
    real_frames: npt.NDArray[np.uint8], t: replay.Transform | None
) -> None:
    """JPEG and zstd items alternate (each format's frames are not one slice of the
    batch), so every way a frame lands is taken: straight into its slot, through a
    run's scratch stack, through a zstd frame buffer; each equals the frame decoded
    alone (at the transform's DCT scale) and transformed by `apply`, exactly."""
    from replay.codec import transform as tf

    frames = real_frames[-8:]
    jpeg_codec = {"name": "jpeg", "quality": 90, "subsampling": "420"}
    jpegs = jpeg.encoder("cpu").encode(list(frames), quality=90, subsampling="420")
    zstds = ZstdFrames().encode(list(frames))
    ids = ["J" * 26, "Z" * 26] * 4  # JPEG items 0, 2, 4, 6: runs [0, 2] and [4, 6]
    steps = np.arange(8)[:, None]
    keys = SampleKeys(ids, steps, np.ones(8, np.float32), np.ones(8))
    rows = [[(jpegs if i % 2 == 0 else zstds)[i]] for i in range(8)]
    formats = {ids[1]: FrameFormat({"name": "zstd"}, 900, 1600)}
    encoded = EncodedBatch(keys, rows, 900, 1600, {}, jpeg_codec, SHARD, formats=formats)
    got, failed = decode_frames(encoded, transform=t)
    assert failed == []
    tt = t or replay.Transform()
    scale = tt.dct_scale(900, 1600)
    for item in range(8):
        if item % 2 == 0:
            image = jpeg.decode_host(jpegs[item], scale=scale, grey=tt.grey)
            assert image is not None
            want = tf.apply(image[None], tt, scale=scale)
        else:
            want = tf.apply(frames[item][None], tt)
        np.testing.assert_array_equal(got[item], want)
    assert got.std() > 0.01  # real pictures


def test_bad_batches_and_devices_are_refused(store_path: Path, race: replay.Race) -> None:
    encoded = fetch(store_path, keys_of(race.race_id, [0, 4]))
    with pytest.raises(ValueError, match="1 frames for a 2x1 batch"):
        decode_batch(replace(encoded, frames=[encoded.frames[0]]))
    if not cuda_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            decode_batch(encoded, device="cuda")
    with pytest.raises(ValueError, match="device must be"):
        decode_batch(encoded, device="gpu0")


gpu = pytest.mark.skipif(not cuda_available(), reason="needs CuPy and a CUDA device")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("backend", ["hardware", "cuda"])
def test_each_gpu_backend_decodes_what_the_cpu_decodes(
    store_path: Path, race: replay.Race, backend: str
) -> None:
    torch = pytest.importorskip("torch")
    decoder = jpeg.decoder("cuda", 0)
    if backend not in decoder.backends:
        pytest.skip(f"this GPU has no {backend} JPEG decoder ({decoder.backends})")
    encoded = fetch(store_path, keys_of(race.race_id, [0, 5, 11]))
    decoder.use_backend(backend)
    try:
        before = decoder.decoded[backend]
        batch = decode_batch(encoded, device="cuda:0", out="torch")
        assert decoder.decoded[backend] == before + 3  # stats say which backend decoded
    finally:
        decoder.use_backend(decoder.backends[0])
    assert batch.frames.is_cuda
    assert batch.frames.dtype == torch.uint8
    assert_same_decode(batch.frames.cpu().numpy(), decode_batch(encoded).frames)


@pytest.mark.gpu
@gpu
def test_gpu_transforms_match_the_cpu_path_and_bfloat16_comes_out_as_torch(
    store_path: Path, race: replay.Race
) -> None:
    torch = pytest.importorskip("torch")
    from replay.codec.transform import Transform

    encoded = fetch(store_path, keys_of(race.race_id, [1, 7]))
    t = Transform(
        crop=(100, 200, 600, 1200), size=(150, 300), dtype="bfloat16", layout="NCHW", mean=0.5
    )
    on_gpu = decode_batch(encoded, device="cuda", out="torch", transform=t).frames
    assert on_gpu.dtype == torch.bfloat16
    assert on_gpu.shape == (2, 1, 3, 150, 300)
    exact = replace(t, dct_scaling=False)  # the GPU decodes at full size, then resizes
    on_cpu = decode_batch(encoded, out="torch", transform=exact).frames
    # IDCT rounding, as in assert_same_decode, plus bfloat16's (half a level near 1)
    assert_same_decode(on_gpu.float().cpu().numpy(), on_cpu.float().numpy(), level=1 / 255)


def test_the_gpu_bound_passes_another_idct_and_fails_simple_upsampling(
    real_frames: npt.NDArray[np.uint8],
) -> None:
    """The bound of the GPU comparisons above, on the CPU: libjpeg-turbo's fast IDCT
    stands in for nvJPEG's; its simple upsampling is nvJPEG's without DECODER_OPTIONS."""
    blobs = jpeg.encoder("cpu").encode(list(real_frames[:16]), quality=90, subsampling="420")
    exact = np.stack([simplejpeg.decode_jpeg(b) for b in blobs])
    assert_same_decode(np.stack([simplejpeg.decode_jpeg(b, fastdct=True) for b in blobs]), exact)
    simple = np.stack([simplejpeg.decode_jpeg(b, fastupsample=True) for b in blobs])
    with pytest.raises(AssertionError, match=r"p99\.9 1\d\.\d, max"):
        assert_same_decode(simple, exact)


def test_an_explicit_cuda_decoder_without_nvjpeg_blames_the_library() -> None:
    if cuda_available():
        pytest.skip("this machine has CUDA: nvJPEG loads")
    with pytest.raises(GpuCodecError, match="needs nvJPEG, which did not load"):
        jpeg.decoder("cuda", 0)


def test_gpu_decode_chunks_keep_peak_memory_near_the_output() -> None:
    from replay.read.decode import DECODE_CHUNK, MIN_DECODE_CHUNK, decode_chunk

    frame = 900 * 1600 * 3
    full_64 = decode_chunk(64 * frame, frame)  # uint8 batch of 64 full frames
    assert full_64 == 12
    assert (64 * frame + full_64 * frame) / (64 * frame) <= 1.2
    assert decode_chunk(64 * frame * 4, frame) == DECODE_CHUNK  # float32: capped
    assert decode_chunk(64 * frame // 16, frame) == MIN_DECODE_CHUNK  # 1/4 size: floor
    assert decode_chunk(0, 0) == MIN_DECODE_CHUNK


def test_a_grey_quarter_transform_on_jpeg_and_zstd_races_matches_full_decode_then_transform(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    """The README's Transform decodes a JPEG at 1/4 scale, only its luma; a zstd frame
    whole, then one integer pass. Tolerance, on [0, 1] floats: zstd equals the transform
    of the recorded frame (1e-5); JPEG is within 1/255 on average and 12/255 at worst of
    "decode RGB at full size, area mean, luma" (the old path), and no farther from the
    recorded frame's luma than that old path is."""
    t = replay.Transform(size=(225, 400), grey=True, dtype="float32", layout="NCHW")
    store = replay.open_store(tmp_path / "s")
    source = real_frames[-8:]
    ids = {c: write_race(store, source, codec=c, shard_size=4) for c in ("jpeg", "zstd")}
    truth = (source.reshape(8, 225, 4, 400, 4, 3).mean(axis=(2, 4)) @ jpeg_luma()) / 255
    for codec, race_id in ids.items():
        encoded = fetch(tmp_path / "s", keys_of(race_id, list(range(8))))
        ours = decode_batch(encoded, transform=t).frames[:, 0, 0]  # type: ignore[union-attr]
        if codec == "zstd":
            np.testing.assert_allclose(ours, truth, atol=1e-5)
            continue
        full = decode_batch(encoded).frames[:, 0].astype(np.float64)  # type: ignore[union-attr]
        old = (full.reshape(8, 225, 4, 400, 4, 3).mean(axis=(2, 4)) @ jpeg_luma()) / 255
        diff = np.abs(ours - old)
        assert diff.mean() < 1 / 255, diff.mean() * 255
        assert diff.max() < 12 / 255, diff.max() * 255
        assert np.abs(ours - truth).mean() <= np.abs(old - truth).mean() * 2


def jpeg_luma() -> npt.NDArray[np.float64]:
    """BT.601 luma weights (what a JPEG's Y channel holds)."""
    from replay.codec.transform import LUMA

    return np.array(LUMA)
