"""Prometheus metrics of one app (`service.middleware` records the request ones).

Each app has its own `CollectorRegistry` (no process-global state, so tests can
build many apps). Requests are labelled by route template (``/v1/races/{race_id}``),
never by raw path, so a scan of random URLs cannot blow up the label space.

    replay_http_requests_total{method,route,status}
    replay_http_request_duration_seconds{method,route}      histogram
    replay_frames_served_total{route}
    replay_batch_bytes                                      histogram, /v1/sample bodies
    replay_errors_total{error}                              4xx/5xx answers by error name
    replay_corrupt_skipped_total                            damaged data skipped (skip_corrupt)
    replay_store_races / replay_store_frames                gauges, read at scrape time
    replay_store_damaged_races                              gauge: races that cannot be read
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BYTES_BUCKETS = tuple(float(1 << n) for n in range(10, 32, 2))


class Metrics:
    """The counters and histograms of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "replay_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "replay_http_request_duration_seconds",
            "Time to answer a request (until the last body byte is handed to the server)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.frames_served = Counter(
            "replay_frames_served", "Frames sent to clients", ["route"], registry=r
        )
        self.batch_bytes = Histogram(
            "replay_batch_bytes", "Bytes of each /v1/sample body", buckets=BYTES_BUCKETS, registry=r
        )
        self.errors = Counter(
            "replay_errors", "Requests answered with an error, by error name", ["error"], registry=r
        )
        self.corrupt_skipped = Counter(
            "replay_corrupt_skipped",
            "Damaged shards and frames skipped by /v1/sample requests with skip_corrupt",
            registry=r,
        )
        self.races = Gauge("replay_store_races", "Races in the store", registry=r)
        self.damaged_races = Gauge(
            "replay_store_damaged_races", "Races whose metadata cannot be read", registry=r
        )
        self.frames = Gauge("replay_store_frames", "Committed frames in the store", registry=r)
        self.started = time.monotonic()
        # plain totals for /v1/stats (reading them back from prometheus objects is clumsy)
        self.total_requests = 0
        self.total_errors = 0
        self.total_frames = 0

    def count_frames(self, route: str, n: int) -> None:
        """Record `n` frames sent by `route`."""
        self.frames_served.labels(route).inc(n)
        self.total_frames += n

    def count_error(self, name: str) -> None:
        """Record one error answer named `name` (an exception class or HTTP reason)."""
        self.errors.labels(name).inc()
