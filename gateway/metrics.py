"""Prometheus metrics of the gateway, one registry per app so several apps (tests) coexist."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "eh_gateway_requests_total", "HTTP requests", ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "eh_gateway_request_seconds", "HTTP request latency", ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.ingested = Counter(
            "eh_gateway_images_accepted_total", "images accepted for indexing",
            registry=self.registry,
        )
        self.search_wait = Counter(
            "eh_gateway_upload_search_wait_seconds",
            "seconds uploads waited for searches in flight (EH_GATEWAY_SEARCH_PRIORITY_S)",
            registry=self.registry,
        )
        self.searches_in_flight = Gauge(
            "eh_gateway_searches_in_flight",
            "searches being encoded or searched now (uploads give way to them)",
            registry=self.registry,
        )
        self.rejected = Counter(
            "eh_gateway_images_rejected_total", "images refused at the gateway", ["code"],
            registry=self.registry,
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        """One finished request (the error middleware's observer)."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
