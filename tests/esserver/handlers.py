"""Endpoint handlers: each returns ``(status, body)`` or raises ``EsError``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.esserver import search as search_mod
from tests.esserver.bulk import bulk
from tests.esserver.errors import EsError, illegal, index_not_found, parsing
from tests.esserver.mapping import parse_document, validate_mapping
from tests.esserver.scripts import check_source
from tests.esserver.state import (
    KNOWN_SETTINGS,
    STATIC_SETTINGS,
    Cluster,
    StoredDoc,
    check_settings,
    flatten_settings,
    parse_interval,
)

BULK_PARAMS = {"refresh", "timeout", "wait_for_active_shards", "routing", "pipeline",
               "require_alias"}
ALIAS_PARAMS = {"allow_no_indices", "expand_wildcards", "ignore_unavailable", "local"}
MULTI_PARAMS = {"allow_no_indices", "expand_wildcards", "ignore_unavailable"}
SEARCH_PARAMS = MULTI_PARAMS | {"typed_keys", "rest_total_hits_as_int", "search_type",
                                "timeout", "preference"}
Result = tuple[int, Any]


def _cluster(request: web.Request) -> Cluster:
    from tests.esserver.app import CLUSTER

    return request.app[CLUSTER]


async def _json(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise parsing("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise parsing("request body must be an object")
    return body


async def root(request: web.Request) -> Result:
    c = _cluster(request)
    return 200, {
        "name": "esserver-0",
        "cluster_name": "elastichash-test",
        "cluster_uuid": "esserver-cluster-uuid",
        "version": {"number": c.version, "build_flavor": "default", "build_type": "docker",
                    "build_hash": "test", "build_date": "2024-01-01T00:00:00.000Z",
                    "build_snapshot": False, "lucene_version": "9.12.0",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0"},
        "tagline": "You Know, for Search",
    }


async def health(request: web.Request) -> Result:
    c = _cluster(request)
    primaries = sum(int(i.setting("index.number_of_shards")) for i in c.indices.values())
    unassigned = sum(
        int(i.setting("index.number_of_shards")) * int(i.setting("index.number_of_replicas"))
        for i in c.indices.values() if i.setting("index.auto_expand_replicas") == "false"
    )
    return 200, {"cluster_name": "elastichash-test",
                 "status": "yellow" if unassigned else "green", "timed_out": False,
                 "number_of_nodes": 1, "number_of_data_nodes": 1,
                 "active_primary_shards": primaries, "active_shards": primaries,
                 "relocating_shards": 0, "initializing_shards": 0,
                 "unassigned_shards": unassigned, "delayed_unassigned_shards": 0,
                 "number_of_pending_tasks": 0, "number_of_in_flight_fetch": 0,
                 "task_max_waiting_in_queue_millis": 0,
                 "active_shards_percent_as_number": 100.0 if not unassigned else 50.0}


async def get_script(request: web.Request) -> Result:
    sid = request.match_info["id"]
    script = _cluster(request).scripts.get(sid)
    if script is None:
        return 404, {"_id": sid, "found": False}
    return 200, {"_id": sid, "found": True, "script": dict(script)}


async def put_script(request: web.Request) -> Result:
    body = await _json(request)
    for key in body:
        if key != "script":
            raise parsing(f"[script] unknown field [{key}]")
    script = body.get("script")
    if not isinstance(script, dict) or "source" not in script:
        raise illegal("must specify [script] with [source] for a stored script")
    for key in script:
        if key not in ("lang", "source", "options"):
            raise parsing(f"[script] unknown field [{key}]")
    if script.get("lang") != "painless":
        raise illegal("must specify lang [painless] for stored script")
    check_source(script["source"])
    _cluster(request).scripts[request.match_info["id"]] = {"lang": "painless",
                                                           "source": script["source"]}
    return 200, {"acknowledged": True}


async def delete_script(request: web.Request) -> Result:
    sid = request.match_info["id"]
    if _cluster(request).scripts.pop(sid, None) is None:
        raise EsError(404, "resource_not_found_exception", f"stored script [{sid}] does not exist")
    return 200, {"acknowledged": True}


async def bulk_any(request: web.Request) -> Result:
    from tests.esserver.app import FAULTS

    refresh = request.query.get("refresh", "false") in ("", "true", "wait_for")
    raw = await request.read()
    return 200, bulk(_cluster(request), request.app[FAULTS], request.match_info.get("index"),
                     raw, refresh)


async def get_alias(request: web.Request) -> Result:
    c = _cluster(request)
    name = request.match_info["name"]
    if name not in c.aliases:
        return 404, {"error": f"alias [{name}] missing", "status": 404}
    return 200, {i: {"aliases": {name: spec}} for i, spec in c.aliases[name].items()}


async def refresh(request: web.Request) -> Result:
    targets = _cluster(request).resolve(request.match_info["index"])
    for t in targets:
        t.refresh()
    n = len(targets)
    return 200, {"_shards": {"total": n, "successful": n, "failed": 0}}


async def search(request: web.Request) -> Result:
    c = _cluster(request)
    return 200, search_mod.search(c, c.resolve(request.match_info["index"]), await _json(request))


async def count(request: web.Request) -> Result:
    c = _cluster(request)
    return 200, search_mod.count(c, c.resolve(request.match_info["index"]), await _json(request))


async def stats(request: web.Request) -> Result:
    targets = _cluster(request).resolve(request.match_info["index"])

    def block(docs: int, deleted: int, size: int) -> dict[str, Any]:
        return {"docs": {"count": docs, "deleted": deleted},
                "store": {"size_in_bytes": size, "total_data_set_size_in_bytes": size,
                          "reserved_in_bytes": 0}}

    per = {t.name: block(len(t.searchable()), t.deleted,
                         sum(len(d.source) for d in t.docs.values())) for t in targets}
    total = block(*(sum(p[k1][k2] for p in per.values()) for k1, k2 in
                    (("docs", "count"), ("docs", "deleted"), ("store", "size_in_bytes"))))
    n = len(targets)
    return 200, {"_shards": {"total": n, "successful": n, "failed": 0},
                 "_all": {"primaries": total, "total": total},
                 "indices": {name: {"uuid": _cluster(request).indices[name].uuid,
                                    "health": "green", "status": "open",
                                    "primaries": b, "total": b} for name, b in per.items()}}


async def get_mapping(request: web.Request) -> Result:
    targets = _cluster(request).resolve(request.match_info["index"])
    return 200, {t.name: {"mappings": t.mappings} for t in targets}


async def put_mapping(request: web.Request) -> Result:
    """Add fields and replace ``_meta``; a field's existing mapping cannot change."""
    targets = _cluster(request).resolve(request.match_info["index"])
    body = await _json(request)
    validate_mapping(body)
    for t in targets:
        have = t.mappings.get("properties", {})
        for name, spec in body.get("properties", {}).items():
            if name in have and have[name] != spec:
                raise illegal(f"mapper [{name}] cannot be changed from type "
                              f"[{have[name].get('type', 'object')}] to "
                              f"[{spec.get('type', 'object')}]")
    for t in targets:
        t.mappings.setdefault("properties", {}).update(body.get("properties", {}))
        if "_meta" in body:
            t.mappings["_meta"] = body["_meta"]
    return 200, {"acknowledged": True}


def _nest(flat: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


async def get_settings(request: web.Request) -> Result:
    targets = _cluster(request).resolve(request.match_info["index"])
    out = {}
    for t in targets:
        flat = {**t.settings, "index.uuid": t.uuid, "index.provided_name": t.name}
        flat.setdefault("index.number_of_shards", "1")
        flat.setdefault("index.number_of_replicas", "1")
        out[t.name] = {"settings": flat if request.query.get("flat_settings") == "true"
                       else _nest(flat)}
    return 200, out


async def put_settings(request: web.Request) -> Result:
    targets = _cluster(request).resolve(request.match_info["index"])
    body = await _json(request)
    flat = flatten_settings(body.get("settings", body) if "settings" in body else body)
    check_settings(flat)
    static = [k for k in flat if k in STATIC_SETTINGS]
    if static:
        raise illegal(f"Can't update non dynamic settings [{static}] for open indices "
                      f"[{[t.name for t in targets]}]")
    if "index.refresh_interval" in flat:
        parse_interval(flat["index.refresh_interval"])
    for t in targets:
        for key, value in flat.items():
            if value in ("none", "null") or (value == KNOWN_SETTINGS[key] and key in t.settings):
                t.settings.pop(key, None)
            else:
                t.settings[key] = value
    return 200, {"acknowledged": True}


def _single(c: Cluster, name: str) -> Any:
    targets = c.resolve(name)
    if len(targets) != 1:
        raise illegal(f"alias [{name}] has more than one index associated with it, can't "
                      "execute a single index op")
    return targets[0]


async def get_doc(request: web.Request) -> Result:
    index = _single(_cluster(request), request.match_info["index"])
    doc_id = request.match_info["id"]
    doc = index.docs.get(doc_id)  # realtime
    if doc is None:
        return 404, {"_index": index.name, "_id": doc_id, "found": False}
    body: dict[str, Any] = {"_index": index.name, "_id": doc_id, "_version": doc.version,
                            "_seq_no": doc.seq_no, "_primary_term": 1, "found": True}
    src = doc.source_dict()
    excludes = request.query.get("_source_excludes")
    if excludes:
        src = {k: v for k, v in src.items() if k not in excludes.split(",")}
    body["_source"] = src
    return 200, body


async def delete_doc(request: web.Request) -> Result:
    c = _cluster(request)
    index = c.write_index(request.match_info["index"])
    index.check_writable()
    doc_id = request.match_info["id"]
    index.seq_no += 1
    existing = index.docs.pop(doc_id, None)
    result = {"_index": index.name, "_id": doc_id,
              "_version": (existing.version + 1) if existing else 1,
              "result": "deleted" if existing else "not_found",
              "_shards": {"total": 1, "successful": 1, "failed": 0},
              "_seq_no": index.seq_no, "_primary_term": 1}
    if request.query.get("refresh") in ("", "true", "wait_for"):
        index.refresh()
    return (200 if existing else 404), result


async def create_index(request: web.Request) -> Result:
    name = request.match_info["index"]
    _cluster(request).create_index(name, await _json(request))
    return 200, {"acknowledged": True, "shards_acknowledged": True, "index": name}


async def exists_index(request: web.Request) -> Result:
    try:
        _cluster(request).resolve(request.match_info["index"])
    except EsError:
        return 404, None
    return 200, None


async def delete_index(request: web.Request) -> Result:
    c = _cluster(request)
    ignore = request.query.get("ignore_unavailable") == "true"
    for name in request.match_info["index"].split(","):
        try:
            c.delete_index(name)
        except EsError as err:
            if not (ignore and err.type == "index_not_found_exception"):
                raise
    return 200, {"acknowledged": True}


REINDEX_PARAMS = {"refresh", "wait_for_completion", "timeout", "slices", "requests_per_second",
                  "wait_for_active_shards", "scroll", "max_docs", "require_alias"}


async def reindex(request: web.Request) -> Result:
    """Copy every searchable document of ``source.index`` into the existing ``dest.index``
    (no auto-create, as this server runs with ``action.auto_create_index`` false)."""
    import time

    started = time.perf_counter()
    c = _cluster(request)
    body = await _json(request)
    try:
        sources = c.resolve(body["source"]["index"])
        dest = c.write_index(body["dest"]["index"])
    except (KeyError, TypeError):
        raise parsing("[reindex] needs [source.index] and [dest.index]") from None
    dest.check_writable()
    created = updated = 0
    failures: list[dict[str, Any]] = []
    for src in sources:
        # A scroll over the source: only what its last refresh made searchable, as a real
        # engine copies (unrefreshed writes are not reindexed).
        for doc_id, doc in list(src.searchable().items()):
            try:
                fields = parse_document(dest.mappings, doc.source_dict(), doc_id)
            except EsError as err:
                failures.append({"index": dest.name, "id": doc_id, "status": err.status,
                                 "cause": err.cause()})
                continue
            existing = dest.docs.get(doc_id)
            dest.seq_no += 1
            dest.docs[doc_id] = StoredDoc(doc.source, fields,
                                          existing.version + 1 if existing else 1, dest.seq_no)
            created, updated = (created, updated + 1) if existing else (created + 1, updated)
    if request.query.get("refresh") in ("", "true"):
        dest.refresh()
    return 200, {"took": int((time.perf_counter() - started) * 1000), "timed_out": False,
                 "total": created + updated + len(failures), "created": created,
                 "updated": updated, "deleted": 0, "batches": 1, "version_conflicts": 0,
                 "noops": 0, "failures": failures}


async def update_aliases(request: web.Request) -> Result:
    """``POST /_aliases``: every action is checked before any applies (atomic swap)."""
    c = _cluster(request)
    actions = (await _json(request)).get("actions")
    if not isinstance(actions, list) or not actions:
        raise illegal("No action specified")
    steps: list[tuple[str, str, str, dict[str, Any]]] = []
    for action in actions:
        if not isinstance(action, dict) or len(action) != 1:
            raise parsing("[aliases] malformed action")
        (op, spec), = action.items()
        if op not in ("add", "remove") or not isinstance(spec, dict):
            raise parsing(f"[aliases] unknown action [{op}]")
        index, alias = spec.get("index"), spec.get("alias")
        if index not in c.indices:
            raise index_not_found(str(index))
        if op == "remove" and index not in c.aliases.get(str(alias), {}):
            raise EsError(404, "aliases_not_found_exception", f"aliases [{alias}] missing",
                          **{"resource.type": "aliases", "resource.id": str(alias)})
        extra = {k: v for k, v in spec.items() if k not in ("index", "alias")}
        steps.append((op, str(index), str(alias), extra))
    for op, index, alias, extra in steps:
        if op == "add":
            c.aliases.setdefault(alias, {})[index] = extra
        else:
            del c.aliases[alias][index]
            if not c.aliases[alias]:
                del c.aliases[alias]
    return 200, {"acknowledged": True, "errors": False}


__all__ = ["index_not_found"]
