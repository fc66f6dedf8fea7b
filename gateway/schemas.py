"""Request and response bodies of the public API; the OpenAPI document is generated from these."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from elastichash.index.duplicates import (
    DEFAULT_DISTANCE,
    DEFAULT_LIMIT,
    MAX_JOIN_DISTANCE,
    MAX_LIMIT,
)
from elastichash.index.query import K, QueryParams
from elastichash.index.schema import HIT_SPECS, with_fields


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


class CollectionFields(Strict):
    """Given at ingest, filterable at search (see docs/API.md, Search within a subset)."""

    album: str | None = Field(default=None, max_length=200)
    tags: list[str] | str | None = Field(default=None, description="list or comma-separated")
    taken_at: str | float | None = Field(default=None,
                                         description="ISO 8601 date or date-time, or unix s")


# An ingest checks each URL on its own (gateway/ingest.py): a malformed one is an entry in
# 'errors' and the others are still fetched, so the body takes them as strings.
IngestUrl = Annotated[str, Field(max_length=8192, json_schema_extra={"format": "uri"},
                                 description="http or https URL of an image")]


class UrlItem(CollectionFields):
    url: IngestUrl
    id: str | None = Field(default=None, description="client id; default: content hash")


class IngestUrlsRequest(CollectionFields):
    urls: list[IngestUrl] | None = Field(default=None, max_length=1000)
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
    status: Literal["queued", "indexed"] = Field(
        default="queued", description="indexed: these bytes were indexed already under this "
        "id (a content id); nothing was queued and the stored document is unchanged")
    status_url: str


class IngestResponse(Strict):
    images: list[AcceptedImage]
    errors: list[ItemError]


class ImageStatusBase(Strict):
    id: str
    status: Literal["queued", "indexed", "failed", "skipped"]
    reason: str | None = None
    message: str | None = None
    sources: list[str] = Field(
        default_factory=list,
        description="every source the same bytes were uploaded under, first first (indexed)")
    duplicate_of: str | None = Field(
        default=None, description="the indexed image this one nearly duplicates (ingest option)")


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


class ResultItemBase(Strict):
    id: str
    distance: int


# An image's status and a search result carry the document fields returned with hits, generated
# from the field table (elastichash/index/schema.py).
if TYPE_CHECKING:
    ImageStatus = ImageStatusBase
    ResultItem = ResultItemBase
else:
    ImageStatus = with_fields("ImageStatus", ImageStatusBase, HIT_SPECS, None, checked=False)
    ResultItem = with_fields("ResultItem", ResultItemBase, HIT_SPECS, None, checked=False)


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


class DuplicatesParams(Strict):
    max_distance: int = Field(default=DEFAULT_DISTANCE, ge=0, le=MAX_JOIN_DISTANCE,
                              description="256-bit Hamming distance that links two images")
    offset: int = Field(default=0, ge=0, description="groups to skip")
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="groups per page")


class DuplicateGroupOut(Strict):
    keeper: str = Field(description="suggested image to keep: the largest, then the oldest")
    members: list[ResultItem] = Field(description="keeper first; distance is to the keeper")
    distances: list[list[int]] | None = Field(
        description="pairwise distances in members order (null over 64 members)")


class DuplicatesResponse(Strict):
    groups: list[DuplicateGroupOut]
    total: int = Field(description="groups in all")
    images: int = Field(description="images in all groups")
    pairs: int = Field(description="pairs of images within max_distance")
    max_distance: int
    offset: int
    limit: int
    next_offset: int | None
    took_ms: float


class StatsResponse(Strict):
    # null when the figure could not be had within the stats budget (see ``unavailable``)
    count: int | None = Field(description="images indexed and searchable now")
    model: dict[str, Any] = Field(description="the model whose codes the index holds")
    backend: str = Field(description="where the index lives: embedded, remote (the search "
                         "service) or engine")
    strategy: str = Field(description="the default search strategy (auto: exact up to "
                          "100,000 images, two_stage above)")
    mode: str = Field(description="standalone (one process) or distributed")
    queued: int | None = Field(description="images accepted and not yet indexed or failed")
    index: dict[str, Any] = Field(
        default_factory=dict,
        description="backend figures; for the embedded index: memory_bytes (search "
        "structures in RAM now), memory_fixed_bytes (what an empty index holds), "
        "memory_bytes_per_image (what each further image adds: plan RAM with it), disk_bytes "
        "(the SQLite store with thumbnails), failures (images that could not be indexed, "
        "see /v1/failures), dead_slots (deleted or replaced images whose memory is reclaimed "
        "at the next compaction), mih_delta (images not yet in the MIH tables' sorted part), "
        "open_seconds (time to load the index at start)")
    # names of the figures above that are unavailable now (broker or search service away)
    unavailable: list[str] = Field(default_factory=list)


ErrorResponse.model_rebuild()
