"""Store and race round trips on real game frames, read back by plain zarr-python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import replay
from replay.bench.footprint import psnr
from replay.format import spec as fmt


def write_race(store: replay.Store, frames: npt.NDArray[np.uint8], **kwargs: Any) -> str:
    with store.new_race(env="CarRacing-v3", map="seed-0", **kwargs) as writer:
        for step, frame in enumerate(frames):
            writer.append(frame, action=[0.1 * step, 0.5, 0.0], reward=float(step))
    return writer.race_id


def test_open_store_creates_an_empty_store(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "new")
    assert store.races() == []
    doc = json.loads((tmp_path / "new" / "zarr.json").read_text())
    assert doc["attributes"] == {"replay_format": 1}
    assert replay.open_store(tmp_path / "new", mode="r").races() == []


def test_metadata_documents_are_durable_before_a_race_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every zarr.json of a new store and race is fsynced, then renamed into place, and
    the race's group document (which lists the race) lands after its arrays'."""
    fsynced: set[str] = set()
    renamed: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        fsynced.add(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        renamed.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store = replay.open_store(tmp_path / "s")
    writer = store.new_race(env="CarRacing-v3", extras={"speed": ("float32", ())})
    writer.close()
    race = tmp_path / "s" / "races" / writer.race_id
    docs = {str(p) for p in (tmp_path / "s").rglob("zarr.json")}
    # the root, races, samplers, the race group, frames, t_ns, action, reward, terminated,
    # truncated, speed
    assert len(docs) == 11
    assert docs <= {dst for src, dst in renamed if src in fsynced}
    order = [dst for _, dst in renamed]
    arrays = [order.index(str(p)) for p in race.glob("*/zarr.json")]
    assert order.index(str(race / "zarr.json")) > max(arrays)


def test_round_trip_real_frames_plain_zarr(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path / "store")
    race_id = write_race(store, real_frames, shard_size=16)
    info = store.race(race_id).info
    assert (info.status, info.length) == ("complete", len(real_frames))

    # Plain zarr-python in a fresh interpreter that never imports replay: the codecs
    # are found through the zarr.codecs entry point.
    script = (
        "import sys, zarr, numpy as np;"
        f"a = zarr.open_group({str(tmp_path / 'store')!r}, mode='r')['races/{race_id}/frames'];"
        "np.save(sys.argv[1], a[:])"
    )
    out = tmp_path / "decoded.npy"
    subprocess.run([sys.executable, "-c", script, str(out)], check=True)
    decoded = np.load(out)
    assert decoded.shape == real_frames.shape

    psnrs = [psnr(a, b) for a, b in zip(decoded, real_frames, strict=True)]
    disk = store.race_nbytes(race_id)
    ratio = real_frames.nbytes / disk
    print(
        f"\nreal CarRacing frames at q90: PSNR min {min(psnrs):.1f} dB, "
        f"mean {np.mean(psnrs):.1f} dB; {disk / len(real_frames) / 1000:.1f} KB/frame, "
        f"{ratio:.0f}x vs raw"
    )
    assert min(psnrs) >= 38.0
    assert ratio >= 15.0
    # the embedded reader decodes to the same pixels as plain zarr
    assert np.array_equal(store.race(race_id).frame(5), decoded[5])
    assert np.array_equal(store.race(race_id).steps("reward"), np.arange(len(real_frames)))


def test_lossless_zstd_race_is_bit_exact(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path / "store")
    race_id = write_race(store, real_frames[:6], codec="zstd", shard_size=4)
    race = store.race(race_id)
    assert np.array_equal(race.frames[:], real_frames[:6])
    assert np.array_equal(race.frame(5), real_frames[5])


def test_quality_and_subsampling_are_race_settings(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path / "store")
    low = write_race(store, real_frames[:4], quality=50, subsampling="420")
    high = write_race(store, real_frames[:4], quality=95, subsampling="444")
    assert store.race_nbytes(low) < store.race_nbytes(high)
    codec = store.race(high).frames.metadata.to_dict()["codecs"][0]["configuration"]["codecs"][1]
    assert codec == {
        "name": "jpeg",
        "configuration": {
            "quality": 95,
            "encoded_color_space": "ycbcr",
            "subsampling": [[1, 1], [1, 1], [1, 1]],
        },
    }
    assert psnr(store.race(high).frame(0), real_frames[0]) > psnr(
        store.race(low).frame(0), real_frames[0]
    )


def test_races_sort_by_time_and_carry_metadata(
    tmp_path: Path, real_frames: npt.NDArray[np.uint8]
) -> None:
    store = replay.open_store(tmp_path / "store")
    ids = [write_race(store, real_frames[:2], meta={"run": i}) for i in range(3)]
    assert [r.race_id for r in store.races()] == sorted(ids) == ids
    info = store.race(ids[1]).info
    assert info.meta == {"run": 1}
    assert (info.env, info.map, info.height, info.width) == ("CarRacing-v3", "seed-0", 900, 1600)
    assert info.ended_at is not None
    assert info.lease is None


def test_extras_are_declared_step_arrays(tmp_path: Path) -> None:
    store = replay.open_store(tmp_path / "store")
    frame = np.zeros((32, 48, 3), np.uint8)
    with store.new_race(env="e", height=32, width=48, extras={"speed": ("float32", ())}) as w:
        w.append(frame, speed=3.5)
        with pytest.raises(replay.StepDataError, match="unknown step data"):
            w.append(frame, sped=1.0)
        with pytest.raises(replay.StepDataError, match="shape"):
            w.append(frame, action=[1.0, 2.0])
    race = store.race(w.race_id)
    assert race.length == 1
    assert race.steps("speed").tolist() == [3.5]


def test_store_errors(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(replay.StoreError, match="is a file"):
        replay.open_store(a_file)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "data.txt").write_text("x")
    with pytest.raises(replay.StoreError, match="not a replay store"):
        replay.open_store(tmp_path / "other")
    with pytest.raises(replay.StoreError, match="not a replay store"):
        replay.open_store(tmp_path / "missing", mode="r")
    store = replay.open_store(tmp_path / "store")
    with pytest.raises(replay.RaceNotFoundError, match="no race 01ARZ3NDEKTSV4RRFFQ69G5FAV"):
        store.race("01ARZ3NDEKTSV4RRFFQ69G5FAV")
    with pytest.raises(replay.RaceNotFoundError, match="not a race id"):
        store.race("../../etc")
    with pytest.raises(replay.ReadOnlyStoreError):
        replay.open_store(tmp_path / "store", mode="r").new_race(env="e")
    with pytest.raises(ValueError, match="quality"):
        store.new_race(env="e", quality=0)
    with pytest.raises(ValueError, match="quality must be a whole number, got True"):
        store.new_race(env="e", quality=True)
    with pytest.raises(ValueError, match="JSON"):
        store.new_race(env="e", meta={"x": object()})
    assert store.races() == []  # nothing half-created by the refused calls


def test_format_version_is_checked(tmp_path: Path) -> None:
    replay.open_store(tmp_path / "s")
    doc = json.loads((tmp_path / "s" / fmt.METADATA).read_text())
    doc["attributes"]["replay_format"] = 99
    (tmp_path / "s" / fmt.METADATA).write_text(json.dumps(doc))
    with pytest.raises(replay.StoreError, match="format 99"):
        replay.open_store(tmp_path / "s")
