"""Search within a subset: the filterable fields, the filter language, and its evaluation
over in-memory columns (the embedded index).

A filter is a JSON object, one key per field, all keys combined with AND::

    {"album": "2024-rome", "tags": ["beach", "sunset"], "taken_at": {"gte": "2024-05-01"},
     "width": {"gte": 1000}}

- a keyword field takes a string (equality) or a list of strings (any of them); a multi-valued
  field (``tags``, ``labels``) matches when any of its values does;
- a number or date field takes a number (equality), or a range object with ``gt``, ``gte``,
  ``lt``, ``lte``; dates are ISO 8601 strings (a date alone is midnight UTC) or unix seconds.

The values live in the document's ``metadata`` (``source`` is the document field): given at
ingest (``album``, ``tags``, ``taken_at``) or derived (``width``, ``height``, ``format``,
``ingested_at``, and ``labels`` when the model gives them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from elastichash.errors import InvalidInput

Kind = Literal["keyword", "number", "date"]
# name -> (kind, multi-valued)
FILTER_FIELDS: dict[str, tuple[Kind, bool]] = {
    "album": ("keyword", False),
    "source": ("keyword", False),
    "tags": ("keyword", True),
    "labels": ("keyword", True),
    "format": ("keyword", False),
    "width": ("number", False),
    "height": ("number", False),
    "taken_at": ("date", False),
    "ingested_at": ("date", False),
}
RANGE_OPS = ("gt", "gte", "lt", "lte")
MAX_TERMS = 1000  # values in one membership clause
Mask = npt.NDArray[np.bool_]


def _bad(message: str) -> InvalidInput:
    return InvalidInput(message, field="filter")


def to_seconds(value: Any, name: str) -> float:
    """A date as unix seconds: a number, or an ISO 8601 date or date-time (UTC if no zone)."""
    if isinstance(value, bool):
        raise _bad(f"{name}: a date is an ISO 8601 string or unix seconds")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise _bad(f"{name}: not a finite number")
        return float(value)
    if isinstance(value, str):
        try:
            if len(value) == 10:
                d = date.fromisoformat(value)
                return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise _bad(f"{name}: {value!r} is not an ISO 8601 date") from None
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    raise _bad(f"{name}: a date is an ISO 8601 string or unix seconds")


def _number(value: Any, name: str, kind: Kind) -> float:
    if kind == "date":
        return to_seconds(value, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(f"{name}: expected a number")
    return float(value)


@dataclass(frozen=True)
class Clause:
    field: str
    kind: Kind
    terms: tuple[str, ...] = ()  # keyword: any of these
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False


def parse(spec: Any) -> list[Clause]:
    """Validate a filter object; a malformed one is InvalidInput naming ``filter``."""
    if not isinstance(spec, dict):
        raise _bad("filter must be an object of field: condition")
    out = []
    for name, cond in spec.items():
        if name not in FILTER_FIELDS:
            raise _bad(f"unknown filter field {name!r}; filterable: {sorted(FILTER_FIELDS)}")
        kind, _ = FILTER_FIELDS[name]
        if kind == "keyword":
            terms = [cond] if isinstance(cond, str) else cond
            if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
                raise _bad(f"{name}: a keyword takes a string or a list of strings")
            if not terms or len(terms) > MAX_TERMS:
                raise _bad(f"{name}: give 1 to {MAX_TERMS} values")
            out.append(Clause(name, kind, terms=tuple(terms)))
        elif isinstance(cond, dict):
            unknown = set(cond) - set(RANGE_OPS)
            if unknown or not cond:
                raise _bad(f"{name}: a range uses {', '.join(RANGE_OPS)}")
            lo, hi, lo_open, hi_open = -math.inf, math.inf, False, False
            for op, raw in cond.items():
                v = _number(raw, name, kind)
                if op in ("gt", "gte") and (v > lo or (v == lo and op == "gt")):
                    lo, lo_open = v, op == "gt"
                elif op in ("lt", "lte") and (v < hi or (v == hi and op == "lt")):
                    hi, hi_open = v, op == "lt"
            out.append(Clause(name, kind, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open))
        else:
            v = _number(cond, name, kind)
            out.append(Clause(name, kind, lo=v, hi=v))
    return out


MAX_TAGS = 50
MAX_LABEL_CHARS = 200
INGEST_FIELDS = ("album", "tags", "taken_at")  # given by the client at ingest


def ingest_metadata(album: Any = None, tags: Any = None, taken_at: Any = None) -> dict[str, Any]:
    """The collection fields a client may give with an image, checked: ``album`` a string,
    ``tags`` a list of strings (or one comma-separated string), ``taken_at`` an ISO 8601 date
    or date-time (kept as given) or unix seconds. InvalidInput names the field."""
    out: dict[str, Any] = {}
    if album is not None:
        if not isinstance(album, str) or not 0 < len(album) <= MAX_LABEL_CHARS:
            raise InvalidInput(f"album is a string of 1 to {MAX_LABEL_CHARS} characters",
                               field="album")
        out["album"] = album
    if tags is not None:
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        if (not isinstance(tags, list) or len(tags) > MAX_TAGS
                or not all(isinstance(t, str) and 0 < len(t) <= MAX_LABEL_CHARS for t in tags)):
            raise InvalidInput(f"tags are at most {MAX_TAGS} strings of 1 to {MAX_LABEL_CHARS} "
                               "characters", field="tags")
        out["tags"] = list(dict.fromkeys(tags))
    if taken_at is not None:
        try:
            to_seconds(taken_at, "taken_at")
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field="taken_at") from None
        out["taken_at"] = taken_at
    return out


def field_values(name: str, source: str | None, metadata: dict[str, Any]) -> list[Any]:
    """The values of one field of a document (empty when it has none or an unusable one)."""
    raw = source if name == "source" else metadata.get(name)
    kind, multi = FILTER_FIELDS[name]
    items = raw if multi and isinstance(raw, list) else [raw]
    out: list[Any] = []
    for item in items:
        if item is None:
            continue
        if name == "labels" and isinstance(item, dict):
            # a model label {"id", "name", "score"} (pipeline.ingest_record): by id or name
            out.extend(v for v in (item.get("id"), item.get("name")) if isinstance(v, str))
            continue
        if kind == "keyword":
            if isinstance(item, str):
                out.append(item)
        else:
            try:
                out.append(_number(item, name, kind))
            except InvalidInput:
                continue  # a value the filter cannot compare: the document has none
    return out


def label_scores(metadata: Any) -> list[tuple[str, float]]:
    """(class id, score) of a document's model labels (metadata "labels", a list of
    {"id", "name", "score"}): what a search by words ranks by, on every backend. Entries
    without a string id are skipped; a missing score counts as 0."""
    out: list[tuple[str, float]] = []
    raw = metadata.get("labels") if isinstance(metadata, dict) else None
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            score = item.get("score")
            usable = isinstance(score, (int, float)) and math.isfinite(score)
            out.append((item["id"], float(score or 0.0) if usable else 0.0))
    return out


class Columns:
    """Filterable values of every document, by SQLite row, held in numpy arrays.

    Rows only ever grow (a re-indexed id gets a new row) and a row's values never change, so
    the columns are extended with the rows added since the last use and never rebuilt; rows
    deleted since stay (their positions are not alive, so they are never asked for).
    Keywords are dictionary-coded; each field is (row index, value) pairs, so a multi-valued
    field is just more pairs.
    """

    def __init__(self) -> None:
        self.rows = np.zeros(0, np.int64)
        self._vocab: dict[str, dict[str, int]] = {}
        self._idx: dict[str, list[npt.NDArray[np.int64]]] = {f: [] for f in FILTER_FIELDS}
        self._val: dict[str, list[npt.NDArray[Any]]] = {f: [] for f in FILTER_FIELDS}
        self._located: tuple[Any, int, int, npt.NDArray[np.intp] | None, Mask] | None = None

    @property
    def last_row(self) -> int:
        return int(self.rows[-1]) if self.rows.size else 0

    def extend(self, docs: Iterable[tuple[int, str | None, dict[str, Any]]]) -> None:
        """Add documents (row, source, metadata) with rows above :attr:`last_row`, in order."""
        base = self.rows.size
        rows: list[int] = []
        idx: dict[str, list[int]] = {f: [] for f in FILTER_FIELDS}
        val: dict[str, list[Any]] = {f: [] for f in FILTER_FIELDS}
        for i, (row, source, metadata) in enumerate(docs):
            rows.append(row)
            for name, (kind, _) in FILTER_FIELDS.items():
                for v in field_values(name, source, metadata):
                    idx[name].append(base + i)
                    if kind == "keyword":
                        vocab = self._vocab.setdefault(name, {})
                        v = vocab.setdefault(v, len(vocab))
                    val[name].append(v)
        if not rows:
            return
        self.rows = np.concatenate([self.rows, np.array(rows, np.int64)])
        for name, (kind, _) in FILTER_FIELDS.items():
            if idx[name]:
                self._idx[name].append(np.array(idx[name], np.int64))
                dtype = np.int64 if kind == "keyword" else np.float64
                self._val[name].append(np.array(val[name], dtype))

    def _pairs(self, name: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
        idx, val = self._idx[name], self._val[name]
        if len(idx) > 1:  # fold the appended chunks once, so later queries read one array
            idx[:] = [np.concatenate(idx)]
            val[:] = [np.concatenate(val)]
        if not idx:
            return np.zeros(0, np.int64), np.zeros(0)
        return idx[0], val[0]

    def match(self, clauses: Sequence[Clause]) -> Mask:
        """Per cached row: does it pass every clause?"""
        ok = np.ones(self.rows.size, bool)
        for c in clauses:
            idx, val = self._pairs(c.field)
            if c.kind == "keyword":
                vocab = self._vocab.get(c.field, {})
                codes = [vocab[t] for t in c.terms if t in vocab]
                hit = np.isin(val, np.array(codes, np.int64)) if codes else np.zeros(val.size, bool)
            else:
                hit = (val > c.lo) if c.lo_open else (val >= c.lo)
                hit &= (val < c.hi) if c.hi_open else (val <= c.hi)
            if idx.size == self.rows.size and not FILTER_FIELDS[c.field][1]:
                ok &= hit  # one value in every row, in row order: idx is 0..n-1
            else:
                one = np.zeros(self.rows.size, bool)
                one[idx[hit]] = True
                ok &= one
        return ok

    def _locate(self, rows: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.intp] | None, Mask]:
        """Where each of ``rows`` sits in the columns. The search of 1M rows costs ~100 ms,
        so the answer is kept for the table's row array until it or the columns change."""
        owner = rows.base if rows.base is not None else rows
        cached = self._located
        if (cached is not None and cached[0] is owner and cached[1] == rows.size
                and cached[2] == self.rows.size):
            return cached[3], cached[4]
        at: npt.NDArray[np.intp] | None
        at = np.minimum(np.searchsorted(self.rows, rows), max(self.rows.size - 1, 0))
        found = self.rows[at] == rows if self.rows.size else np.zeros(rows.size, bool)
        if rows.size == self.rows.size and bool(found.all()):
            at = None  # the same rows in the same order (no deletes since): no gather
        self._located = (owner, rows.size, self.rows.size, at, found)
        return at, found

    def mask_for(self, rows: npt.NDArray[np.int64], clauses: Sequence[Clause]) -> Mask:
        """The filter's verdict for each of ``rows`` (all of them cached)."""
        at, found = self._locate(rows)
        if not self.rows.size:
            return found
        if at is None:
            return self.match(clauses)
        out: Mask = found & self.match(clauses)[at]
        return out
