"""``_bulk``: NDJSON actions, per-item results in request order, injected item faults."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from tests.esserver.errors import EsError, illegal
from tests.esserver.faults import ERROR_TYPES, Faults
from tests.esserver.mapping import parse_document
from tests.esserver.state import Cluster, StoredDoc

OPS = {"index", "create", "delete"}
META_KEYS = {"_index", "_id", "routing", "if_seq_no", "if_primary_term", "version",
             "version_type", "pipeline", "require_alias", "dynamic_templates"}


def _item_error(op: str, index: str, doc_id: str, err: EsError) -> dict[str, Any]:
    return {op: {"_index": index, "_id": doc_id, "status": err.status, "error": err.cause()}}


def bulk(cluster: Cluster, faults: Faults, path_index: str | None, raw: bytes,
         refresh: bool) -> dict[str, Any]:
    started = time.perf_counter()
    if raw and not raw.endswith(b"\n"):
        raise illegal("The bulk request must be terminated by a newline [\\n]")
    lines = raw.split(b"\n")[:-1] if raw else []
    items: list[dict[str, Any]] = []
    touched: set[str] = set()
    i = 0
    while i < len(lines):
        line_no = i + 1
        try:
            action = json.loads(lines[i])
        except ValueError:
            raise illegal(f"Malformed action/metadata line [{line_no}]") from None
        if not isinstance(action, dict) or len(action) != 1:
            raise illegal(f"Malformed action/metadata line [{line_no}], expected a simple value "
                          "for field [_index]")
        (op, meta), = action.items()
        if op not in OPS:
            raise illegal(f"Malformed action/metadata line [{line_no}], expected one of "
                          f"[create, delete, index, update] but found [{op}]")
        for key in meta:
            if key not in META_KEYS:
                raise illegal(f"Action/metadata line [{line_no}] contains an unknown "
                              f"parameter [{key}]")
        index_name = meta.get("_index", path_index)
        if index_name is None:
            raise EsError(400, "action_request_validation_exception",
                          "Validation Failed: 1: index is missing;")
        source: bytes | None = None
        if op != "delete":
            i += 1
            if i >= len(lines):
                raise illegal("The bulk request must be terminated by a newline [\\n]")
            source = lines[i]
        i += 1
        doc_id = str(meta.get("_id") or uuid.uuid4().hex[:20])
        items.append(_one(cluster, faults, op, index_name, doc_id, source, touched,
                          _external_version(meta)))
    if refresh:
        for name in touched:
            cluster.indices[name].refresh()
    return {
        "errors": any("error" in next(iter(it.values())) for it in items),
        "took": int((time.perf_counter() - started) * 1000),
        "items": items,
    }


def _external_version(meta: dict[str, Any]) -> int | None:
    """The version of an ``external`` or ``external_gte`` write, as the engine checks it."""
    vtype = meta.get("version_type")
    if vtype is None:
        return None
    if vtype not in ("external", "external_gte") or not isinstance(meta.get("version"), int):
        raise illegal(f"version type [{vtype}] with version [{meta.get('version')}]")
    return int(meta["version"])


def _one(cluster: Cluster, faults: Faults, op: str, index_name: str, doc_id: str,
         source: bytes | None, touched: set[str], external: int | None = None) -> dict[str, Any]:
    try:
        index = cluster.write_index(index_name)
    except EsError as err:
        return _item_error(op, index_name, doc_id, err)
    injected = faults.take_item(index.name, doc_id)
    if injected is not None:
        etype, reason = ERROR_TYPES.get(injected, ("exception", "injected failure"))
        return _item_error(op, index.name, doc_id, EsError(injected, etype, reason))
    try:
        index.check_writable()
        existing = index.docs.get(doc_id)
        if op == "delete":
            if external is not None and existing is not None and existing.version > external:
                raise EsError(409, "version_conflict_engine_exception",
                              f"[{doc_id}]: version conflict, current version "
                              f"[{existing.version}] is higher than the one provided "
                              f"[{external}]", index=index.name)
            index.seq_no += 1
            version = existing.version + 1 if existing else 1
            result = {"_index": index.name, "_id": doc_id, "_version": version,
                      "_shards": {"total": 1, "successful": 1, "failed": 0},
                      "_seq_no": index.seq_no, "_primary_term": 1}
            if existing is None:
                return {op: {**result, "result": "not_found", "status": 404}}
            del index.docs[doc_id]
            index.deleted += 1
            touched.add(index.name)
            return {op: {**result, "result": "deleted", "status": 200}}
        if op == "create" and existing is not None:
            raise EsError(409, "version_conflict_engine_exception",
                          f"[{doc_id}]: version conflict, document already exists (current "
                          f"version [{existing.version}])", index=index.name)
        assert source is not None
        try:
            parsed = json.loads(source)
        except ValueError:
            raise EsError(400, "document_parsing_exception",
                          "[1:1] failed to parse: malformed JSON") from None
        fields = parse_document(index.mappings, parsed, doc_id)
        version = existing.version + 1 if existing else 1
        if external is not None:  # external_gte: an equal version is written again
            if existing is not None and existing.version > external:
                raise EsError(409, "version_conflict_engine_exception",
                              f"[{doc_id}]: version conflict, current version "
                              f"[{existing.version}] is higher than the one provided "
                              f"[{external}]", index=index.name)
            version = external
        index.seq_no += 1
        index.docs[doc_id] = StoredDoc(bytes(source), fields, version, index.seq_no)
        touched.add(index.name)
        return {op: {"_index": index.name, "_id": doc_id, "_version": version,
                     "result": "updated" if existing else "created",
                     "_shards": {"total": 1, "successful": 1, "failed": 0},
                     "_seq_no": index.seq_no, "_primary_term": 1,
                     "status": 200 if existing else 201}}
    except EsError as err:
        return _item_error(op, index.name, doc_id, err)
