"""Indexer worker settings: env prefix ``EH_INDEXER_``, nested groups with ``__``
(``EH_INDEXER_AMQP__URL``, ``EH_INDEXER_INDEX__BACKEND``, ``EH_INDEXER_BATCH_MAX``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from elastichash.settings import AmqpSettings, Port, RemoteIndexSettings, WorkerSettings


class IndexerWorkerSettings(WorkerSettings):
    model_config = SettingsConfigDict(
        env_prefix="EH_INDEXER_", env_nested_delimiter="__", extra="ignore"
    )

    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    # Distributed mode writes through the search service, which owns the embedded store.
    index: RemoteIndexSettings = Field(default_factory=RemoteIndexSettings)
    # One index write per batch_max messages or batch_ms after the first, whichever first.
    batch_max: int = Field(default=64, ge=1, le=5000)
    batch_ms: float = Field(default=50.0, ge=0.0)
    health_port: Port = 9101
    # Backoff before requeueing after a transient index failure (doubles, capped).
    retry_backoff_s: float = 0.2
    retry_backoff_max_s: float = 5.0
    # How often readiness asks the index whether it is up (cluster health for an engine).
    index_probe_s: float = Field(default=2.0, gt=0.0)
