"""The reader and decoder: equal to plain zarr-python, live writers, corruption, memory,
the fused transform, prefetching."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import zarr
from pixels import assert_same_decode
from sampling_helpers import make_store, small_frames, write_race

import replay
from replay.codec import transform as tf
from replay.codec.devices import cuda_available
from replay.codec.transform import Transform
from replay.format import shards
from replay.format import spec as fmt
from replay.read.batch import SampleKeys
from replay.read.decode import decode_batch
from replay.read.reader import coalesce
from replay.sample.params import SamplerParams
from replay.sample.sampler import Sampler
from replay.storage.local import LocalStorage


@pytest.fixture(scope="module")
def real_store(
    real_frames: npt.NDArray[np.uint8], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    """Two races of real CarRacing frames (30 and 18 steps), shards of 8."""
    path = tmp_path_factory.mktemp("real") / "store"
    store = replay.open_store(path)
    ids = [
        write_race(store, real_frames[:30], env="CarRacing-v3"),
        write_race(store, real_frames[30:], env="CarRacing-v3"),
    ]
    return path, ids


def test_batches_equal_plain_zarr_reads(real_store: tuple[Path, list[str]]) -> None:
    path, _ = real_store
    sampler = replay.open_store(path, mode="r").sampler(batch_size=6, seq_len=3, stride=3, seed=0)
    group = zarr.open_group(str(path), mode="r")
    for _ in range(3):
        batch = sampler.sample()
        assert batch.frames.shape == (6, 3, 900, 1600, 3)
        assert batch.frames.dtype == np.uint8
        for (race_id, start), frames, reward, action in zip(
            batch.keys, batch.frames, batch.reward, batch.action, strict=True
        ):
            steps = [start, start + 3, start + 6]  # windows cross shard boundaries
            race: Any = group[f"races/{race_id}"]
            for step, frame in zip(steps, frames, strict=True):
                np.testing.assert_array_equal(frame, race["frames"][step])
            np.testing.assert_array_equal(reward, race["reward"][steps])
            np.testing.assert_array_equal(action, race["action"][steps])


def test_decode_batch_of_fetched_keys_equals_sample(real_store: tuple[Path, list[str]]) -> None:
    path, _ = real_store
    store = replay.open_store(path, mode="r")
    a = store.sampler(batch_size=4, seq_len=2, seed=7)
    b = store.sampler(batch_size=4, seq_len=2, seed=7)
    encoded = a.fetch(a.sample_keys())
    assert all(blob[:2] == b"\xff\xd8" for row in encoded.frames for blob in row)  # JPEGs
    assert encoded.codec["name"] == "jpeg"
    assert encoded.nbytes < 4 * 2 * 900 * 1600 * 3 / 15
    direct = decode_batch(encoded)
    sampled = b.sample()
    assert direct.keys == sampled.keys
    np.testing.assert_array_equal(direct.frames, sampled.frames)
    for name in ("action", "reward", "terminated", "truncated", "t_ns"):
        np.testing.assert_array_equal(direct.steps[name], sampled.steps[name])


def test_reads_are_grouped_by_shard_and_coalesced(real_store: tuple[Path, list[str]]) -> None:
    path, _ = real_store
    sampler = replay.open_store(path, mode="r").sampler(batch_size=1, seq_len=8, seed=1)
    keys = sampler.sample_keys()
    before = sampler.reader.stats()
    sampler.fetch(keys)
    after = sampler.reader.stats()
    shards_touched = len({int(s) // 8 for s in keys.steps[0]})
    assert after.reads - before.reads == shards_touched  # one read per shard for a window
    assert after.frames - before.frames == 8
    assert coalesce([(0, 10), (10, 5), (100, 5), (5000, 1)], gap=50) == [
        (0, 15),
        (100, 5),
        (5000, 1),
    ]
    assert coalesce([(0, 10), (4, 2)], gap=0) == [(0, 10)]


def test_fetch_gives_each_key_its_own_bytes_and_steps(real_store: tuple[Path, list[str]]) -> None:
    """Hand-made keys: both races, several shards, a frame asked twice, items out of
    order; and a batch inside one shard (read in the caller's thread). Each frame is a
    view into the read that fetched it, not a copy."""
    path, (a, b) = real_store
    store = replay.open_store(path, mode="r")
    sampler = store.sampler(batch_size=1, seed=0)
    cases = [
        ([b, a, b, a], [[17, 3], [29, 8], [0, 17], [3, 3]]),  # shards 0-3 of both races
        ([a, a], [[9, 10], [12, 9]]),  # one shard of one race
    ]
    for race_ids, steps in cases:
        n = len(race_ids)
        keys = SampleKeys(race_ids, np.array(steps), np.ones(n, np.float32), np.ones(n))
        encoded = sampler.fetch(keys)
        for race_id, row_steps, blobs, t_ns, reward in zip(
            race_ids,
            steps,
            encoded.frames,
            encoded.steps["t_ns"],
            encoded.steps["reward"],
            strict=True,
        ):
            race = store.race(race_id)
            assert blobs == [race.frame_bytes(s) for s in row_steps]
            assert all(isinstance(blob, memoryview) for blob in blobs)
            np.testing.assert_array_equal(t_ns, race.steps("t_ns")[row_steps])
            np.testing.assert_array_equal(reward, race.steps("reward")[row_steps])
    late = SampleKeys([a, b], np.array([[0, 1], [17, 18]]), np.ones(2, np.float32), np.ones(2))
    with pytest.raises(replay.SamplingError, match=f"race {b}: step 18 is not committed"):
        sampler.fetch(late)


class ThreadNamingDisk(LocalStorage):
    """A real local store that notes which thread reads each shard's frames."""

    def __init__(self, root: Path, concurrent: bool) -> None:
        super().__init__(root, read_only=True)
        self.concurrent_reads = concurrent
        self.readers: set[str] = set()

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        if "/frames/" in key:
            self.readers.add(threading.current_thread().name)
        return super().read_ranges(key, ranges)


@pytest.mark.parametrize("concurrent", [False, True])
def test_shards_are_read_in_the_caller_unless_the_storage_wants_them_at_once(
    real_store: tuple[Path, list[str]], concurrent: bool
) -> None:
    """A disk's shards are read one after another in the caller's thread (faster than a
    hand-off to threads); an object store's at once on the I/O threads. Same bytes."""
    path, (a, b) = real_store
    disk = ThreadNamingDisk(path, concurrent)
    keys = SampleKeys([a, b, a], np.array([[1], [12], [20]]), np.ones(3, np.float32), np.ones(3))
    with Sampler(disk, SamplerParams(batch_size=3), save_priorities=False) as sampler:
        encoded = sampler.fetch(keys)
    plain = replay.open_store(path, mode="r")
    for (race_id, step), (blob,) in zip(keys.keys, encoded.frames, strict=True):
        assert blob == plain.race(race_id).frame_bytes(step)
    if concurrent:
        assert disk.readers
        assert all(n.startswith("replay-read") for n in disk.readers)
    else:
        assert disk.readers == {threading.current_thread().name}


def test_held_batches_are_never_overwritten(real_store: tuple[Path, list[str]]) -> None:
    path, _ = real_store
    sampler = replay.open_store(path, mode="r").sampler(batch_size=2, seed=3)
    first = sampler.sample()
    copy = first.frames.copy()
    for _ in range(6):  # more batches than the buffer pool keeps
        sampler.sample()
    np.testing.assert_array_equal(first.frames, copy)


def test_prefetching_iterator(real_store: tuple[Path, list[str]]) -> None:
    path, _ = real_store
    store = replay.open_store(path, mode="r")
    keys = [b.keys for b in store.sampler(batch_size=2, seed=5).batches(limit=3)]
    again = store.sampler(batch_size=2, seed=5)
    assert keys == [again.sample_keys().keys for _ in range(3)]
    for n, batch in enumerate(store.sampler(batch_size=2, seed=5)):
        assert batch.frames.shape == (2, 1, 900, 1600, 3)
        if n == 2:
            break
    deadline = time.monotonic() + 5
    while any(t.name == "replay-prefetch" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the prefetch thread did not stop"
        time.sleep(0.01)


def test_prefetching_iterator_raises_errors(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "empty")
    with pytest.raises(replay.SamplingError, match="no committed frames"):
        next(iter(store.sampler()))


# -- corruption --------------------------------------------------------------------------


def corrupt_store(path: Path) -> tuple[replay.Store, str]:
    """24 steps in shards of 8: shard 1's index is damaged, step 18's JPEG header too."""
    store, (race_id,) = make_store(path, [24])
    shard1 = path / fmt.shard_key(race_id, fmt.FRAMES, 1, 4)
    data = bytearray(shard1.read_bytes())
    data[-1] ^= 0xFF  # the index checksum
    shard1.write_bytes(bytes(data))
    shard2 = path / fmt.shard_key(race_id, fmt.FRAMES, 2, 4)
    data = bytearray(shard2.read_bytes())
    n = shards.index_nbytes(8)
    offset, _ = shards.parse_index(bytes(data[-n:]), 8)[2]  # step 18 = slot 2
    data[int(offset) : int(offset) + 4] = b"\0\0\0\0"
    shard2.write_bytes(bytes(data))
    return store, race_id


def keys_for(race_id: str, *steps: int) -> replay.SampleKeys:
    return replay.SampleKeys(
        race_ids=[race_id] * len(steps),
        steps=np.array(steps, dtype=np.int64)[:, None],
        weights=np.ones(len(steps), np.float32),
        probabilities=np.ones(len(steps)),
    )


def test_corrupt_shard_and_frame_errors_name_race_shard_and_step(tmp_path: Path) -> None:
    store, race_id = corrupt_store(tmp_path / "s")
    sampler = store.sampler(batch_size=2)
    with pytest.raises(replay.CorruptDataError, match=rf"race {race_id}, shard 1 .*step 9") as e:
        sampler.fetch(keys_for(race_id, 3, 9))
    assert (e.value.race_id, e.value.shard, e.value.step) == (race_id, 1, 9)
    with pytest.raises(replay.CorruptDataError, match=rf"race {race_id}, shard 2: .*step 18") as e:
        decode_batch(sampler.fetch(keys_for(race_id, 17, 18)))
    assert (e.value.race_id, e.value.shard, e.value.step) == (race_id, 2, 18)
    sampler = store.sampler(batch_size=8, seed=0)
    with pytest.raises(replay.CorruptDataError):  # sooner or later a batch hits one
        _ = [sampler.sample() for _ in range(50)]


def test_undecodable_frames_name_race_shard_and_step(tmp_path: Path) -> None:
    store, (race_id,) = make_store(tmp_path / "s", [12])
    sampler = store.sampler(batch_size=2)
    encoded = sampler.fetch(keys_for(race_id, 2, 10))
    damaged = replace(encoded, frames=[encoded.frames[0], [b"\xff\xd8 not a JPEG"]])
    with pytest.raises(replay.CorruptDataError, match=rf"race {race_id}, shard 1: .*step 10") as e:
        decode_batch(damaged)
    assert (e.value.race_id, e.value.shard, e.value.step) == (race_id, 1, 10)


def test_skip_corrupt_redraws_and_counts(tmp_path: Path) -> None:
    store, _ = corrupt_store(tmp_path / "s")
    sampler = store.sampler(batch_size=8, seed=0, skip_corrupt=True)
    steps: set[int] = set()
    for _ in range(30):
        batch = sampler.sample()
        steps |= {s for _, s in batch.keys}
    assert steps == set(range(8)) | {16, 17} | set(range(19, 24))
    assert sampler.stats().corrupt_skipped >= 2
    prio = store.sampler("prioritized", batch_size=8, seed=0, skip_corrupt=True)
    for _ in range(10):
        prio.sample()
    leaves, _ = prio.selector.leaves([(prio.index.entries[0].race_id, 18)])  # type: ignore[union-attr]
    assert prio.selector.tree.get(np.array(leaves))[0] == 0  # type: ignore[union-attr]


def test_an_unreadable_step_array_loses_its_whole_shard(tmp_path: Path) -> None:
    store, (race_id,) = make_store(tmp_path / "s", [24])
    chunk = tmp_path / "s" / fmt.shard_key(race_id, "reward", 2, 1)
    chunk.write_bytes(b"not zstd")
    sampler = store.sampler(batch_size=8, seed=0, skip_corrupt=True)
    steps: set[int] = set()
    for _ in range(30):
        steps |= {s for _, s in sampler.sample().keys}
    assert steps == set(range(16))  # shard 2 (steps 16..23) is never handed out
    assert sampler.stats().corrupt_skipped == 1  # and it was skipped once, as a whole


# -- a writer in another process ---------------------------------------------------------


def record_in_child(store_path: str, frames_path: str, count: int) -> None:
    """Runs in a spawned process: record `count` frames at ~40 fps, committing often."""
    frames = np.load(frames_path, mmap_mode="r")
    store = replay.open_store(store_path)
    with store.new_race(env="live", shard_size=4, flush_interval=0.05) as writer:
        for step in range(count):
            writer.append(frames[step % len(frames)], reward=float(step))
            time.sleep(0.025)


def test_sampling_while_another_process_writes(tmp_path: Path, frames_file: Path) -> None:
    store = replay.open_store(tmp_path / "live")
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=record_in_child, args=(str(tmp_path / "live"), str(frames_file), 40))
    child.start()
    sampler = store.sampler(batch_size=2, refresh_interval=0, seed=0)
    seen: dict[tuple[str, int], bytes] = {}
    lengths = []
    try:
        deadline = time.monotonic() + 60
        while child.is_alive() and time.monotonic() < deadline:
            try:
                keys = sampler.sample_keys()
            except replay.SamplingError:  # nothing committed yet
                time.sleep(0.01)
                continue
            lengths.append(len(sampler))
            encoded = sampler.fetch(keys)
            decode_batch(encoded)  # every frame decodes: never torn
            for (race_id, step), row in zip(keys.keys, encoded.frames, strict=True):
                seen[(race_id, step)] = row[0]
    finally:
        child.join(timeout=60)
    assert child.exitcode == 0
    assert len(set(lengths)) >= 3, "new frames did not appear while the writer ran"
    assert lengths == sorted(lengths)
    (race_id,) = store.race_ids()
    race = store.race(race_id)
    assert race.length == 40
    for (_, step), blob in seen.items():
        assert blob == race.frame_bytes(step)  # exactly the committed bytes


# -- memory ------------------------------------------------------------------------------

MEMORY_SCRIPT = """
import sys, psutil, replay
sampler = replay.open_store(sys.argv[1], mode="r").sampler(batch_size=16, seed=0)
process = psutil.Process()
peak = 0
for _ in range(int(sys.argv[2])):
    batch = sampler.sample()
    peak = max(peak, process.memory_info().rss)
    del batch
print(peak, sampler.stats().index_bytes)
"""


def noisy_frames(n: int, seed: int) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    base = small_frames(n, seed=seed, h=360, w=640)
    noisy: npt.NDArray[np.uint8] = np.clip(base + rng.integers(-24, 24, base.shape), 0, 255)
    return noisy.astype(np.uint8)


def test_memory_stays_flat_on_a_ten_times_larger_store(tmp_path: Path) -> None:
    small = replay.open_store(tmp_path / "small")
    large = replay.open_store(tmp_path / "large")
    frames = noisy_frames(40, seed=0)
    write_race(small, frames, shard_size=16)
    for i in range(10):
        write_race(large, np.roll(frames, i, axis=0), shard_size=16)
    on_disk = sum(p.stat().st_size for p in (tmp_path / "large").rglob("*") if p.is_file())
    assert on_disk > 30e6  # 400 frames: holding them would show in RSS

    def peak(store: Path) -> tuple[int, int]:
        run = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, str(store), "40"],
            capture_output=True,
            text=True,
            check=True,
        )
        rss, index = run.stdout.split()
        return int(rss), int(index)

    small_peak, _ = peak(tmp_path / "small")
    large_peak, large_index = peak(tmp_path / "large")
    assert large_index < 20_000
    # measured: +5..8 MiB at 10x and the same at 20x (allocator arenas of the I/O
    # threads, not the data); holding the 10x store's frames would add > 30 MB
    assert large_peak - small_peak < 16 * 2**20, (small_peak, large_peak)


# -- the fused transform -----------------------------------------------------------------


def area(frames: npt.NDArray[Any], f: int) -> npt.NDArray[np.float64]:
    n, h, w, c = frames.shape
    out: npt.NDArray[np.float64] = frames.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4))
    return out


def test_dct_scaled_decode_is_close_to_full_decode_and_area_resize(
    real_store: tuple[Path, list[str]],
) -> None:
    path, _ = real_store
    sampler = replay.open_store(path, mode="r").sampler(batch_size=4, seed=2)
    encoded = sampler.fetch(sampler.sample_keys())
    full = decode_batch(encoded).frames[:, 0]
    for size, factor in (((450, 800), 2), ((225, 400), 4)):
        t = Transform(size=size)
        assert t.dct_scale(900, 1600) == factor
        small = decode_batch(encoded, transform=t).frames[:, 0]
        assert small.shape == (4, *size, 3)
        assert small.dtype == np.uint8
        diff = np.abs(small.astype(np.float64) - area(full, factor))
        assert diff.mean() < 2.0, diff.mean()
        exact = decode_batch(encoded, transform=Transform(size=size, dct_scaling=False)).frames
        np.testing.assert_array_equal(exact[:, 0], np.rint(area(full, factor)).astype(np.uint8))


def test_crop_grey_float_nchw_match_a_numpy_reference(real_store: tuple[Path, list[str]]) -> None:
    path, _ = real_store
    sampler = replay.open_store(path, mode="r").sampler(batch_size=3, seq_len=2, seed=4)
    encoded = sampler.fetch(sampler.sample_keys())
    full = decode_batch(encoded).frames.astype(np.float64)  # (3, 2, 900, 1600, 3)
    crop = full[:, :, 100:500, 200:1000]
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    t = Transform(crop=(100, 200, 400, 800), dtype="float32", layout="NCHW", mean=mean, std=std)
    out = decode_batch(encoded, transform=t).frames
    assert out.shape == (3, 2, 3, 400, 800)
    assert out.dtype == np.float32
    ref = ((crop / 255 - np.array(mean)) / np.array(std)).transpose(0, 1, 4, 2, 3)
    np.testing.assert_allclose(out, ref, atol=1e-5)

    grey = decode_batch(encoded, transform=Transform(crop=(100, 200, 400, 800), grey=True)).frames
    assert grey.shape == (3, 2, 400, 800, 1)
    luma = crop @ np.array(tf.LUMA)
    # grey decodes the JPEG's own luma (Y), not the luma of its RGB decode: they differ
    # where decoded RGB clips (saturated colour edges); test_decode.py bounds both
    diff = np.abs(grey[..., 0].astype(np.float64) - luma)
    assert diff.mean() < 0.5, diff.mean()
    assert diff.max() <= 32, diff.max()

    # cropped and DCT-scaled: the crop lies on the 1/4 grid, so the decoder scales
    small = Transform(crop=(100, 200, 400, 800), size=(100, 200), dtype="float16")
    assert small.dct_scale(900, 1600) == 4
    out = decode_batch(encoded, transform=small).frames
    assert out.shape == (3, 2, 100, 200, 3)
    assert out.dtype == np.float16
    ref4 = area(crop.reshape(6, 400, 800, 3), 4).reshape(3, 2, 100, 200, 3) / 255
    assert np.abs(out.astype(np.float64) - ref4).mean() < 2 / 255


# -- GPU (a lent machine) ----------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_decode_and_transform_match_the_cpu_reference(
    real_store: tuple[Path, list[str]],
) -> None:
    if not cuda_available():
        pytest.skip("no CUDA device")
    import cupy

    path, _ = real_store
    sampler = replay.open_store(path, mode="r").sampler(batch_size=8, seq_len=2, seed=6)
    encoded = sampler.fetch(sampler.sample_keys())
    cpu = decode_batch(encoded).frames
    gpu = decode_batch(encoded, device="cuda", out="cupy").frames
    assert isinstance(gpu, cupy.ndarray)
    assert gpu.shape == cpu.shape
    assert gpu.dtype == np.uint8
    assert_same_decode(cupy.asnumpy(gpu), cpu)
    t = Transform(
        crop=(100, 0, 800, 1600), size=(200, 400), dtype="float32", layout="NCHW", mean=0.5, std=0.5
    )
    on_gpu = cupy.asnumpy(decode_batch(encoded, device="cuda", out="cupy", transform=t).frames)
    reference = decode_batch(encoded, transform=Transform(**{**t.__dict__, "dct_scaling": False}))
    assert on_gpu.shape == reference.frames.shape == (8, 2, 3, 200, 400)
    assert_same_decode(on_gpu, reference.frames, level=1 / 255 / 0.5)  # std=0.5
    numpy_out = decode_batch(encoded, device="cuda", out="numpy")
    assert isinstance(numpy_out.frames, np.ndarray)


@pytest.mark.gpu
def test_cuda_torch_output_is_on_the_device(real_store: tuple[Path, list[str]]) -> None:
    if not cuda_available():
        pytest.skip("no CUDA device")
    torch = pytest.importorskip("torch")
    path, _ = real_store
    sampler = replay.open_store(path, mode="r").sampler(batch_size=4, seed=6)
    batch = sampler.sample(device="cuda", out="torch", transform=Transform(dtype="bfloat16"))
    assert batch.frames.device.type == "cuda"
    assert batch.frames.dtype == torch.bfloat16
    assert batch.weights.device.type == "cuda"
    assert batch.reward.device.type == "cuda"
