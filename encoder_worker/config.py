"""Encoder worker settings: env prefix ``EH_ENCODER_``, nested groups with ``__``
(``EH_ENCODER_AMQP__URL``, ``EH_ENCODER_MODEL__MODEL``, ``EH_ENCODER_BATCH_MAX``)."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from elastichash.settings import AmqpSettings, ImageLimits, ModelSettings, WorkerSettings


class EncoderWorkerSettings(WorkerSettings):
    model_config = SettingsConfigDict(
        env_prefix="EH_ENCODER_", env_nested_delimiter="__", extra="ignore"
    )

    model: ModelSettings = Field(default_factory=ModelSettings)
    limits: ImageLimits = Field(default_factory=ImageLimits)
    amqp: AmqpSettings = Field(default_factory=AmqpSettings)
    # A batch closes at batch_max images or batch_ms after its first image, whichever first:
    # big enough to amortise the ONNX call, short enough that a trickle is not held back.
    batch_max: int = Field(default=16, ge=1, le=1024)
    batch_ms: float = Field(default=20.0, ge=0.0)
    # A preview of this many pixels on the long side is made for the page's large view and
    # stored with the document (0: none; the view then shows the 256-pixel thumbnail).
    preview_px: int = Field(default=1280, ge=0, le=4096)
    # Query encodings (RPC) in flight at once; they have their own thread, never queued
    # behind ingest batches.
    rpc_prefetch: int = 4
    # Threads of the query encoder's own inference session (0: share the ingest session).
    # Its own session keeps a query from queueing for the ingest batches' thread pool.
    rpc_threads: int = Field(default=1, ge=0, le=64)
    # While a query is being encoded no new ingest batch starts, for at most this long
    # (so that a steady stream of queries cannot starve ingest).
    rpc_priority_s: float = Field(default=1.0, ge=0.0)
    # Nice steps the ingest threads (decode, inference) run below the worker's own priority,
    # Linux: on cores shared with other work they yield to query encodings and to the other
    # services. 0: the worker's priority.
    ingest_nice: int = Field(default=10, ge=0, le=19)
    # CPU threads the ingest path keeps busy: the ingest session's onnxruntime intra-op
    # threads, its decode workers and the batches encoded at once (each where
    # EH_ENCODER_MODEL__INTRA_OP_THREADS / __DECODE_WORKERS do not set it). 0: one fewer than
    # the cores this process may run on, at least 1, so that a core stays free for query
    # encodings and the services beside the worker (the gateway, the broker, the index).
    ingest_threads: int = Field(default=0, ge=0, le=256)

    def ingest_thread_count(self) -> int:
        return self.ingest_threads or max(1, usable_cores() - 1)


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
