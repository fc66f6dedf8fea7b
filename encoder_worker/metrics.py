"""The encoder worker's Prometheus metrics (served by ``elastichash.health``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("eh_encoder_consumed", "Ingest messages received", registry=r)
        self.redelivered = Counter(
            "eh_encoder_redelivered",
            "Ingest messages received with the redelivered flag",
            registry=r,
        )
        self.encoded = Counter("eh_encoder_encoded", "Images encoded and handed on", registry=r)
        # Dead-lettered with a reason: bad images (also recorded as failures) and bad messages.
        self.dead = Counter("eh_encoder_failed", "Images refused", ["reason"], registry=r)
        self.requeued = Counter(
            "eh_encoder_requeued", "Messages requeued after a transient failure", registry=r
        )
        self.rpc = Counter("eh_encoder_rpc", "Query encodings answered", ["outcome"], registry=r)
        self.rpc_seconds = Histogram(
            "eh_encoder_rpc_seconds",
            "Query encoding time, from delivery to reply sent",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.batch_size = Histogram(
            "eh_encoder_batch_size",
            "Images per batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.encode_seconds = Histogram(
            "eh_encoder_encode_seconds", "Encode time per batch", registry=r
        )
