"""A service whose store is on an S3-compatible object store (the session's SeaweedFS on
loopback, `s3_server`) records a race sent by a remote actor: the service is pointed at
``s3://bucket/prefix`` and given its credentials through the standard ``AWS_*``
environment (docs/deploy.md), with cloud metadata lookups off."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from service_helpers import assert_sampled_from

import replay
from replay.codec.frames import ZstdFrames
from replay.format import spec as fmt
from service.tools.process import ServerProcess

ENV = {"REPLAY_MAX_CHUNK_BYTES": str(16 << 20), "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.mark.s3
@pytest.mark.slow
def test_a_race_recorded_through_a_service_on_s3_reads_back_byte_exact(
    s3_url: str, s3_env: dict[str, str], frames: list[npt.NDArray[np.uint8]]
) -> None:
    """Three shards and an open one, committed as PUTs by the service: each stored frame is
    the actor's zstd encoding of it, byte for byte, and decodes to the frame appended;
    the race is complete, verifies, and samples through the service."""
    replay.open_store(s3_url)
    few = frames[:28]
    with ServerProcess(s3_url, env={**s3_env, **ENV}) as server, replay.Client(server.url) as c:
        with c.new_race(env="CarRacing-v3", codec="zstd", shard_size=8, flush_interval=0.05) as w:
            for step, frame in enumerate(few):
                assert w.append(frame, reward=step)
        assert (w.stats().written, w.stats().dropped) == (len(few), 0)
        only = {"race_ids": [w.race_id]}
        assert_sampled_from(c.sample(batch_size=6, filters=only), w.race_id, few)
    store = replay.open_store(s3_url, mode="r")
    race = store.race(w.race_id)
    assert (race.status, race.length, race.info.n_shards) == (fmt.COMPLETE, 28, 4)
    np.testing.assert_array_equal(race.steps("reward"), np.arange(28))
    for step, (frame, blob) in enumerate(zip(few, ZstdFrames().encode(few), strict=True)):
        assert race.frame_bytes(step) == blob
        np.testing.assert_array_equal(race.frame(step), frame)
    assert store.verify().ok
