"""Cluster state: indices with their documents, aliases, stored scripts, refresh visibility.

Get is realtime (reads ``docs``); search and count read ``visible``, the snapshot taken at the
last refresh. An index refreshes when asked, or on first read after ``refresh_interval``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.esserver.errors import EsError, illegal, index_not_found
from tests.esserver.mapping import validate_mapping

KNOWN_SETTINGS = {
    "index.number_of_shards": "1",
    "index.number_of_replicas": "1",
    "index.refresh_interval": "1s",
    "index.auto_expand_replicas": "false",
    "index.blocks.write": "false",
    "index.blocks.read_only": "false",
    "index.max_result_window": "10000",
    "index.max_terms_count": "65536",
}
STATIC_SETTINGS = {"index.number_of_shards"}


@dataclass
class StoredDoc:
    source: bytes  # raw JSON, as sent: nbs documents stay small this way
    fields: dict[str, list[Any]]
    version: int
    seq_no: int

    def source_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.source)
        return out


def flatten_settings(settings: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in settings.items():
        name = prefix + key
        if isinstance(value, dict):
            flat.update(flatten_settings(value, name + "."))
        else:
            flat[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return {k if k.startswith("index.") else "index." + k: v for k, v in flat.items()}


def check_settings(flat: dict[str, str]) -> None:
    for key in flat:
        if key not in KNOWN_SETTINGS:
            raise illegal(
                f"unknown setting [{key}] please check that any required plugins are installed, "
                "or check the breaking changes documentation for removed settings"
            )


def parse_interval(text: str) -> float | None:
    if text == "-1":
        return None
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * units[unit]
    raise illegal(f"failed to parse setting [index.refresh_interval] with value [{text}]")


@dataclass
class IndexState:
    name: str
    mappings: dict[str, Any]
    settings: dict[str, str]
    uuid: str = field(default_factory=lambda: uuid.uuid4().hex[:22])
    docs: dict[str, StoredDoc] = field(default_factory=dict)
    visible: dict[str, StoredDoc] = field(default_factory=dict)
    last_refresh: float = field(default_factory=time.monotonic)
    seq_no: int = 0
    deleted: int = 0

    def setting(self, key: str) -> str:
        return self.settings.get(key, KNOWN_SETTINGS[key])

    def refresh(self) -> None:
        self.visible = dict(self.docs)
        self.last_refresh = time.monotonic()

    def searchable(self) -> dict[str, StoredDoc]:
        interval = parse_interval(self.setting("index.refresh_interval"))
        if interval is not None and time.monotonic() - self.last_refresh >= interval:
            self.refresh()
        return self.visible

    def check_writable(self) -> None:
        if self.setting("index.blocks.write") == "true":
            raise EsError(
                403,
                "cluster_block_exception",
                f"index [{self.name}] blocked by: [FORBIDDEN/8/index write (api)];",
            )


@dataclass
class Cluster:
    version: str = "8.17.0"
    indices: dict[str, IndexState] = field(default_factory=dict)
    aliases: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # alias->index
    scripts: dict[str, dict[str, str]] = field(default_factory=dict)

    def create_index(self, name: str, body: dict[str, Any]) -> IndexState:
        if name in self.indices or name in self.aliases:
            raise EsError(
                400,
                "resource_already_exists_exception",
                f"index [{name}/{self.indices[name].uuid if name in self.indices else '_na_'}] "
                "already exists",
                index=name,
            )
        if name.startswith(("_", "-", "+")) or name != name.lower() or not name:
            raise EsError(400, "invalid_index_name_exception",
                          f"Invalid index name [{name}], must be lowercase", index=name)
        for key in body:
            if key not in ("mappings", "settings", "aliases"):
                raise EsError(400, "parse_exception", f"unknown key [{key}] for create index")
        mappings = body.get("mappings", {})
        validate_mapping(mappings)
        settings = flatten_settings(body.get("settings", {}))
        check_settings(settings)
        parse_interval(settings.get("index.refresh_interval", "1s"))
        for alias, spec in body.get("aliases", {}).items():
            for key in spec:
                if key not in ("is_write_index", "filter", "routing", "is_hidden"):
                    raise illegal(f"Unknown field [{key}] in alias [{alias}]")
            if alias in self.indices:
                raise illegal(f"alias [{alias}] ({name}) and an index cannot share a name")
        state = IndexState(name, mappings, settings)
        self.indices[name] = state
        for alias, spec in body.get("aliases", {}).items():
            self.aliases.setdefault(alias, {})[name] = dict(spec)
        return state

    def delete_index(self, name: str) -> None:
        if name not in self.indices:
            if name in self.aliases:
                raise illegal(
                    f"The provided expression [{name}] matches an alias, specify the corresponding "
                    "concrete indices instead."
                )
            raise index_not_found(name)
        del self.indices[name]
        for alias in list(self.aliases):
            self.aliases[alias].pop(name, None)
            if not self.aliases[alias]:
                del self.aliases[alias]

    def resolve(self, expr: str) -> list[IndexState]:
        """Comma-separated names or aliases (no wildcards) -> indices, for reads."""
        out: list[IndexState] = []
        for name in expr.split(","):
            if name in self.indices:
                out.append(self.indices[name])
            elif name in self.aliases:
                out.extend(self.indices[i] for i in self.aliases[name])
            else:
                raise index_not_found(name)
        return out

    def write_index(self, name: str) -> IndexState:
        if name in self.indices:
            return self.indices[name]
        if name in self.aliases:
            members = self.aliases[name]
            writers = [i for i, spec in members.items() if spec.get("is_write_index")]
            if len(members) == 1 and not any(
                spec.get("is_write_index") is False for spec in members.values()
            ):
                writers = list(members)
            if len(writers) != 1:
                raise illegal(
                    f"no write index is defined for alias [{name}]. The write index may be "
                    "explicitly disabled using is_write_index=false or the alias points to "
                    "multiple indices without one being designated as a write index"
                )
            return self.indices[writers[0]]
        # action.auto_create_index is treated as false: a typo must not create an index.
        raise index_not_found(name)
