"""Request and response bodies of the public API; the OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from elastichash.index.query import K, QueryParams


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(Strict):
    code: str = Field(description="stable machine-readable error code")
    message: str
    field: str | None = None


class ErrorResponse(Strict):
    error: ErrorBody
    errors: list[ItemError] | None = None


class ItemError(Strict):
    filename: str | None = None
    url: str | None = None
    code: str
    message: str


class UrlItem(Strict):
    url: HttpUrl
    id: str | None = Field(default=None, description="client id; default: content hash")


class IngestUrlsRequest(Strict):
    urls: list[HttpUrl] | None = Field(default=None, max_length=1000)
    items: list[UrlItem] | None = Field(default=None, max_length=1000)

    @model_validator(mode="after")
    def _one_of(self) -> IngestUrlsRequest:
        if not self.urls and not self.items:
            raise ValueError("give 'urls' or 'items'")
        return self


class AcceptedImage(Strict):
    id: str
    filename: str | None = None
    url: str | None = None
    status: Literal["queued"] = "queued"
    status_url: str


class IngestResponse(Strict):
    images: list[AcceptedImage]
    errors: list[ItemError]


class ImageStatus(Strict):
    id: str
    status: Literal["queued", "indexed", "failed"]
    reason: str | None = None
    message: str | None = None
    source: str | None = None
    thumbnail_url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class FailureOut(Strict):
    id: str
    reason: str
    message: str
    source: str | None = None
    at: float


class FailuresResponse(Strict):
    failures: list[FailureOut]


class SearchParams(QueryParams):
    """The query fields of a search (JSON body fields, or form fields beside an uploaded
    file): ``elastichash.index.query`` validates them, once, for every backend."""

    k: K = 24  # a page of the web page's grid


class SearchRequest(SearchParams):
    """Exactly one of url, id, code (an uploaded file uses multipart instead)."""

    url: HttpUrl | None = None
    id: str | None = Field(default=None, min_length=1, max_length=128)
    code: str | None = Field(default=None, description="256-bit long code, 64 hex digits")
    short: str | None = Field(default=None, description="64-bit short code, 16 hex digits; "
                              "default: selected from code by the model's short_bits")

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchRequest:
        given = [n for n in ("url", "id", "code") if getattr(self, n) is not None]
        if len(given) > 1 or (not given and self.text is None):
            raise ValueError("give exactly one of 'url', 'id' or 'code' (or 'text' alone)")
        return self


class ResultItem(Strict):
    id: str
    distance: int
    source: str | None = None
    thumbnail_url: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class QueryInfo(Strict):
    id: str | None = None
    code: str | None = None  # None for a search by words alone
    short: str | None = None


class SearchResponse(Strict):
    results: list[ResultItem]
    total: int
    candidates: int
    took_ms: float
    strategy: str
    k: int
    offset: int
    next_offset: int | None
    query: QueryInfo
    # set when some words of a search by words name no ImageNet class (WordNet lemma)
    hint: str | None = None


class StatsResponse(Strict):
    # null when the figure could not be had within the stats budget (see ``unavailable``)
    count: int | None
    model: dict[str, Any]
    backend: str
    strategy: str
    mode: str
    queued: int | None
    index: dict[str, Any] = Field(default_factory=dict)
    # names of the figures above that are unavailable now (broker or search service away)
    unavailable: list[str] = Field(default_factory=list)


ErrorResponse.model_rebuild()
