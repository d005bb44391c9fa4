"""Prometheus metrics of a model server: requests, latency and errors per variant, batch sizes.

Each server has its own registry (not the process-global one), so tests and several apps in one
process never mix their counts.
"""

from __future__ import annotations

from typing import Any

# Latency buckets in seconds: a native model answers in well under a millisecond, a slow one or a
# queue under overload in seconds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    def __init__(self, variant: str):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.variant = variant
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelyard_requests",
            "Invocations answered, by variant and HTTP status",
            ["variant", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "modelyard_errors",
            "Invocations answered with an error (4xx or 5xx), by variant and kind",
            ["variant", "kind"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "modelyard_request_seconds",
            "Time from the request's arrival to its response, by variant",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_rows = Histogram(
            "modelyard_batch_rows",
            "Rows predicted together in one model call",
            ["variant"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        # children bound once: labels() on every request would cost a dict lookup and a lock
        self._latency = self.latency.labels(variant)
        self._batch_rows = self.batch_rows.labels(variant)
        self._by_status: dict[int, Any] = {}

    def observe(self, status: int, seconds: float, error_kind: str | None = None) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self.requests.labels(self.variant, str(status))
        counter.inc()
        self._latency.observe(seconds)
        if error_kind is not None:
            self.errors.labels(self.variant, error_kind).inc()

    def observe_batch(self, requests: int, rows: int) -> None:
        self._batch_rows.observe(rows)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return bytes(generate_latest(self.registry))
