"""A store of JPEG and zstd races of two frame sizes, served: ``Client.sample`` decodes each
frame by its race's codec, and the service's sampler takes races of any size (its clients
resize with their own `Transform`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from service_helpers import ThreadServer

import replay
from replay.read.batch import Batch
from replay.remote.client import Client
from service.settings import Settings


def test_client_samples_a_store_of_mixed_codecs_and_sizes(
    tmp_path: Path, carracing_frames: list[Any]
) -> None:
    real_frames: npt.NDArray[np.uint8] = np.stack([s.frame for s in carracing_frames[:6]])
    store = replay.open_store(tmp_path / "s")
    ids = {}
    for codec, frames in (
        ("jpeg", real_frames[:6]),
        ("zstd", real_frames[:6]),
        ("zstd", np.ascontiguousarray(real_frames[:6, ::10, ::10])),
    ):
        with store.new_race(
            env="mixed", height=frames.shape[1], width=frames.shape[2], codec=codec
        ) as w:
            for frame in frames:
                w.append(frame)
        ids[(codec, frames.shape[1])] = w.race_id
    t = replay.Transform(size=(45, 80), grey=True, dtype="float32", layout="NCHW")
    with ThreadServer(Settings(store=tmp_path / "s")) as server, Client(server.url) as client:
        batch = client.sample(batch_size=18, seed=0, transform=t)
        assert isinstance(batch, Batch)
        assert {r for r, _ in batch.keys} == set(ids.values())
        assert batch.frames.shape == (18, 1, 1, 45, 80)
        lossless = client.sample(batch_size=6, filters={"codec": "zstd", "height": 900})
        assert isinstance(lossless, Batch)
        assert {r for r, _ in lossless.keys} == {ids[("zstd", 900)]}
        for (_, step), frame in zip(lossless.keys, lossless.frames[:, 0], strict=True):
            np.testing.assert_array_equal(frame, real_frames[step])
        assert [r.race_id for r in client.races(codec="jpeg")] == [ids[("jpeg", 900)]]
        small = client.races(codec="zstd", height=90, width=160)
        assert [r.race_id for r in small] == [ids[("zstd", 90)]]
