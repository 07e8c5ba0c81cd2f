"""The S3 benchmark runs end to end (tiny sizes) against the session's SeaweedFS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

pytestmark = pytest.mark.s3


def test_s3_bench_measures_every_figure(
    s3_url: str, real_frames: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    pytest.importorskip("obstore", reason="obstore is not installed (pip install 'replay[s3]')")
    from replay.bench.s3 import run_s3_bench

    results = run_s3_bench(
        list(real_frames[:8]),
        tmp_path,
        url=s3_url,
        races=2,
        race_frames=16,
        shard_size=8,
        batch_size=4,
        seq_len=2,
        batches=1,
        decoded_batches=1,
        threads=(1, 2),
        coalesce=(0, 1 << 20),
        latency_ms=(0.0, 5.0),
    )
    fetch = results["fetch"]
    assert {(r["store"], r.get("latency_ms"), r["threads"]) for r in fetch} == {
        ("local", None, 1),
        ("local", None, 2),
        ("s3", 0.0, 1),
        ("s3", 0.0, 2),
        ("s3", 5.0, 1),
        ("s3", 5.0, 2),
    }
    assert all(r["frames_per_s"] > 0 and r["mb_per_s"] > 0 for r in fetch)
    rows = {(r["mode"], r["latency_ms"], r["coalesce"]): r for r in results["coalescing"]}
    assert len(rows) == 6
    # one request per frame without merging; fewer once ranges merge
    per_frame = rows[("per_frame", 0.0, None)]["requests_per_batch"]
    assert per_frame == 4 * 2
    assert rows[("merged", 0.0, 0)]["requests_per_batch"] < per_frame
    assert rows[("merged", 0.0, 1 << 20)]["requests_per_batch"] <= 4
    # the delaying proxy makes requests slower
    slow, fast = rows[("per_frame", 5.0, None)], rows[("per_frame", 0.0, None)]
    assert slow["ms_per_batch"] > fast["ms_per_batch"] + 5
    assert [r["store"] for r in results["decoded"]] == ["local", "s3"]
