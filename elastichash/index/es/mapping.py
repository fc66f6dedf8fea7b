"""Index names, mappings and settings of the retrieval and failures indices.

Typeless mappings (no ``_doc`` level) so they apply on Elasticsearch 8 and 9; ``dynamic:
strict`` so a stray field is an error instead of a silent mapping explosion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elastichash.codes import LONG_BITS, NUM_SUBCODES, NUM_WORDS
from elastichash.index.es.script import DENSE_BIT_FIELD
from elastichash.index.filters import FILTER_FIELDS
from elastichash.index.schema import FIELDS, HIT_FIELDS, FieldSpec

RETRIEVAL_VERSION = 1
ID_FIELD = "id"
SUBCODE_FIELDS = tuple(f"f{i}" for i in range(NUM_SUBCODES))
WORD_FIELDS = tuple(f"r{i}" for i in range(NUM_WORDS))
# Returned with hits; codes and thumbnails stay out of search responses.
HIT_SOURCE_FIELDS = list(HIT_FIELDS)
DENSE_BIT_MIN_VERSION = (8, 15)

_STORED_ONLY: dict[str, Any] = {"type": "keyword", "index": False, "doc_values": False}
_ES_TYPE = {"keyword": "keyword", "keywords": "keyword", "number": "double", "date": "date",
            "text": "text"}
# The upload's sequence, also the engine's external _version; kept in _source so that a
# rewrite of the documents (rederive after a reindex) writes them with the same version.
VERSION_FIELD = "version"
# The filterable values (filters.FILTER_FIELDS) of each document, derived at write time by
# filters.field_values, so the engine compares exactly what the embedded index compares:
# keywords as strings, numbers and dates as doubles (dates in unix seconds).
FILTER_OBJECT = "filter"
# The model's labels with their scores (metadata "labels"), one nested document per label, so
# a search by words ranks by the best score among the labels it names (``query.words_body``):
# a nested (id, score) pair keeps each score exact and beside its class on Elasticsearch 8/9
# and OpenSearch 2/3 alike (rank_features would keep 9 significant bits, and a keyword list
# loses which score goes with which class).
LABEL_SCORES = "label_scores"


def label_scores_mapping() -> dict[str, Any]:
    return {"type": "nested", "properties": {"id": {"type": "keyword"},
                                             "score": {"type": "double"}}}


def filter_mapping() -> dict[str, Any]:
    """The object of filterable values; written without ``type`` as the engine returns it."""
    return {"properties": {
        name: {"type": "keyword" if kind == "keyword" else "double"}
        for name, (kind, _) in FILTER_FIELDS.items()
    }}


def filter_path(name: str) -> str:
    return f"{FILTER_OBJECT}.{name}"


def field_mapping(spec: FieldSpec) -> dict[str, Any]:
    """The mapping of one row of the document field table."""
    if spec.kind == "json":
        return {"type": "object", "enabled": False}  # kept in _source, never parsed
    if spec.kind == "binary":
        return {"type": "binary"}  # base64 in _source, no doc values
    if spec.kind == "date":
        return {"type": "date", "format": "epoch_second"}  # unix seconds, as stored
    if spec.filterable:
        return {"type": _ES_TYPE[spec.kind]}
    if spec.kind == "text":
        return {"type": "text", "index": False}
    # Returned with the document only: neither inverted index nor doc values.
    return {"type": _ES_TYPE[spec.kind], "index": False, "doc_values": False}


def mapping_changes(current: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Fields whose mapping in ``current`` is missing or differs from ``wanted``: a non-empty
    answer means the documents move to a new index (a mapping type cannot change in place).
    The bit vector field is left out: reindexing cannot compute it, so an index keeps or
    lacks it for life."""
    have = current.get("properties") or {}
    return sorted(
        name
        for name, spec in (wanted.get("properties") or {}).items()
        if name != DENSE_BIT_FIELD and have.get(name) != spec
    )


def next_concrete(alias: str, current: str) -> str:
    """The versioned index after ``current``: ``<alias>-v<n + 1>``."""
    tail = current.removeprefix(f"{alias}-v")
    n = int(tail) if tail.isdigit() else RETRIEVAL_VERSION
    return f"{alias}-v{n + 1}"


@dataclass(frozen=True)
class Names:
    """Every name the backend touches, derived from one base name."""

    alias: str  # what reads and writes go to
    nbs: str  # neighbours index, shared by all retrieval indices on the cluster
    failures: str

    @property
    def concrete(self) -> str:
        return f"{self.alias}-v{RETRIEVAL_VERSION}"

    @classmethod
    def from_base(cls, base: str, nbs: str | None = None) -> Names:
        return cls(alias=base, nbs=nbs or "elastichash-nbs", failures=f"{base}-failures")


def retrieval_mapping(dense_bit: bool) -> dict[str, Any]:
    props: dict[str, Any] = {
        # Sort key for ties (sorting on _id needs fielddata, off by default in 8.x).
        ID_FIELD: {"type": "keyword"},
        # Matched by the terms lookup only: no doc values needed.
        **{f: {"type": "keyword", "doc_values": False} for f in SUBCODE_FIELDS},
        # Read by the script through doc values only: no inverted index needed.
        **{r: {"type": "long", "index": False} for r in WORD_FIELDS},
        **{spec.name: field_mapping(spec) for spec in FIELDS},
        VERSION_FIELD: {"type": "long", "index": False, "doc_values": False},
        FILTER_OBJECT: filter_mapping(),
        LABEL_SCORES: label_scores_mapping(),
    }
    if dense_bit:
        # Scored by script_score's hamming(); no HNSW graph to build (index: false).
        props[DENSE_BIT_FIELD] = {
            "type": "dense_vector",
            "element_type": "bit",
            "dims": LONG_BITS,
            "index": False,
        }
    return {"dynamic": "strict", "properties": props}


def retrieval_settings(shards: int, replicas: int, refresh_interval: str) -> dict[str, Any]:
    return {
        "index": {
            "number_of_shards": shards,
            "number_of_replicas": replicas,
            "refresh_interval": refresh_interval,
        }
    }


FAILURES_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        ID_FIELD: {"type": "keyword"},
        "reason": {"type": "keyword"},
        "message": _STORED_ONLY,
        "source": _STORED_ONLY,
        "at": {"type": "double"},
        # The failed upload's sequence (also the record's external version).
        VERSION_FIELD: {"type": "long", "index": False, "doc_values": False},
    },
}


def failures_settings(replicas: int) -> dict[str, Any]:
    return {"index": {"number_of_shards": 1, "number_of_replicas": replicas}}


def parse_version(number: str) -> tuple[int, int]:
    parts = number.split("-")[0].split(".")
    return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


# What an engine may offer beyond the common layout; a strategy names the feature it needs.
BIT_VECTORS = "bit_vectors"  # dense_vector element_type bit + hamming() (Elasticsearch >= 8.15)


def server_features(kind: str, version: tuple[int, int]) -> frozenset[str]:
    """What the server supports, from its kind and version (the index may still lack it)."""
    out = set()
    if kind == "elasticsearch" and version >= DENSE_BIT_MIN_VERSION:
        out.add(BIT_VECTORS)
    return frozenset(out)


def has_dense_bit(mapping_response: dict[str, Any]) -> bool:
    """Whether any index behind the alias maps the bit vector field."""
    return any(
        DENSE_BIT_FIELD in (body.get("mappings", {}).get("properties") or {})
        for body in mapping_response.values()
    )
