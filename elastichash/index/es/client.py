"""The small client protocol the engine backend speaks, and the errors its adapters raise.

Everything under ``index/es/`` that does I/O goes through :class:`EngineClient`; the request
bodies are built by the I/O-free core (``mapping``, ``neighbours``, ``script``, ``query``,
``bulk`` actions). One adapter per engine implements the protocol over that engine's Python
client and translates its exceptions into the three below, so no other module imports
``elasticsearch`` or ``opensearchpy``:

- :class:`EngineApiError`: the engine answered with an error status (type and reason kept);
- :class:`EngineUnreachable`: no answer (connection refused or lost, timeout);
- :class:`WrongEngine`: the server is the other engine (product check), naming the backend
  that would work.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from elastichash.errors import ConfigError, ElasticHashError, Unavailable

EngineKind = Literal["elasticsearch", "opensearch"]
ENGINE_KINDS: tuple[str, ...] = ("elasticsearch", "opensearch")


class EngineApiError(ElasticHashError):
    """An error answer. ``status`` is the HTTP status, ``error_type`` the engine's error type
    (``resource_already_exists_exception``, ...)."""

    def __init__(self, status: int, error_type: str, reason: str) -> None:
        super().__init__(f"{status} {error_type}: {reason}")
        self.status = status
        self.error_type = error_type
        self.reason = reason


class EngineUnreachable(Unavailable):
    """The request got no answer: connection refused or lost, or a timeout."""


class WrongEngine(ConfigError):
    """The server at the URL is not the engine this backend talks to."""

    def __init__(self, url: str, found: str, version: str, want: str) -> None:
        super().__init__(
            f"the server at {url} is {found} {version}, not {want}: "
            f"use the {found} backend (EH_*_INDEX__BACKEND={found})",
            field="index.backend",
        )
        self.found = found


class EngineClient(Protocol):
    """About a dozen calls; bodies are plain dicts (or NDJSON text for bulk)."""

    kind: str
    url: str

    async def info(self) -> dict[str, Any]:
        """The root endpoint's answer; raises :class:`WrongEngine` for the other engine."""
        ...

    async def get_script(self, script_id: str) -> str | None:
        """The stored script's source, or None."""
        ...

    async def put_script(self, script_id: str, source: str) -> None: ...

    async def exists(self, index: str) -> bool:
        """Whether an index or alias of that name exists."""
        ...

    async def alias_targets(self, alias: str) -> list[str]:
        """The indices behind an alias; empty when there is no such alias."""
        ...

    async def create_index(self, index: str, body: dict[str, Any]) -> bool:
        """False when the index already exists (a concurrent creator won)."""
        ...

    async def delete_index(self, index: str) -> None:
        """Deletes; a missing index is fine."""
        ...

    async def get_mapping(self, index: str) -> dict[str, Any]:
        """``{concrete index: {"mappings": ...}}``."""
        ...

    async def put_mapping(self, index: str, body: dict[str, Any]) -> None:
        """Add fields or replace ``_meta`` (what an index records about itself)."""
        ...

    async def get_settings(self, index: str) -> dict[str, Any]:
        """``{concrete index: {"settings": ...}}``."""
        ...

    async def put_settings(self, index: str, settings: dict[str, Any]) -> None: ...

    async def update_aliases(self, actions: list[dict[str, Any]]) -> None:
        """Apply alias actions atomically."""
        ...

    async def reindex(self, source: str, dest: str) -> dict[str, Any]:
        """Copy every document, wait for completion, refresh the destination."""
        ...

    async def bulk(self, ndjson: str) -> dict[str, Any]:
        """One bulk request, never retried by the client (the caller retries per item)."""
        ...

    async def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]: ...

    async def count(self, index: str, query: dict[str, Any] | None = None) -> int: ...

    async def get(self, index: str, doc_id: str,
                  excludes: Sequence[str] = ()) -> dict[str, Any] | None:
        """The document's ``_source`` (less the ``excludes`` fields), or None when it does
        not exist."""
        ...

    async def refresh(self, indices: Sequence[str]) -> None: ...

    async def health(self, timeout_s: float) -> str | None:
        """Cluster health status (green, yellow, red); None when it cannot be had in time."""
        ...

    async def index_stats(self, index: str) -> dict[str, Any]:
        """Primaries' ``docs`` and ``store`` statistics."""
        ...

    async def close(self) -> None: ...


_ADAPTERS = {
    "elasticsearch": "elastichash.index.es.adapters.elasticsearch",
    "opensearch": "elastichash.index.es.adapters.opensearch",
}
_EXTRAS = {"elasticsearch": "es", "opensearch": "opensearch"}


def connect(kind: str, url: str, *, request_timeout_s: float = 30.0) -> EngineClient:
    """The adapter for ``kind``, imported lazily: each engine's client is an optional extra.
    Does no I/O."""
    if kind not in _ADAPTERS:
        raise ConfigError(f"unknown engine {kind!r}; use one of {ENGINE_KINDS}", field="kind")
    try:
        module = importlib.import_module(_ADAPTERS[kind])
    except ImportError as exc:
        raise ConfigError(
            f"the {kind} client is not installed: pip install 'elastichash[{_EXTRAS[kind]}]' "
            f"({exc})",
            field="index.backend",
        ) from exc
    client: EngineClient = module.Adapter(url, request_timeout_s=request_timeout_s)
    return client
