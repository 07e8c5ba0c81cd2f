"""`service.tools.latency_bench` runs end to end (briefly) and reports every figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.tools.latency_bench import round_trip, waiters


@pytest.mark.slow
def test_latency_bench_reports_waiters_and_round_trip(served_store: Path) -> None:
    w = waiters(served_store, counts=(0, 2), batches=2)
    assert set(w) == {"ms_0", "ms_2", "ratio_2"}
    assert w["ms_0"] > 0
    assert w["ratio_2"] > 0
    r = round_trip(served_store, n=5)
    assert r["serve_ms"] > 0
    assert r["plain_uvicorn_ms"] > 0
    assert r["ratio"] == round(r["serve_ms"] / r["plain_uvicorn_ms"], 2)
