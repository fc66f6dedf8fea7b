"""One search query, validated once, and what each backend can serve.

:class:`SearchQuery` is built at the edge (the gateway, the search service, the CLI) and is
passed unchanged to :meth:`Index.search`; each backend translates it. The limits here are
common to every backend so that the same request gets the same answer on each of them:
``offset + k`` is capped at Elasticsearch's ``index.max_result_window`` (10,000) everywhere,
not only where the engine would refuse it.

A backend declares what it serves in :class:`Capabilities`; :meth:`Capabilities.check`
refuses the rest with ``UnsupportedQuery`` (HTTP 400, code ``unsupported_query``), the same
on every backend and in every mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from elastichash.codes import LONG_BITS, LONG_BYTES, SHORT_BITS, SHORT_BYTES, CodeError, from_hex
from elastichash.errors import UnsupportedQuery, invalid_input

# Strategy names live here and nowhere else; Literal so settings and the OpenAPI document
# enumerate them.
Strategy = Literal["auto", "exact", "two_stage", "dense_bit"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
# Served by every backend; the others need an engine feature (dense_bit: ES bit vectors).
PORTABLE_STRATEGIES: tuple[str, ...] = ("auto", "exact", "two_stage")

MAX_K = 1000
# Elasticsearch refuses from + size over index.max_result_window (default 10,000); the cap
# applies on every backend so paging behaves the same wherever the index lives.
MAX_WINDOW = 10_000
DEFAULT_K = 10



def _not_a_bool(value: Any) -> Any:
    # pydantic takes JSON true as the integer 1: {"k": true} would ask for one result
    if isinstance(value, bool):
        raise ValueError("should be an integer, not true or false")
    return value


NotBool = BeforeValidator(_not_a_bool)
K = Annotated[int, Field(ge=1, le=MAX_K, description=f"results per page, 1..{MAX_K}"), NotBool]
Offset = Annotated[
    int, Field(ge=0, le=MAX_WINDOW - 1, description=f"results to skip; offset + k <= {MAX_WINDOW}"),
    NotBool,
]
MaxDistance = Annotated[
    int | None,
    Field(default=None, ge=0, le=LONG_BITS, description="keep hits within this Hamming distance"),
    NotBool,
]


class QueryParams(BaseModel):
    """The tuning fields of a search: paging, distance cap, strategy, and the optional
    ``filter`` and ``text`` that only backends declaring them serve."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    k: K = DEFAULT_K
    offset: Offset = 0
    max_distance: MaxDistance = None
    strategy: Strategy | None = Field(
        default=None, description="ranking strategy; default: the index's configured one"
    )
    filter: dict[str, Any] | None = Field(
        default=None, description="field conditions; refused by backends without filters"
    )
    text: str | None = Field(
        default=None, min_length=1, max_length=1000,
        description="words to search by; refused by backends without words search",
    )

    @field_validator("offset")
    @classmethod
    def _window(cls, offset: int, info: ValidationInfo) -> int:
        k = info.data.get("k")  # absent when k itself failed; its error is reported instead
        if k is not None and offset + k > MAX_WINDOW:
            raise ValueError(f"offset + k must be <= {MAX_WINDOW}, got {offset} + {k}")
        return offset

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Validate untrusted input; a bad query is ``InvalidInput`` naming the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_input(exc) from None

    def params(self) -> dict[str, Any]:
        """The tuning fields only, for building a :class:`SearchQuery` from a subclass."""
        return {name: getattr(self, name) for name in QueryParams.model_fields}


class SearchQuery(QueryParams):
    """What to search for (a long code with its short code, later also words or a filter)
    and how. Immutable; validated on construction. In JSON the codes are hex strings."""

    code: bytes | None = Field(default=None, description="256-bit long code")
    short: bytes | None = Field(default=None, description="64-bit short code")

    @field_validator("code", "short", mode="before")
    @classmethod
    def _codes(cls, value: Any, info: ValidationInfo) -> Any:
        bits, size = (LONG_BITS, LONG_BYTES) if info.field_name == "code" else (SHORT_BITS,
                                                                              SHORT_BYTES)
        if isinstance(value, str):
            try:
                return from_hex(value, bits)
            except CodeError as exc:
                raise ValueError(str(exc)) from None
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value)
            if len(value) != size:
                raise ValueError(f"must be {size} bytes, got {len(value)}")
        return value

    @field_serializer("code", "short", when_used="json")
    def _hex(self, value: bytes | None) -> str | None:
        return None if value is None else value.hex()

    @model_validator(mode="after")
    def _something(self) -> SearchQuery:
        if (self.code is None) != (self.short is None):
            raise ValueError("give the long code and the short code together")
        if self.text is not None and not self.text.strip():
            raise ValueError("text must contain a word")
        if self.code is None and self.text is None:
            raise ValueError("give a code or words to search by")
        return self

    def codes(self) -> tuple[bytes, bytes]:
        """(code, short) for backends that rank by code; call after :meth:`Capabilities.check`."""
        if self.code is None or self.short is None:
            raise UnsupportedQuery("this search needs a code", field="code")
        return self.code, self.short

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True)
class Capabilities:
    """What one backend serves. Limits beyond the common ones of :class:`QueryParams` are
    allowed only to be *looser*, never tighter, so every backend accepts the same requests."""

    strategies: frozenset[str]
    default_strategy: str
    filter: bool = False
    text: bool = False
    max_k: int = MAX_K
    max_window: int = MAX_WINDOW
    why_not: tuple[tuple[str, str], ...] = ()  # (strategy, reason) hints for refused ones

    def check(self, query: SearchQuery) -> str:
        """The strategy to run (``None`` resolved to the default), or :class:`UnsupportedQuery`."""
        strategy = query.strategy or self.default_strategy
        if strategy not in self.strategies:
            hint = dict(self.why_not).get(strategy)
            raise UnsupportedQuery(
                f"strategy {strategy!r} is not served by this index"
                + (f" ({hint})" if hint else "")
                + f"; use one of {sorted(self.strategies)}",
                field="strategy",
            )
        if query.filter is not None and not self.filter:
            raise UnsupportedQuery("this index cannot filter", field="filter")
        if query.text is not None and not self.text:
            raise UnsupportedQuery("this index cannot search by words", field="text")
        if query.k > self.max_k or query.offset + query.k > self.max_window:
            raise UnsupportedQuery(
                f"this index serves k <= {self.max_k} and offset + k <= {self.max_window}",
                field="k",
            )
        if query.code is None and query.text is None:
            query.codes()  # raises: nothing to search by
        return strategy

    def to_json(self) -> dict[str, Any]:
        return {
            "strategies": sorted(self.strategies),
            "default_strategy": self.default_strategy,
            "max_k": self.max_k,
            "max_window": self.max_window,
            "filter": self.filter,
            "text": self.text,
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Capabilities:
        return cls(
            strategies=frozenset(body["strategies"]),
            default_strategy=str(body["default_strategy"]),
            filter=bool(body.get("filter")),
            text=bool(body.get("text")),
            max_k=int(body.get("max_k", MAX_K)),
            max_window=int(body.get("max_window", MAX_WINDOW)),
        )
