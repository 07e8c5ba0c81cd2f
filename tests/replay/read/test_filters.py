"""`replay.Filters`: the one race filter of samplers, the CLI and ``GET /v1/races``.

The env/map/policy/race_ids/time rules are covered in test_index.py; here are the
fields the race list brought in (status, min_length, contains) and the rule for a
race whose start time cannot be read.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from sampling_helpers import make_store

import replay


def test_status_min_length_and_contains(tmp_path: Path) -> None:
    store, (race_id,) = make_store(tmp_path / "s", [6], env="CarRacing-v3", map="Track-B")
    info = store.race(race_id).info
    for yes in (
        replay.Filters(status="complete"),
        replay.Filters(status=["aborted", "complete"]),
        replay.Filters(min_length=6),
        replay.Filters(contains="track-b"),  # any case
        replay.Filters(contains="racing"),
        replay.Filters(contains=race_id[-6:].lower()),  # ids too
    ):
        assert yes.matches(info), yes
    for no in (
        replay.Filters(status="recording"),
        replay.Filters(min_length=7),
        replay.Filters(contains="vizdoom"),
        replay.Filters(contains="racing", status="aborted"),  # every filter must pass
    ):
        assert not no.matches(info), no
    with pytest.raises(ValueError, match="min_length must be >= 0, got -1"):
        replay.Filters(min_length=-1)


def test_a_race_with_an_unreadable_start_time_is_in_no_time_window(tmp_path: Path) -> None:
    store, (bad, good) = make_store(tmp_path / "s", [4, 4])
    info = dataclasses.replace(store.race(bad).info, started_at="not a time")
    assert replay.Filters().matches(info)
    assert not replay.Filters(since="2000-01-01T00:00:00Z").matches(info)
    assert not replay.Filters(until="2999-01-01T00:00:00Z").matches(info)

    meta = tmp_path / "s" / "races" / bad / "zarr.json"
    doc = json.loads(meta.read_text())
    doc["attributes"]["started_at"] = "not a time"
    meta.write_text(json.dumps(doc))
    sampler = store.sampler(batch_size=4, seed=0, filters={"since": "2000-01-01T00:00:00Z"})
    assert set(sampler.sample_keys().race_ids) == {good}
