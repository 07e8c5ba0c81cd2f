"""``POST /v1/sample`` on a store damaged on disk: strict requests answer 409 naming
race and shard; ``skip_corrupt`` redraws past the damage, as the embedded sampler
does, and says what it skipped; the client does the same for frames it decodes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from service_helpers import (
    ThreadServer,
    damage_frame,
    damage_shard_index,
    replace_frame,
    write_race,
)

import replay
from replay.read.batch import EncodedBatch
from replay.read.decode import decode_batch
from replay.remote import protocol
from replay.remote.client import Client
from replay.remote.protocol import CORRUPT_SKIPPED_HEADER, CORRUPT_WHERE_HEADER
from service.settings import Settings

SHARD_SIZE = 8
#: Steps of `Damaged.race_id` that no batch may hold: shard 1 (index broken) and step 18.
BAD_STEPS = {*range(8, 16), 18}


@dataclass(frozen=True)
class Damaged:
    """A served store: `race_id` (24 steps, shards of 8) has shard 1's index broken and
    step 18's bytes flipped; `undecodable` (2 steps) holds at step 1 bytes that pass
    their CRC32C but are no JPEG."""

    url: str
    race_id: str
    undecodable: str


@pytest.fixture(scope="module")
def damaged(
    tmp_path_factory: pytest.TempPathFactory, frames: list[npt.NDArray[np.uint8]]
) -> Iterator[Damaged]:
    path = tmp_path_factory.mktemp("damaged") / "store"
    store = replay.open_store(path)
    race_id = write_race(store, frames[:24], shard_size=SHARD_SIZE)
    undecodable = write_race(store, frames[:2], shard_size=SHARD_SIZE)
    damage_shard_index(path, race_id, 1)
    damage_frame(path, race_id, 18, SHARD_SIZE)
    replace_frame(path, undecodable, 1, b"\xff\xd8 not a JPEG", SHARD_SIZE)
    with ThreadServer(Settings(store=path)) as server:
        yield Damaged(server.url, race_id, undecodable)


def post_sample(url: str, **body: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/sample", json=body, timeout=30)


def test_strict_sample_is_409_naming_race_and_shard(damaged: Damaged) -> None:
    shards_named = set()
    for seed in range(4):  # 9 of 24 items are damaged: nearly every batch of 8 hits one
        r = post_sample(
            damaged.url, batch_size=8, seed=seed, filters={"race_ids": [damaged.race_id]}
        )
        assert r.status_code in (200, 409), r.text
        assert CORRUPT_SKIPPED_HEADER not in r.headers
        if r.status_code == 409:
            body = r.json()
            assert (body["error"], body["race_id"]) == ("CorruptDataError", damaged.race_id)
            assert body["shard"] in (1, 2)
            assert f"race {damaged.race_id}, shard {body['shard']}" in body["detail"]
            shards_named.add(body["shard"])
    assert shards_named


def test_skip_corrupt_redraws_and_names_what_it_skipped(
    damaged: Damaged, frames: list[npt.NDArray[np.uint8]]
) -> None:
    rid = damaged.race_id
    where: list[str] = []
    skipped = 0
    steps_seen: set[int] = set()
    for _ in range(20):  # one seeded stream, until both damaged places were met
        r = post_sample(
            damaged.url, batch_size=8, seed=1, filters={"race_ids": [rid]}, skip_corrupt=True
        )
        assert r.status_code == 200, r.text
        n = int(r.headers[CORRUPT_SKIPPED_HEADER])
        places = r.headers[CORRUPT_WHERE_HEADER].split(", ") if n else []
        assert len(places) == n
        skipped += n
        where += places
        encoded = protocol.unpack(r.content)
        assert isinstance(encoded, EncodedBatch)
        assert encoded.keys.race_ids == [rid] * 8
        steps = encoded.keys.steps[:, 0].tolist()
        assert not BAD_STEPS & set(steps), steps  # replaced, never sent
        steps_seen |= set(steps)
        decoded = decode_batch(encoded).frames  # every frame sent decodes, to its own pixels
        for step, pixels in zip(steps, decoded[:, 0], strict=True):
            error = np.abs(pixels.astype(np.int16) - frames[step].astype(np.int16)).mean()
            assert error < 3, (step, error)  # JPEG q90 of the frame written at that step
        if {f"{rid}:1", f"{rid}:2:18"} <= set(where):
            break
    assert sorted(where) == [f"{rid}:1", f"{rid}:2:18"]  # each met once, then avoided
    assert steps_seen <= set(range(24)) - BAD_STEPS
    stats = httpx.get(f"{damaged.url}/v1/stats").json()
    (sampler,) = [s for s in stats["samplers"] if s["skip_corrupt"] and s["seed"] == 1]
    assert sampler["corrupt_skipped"] == skipped == 2
    metrics = httpx.get(f"{damaged.url}/metrics").text
    assert "replay_corrupt_skipped_total" in metrics


def test_decoded_view_skips_frames_that_do_not_decode(damaged: Damaged) -> None:
    rid = damaged.undecodable
    body = {"batch_size": 2, "filters": {"race_ids": [rid]}, "decoded": {"size": [90, 160]}}
    statuses = []
    for seed in range(4):  # strict: a batch holding step 1 is a 409 naming it
        r = post_sample(damaged.url, seed=seed, **body)
        statuses.append(r.status_code)
        if r.status_code == 409:
            assert (r.json()["race_id"], r.json()["shard"], r.json()["step"]) == (rid, 0, 1)
    assert 409 in statuses
    assert set(statuses) <= {200, 409}
    where = []
    for _ in range(3):  # skip_corrupt: step 1 is met (at most once), then avoided
        r = post_sample(damaged.url, seed=10, skip_corrupt=True, **body)
        assert r.status_code == 200, r.text
        if r.headers[CORRUPT_SKIPPED_HEADER] != "0":
            where += r.headers[CORRUPT_WHERE_HEADER].split(", ")
        raw = protocol.unpack(r.content)
        assert isinstance(raw, protocol.RawBatch)
        assert raw.keys.steps.tolist() == [[0], [0]]
        assert raw.frames.shape == (2, 1, 90, 160, 3)
    assert where == [f"{rid}:0:1"]


def first_corrupt(sample: Callable[[int], object]) -> replay.CorruptDataError:
    """The error of the first of a few seeded draws that raises `CorruptDataError`."""
    for seed in range(4):
        try:
            sample(seed)
        except replay.CorruptDataError as e:
            return e
    raise AssertionError("no batch met the damage")


def test_client_skip_corrupt(damaged: Damaged) -> None:
    with Client(damaged.url, device="cpu") as client:
        rid = damaged.race_id
        e = first_corrupt(
            lambda seed: client.sample(batch_size=8, seed=seed, filters={"race_ids": [rid]})
        )
        assert e.race_id == rid  # strict: the service's 409
        assert e.shard in (1, 2)
        undecodable = {"race_ids": [damaged.undecodable]}
        e = first_corrupt(lambda seed: client.sample(batch_size=2, seed=seed, filters=undecodable))
        assert (e.race_id, e.shard, e.step) == (damaged.undecodable, 0, 1)  # decoded here
        assert "step 1" in str(e)
        assert client.corrupt_skipped == 0

        batch = client.sample(
            batch_size=8, seed=3, filters={"race_ids": [damaged.race_id]}, skip_corrupt=True
        )
        assert not BAD_STEPS & {step for _, step in batch.keys}
        for _ in range(4):  # the service cannot see this damage: the client redraws
            batch = client.sample(batch_size=2, seed=4, filters=undecodable, skip_corrupt=True)
            assert [step for _, step in batch.keys] == [0, 0]
        assert client.corrupt_skipped >= 2
