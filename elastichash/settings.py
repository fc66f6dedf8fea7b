"""pydantic-settings groups shared by the services.

Each service composes the groups it needs under its own env prefix, with ``__`` as the
nested delimiter: ``EH_GATEWAY_MODEL__MODEL``, ``EH_ENCODER_AMQP__URL`` and so on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from elastichash.index.incoming import DuplicatePolicy
from elastichash.index.query import Strategy

# A TCP port: anything else is refused as a setting (exit 3), not a crash at bind time.
Port = Annotated[int, Field(ge=0, le=65535)]


def port_number(text: str) -> int:
    """argparse type of a --port option."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        import argparse

        raise argparse.ArgumentTypeError(f"a port is a number from 0 to 65535, not {text!r}")
    return port


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
    # Decoded pixels all decodes of one process (ingest workers and query images) may hold at
    # once; one decode holds one pixel buffer, at most 256 MB (64 MP at 4 bytes a pixel).
    decode_memory_bytes: int = 1024 * 1024 * 1024


class SpoolSettings(BaseModel):
    """Standalone mode's spool: accepted images wait on disk until they are indexed."""

    # Past this, uploads get 503 with Retry-After until the worker has drained some.
    max_bytes: int = 4 * 1024**3
    # Uploads get 507 rather than leave the disk with less than this free.
    min_free_bytes: int = 256 * 1024**2


Backend = Literal["embedded", "elasticsearch", "opensearch", "remote"]
EngineKind = Literal["elasticsearch", "opensearch"]
ENGINE_BACKENDS: tuple[str, ...] = ("elasticsearch", "opensearch")
# The flat names of earlier releases, still read (EH_*_INDEX__ES_URL ...) and mapped here.
_LEGACY_ENGINE_FIELDS = {
    "es_url": "url", "es_index": "index", "es_shards": "shards", "es_replicas": "replicas",
    "es_refresh_interval": "refresh_interval", "es_nbs_index": "nbs_index",
    "es_request_timeout_s": "request_timeout_s", "es_bulk_max_retries": "bulk_max_retries",
}


class EngineSettings(BaseModel):
    """The search engine behind the ``elasticsearch`` and ``opensearch`` backends
    (env: ``EH_*_INDEX__ENGINE__URL`` and so on)."""

    # Which engine the URL serves; set from the backend (elasticsearch | opensearch).
    kind: EngineKind | None = None
    url: str = "http://localhost:9200"
    index: str = "elastichash"  # the alias; the concrete index is <index>-v1
    shards: int = 1
    replicas: int = 0
    refresh_interval: str = "1s"
    # neighbours index: identical content for every retrieval index, so shared by default
    nbs_index: str = "elastichash-nbs"
    request_timeout_s: float = 30.0
    bulk_max_retries: int = 3  # per item, on 429/502/503/504, capped exponential backoff


class IndexSettings(BaseModel):
    backend: Backend = "embedded"
    data_dir: Path | None = None  # embedded store; None: default_data_dir()/index
    # auto: exact (full ranking) up to AUTO_EXACT_MAX codes, two_stage (MIH) above.
    strategy: Strategy = "auto"
    engine: EngineSettings = Field(default_factory=EngineSettings)
    # remote backend: the search service's base URL (distributed mode)
    search_url: str = "http://localhost:8081"
    # ingest: an image within this distance of an indexed one is marked (None: not screened);
    # keep writes it with metadata.duplicate_of, skip records it as skipped instead
    duplicate_distance: int | None = Field(default=None, ge=0, le=11)
    duplicate_policy: Literal["keep", "skip"] = "keep"

    def duplicate_screen(self) -> DuplicatePolicy:
        return DuplicatePolicy(self.duplicate_distance, self.duplicate_policy == "skip")

    @model_validator(mode="before")
    @classmethod
    def _legacy_engine_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not any(k in data for k in _LEGACY_ENGINE_FIELDS):
            return data
        data = dict(data)
        engine = data.get("engine")
        engine = dict(engine) if isinstance(engine, dict) else {}
        for old, new in _LEGACY_ENGINE_FIELDS.items():
            if old in data:
                engine.setdefault(new, data.pop(old))
        data["engine"] = engine
        return data

    @model_validator(mode="after")
    def _engine_kind(self) -> IndexSettings:
        if self.backend in ENGINE_BACKENDS:
            if self.engine.kind not in (None, self.backend):
                raise ValueError(
                    f"index.backend is {self.backend} but index.engine.kind is "
                    f"{self.engine.kind}: set one of them"
                )
            self.engine.kind = self.backend  # type: ignore[assignment]
        return self


class RemoteIndexSettings(IndexSettings):
    """For services that reach the index through the search service by default (the
    gateway and indexer workers in distributed mode). A subclass with a field default, not
    a default_factory argument: pydantic-settings rebuilds the group from its class
    defaults as soon as any ``*_INDEX__*`` variable is set, and would fall back to embedded."""

    backend: Backend = "remote"


class WorkerSettings(BaseSettings):
    """What every queue worker has; each worker sets its own env prefix."""

    model_config = SettingsConfigDict(env_nested_delimiter="__", extra="ignore")

    # SIGTERM: stop consuming, finish in-flight work within this grace, then cancel.
    drain_timeout_s: float = 30.0
    health_host: str = "0.0.0.0"
    health_port: Port = 9100


class AmqpSettings(BaseModel):
    url: str = "amqp://guest:guest@localhost:5672/"
    prefix: str = "elastichash"  # exchange/queue name prefix: lets tests isolate topologies
    prefetch: int = 64
    delivery_limit: int = 5
    publish_timeout_s: float = 10.0
    rpc_timeout_s: float = 10.0


class BodySettings(BaseModel):
    """How slowly a client may send a request body before it is cut off (408)."""

    # No body bytes for this long: the request ends.
    idle_timeout_s: float = 15.0
    # After this much waiting on the client, it must have sent at least min_rate per second.
    rate_grace_s: float = 10.0
    min_rate_bytes_s: int = 4096


class ServerSettings(BaseModel):
    """Connection-level limits of the HTTP server."""

    # An idle keep-alive connection (or one that never sends a request) is closed after this.
    keepalive_timeout_s: float = 15.0
    # Connections one client address may hold at once; more are closed on arrival.
    max_connections_per_client: int = 64
