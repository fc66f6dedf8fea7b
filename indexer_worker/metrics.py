"""The indexer worker's Prometheus metrics (served by ``elastichash.health``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("eh_indexer_consumed", "Index messages received", registry=r)
        self.redelivered = Counter(
            "eh_indexer_redelivered",
            "Index messages received with the redelivered flag",
            registry=r,
        )
        self.written = Counter("eh_indexer_written", "Documents written", registry=r)
        self.failures = Counter("eh_indexer_failures", "Failure records written", registry=r)
        self.dead = Counter(
            "eh_indexer_dead_lettered", "Messages dead-lettered", ["reason"], registry=r
        )
        self.requeued = Counter(
            "eh_indexer_requeued", "Messages requeued after a transient failure", registry=r
        )
        self.batch_size = Histogram(
            "eh_indexer_batch_size",
            "Messages per write",
            buckets=(1, 4, 16, 64, 256, 1024),
            registry=r,
        )
        self.write_seconds = Histogram(
            "eh_indexer_write_seconds", "Index write time per batch", registry=r
        )
