"""Prometheus metrics, one registry per app so several apps (tests) can coexist."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "eh_search_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.search_seconds = Histogram(
            "eh_search_seconds",
            "Time in the index per search",
            ["strategy"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
        )
        self.candidates = Histogram(
            "eh_search_candidates",
            "Codes re-ranked per search",
            ["strategy"],
            registry=self.registry,
            buckets=(10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000),
        )
        self.searches_in_flight = Gauge(
            "eh_search_searches_in_flight",
            "Searches being answered now (writes give way to them)",
            registry=self.registry,
        )
        self.search_wait = Counter(
            "eh_search_write_search_wait_seconds",
            "Seconds writes waited for searches in flight (EH_SEARCH_SEARCH_PRIORITY_S)",
            registry=self.registry,
        )
        self.documents_written = Counter(
            "eh_search_documents_written",
            "Documents written through the bulk API by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.documents = Gauge(
            "eh_search_documents", "Documents in the index", registry=self.registry
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        """One finished request (the error middleware's observer)."""
        self.requests.labels(route, str(status)).inc()
