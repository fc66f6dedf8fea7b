"""Media-type negotiation as Elasticsearch 8 does it (versioned ``compatible-with`` types)."""

from __future__ import annotations

import re

from tests.esserver.errors import EsError

SERVER_MAJOR = 8
ACCEPTED_VERSIONS = (SERVER_MAJOR - 1, SERVER_MAJOR)
_MEDIA = re.compile(
    r"^\s*(application|text)/(vnd\.elasticsearch\+)?([\w.+-]+)\s*(?:;\s*(.*))?$", re.I
)
BODY_FORMATS = {"json", "x-ndjson"}


def _version(header: str | None, name: str) -> int | None:
    if not header or header.strip() in ("*/*", ""):
        return None
    first = header.split(",")[0]
    m = _MEDIA.match(first)
    if not m:
        return None
    params = dict(
        p.strip().split("=", 1) for p in (m.group(4) or "").split(";") if "=" in p
    )
    if "compatible-with" not in params:
        return None
    if not m.group(2):
        raise _invalid(f"{name} has compatible-with but is not a vnd.elasticsearch type. "
                       f"{name}={header}")
    version = int(params["compatible-with"])
    if version not in ACCEPTED_VERSIONS:
        raise _invalid(
            f"{name} version must be either version {SERVER_MAJOR} or {SERVER_MAJOR - 1}, but "
            f"found {version}. {name}={header}"
        )
    return version


def _invalid(reason: str) -> EsError:
    return EsError(
        400,
        "media_type_header_exception",
        "Invalid media-type value on headers [Accept, Content-Type]",
        caused_by={"type": "status_exception", "reason": reason},
    )


def negotiate(accept: str | None, content_type: str | None, has_body: bool) -> int | None:
    """Check the headers; return the requested compatible version (None: plain JSON)."""
    accept_v = _version(accept, "Accept")
    ct_v = _version(content_type, "Content-Type") if has_body else None
    if has_body:
        m = _MEDIA.match((content_type or "").split(",")[0])
        if not m or m.group(3).lower() not in BODY_FORMATS:
            raise EsError(406, "", "")  # replaced by the plain-string 406 body in the app
        if (accept_v is None) != (ct_v is None) and accept:
            raise _invalid(
                "A compatible version is required on both Content-Type and Accept headers if "
                "either one has requested a compatible version and the compatible versions "
                f"must match. Accept={accept}, Content-Type={content_type}"
            )
        if accept_v is not None and ct_v is not None and accept_v != ct_v:
            raise _invalid(
                "Content-Type and Accept version requested have to match. "
                f"Accept={accept}, Content-Type={content_type}"
            )
    return accept_v if accept_v is not None else ct_v


def response_type(version: int | None) -> str:
    if version is None:
        return "application/json"
    return f"application/vnd.elasticsearch+json;compatible-with={version}"
