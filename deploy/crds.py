"""Validate custom resources offline against the CRD schemas vendored in deploy/schemas/crds.

Each file there holds one CRD version's ``openAPIV3Schema`` (OpenAPI v3 structural schema)
under ``schema``, with its ``apiVersion`` and ``kind`` and a header saying where it comes
from. ``to_json_schema`` turns it into a JSON Schema that behaves like the API server with
strict field validation (``kubectl apply`` since 1.27):

- an object with ``properties`` and no ``additionalProperties`` rejects unknown fields, unless
  it carries ``x-kubernetes-preserve-unknown-fields: true``;
- ``x-kubernetes-int-or-string`` accepts an integer or a string (``pattern`` applies to
  strings only, as in Kubernetes);
- ``format: int32`` / ``int64`` bound the integer;
- ``nullable: true`` also accepts null.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas" / "crds"
INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
# OpenAPI keywords that jsonschema understands with the same meaning.
PASSTHROUGH = (
    "type", "enum", "pattern", "maxLength", "minLength", "minimum", "maximum",
    "minItems", "maxItems", "required", "uniqueItems", "exclusiveMinimum", "exclusiveMaximum",
)  # fmt: skip


class UnknownKindError(LookupError):
    """No vendored schema for this apiVersion/kind."""


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """Convert one OpenAPI v3 structural schema node (recursively) to JSON Schema."""
    out: dict[str, Any] = {k: node[k] for k in PASSTHROUGH if k in node}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        pattern = out.pop("pattern", None)
        out["anyOf"] = [
            {"type": "integer"},
            {"type": "string", **({"pattern": pattern} if pattern else {})},
        ]
    if "anyOf" in node:
        out.setdefault("anyOf", [to_json_schema(n) for n in node["anyOf"]])
    if node.get("format") in INT_BOUNDS and node.get("type") == "integer":
        low, high = INT_BOUNDS[node["format"]]
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
    if "additionalProperties" in node:
        extra = node["additionalProperties"]
        out["additionalProperties"] = extra if isinstance(extra, bool) else to_json_schema(extra)
    elif node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
        # No properties listed and not preserved: the API server prunes everything, strict
        # field validation reports it; metadata is the exception (it has its own schema).
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def load_schemas(directory: Path = SCHEMA_DIR) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON Schema, for every vendored CRD schema."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        converted = to_json_schema(doc["schema"])
        # ObjectMeta is validated by the API server itself, not by the CRD schema.
        converted["properties"]["metadata"] = {"type": "object"}
        jsonschema.Draft7Validator.check_schema(converted)
        schemas[(doc["apiVersion"], doc["kind"])] = converted
    return schemas


def errors(obj: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> Iterator[str]:
    """Every schema violation of one custom resource, as 'Kind/name: path: message'."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    if key not in schemas:
        raise UnknownKindError(f"no vendored CRD schema for {key[0]} {key[1]}")
    name = obj.get("metadata", {}).get("name", "?")
    validator = jsonschema.Draft7Validator(schemas[key])
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = "/".join(str(p) for p in err.absolute_path) or "(root)"
        yield f"{key[1]}/{name}: {path}: {err.message}"


def validate_all(objects: Iterable[dict[str, Any]]) -> list[str]:
    schemas = load_schemas()
    return [e for obj in objects for e in errors(obj, schemas)]
