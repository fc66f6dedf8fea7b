"""Build the configured ``Index`` backend from :class:`~elastichash.settings.IndexSettings`."""

from __future__ import annotations

import importlib
import logging
from typing import cast

from elastichash.index.base import Index
from elastichash.settings import ENGINE_BACKENDS, IndexSettings, default_data_dir

log = logging.getLogger(__name__)


def make_index(settings: IndexSettings) -> Index:
    """A closed index: the caller opens it (in its lifespan hook) and closes it."""
    if settings.backend == "embedded":
        from elastichash.index.embedded import EmbeddedIndex

        path = settings.data_dir or default_data_dir() / "index"
        log.info("index backend: embedded at %s (strategy %s)", path, settings.strategy)
        return EmbeddedIndex(path, strategy=settings.strategy)
    if settings.backend == "remote":
        from elastichash.index.remote import RemoteIndex

        log.info("index backend: remote search service at %s", settings.search_url)
        return RemoteIndex(settings.search_url)
    if settings.backend in ENGINE_BACKENDS:
        # Imported lazily: each engine's client is an optional extra.
        backend = importlib.import_module("elastichash.index.es.backend")
        engine = settings.engine
        log.info("index backend: %s at %s, index %s", settings.backend, engine.url, engine.index)
        return cast(Index, backend.EngineIndex.from_settings(settings))
    raise ValueError(f"unknown index backend {settings.backend!r}")
