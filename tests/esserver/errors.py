"""Elasticsearch-shaped errors: ``{"error": {"root_cause": [...], "type", "reason"}, "status"}``."""

from __future__ import annotations

from typing import Any


class EsError(Exception):
    def __init__(
        self,
        status: int,
        type_: str,
        reason: str,
        *,
        caused_by: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.type = type_
        self.reason = reason
        self.caused_by = caused_by
        self.extra = extra

    def cause(self) -> dict[str, Any]:
        return {"type": self.type, "reason": self.reason, **self.extra}

    def body(self) -> dict[str, Any]:
        err = self.cause()
        err["root_cause"] = [self.cause()]
        if self.caused_by:
            err["caused_by"] = self.caused_by
        # root_cause first, as Elasticsearch writes it
        return {"error": {"root_cause": err.pop("root_cause"), **err}, "status": self.status}


def index_not_found(name: str) -> EsError:
    extra: dict[str, Any] = {"resource.type": "index_or_alias", "resource.id": name,
                             "index_uuid": "_na_", "index": name}
    return EsError(404, "index_not_found_exception", f"no such index [{name}]", **extra)


def parsing(reason: str) -> EsError:
    return EsError(400, "parsing_exception", reason, line=1, col=1)


def illegal(reason: str) -> EsError:
    return EsError(400, "illegal_argument_exception", reason)


def token_name(value: Any) -> str:
    """The Jackson token name Elasticsearch quotes in "Unknown key for a ..." messages."""
    if isinstance(value, dict):
        return "START_OBJECT"
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, bool):
        return "VALUE_BOOLEAN"
    if isinstance(value, (int, float)):
        return "VALUE_NUMBER"
    if value is None:
        return "VALUE_NULL"
    return "VALUE_STRING"


def check_keys(where: str, obj: Any, allowed: set[str]) -> dict[str, Any]:
    """Refuse unknown keys the way query parsers do: ``[bool] query does not support [x]``."""
    if not isinstance(obj, dict):
        raise parsing(f"[{where}] expected an object, got {token_name(obj)}")
    for key in obj:
        if key not in allowed:
            raise parsing(f"[{where}] query does not support [{key}]")
    return obj
