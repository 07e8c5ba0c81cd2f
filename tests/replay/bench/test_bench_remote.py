"""Smoke run of ``replay bench remote`` on tiny sizes: a real service on loopback, real
actor processes, real frames; the figures' shape and sanity, never their speed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner

import replay
from replay.bench.remote import cpu_split
from replay.cli.main import main
from replay.codec.frames import ZstdFrames

FRAMES = 4  # per actor
DISTINCT = 2  # FRAMES cycles them twice: the mean frame size is theirs


@pytest.fixture
def frames_store(tmp_path: Path, real_frames: npt.NDArray[np.uint8]) -> Path:
    """Real CarRacing frames at 1/10 scale, as a zstd race and as a JPEG race."""
    store = replay.open_store(tmp_path / "frames")
    small = [np.ascontiguousarray(f[::10, ::10]) for f in real_frames[:DISTINCT]]
    for env, codec in (("CarRacing-v3", "zstd"), ("ViZDoom", "jpeg")):
        with store.new_race(env=env, height=90, width=160, codec=codec) as writer:
            for frame in small:
                writer.append(frame)
    return tmp_path / "frames"


@pytest.mark.slow  # about 17 actor processes and a service: 30-40 s on 2 cores
def test_bench_remote_measures_local_and_remote_actors(tmp_path: Path, frames_store: Path) -> None:
    out = tmp_path / "remote.json"
    args = ["--frames-from", str(frames_store), "--frames", str(FRAMES)]
    args += ["--distinct", str(DISTINCT), "--actors", "1,2", "--paced-frames", "3"]
    args += ["--fps", "100", "--load-actors", "2", "--batch-size", "2", "--batches", "2"]
    result = CliRunner().invoke(main, ["bench", "remote", *args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "remote"
    assert doc["date"]
    assert doc["machine"]["cores"] >= 1
    figures = doc["results"]
    assert figures["CarRacing-v3"]["codec"] == {"codec": "zstd"}
    assert figures["ViZDoom"]["codec"] == {"codec": "jpeg", "quality": 90, "subsampling": "420"}
    for env in ("CarRacing-v3", "ViZDoom"):
        game = figures[env]
        assert game["frame_shape"] == [90, 160, 3]
        ingest, per_frame = game["ingest"], game["per_frame"]
        assert set(ingest) == set(per_frame) == {"local", "remote_1", "remote_2"}
        for name, actors in (("local", 1), ("remote_1", 1), ("remote_2", 2)):
            assert ingest[name]["frames"] == actors * FRAMES  # every frame acknowledged
            assert ingest[name]["dropped"] == 0
            assert ingest[name]["frames_per_s"] > 0
            assert per_frame[name]["actor_cpu_ms"] >= 0
            # every stored byte was written once at least (open shards more often)
            assert per_frame[name]["written_bytes"] >= per_frame[name]["stored_bytes"] > 0
        local = per_frame["local"]
        assert local["wire_bytes"] == local["requests"] == local["service_cpu_ms"] == 0
        for name in ("remote_1", "remote_2"):
            assert per_frame[name]["requests"] > 0
            # the same frames and codec: the service stores what the local writer does
            assert per_frame[name]["stored_bytes"] == pytest.approx(local["stored_bytes"], rel=0.1)
            ratio = game["ratios"][f"frames_per_s_{name}_vs_local"]
            assert ratio == pytest.approx(
                ingest[name]["frames_per_s"] / ingest["local"]["frames_per_s"]
            )
        for name in ("local", "remote"):
            append = game["append_paced"][name]
            assert 0 < append["p50_us"] <= append["p99_us"] <= append["max_us"]
    _check_wire_bytes(frames_store, figures["CarRacing-v3"]["per_frame"])
    _check_sampling(figures["sample_latency"])
    assert "pinned apart" in CliRunner().invoke(main, ["bench", "remote", "--help"]).output


def _check_sampling(sampling: dict[str, Any]) -> None:
    """Sample latency with no actor, 2 actors, at nice 19 and pinned apart (2+ CPUs here)."""
    runs = ("0_actors", "2_actors", "2_actors_nice_19", "0_actors_pinned", "2_actors_pinned")
    for kind in ("request", "decoded"):
        assert tuple(sampling[kind]) == runs
        for latency in sampling[kind].values():
            assert 0 < latency["p50_us"] <= latency["p99_us"]
    ratios = sampling["ratios"]
    assert len(ratios) == 4 * 4
    assert min(ratios.values()) > 0
    pinned = sampling["request"]["2_actors_pinned"]["p50_us"]
    alone = sampling["request"]["0_actors_pinned"]["p50_us"]
    assert ratios["request_p50_2_actors_pinned_vs_0_pinned"] == pytest.approx(pinned / alone)
    for run in ("2_actors", "2_actors_nice_19", "2_actors_pinned"):
        assert sampling["inserting"][run]["frames"] > 0
        assert sampling["inserting"][run]["dropped"] == 0
        assert sampling["inserting_per_frame"][run]["wire_bytes"] > 0
    where = sampling["pinned"]
    service, actors = set(where["service_and_sampler_cpus"]), set(where["actor_cpus"])
    assert service
    assert actors
    assert not service & actors
    assert service | actors == os.sched_getaffinity(0)  # restored here afterwards
    assert len(service) == (len(service | actors) + 1) // 2
    assert set(where["actors_ran_on"]) == actors  # every actor thread, its writer process too
    assert set(where["service_ran_on"]) == service


def test_no_cpu_to_pin_actors_apart_on_one_cpu() -> None:
    everyone = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(everyone)})
        assert cpu_split() is None
    finally:
        os.sched_setaffinity(0, everyone)
    service, actors = cpu_split() or (frozenset(), frozenset())
    assert sorted(service | actors) == sorted(everyone)


def _check_wire_bytes(frames_store: Path, per_frame: dict[str, dict[str, float]]) -> None:
    """The bytes counted on the wire carry each zstd frame once, plus a little framing:
    headers, step values, the race's creation and close, spread over its frames."""
    store = replay.open_store(frames_store, mode="r")
    (info,) = [i for i in store.races() if i.env == "CarRacing-v3"]
    race = store.race(info.race_id)
    blobs = ZstdFrames().encode([race.frame(step) for step in range(DISTINCT)])
    frame_bytes = sum(len(b) for b in blobs) / len(blobs)
    for name in ("remote_1", "remote_2"):
        assert frame_bytes < per_frame[name]["wire_bytes"] < frame_bytes + 2000
