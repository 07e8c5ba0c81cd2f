"""`service.tools.bench.run_service_bench` runs end to end (briefly) and reports every figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.tools.bench import run_service_bench


@pytest.mark.slow
def test_service_bench_reports_every_phase(served_store: Path) -> None:
    r = run_service_bench(served_store, batch_size=8, seconds=0.3, warmup=1)
    for phase in ("embedded", "client", "client_prefetch", "client_encoded"):
        assert r[phase]["batches"] >= 1, phase
        assert r[phase]["frames_per_s"] > 0, phase
        assert 0 < r[phase]["p50_ms"] <= r[phase]["p99_ms"], phase
    assert r["client_vs_embedded"] > 0
    assert 50 < r["service_rss_mb"]["peak"] < 1000
    assert r["batch_nbytes"] > 8 * 10_000  # eight real JPEG frames
    assert (r["batch_size"], r["frames_in_store"]) == (8, 100)
