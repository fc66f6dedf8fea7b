"""One document schema: the table of document fields, and what is generated from it.

:data:`FIELDS` lists every field a document carries besides its id and codes. Generated from
it: the records :class:`~elastichash.index.base.Document` and ``Hit`` (``in_hits`` fields), the
pydantic :class:`DocumentBody`, the gateway's ``ResultItem`` and ``ImageStatus`` (``in_hits``
fields), the Elasticsearch mapping and ``_source`` (``index/es/``), the SQLite columns
(``index/store.py``) and the search service's JSON (``index/service_json.py``). Adding a field
is one row here; a backend needs its own translator only for a kind it stores specially
(``binary``: the thumbnail). Typed code sees the records through the declarations under
``TYPE_CHECKING`` in ``index/base.py``: a field that code reads by name needs its line there
too, and ``tests/unit/test_field_table.py`` names any that is missing.

:class:`DocumentBody` is how a document looks in JSON wherever it travels: the search
service's bulk and get bodies and the AMQP index messages (``messages.IndexDoc`` extends it).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    create_model,
    field_validator,
    model_validator,
)

from elastichash.codes import LONG_BITS, SHORT_BITS, CodeError, from_hex, from_subcodes, from_words
from elastichash.errors import InvalidInput
from elastichash.ids import check_id

if TYPE_CHECKING:
    from elastichash.index.base import Document

M = TypeVar("M", bound=BaseModel)
FieldKind = Literal["keyword", "keywords", "number", "date", "text", "json", "binary"]


@dataclass(frozen=True)
class FieldSpec:
    """One document field. ``keyword``: exact strings; ``keywords``: a list of them;
    ``number``: floats; ``date``: unix seconds; ``text``: analysed words; ``json``: an
    opaque object; ``binary``: bytes kept apart from the searchable row (base64 in JSON)."""

    name: str
    kind: FieldKind
    filterable: bool = False  # indexed, so a SearchQuery filter may name it
    in_hits: bool = False  # returned with every search hit (keep hits small)
    max_bytes: int = 0  # binary: the cap on its decoded size, the same wherever it travels


# The same limits wherever a document travels (AMQP messages, the search service's JSON): a
# document from something other than our gateway or encoder gets no more trust.
# Metadata travels in an AMQP header; RabbitMQ's frame_max (128 KiB) bounds all headers.
MAX_METADATA_BYTES = 16 * 1024
# Facts about a photo (size, file name, EXIF groups) nest two or three levels; deeper is an
# attack on recursive parsers and serialisers, not a caption.
MAX_METADATA_DEPTH = 5
MAX_SOURCE_CHARS = 2048
# Sources kept per document: the first and the latest ones (a popular image re-uploaded
# under a thousand names must not grow its document without bound).
MAX_SOURCES = 32
# Versions are nanosecond stamps; engines take external versions below 2**63.
MAX_VERSION = 2**63 - 1
# A thumbnail is a JPEG of at most 256 px on its long side (tens of KB); 512 KiB leaves room
# for a noisy one and refuses a full image smuggled in its place.
MAX_THUMBNAIL_BYTES = 512 * 1024
# A preview is a JPEG of at most 1280 px (by default) on its long side: a few hundred KB.
MAX_PREVIEW_BYTES = 2 * 1024 * 1024
HEX64 = r"^[0-9a-f]{64}$"
HEX16 = r"^[0-9a-f]{16}$"

FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("source", "keyword", in_hits=True),  # URL, path or upload name
    FieldSpec("sources", "keywords"),  # every source of the same bytes, first first
    FieldSpec("thumbnail_url", "keyword", in_hits=True),  # an imported external thumbnail
    FieldSpec("metadata", "json", in_hits=True),  # client metadata, width/height, filename
    # small JPEG made at encode time
    FieldSpec("thumbnail", "binary", max_bytes=MAX_THUMBNAIL_BYTES),
    # large-view JPEG (1280 px), made at encode time
    FieldSpec("preview", "binary", max_bytes=MAX_PREVIEW_BYTES),
)
FIELD_NAMES = tuple(f.name for f in FIELDS)
HIT_SPECS = tuple(f for f in FIELDS if f.in_hits)
HIT_FIELDS = tuple(f.name for f in HIT_SPECS)
FILTERABLE = tuple(f.name for f in FIELDS if f.filterable)



def depth(value: Any, limit: int = 64) -> int:
    """Nesting depth of a JSON value, counting no further than ``limit`` + 1."""
    if limit < 0 or not isinstance(value, (dict, list)):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((depth(v, limit - 1) for v in items), default=0)


def check_metadata(metadata: Any) -> dict[str, Any]:
    """The same metadata limits on every path: a JSON object, at most MAX_METADATA_BYTES
    serialised, nested at most MAX_METADATA_DEPTH deep."""
    if not isinstance(metadata, dict):
        raise ValueError("metadata must be a JSON object")
    if depth(metadata, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise ValueError(f"metadata nested deeper than {MAX_METADATA_DEPTH}")
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata over {MAX_METADATA_BYTES} bytes")
    return metadata


def checked_id(value: str) -> str:
    """``check_id`` for pydantic validators (which report ValueErrors only)."""
    try:
        return check_id(value)
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


def empty(spec: FieldSpec) -> Any:
    """The value of an unset field: ``{}`` for json, ``()`` for keywords, ``None`` otherwise."""
    return {} if spec.kind == "json" else () if spec.kind == "keywords" else None


def all_sources(sources: tuple[str, ...] | list[str], first: str | None) -> list[str]:
    """A document's sources; for one written before the field, its one ``source``."""
    return list(sources) or ([first] if first else [])


def with_source(sources: tuple[str, ...] | list[str], first: str | None,
                added: str) -> tuple[str, ...]:
    """``sources`` (or, for documents written before the field, ``first``) with ``added``
    appended unless present; past MAX_SOURCES the oldest after the first make room."""
    out = all_sources(sources, first)
    if added in out:
        return tuple(out)
    out.append(added)
    if len(out) > MAX_SOURCES:
        out = out[:1] + out[len(out) - MAX_SOURCES + 1:]
    return tuple(out)


def _parse(
    body: dict[str, Any], key: str, ints_key: str, bits: int, from_ints: Callable[..., bytes]
) -> bytes | None:
    if body.get(key) is not None:
        if not isinstance(body[key], str):
            raise InvalidInput(f"{key} must be a string of {bits // 4} hex digits", field=key)
        try:
            return from_hex(body[key], bits)
        except CodeError as exc:
            raise InvalidInput(f"{key}: {exc}", field=key) from None
    if body.get(ints_key) is not None:
        try:
            return from_ints(_ints(body[ints_key], ints_key))
        except CodeError as exc:
            raise InvalidInput(f"{ints_key}: {exc}", field=ints_key) from None
    return None


def parse_code(body: dict[str, Any]) -> bytes:
    """The long code from ``code`` (64 hex digits) or ``words`` ([r0, r1, r2, r3])."""
    code = _parse(body, "code", "words", LONG_BITS, from_words)
    if code is None:
        raise InvalidInput(
            "give the long code as 'code' (64 hex digits) or 'words' ([r0..r3])", field="code"
        )
    return code


def parse_short(body: dict[str, Any]) -> bytes:
    """The short code from ``short`` (16 hex digits) or ``subcodes`` ([f0, f1, f2, f3])."""
    short = _parse(body, "short", "subcodes", SHORT_BITS, from_subcodes)
    if short is None:
        raise InvalidInput(
            "the short code is required: 'short' (16 hex digits) or 'subcodes' ([f0..f3])",
            field="short",
        )
    return short


def _ints(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise InvalidInput(f"{name} must be a list of integers", field=name)
    return value


class DocumentCodes(BaseModel):
    """A document in JSON: codes as hex (or ``words``/``subcodes`` integers on input), the
    binary fields as base64. The fields of the table are added by :data:`DocumentBody`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    code: str = Field(pattern=HEX64, description="256-bit long code, 64 hex digits")
    short: str = Field(pattern=HEX16, description="64-bit short code, 16 hex digits")
    # The upload's sequence (see Document.version); 0: unversioned.
    version: int = Field(default=0, ge=0, le=MAX_VERSION)

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return checked_id(value)

    @model_validator(mode="before")
    @classmethod
    def _codes(cls, data: Any) -> Any:
        """Accept the codes as hex in any case, or as ElasticHash's integers."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        try:
            data["code"] = parse_code(data).hex()
            data["short"] = parse_short(data).hex()
        except InvalidInput as exc:  # pydantic reports ValueErrors only
            raise ValueError(exc.message) from None
        data.pop("words", None)
        data.pop("subcodes", None)
        return data

    @classmethod
    def of(cls, doc: Document, *, binary: bool = True) -> Self:
        """The body of ``doc``; ``binary=False`` leaves the binary fields (thumbnail,
        preview) out."""
        fields: dict[str, Any] = {}
        for spec in FIELDS:
            value = getattr(doc, spec.name)
            if spec.kind == "binary":
                value = base64.b64encode(value).decode("ascii") if binary and value else None
            elif spec.kind == "keywords":
                value = list(value)
            fields[spec.name] = value
        return cls(id=doc.id, code=doc.code.hex(), short=doc.short.hex(), version=doc.version,
                   **fields)

    def document(self) -> Document:
        from elastichash.index.base import Document

        fields: dict[str, Any] = {}
        for spec in FIELDS:
            value = getattr(self, spec.name)
            if spec.kind == "binary" and value is not None:
                value = base64.b64decode(value)
            elif spec.kind == "json":
                value = dict(value)
            elif spec.kind == "keywords":
                value = tuple(value)
            fields[spec.name] = value
        return Document(id=self.id, code=bytes.fromhex(self.code),
                        short=bytes.fromhex(self.short), version=self.version, **fields)


# --- what the table generates ----------------------------------------------------------------

# The Python type of each kind in the records (Document, Hit); None when unset, {} for json.
_RECORD_TYPE: dict[str, Any] = {
    "keyword": str | None, "keywords": tuple[str, ...], "text": str | None,
    "number": float | None, "date": float | None, "json": dict[str, Any], "binary": bytes | None,
}
_RECORD_DEFAULT: dict[str, Any] = {"json": dict, "keywords": tuple}  # factories; else None


def record_fields(specs: Iterable[FieldSpec]) -> list[tuple[str, Any, Any]]:
    """``dataclasses.make_dataclass`` fields for ``specs``: each optional, unset by default."""
    out: list[tuple[str, Any, Any]] = []
    for spec in specs:
        factory = _RECORD_DEFAULT.get(spec.kind)
        default: Any = (dataclasses.field(default_factory=factory) if factory
                        else dataclasses.field(default=None))
        out.append((spec.name, _RECORD_TYPE[spec.kind], default))
    return out


def record_class(name: str, leading: Sequence[tuple[str, type]], specs: Iterable[FieldSpec],
                 doc: str, trailing: Sequence[tuple[str, type, Any]] = ()) -> Any:
    """A frozen dataclass: the ``leading`` fields (required), one per field row, then the
    ``trailing`` ones (name, type, default) that are not document fields."""
    cls = dataclasses.make_dataclass(
        name, [*leading, *record_fields(specs), *trailing], frozen=True)
    cls.__module__ = "elastichash.index.base"  # where it is defined, for pickle and repr
    cls.__doc__ = doc
    return cls


def _base64(name: str) -> Callable[[str | None], str | None]:
    def check(value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"{name} is not base64: {exc}") from None
        return value

    return check


def json_field(spec: FieldSpec, *, checked: bool = True) -> tuple[Any, Any]:
    """A pydantic field (type, default) for ``spec`` as it travels in JSON. ``checked``: with
    the same limits wherever a document comes in: keywords and text at most MAX_SOURCE_CHARS
    (at most MAX_SOURCES in a list), json objects checked by :func:`check_metadata`, binary as
    base64 (a consumer checks the decoded size against the row's ``max_bytes``). Unchecked
    for what we answer with."""
    if spec.kind == "json":
        if not checked:
            return dict[str, Any], Field(default_factory=dict)
        return Annotated[dict[str, Any], AfterValidator(check_metadata)], Field(
            default_factory=dict)
    if spec.kind in ("number", "date"):
        return float | None, None
    if spec.kind == "keywords":
        if not checked:
            return list[str], Field(default_factory=list)
        return list[Annotated[str, Field(max_length=MAX_SOURCE_CHARS)]], Field(
            default_factory=list, max_length=MAX_SOURCES)
    if not checked:
        return str | None, None
    if spec.kind in ("keyword", "text"):
        return str | None, Field(default=None, max_length=MAX_SOURCE_CHARS)
    return Annotated[str | None, AfterValidator(_base64(spec.name))], Field(
        default=None, max_length=spec.max_bytes * 4 // 3 + 4)


def with_fields(name: str, base: type[M], specs: Iterable[FieldSpec], doc: str | None, *,
                checked: bool = True) -> type[M]:
    """The pydantic model ``base`` plus one field per row of ``specs`` (see :func:`json_field`
    for ``checked``)."""
    fields: dict[str, Any] = {spec.name: json_field(spec, checked=checked) for spec in specs}
    return create_model(name, __base__=base, __module__=base.__module__, __doc__=doc, **fields)


def hit_values(record: Any) -> dict[str, Any]:
    """The ``in_hits`` fields of a Document or Hit, by name."""
    return {name: getattr(record, name) for name in HIT_FIELDS}


if TYPE_CHECKING:
    DocumentBody = DocumentCodes
else:
    DocumentBody = with_fields("DocumentBody", DocumentCodes, FIELDS, DocumentCodes.__doc__)
