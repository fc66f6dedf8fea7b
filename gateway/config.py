"""Gateway settings: env prefix ``EH_GATEWAY_``, nested groups with ``__``."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from elastichash.settings import (
    AmqpSettings,
    BodySettings,
    ImageLimits,
    ModelSettings,
    Port,
    RemoteIndexSettings,
    ServerSettings,
    SpoolSettings,
)


class FetchSettings(BaseModel):
    """Server-side URL fetching (ingest by URL, search by URL)."""

    # The longest one fetch (redirects included) may hold one of the fetch slots.
    timeout_s: float = 10.0
    # Fetches in flight at once, and of those at most per_client for one client (its API key,
    # else its address), so slow URLs from one client cannot hold everyone's slots.
    slots: int = 32
    per_client: int = 8
    max_bytes: int = 32 * 1024 * 1024
    max_redirects: int = 5
    # Private, loopback and link-local targets are refused; networks listed here are let
    # through (for a trusted intranet, or tests that serve images on 127.0.0.1).
    allow_networks: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    user_agent: str = "elastichash/0.1 (+image similarity search)"


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EH_GATEWAY_", env_nested_delimiter="__", extra="ignore"
    )

    host: str = "0.0.0.0"
    port: Port = 8080
    mode: Literal["standalone", "distributed"] = "distributed"
    # Empty: write endpoints are open. Otherwise X-API-Key must be one of these.
    api_keys: list[str] = Field(default_factory=list)
    # Whole multipart ingest request cap, counted as the bytes arrive.
    max_request_bytes: int = 512 * 1024 * 1024
    # JSON bodies: a URL list for ingest, a query for search.
    max_json_bytes: int = 4 * 1024 * 1024
    max_files_per_request: int = 1000
    max_urls_per_request: int = 1000
    # Back-pressure: with more than this many images waiting to be indexed, uploads answer
    # 503 with Retry-After (retry_after_s) instead of queueing. 0: no limit (the broker's
    # memory and disk alarms are then the only bound).
    max_queued: int = Field(default=0, ge=0)
    retry_after_s: float = Field(default=5.0, gt=0)
    # Searches first: while a search is being answered, uploads pause between images (reading
    # the next file, publishing the next group) until no search is in flight, for at most this
    # long each time, so that a steady stream of searches slows ingest without starving it.
    # 0: uploads never wait for searches.
    search_priority_s: float = Field(default=1.0, ge=0)
    # Ids the gateway remembers as queued until indexed or failed (bounded memory).
    pending_capacity: int = 200_000
    shutdown_timeout_s: float = 30.0

    model: ModelSettings = Field(default_factory=ModelSettings)
    limits: ImageLimits = Field(default_factory=ImageLimits)
    # Distributed mode: through the search service, which owns the index.
    index: RemoteIndexSettings = Field(default_factory=RemoteIndexSettings)
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    fetch: FetchSettings = Field(default_factory=FetchSettings)
    body: BodySettings = Field(default_factory=BodySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    # Standalone mode only (distributed mode's backlog lives in the broker).
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    # Standalone mode: a preview of this many pixels on the long side is stored for the page's
    # large view (0: none; the view then shows the 256-pixel thumbnail). In distributed mode
    # the encoder worker makes it (EH_ENCODER_PREVIEW_PX).
    preview_px: int = 1280
