"""pydantic-settings groups shared by the services.

Each service composes the groups it needs under its own env prefix, with ``__`` as the
nested delimiter: ``EH_GATEWAY_MODEL__PATH``, ``EH_ENCODER_AMQP__URL`` and so on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from elastichash.index.incoming import DuplicatePolicy
from elastichash.index.query import Strategy


def default_data_dir() -> Path:
    return Path(os.environ.get("ELASTICHASH_DATA", Path.home() / ".local/share/elastichash"))


class ModelSettings(BaseModel):
    # A built-in model's name (see ``elastichash.model.registry``) or an ONNX file's path.
    # Empty: the model the index records, else the default; built-in models are built on
    # first use into ``models_dir``. ``path`` (``EH_*_MODEL__PATH``) is the older spelling.
    model: str = Field(default="", validation_alias=AliasChoices("model", "path"))
    # Where built-in models are built and kept; None: default_data_dir()/models.
    models_dir: Path | None = None
    # Ordered preference; intersected with what onnxruntime offers.
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    # Fail at start-up instead of silently running on the CPU.
    require_gpu: bool = False
    intra_op_threads: int = 0  # 0: onnxruntime picks (one per physical core)
    batch_size: int = 32
    decode_workers: int = 0  # 0: os.cpu_count()

    @field_validator("model", mode="before")
    @classmethod
    def _path_to_str(cls, value: object) -> object:
        return "" if value is None else str(value) if isinstance(value, Path) else value


# Decompression-bomb guard: 64 MP covers any camera sold today; above that it is a bomb.
MAX_PIXELS = 64_000_000


class ImageLimits(BaseModel):
    # Uploads above this are refused before they are buffered whole (413).
    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = MAX_PIXELS


class SpoolSettings(BaseModel):
    """Standalone mode's spool: accepted images wait on disk until they are indexed."""

    # Past this, uploads get 503 with Retry-After until the worker has drained some.
    max_bytes: int = 4 * 1024**3
    # Uploads get 507 rather than leave the disk with less than this free.
    min_free_bytes: int = 256 * 1024**2


class IndexSettings(BaseModel):
    backend: Literal["embedded", "elasticsearch", "remote"] = "embedded"
    data_dir: Path | None = None  # embedded store; None: default_data_dir()/index
    # auto: exact (full ranking) up to AUTO_EXACT_MAX codes, two_stage (MIH) above.
    strategy: Strategy = "auto"
    # elasticsearch backend
    es_url: str = "http://localhost:9200"
    es_index: str = "elastichash"
    es_shards: int = 1
    es_replicas: int = 0
    es_refresh_interval: str = "1s"
    # neighbours index: identical content for every retrieval index, so shared by default
    es_nbs_index: str = "elastichash-nbs"
    es_request_timeout_s: float = 30.0
    es_bulk_max_retries: int = 3  # per item, on 429/502/503/504, capped exponential backoff
    # remote backend: the search service's base URL (distributed mode)
    search_url: str = "http://localhost:8081"
    # ingest: an image within this distance of an indexed one is marked (None: not screened);
    # keep writes it with metadata.duplicate_of, skip records it as skipped instead
    duplicate_distance: int | None = Field(default=None, ge=0, le=11)
    duplicate_policy: Literal["keep", "skip"] = "keep"

    def duplicate_screen(self) -> DuplicatePolicy:
        return DuplicatePolicy(self.duplicate_distance, self.duplicate_policy == "skip")


class RemoteIndexSettings(IndexSettings):
    """For services that reach the index through the search service by default (the
    gateway and indexer workers in distributed mode). A subclass with a field default, not
    a default_factory argument: pydantic-settings rebuilds the group from its class
    defaults as soon as any ``*_INDEX__*`` variable is set, and would fall back to embedded."""

    backend: Literal["embedded", "elasticsearch", "remote"] = "remote"


class WorkerSettings(BaseSettings):
    """What every queue worker has; each worker sets its own env prefix."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    # SIGTERM: stop consuming, finish in-flight work within this grace, then cancel.
    drain_timeout_s: float = 30.0
    health_host: str = "0.0.0.0"
    health_port: int = 9100


class AmqpSettings(BaseModel):
    url: str = "amqp://guest:guest@localhost:5672/"
    prefix: str = "elastichash"  # exchange/queue name prefix: lets tests isolate topologies
    prefetch: int = 64
    delivery_limit: int = 5
    publish_timeout_s: float = 10.0
    rpc_timeout_s: float = 10.0
