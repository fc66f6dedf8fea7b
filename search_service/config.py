"""Settings of the search service: env prefix ``EH_SEARCH_``, nested groups with ``__``
(``EH_SEARCH_INDEX__DATA_DIR``, ``EH_SEARCH_INDEX__STRATEGY``, ...)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from elastichash.settings import BodySettings, IndexSettings, Port, ServerSettings


class SearchServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EH_SEARCH_", env_nested_delimiter="__", extra="ignore"
    )

    index: IndexSettings = Field(default_factory=IndexSettings)
    host: str = "0.0.0.0"
    port: Port = 8081
    # Bulk bodies carry base64 thumbnails: 1,000 documents x ~20 KiB each fit in 64 MiB.
    # Counted as the bytes arrive (chunked bodies too); a 413 past it.
    max_body_bytes: int = 64 * 1024 * 1024
    # Largest bulk batch accepted in one request; writers chunk above it.
    max_bulk_documents: int = 10_000
    shutdown_timeout_s: float = 10.0
    # Searches first: a write (a bulk of documents, failure records) waits until no search is
    # in flight, for at most this long, so that a steady stream of searches slows indexing
    # without starving it. 0: writes never wait for searches.
    search_priority_s: float = Field(default=1.0, ge=0)
    # The same connection and body limits as the gateway (elastichash.serving): slow bodies
    # get a 408, idle keep-alive connections close, each client address has a connection cap.
    body: BodySettings = Field(default_factory=BodySettings)
    # The gateway and every indexer worker keep pools of connections to the search service:
    # a higher per-client cap than the gateway's for browsers.
    server: ServerSettings = Field(
        default_factory=lambda: ServerSettings(max_connections_per_client=256))
