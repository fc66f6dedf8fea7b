"""The OpenAPI 3.1 document, generated from the pydantic models in ``gateway.schemas``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from elastichash import __version__
from elastichash.ids import ID_PATTERN
from gateway import schemas as s

MODELS: list[type[BaseModel]] = [
    s.ErrorResponse, s.IngestUrlsRequest, s.IngestResponse, s.ImageStatus,
    s.FailuresResponse, s.SearchRequest, s.SearchResponse, s.StatsResponse,
    s.DuplicatesResponse,
]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(model)}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(st): {"description": "error", "content": _json(s.ErrorResponse)}
            for st in statuses}


ID_PARAM = {"name": "id", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": ID_PATTERN.pattern}}


def _search_form() -> dict[str, Any]:
    """The multipart search form: the file plus the query fields of ``SearchParams``."""
    schema = s.SearchParams.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"type": "object", "required": ["file"],
            "description": schema.get("description", ""),
            "properties": {"file": {"type": "string", "format": "binary"},
                           **schema["properties"]}}


def build_openapi() -> dict[str, Any]:
    _, defs = models_json_schema([(m, "validation") for m in MODELS],
                                 ref_template="#/components/schemas/{model}")
    components = defs.get("$defs", {})
    upload = {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
            "id": {"type": "string"}, "source": {"type": "string"}}}}}
    search_upload = {"multipart/form-data": {"schema": _search_form()}}
    paths: dict[str, Any] = {
        "/v1/images": {"post": {
            "summary": "Ingest images (multipart upload or a JSON list of URLs)",
            "operationId": "ingestImages", "security": [{}, {"apiKey": []}],
            "requestBody": {"required": True,
                            "content": {**upload, **_json(s.IngestUrlsRequest)}},
            "responses": {"202": {"description": "accepted", "content": _json(s.IngestResponse)},
                          **_errors(400, 401, 413, 415, 422, 503)}}},
        "/v1/images/{id}": {
            "get": {"summary": "Status of one image", "operationId": "getImage",
                    "parameters": [ID_PARAM],
                    "responses": {"200": {"description": "status",
                                          "content": _json(s.ImageStatus)},
                                  **_errors(400, 404)}},
            "delete": {"summary": "Delete an image", "operationId": "deleteImage",
                       "security": [{}, {"apiKey": []}],
                       "parameters": [ID_PARAM],
                       "responses": {"204": {"description": "deleted"},
                                     **_errors(400, 401, 404)}}},
        "/v1/images/{id}/thumbnail": {"get": {
            "summary": "Thumbnail (JPEG)", "operationId": "getThumbnail",
            "parameters": [ID_PARAM],
            "responses": {"200": {"description": "JPEG",
                                  "content": {"image/jpeg": {"schema": {
                                      "type": "string", "format": "binary"}}}},
                          "302": {"description": "external thumbnail"},
                          **_errors(400, 404)}}},
        "/v1/images/{id}/preview": {"get": {
            "summary": "Preview for a large view (JPEG, 1280 px on the long side where stored)",
            "operationId": "getPreview",
            "parameters": [ID_PARAM],
            "responses": {"200": {"description": "JPEG",
                                  "content": {"image/jpeg": {"schema": {
                                      "type": "string", "format": "binary"}}}},
                          "302": {"description": "no preview stored: the thumbnail"},
                          **_errors(400, 404)}}},
        "/v1/failures": {"get": {
            "summary": "Recent ingest failures, newest first", "operationId": "getFailures",
            "parameters": [{"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {"200": {"description": "failures",
                                  "content": _json(s.FailuresResponse)}, **_errors(400)}}},
        "/v1/search": {"post": {
            "summary": "Search by uploaded image, URL, stored id or raw code",
            "operationId": "search",
            "requestBody": {"required": True,
                            "content": {**search_upload, **_json(s.SearchRequest)}},
            "responses": {"200": {"description": "ranked results",
                                  "content": _json(s.SearchResponse)},
                          **_errors(400, 404, 413, 415, 422, 503)}}},
        "/v1/duplicates": {"get": {
            "summary": "Groups of near-duplicate images (single linkage), biggest first",
            "operationId": "getDuplicates",
            "parameters": [
                {"name": name, "in": "query", "required": False,
                 "schema": s.DuplicatesParams.model_json_schema()["properties"][name]}
                for name in ("max_distance", "offset", "limit")],
            "responses": {"200": {"description": "a page of groups",
                                  "content": _json(s.DuplicatesResponse)},
                          **_errors(400, 422, 503)}}},
        "/v1/stats": {"get": {"summary": "Index statistics", "operationId": "getStats",
                              "responses": {"200": {"description": "stats",
                                                    "content": _json(s.StatsResponse)}}}},
        "/healthz": {"get": {"summary": "Alive", "operationId": "healthz",
                             "responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"summary": "Dependencies up", "operationId": "readyz",
                            "responses": {"200": {"description": "ready"},
                                          "503": {"description": "not ready"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "elastichash", "version": __version__,
                 "description": "Semantic image similarity search over binary hash codes."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header",
                                           "name": "X-API-Key"}},
        },
    }
