"""One small exception hierarchy shared by the library and the services.

Each class carries what its handler needs; mapping to HTTP statuses lives in one place
(:data:`HTTP_STATUS`), mapping to broker outcomes in ``elastichash.amqp``.
"""

from __future__ import annotations

from pydantic import ValidationError


class ElasticHashError(Exception):
    """Base class. ``code`` is the stable machine-readable error code used in JSON errors."""

    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ElasticHashError):
    """The request or message is malformed; retrying the same input cannot succeed."""

    code = "invalid_input"


class ImageError(InvalidInput):
    """An image could not be used. ``reason`` is one of the REASONS below."""

    code = "bad_image"
    REASONS = (
        "corrupt", "truncated", "unsupported_format", "too_many_pixels", "empty", "too_large"
    )

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnsupportedQuery(InvalidInput):
    """A well-formed search this index cannot serve (a strategy, a filter, words); the same
    400 on every backend and in every mode."""

    code = "unsupported_query"


class NotFound(ElasticHashError):
    code = "not_found"


class ModelContractError(ElasticHashError):
    """An ONNX model does not meet the contract in ARCHITECTURE.md."""

    code = "model_contract"


class ConfigError(ElasticHashError):
    """A setting cannot work (e.g. a queue exists with other arguments): the process refuses to
    start. ``field`` names the setting (dotted, as in the settings groups: ``amqp.url``)."""

    code = "config_error"


class ModelMismatch(ElasticHashError):
    """An index holds codes of another model than the one in use: they cannot be compared."""

    code = "model_mismatch"


class Conflict(ElasticHashError):
    """The request cannot be done in the resource's current state (e.g. still queued)."""

    code = "conflict"


class Unavailable(ElasticHashError):
    """A dependency (broker, index, encoder) cannot serve now; retrying later may succeed."""

    code = "unavailable"

    def __init__(
        self, message: str, *, retry_after: float | None = None, field: str | None = None
    ) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class PartlyAccepted(Unavailable):
    """A pipeline took some items of a submitted group (``accepted``, their ids) and not the
    rest: the caller must answer for the accepted ones, not report them failed."""

    def __init__(self, message: str, accepted: list[str], *,
                 retry_after: float | None = None) -> None:
        super().__init__(message, retry_after=retry_after)
        self.accepted = accepted


class InsufficientStorage(Unavailable):
    """The disk that holds accepted work is (nearly) full; retrying later may succeed."""

    code = "insufficient_storage"


class Unauthorized(ElasticHashError):
    code = "unauthorized"


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"


class RequestTimeout(InvalidInput):
    """The client sent its request body too slowly, or stopped sending it."""

    code = "request_timeout"


class UnsupportedMediaType(InvalidInput):
    code = "unsupported_media_type"


class ForbiddenTarget(InvalidInput):
    """A URL points at a loopback, private or link-local address."""

    code = "forbidden_url"


def validation_message(exc: ValidationError) -> tuple[str, str | None]:
    """A one-line message and the field it concerns, from pydantic's first error."""
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__")
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return (f"{loc}: {msg}" if loc else msg), (loc or None)


def invalid_input(exc: ValidationError) -> InvalidInput:
    message, field = validation_message(exc)
    return InvalidInput(message, field=field)


HTTP_STATUS: dict[type[ElasticHashError], int] = {
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    RequestTimeout: 408,
    ImageError: 422,
    ForbiddenTarget: 400,
    InvalidInput: 400,
    NotFound: 404,
    Conflict: 409,
    ModelMismatch: 409,
    Unauthorized: 401,
    ModelContractError: 500,
    ConfigError: 500,
    InsufficientStorage: 507,
    Unavailable: 503,
    ElasticHashError: 500,
}


def http_status(exc: ElasticHashError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500
