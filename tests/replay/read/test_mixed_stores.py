"""One store, several kinds of races: JPEG and zstd races in one batch (each frame decoded by
its race's codec), races of different frame sizes (refused when the sampler is made unless
a transform resizes them to one size), and the filters that pick one kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sampling_helpers import write_race

import replay
from replay.codec import transform as tf
from replay.errors import SamplingError
from replay.read.batch import Batch
from replay.read.decode import decode_batch
from replay.read.filters import Filters
from replay.remote import protocol

FRAMES = 8


@pytest.fixture(scope="module")
def mixed_store(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, str]:
    """A JPEG race and a lossless zstd race of the same real CarRacing frames."""
    path = tmp_path_factory.mktemp("mixed") / "store"
    store = replay.open_store(path)
    jpeg = write_race(store, real_frames[:FRAMES], shard_size=4, codec="jpeg")
    zstd = write_race(store, real_frames[:FRAMES], shard_size=4, codec="zstd")
    return path, jpeg, zstd


def test_a_batch_mixes_jpeg_and_zstd_races(
    mixed_store: tuple[Path, str, str], real_frames: npt.NDArray[np.uint8]
) -> None:
    path, jpeg, zstd = mixed_store
    store = replay.open_store(path, mode="r")
    with store.sampler(batch_size=12, seed=1) as sampler:
        batch = sampler.sample()
        assert isinstance(batch, Batch)
        races = {race_id for race_id, _ in batch.keys}
        assert races == {jpeg, zstd}  # both codecs in one batch
        for (race_id, step), frame in zip(batch.keys, batch.frames[:, 0], strict=True):
            if race_id == zstd:  # lossless: the frame as recorded
                np.testing.assert_array_equal(frame, real_frames[step])
            else:
                np.testing.assert_array_equal(frame, store.race(jpeg).frame(step))
        # the same batch through the wire format (what Client.sample decodes)
        encoded = sampler.fetch(sampler.sample_keys())
        assert set(encoded.formats) == {jpeg, zstd}
        message = b"".join(bytes(p) for p in protocol.pack(encoded))
        unpacked = protocol.unpack(message)
        assert unpacked.formats == encoded.formats  # type: ignore[union-attr]
        here, there = decode_batch(encoded), decode_batch(unpacked)  # type: ignore[arg-type]
        np.testing.assert_array_equal(here.frames, there.frames)  # type: ignore[union-attr]


def test_a_grey_transform_of_a_mixed_batch(mixed_store: tuple[Path, str, str]) -> None:
    """JPEG items decode only their luma at 1/4 scale, zstd items are reduced by area:
    both give the README's (225, 400) grey float frames, and agree with each other."""
    path, jpeg, zstd = mixed_store
    t = replay.Transform(size=(225, 400), grey=True, dtype="float32", layout="NCHW")
    with replay.open_store(path, mode="r").sampler(batch_size=16, seed=2) as sampler:
        batch = sampler.sample(transform=t)
    assert isinstance(batch, Batch)
    assert batch.frames.shape == (16, 1, 1, 225, 400)
    by_key = dict(zip(batch.keys, batch.frames[:, 0, 0], strict=True))
    pairs = [
        (by_key[(jpeg, s)], by_key[(zstd, s)])
        for s in range(FRAMES)
        if (jpeg, s) in by_key and (zstd, s) in by_key
    ]
    assert pairs, "draw some step from both races"
    for lossy, lossless in pairs:  # JPEG q90 luma vs the lossless frame's, in [0, 1]
        assert np.abs(lossy - lossless).mean() < 2 / 255


def test_races_of_different_sizes_need_a_resizing_transform_when_the_sampler_is_made(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path / "s")
    big = write_race(store, real_frames[:4], codec="zstd")
    small = write_race(store, np.ascontiguousarray(real_frames[:4, ::10, ::10]), codec="jpeg")
    with pytest.raises(SamplingError) as refused:
        store.sampler(batch_size=4)
    message = str(refused.value)
    assert f"900x1600: 1 races ({big})" in message
    assert f"90x160: 1 races ({small})" in message
    assert "Transform(size=" in message
    assert "filters={'height':" in message
    t = replay.Transform(size=(45, 80), grey=True)
    with store.sampler(batch_size=8, seed=0, transform=t) as sampler:
        batch = sampler.sample()
        assert isinstance(batch, Batch)
        assert {r for r, _ in batch.keys} == {big, small}
        assert batch.frames.shape == (8, 1, 45, 80, 1)
    for filters, race in (
        ({"height": 900}, big),
        ({"width": [160]}, small),
        ({"codec": "jpeg"}, small),
        ({"codec": ["zstd"]}, big),
    ):
        with store.sampler(batch_size=4, filters=filters) as sampler:
            batch = sampler.sample()
            assert isinstance(batch, Batch)
            assert {r for r, _ in batch.keys} == {race}


def test_filters_by_codec_and_frame_size(mixed_store: tuple[Path, str, str]) -> None:
    path, jpeg, zstd = mixed_store
    infos = {i.race_id: i for i in replay.open_store(path, mode="r").races()}
    assert Filters(codec="zstd").matches(infos[zstd])
    assert not Filters(codec="zstd").matches(infos[jpeg])
    assert Filters(codec=["jpeg", "zstd"], height=900, width=(1600, 800)).matches(infos[jpeg])
    assert not Filters(height=901).matches(infos[jpeg])
    assert Filters.of({"codec": "jpeg", "width": 1600}) == Filters(codec="jpeg", width=1600)


def test_the_stacked_layout_puts_a_windows_frames_in_channels(
    mixed_store: tuple[Path, str, str],
) -> None:
    """DQN's frame stack: 4 grey frames of a window are 4 channels, (B, L*C, H, W)."""
    path, _, _ = mixed_store
    grey = replay.Transform(size=(90, 160), grey=True, dtype="float32", layout="NCHW")
    stacked = replay.Transform(size=(90, 160), grey=True, dtype="float32", layout="stacked")
    assert stacked.output_shape(900, 1600) == (1, 90, 160)
    with replay.open_store(path, mode="r").sampler(batch_size=3, seq_len=4, seed=5) as sampler:
        keys = sampler.sample_keys()
        encoded = sampler.fetch(keys)
    per_frame = decode_batch(encoded, transform=grey).frames  # type: ignore[union-attr]
    channels = decode_batch(encoded, transform=stacked).frames  # type: ignore[union-attr]
    assert per_frame.shape == (3, 4, 1, 90, 160)
    assert channels.shape == (3, 4, 90, 160)
    np.testing.assert_array_equal(channels, per_frame[:, :, 0])
    rgb = decode_batch(encoded, transform=replay.Transform(size=(90, 160), layout="stacked"))
    assert rgb.frames.shape == (3, 12, 90, 160)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="'stacked'"):
        tf.Transform(layout="NLHW")  # type: ignore[arg-type]
