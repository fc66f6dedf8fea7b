"""Mapping validation at index creation, and strict parsing of documents against a mapping.

A parsed document keeps only what search can see: values of indexed or doc-valued fields;
a ``nested`` field keeps one field map per object, for the nested query.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from tests.esserver.errors import EsError

_COMMON = {"type", "index", "doc_values", "store", "null_value", "meta"}
PARAMS: dict[str, set[str]] = {
    "keyword": _COMMON | {"ignore_above", "normalizer"},
    "long": _COMMON | {"coerce", "ignore_malformed"},
    "integer": _COMMON | {"coerce", "ignore_malformed"},
    "double": _COMMON | {"coerce", "ignore_malformed"},
    "float": _COMMON | {"coerce", "ignore_malformed"},
    "boolean": _COMMON,
    "binary": {"type", "doc_values", "store"},
    "dense_vector": {"type", "dims", "element_type", "index", "similarity", "index_options"},
    "object": {"type", "properties", "enabled", "dynamic"},
    "nested": {"type", "properties", "dynamic", "include_in_parent", "include_in_root"},
}
ROOT_KEYS = {"dynamic", "properties", "_source", "_meta"}
INT_RANGE = {"long": 63, "integer": 31}


def mapper_error(reason: str) -> EsError:
    return EsError(400, "mapper_parsing_exception", reason)


def validate_mapping(mapping: dict[str, Any]) -> None:
    for key in mapping:
        if key not in ROOT_KEYS:
            raise mapper_error(f"Root mapping definition has unsupported parameters:  [{key} : "
                               f"{mapping[key]}]")
    if str(mapping.get("dynamic", "true")).lower() not in ("true", "false", "strict", "runtime"):
        raise mapper_error(f"Unknown value for dynamic: {mapping['dynamic']}")
    _validate_props(mapping.get("properties", {}))


def _validate_props(props: dict[str, Any]) -> None:
    for name, spec in props.items():
        ftype = spec.get("type", "object" if "properties" in spec else None)
        if ftype not in PARAMS:
            raise mapper_error(f"No handler for type [{ftype}] declared on field [{name}]")
        for param in spec:
            if param not in PARAMS[ftype]:
                raise mapper_error(
                    f"unknown parameter [{param}] on mapper [{name}] of type [{ftype}]"
                )
        if ftype == "dense_vector" and spec.get("element_type") == "bit":
            if int(spec.get("dims", 0)) % 8:
                raise mapper_error(f"The number of dimensions for field [{name}] should be "
                                   "a multiple of 8 for [bit] element type")
            if spec.get("index", True) and spec.get("similarity", "l2_norm") != "l2_norm":
                raise mapper_error(f"[similarity] must be [l2_norm] for [bit] field [{name}]")
        if ftype in ("object", "nested"):
            _validate_props(spec.get("properties", {}))


def _doc_error(field: str, ftype: str, doc_id: str, value: Any) -> EsError:
    return EsError(
        400,
        "document_parsing_exception",
        f"[1:1] failed to parse field [{field}] of type [{ftype}] in document with id "
        f"'{doc_id}'. Preview of field's value: '{value}'",
    )


def _scalar(ftype: str, spec: dict[str, Any], value: Any, field: str, doc_id: str) -> Any:
    if ftype == "keyword":
        if isinstance(value, (dict, list)):
            raise _doc_error(field, ftype, doc_id, value)
        return ("true" if value else "false") if isinstance(value, bool) else str(value)
    if ftype in INT_RANGE:
        if isinstance(value, (bool, dict, list)):
            raise _doc_error(field, ftype, doc_id, value)
        try:
            num = int(value)
        except (TypeError, ValueError):
            raise _doc_error(field, ftype, doc_id, value) from None
        bits = INT_RANGE[ftype]
        if not -(1 << bits) <= num < (1 << bits):
            raise _doc_error(field, ftype, doc_id, value)
        return num
    if ftype in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise _doc_error(field, ftype, doc_id, value)
        try:
            return float(value)
        except ValueError:
            raise _doc_error(field, ftype, doc_id, value) from None
    if ftype == "boolean":
        if value in (True, False, "true", "false"):
            return value in (True, "true")
        raise _doc_error(field, ftype, doc_id, value)
    raise _doc_error(field, ftype, doc_id, value)


def _vector(spec: dict[str, Any], value: Any, field: str, doc_id: str) -> bytes:
    dims = int(spec["dims"])
    if spec.get("element_type") != "bit":
        raise EsError(400, "illegal_argument_exception", "test server: only bit vectors")
    if isinstance(value, str):
        try:
            raw = binascii.unhexlify(value)
        except (binascii.Error, ValueError):
            raise _doc_error(field, "dense_vector", doc_id, value) from None
    elif isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and -128 <= v <= 127 for v in value
    ):
        raw = bytes(v & 0xFF for v in value)
    else:
        raise _doc_error(field, "dense_vector", doc_id, value)
    if len(raw) * 8 != dims:
        raise EsError(
            400,
            "document_parsing_exception",
            f"[1:1] The [dense_vector] field [{field}] in doc [document with id '{doc_id}'] has "
            f"a different number of dimensions [{len(raw) * 8}] than defined in the mapping "
            f"[{dims}]",
        )
    return raw


def parse_document(mapping: dict[str, Any], source: Any, doc_id: str) -> dict[str, list[Any]]:
    if not isinstance(source, dict):
        raise EsError(400, "document_parsing_exception", "[1:1] malformed document")
    fields: dict[str, list[Any]] = {}
    _walk(mapping.get("properties", {}), str(mapping.get("dynamic", "true")).lower(), source,
          "", doc_id, fields)
    return fields


def _walk(props: dict[str, Any], dynamic: str, obj: dict[str, Any], prefix: str, doc_id: str,
          fields: dict[str, list[Any]]) -> None:
    for key, value in obj.items():
        path = prefix + key
        spec = props.get(key)
        if spec is None:
            if dynamic == "strict":
                where = prefix.rstrip(".") or "_doc"
                raise EsError(
                    400,
                    "strict_dynamic_mapping_exception",
                    f"[1:2] mapping set to strict, dynamic introduction of [{key}] within "
                    f"[{where}] is not allowed",
                )
            continue  # dynamic false/true: kept in _source only (no dynamic mapping here)
        ftype = spec.get("type", "object")
        if value is None:
            continue
        if ftype == "object":
            if spec.get("enabled", True) is False:
                continue
            if not isinstance(value, dict):
                raise _doc_error(path, "object", doc_id, value)
            sub_dynamic = str(spec.get("dynamic", dynamic)).lower()
            _walk(spec.get("properties", {}), sub_dynamic, value, path + ".", doc_id, fields)
        elif ftype == "nested":
            # Each object is a hidden document of its own, searched by the nested query only:
            # kept as a list of field maps (full paths), none of them visible at the top.
            objects = value if isinstance(value, list) else [value]
            children = []
            for child in objects:
                if not isinstance(child, dict):
                    raise _doc_error(path, "nested", doc_id, child)
                child_fields: dict[str, list[Any]] = {}
                sub_dynamic = str(spec.get("dynamic", dynamic)).lower()
                _walk(spec.get("properties", {}), sub_dynamic, child, path + ".", doc_id,
                      child_fields)
                children.append(child_fields)
            fields[path] = children
        elif ftype == "binary":
            try:
                base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                raise _doc_error(path, ftype, doc_id, value) from None
        elif ftype == "dense_vector":
            fields[path] = [_vector(spec, value, path, doc_id)]
        else:
            values = value if isinstance(value, list) else [value]
            parsed = [_scalar(ftype, spec, v, path, doc_id) for v in values if v is not None]
            if spec.get("index", True) or spec.get("doc_values", True):
                fields[path] = parsed


def field_spec(mapping: dict[str, Any], path: str) -> dict[str, Any] | None:
    props = mapping.get("properties", {})
    parts = path.split(".")
    for i, part in enumerate(parts):
        spec = props.get(part)
        if spec is None:
            return None
        if i == len(parts) - 1:
            return dict(spec)
        props = spec.get("properties", {})
    return None
