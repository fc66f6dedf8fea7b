"""``EngineIndex``: the ``Index`` protocol over Elasticsearch 8/9 or OpenSearch 2/3, with
ElasticHash's layout. Requests are built by the I/O-free core (``query``, ``mapping``,
``neighbours``, ``bulk``) and sent through one :class:`EngineClient` adapter; what differs
between engines is a feature set (bit vectors on Elasticsearch >= 8.15), not branches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import replace
from typing import Any

from elastichash.errors import InvalidInput, Unavailable
from elastichash.index import binding, filters
from elastichash.index.base import (
    SCAN_BATCH,
    STRATEGIES,
    Capabilities,
    CodeRecord,
    Document,
    DuplicatesResult,
    Failure,
    SearchQuery,
    SearchResult,
    UpsertPlan,
    WriteResult,
)
from elastichash.index.duplicates import groups_from_scan
from elastichash.index.es import query as q
from elastichash.index.es.bootstrap import (
    Layout,
    ensure_failures,
    ensure_nbs,
    ensure_retrieval,
    ensure_script,
)
from elastichash.index.es.bulk import TRANSIENT_STATUSES, Action, BulkPolicy, in_order, run_bulk
from elastichash.index.es.client import (
    EngineApiError,
    EngineClient,
    EngineUnreachable,
    connect,
)
from elastichash.index.es.failures import FailureStore
from elastichash.index.es.mapping import BIT_VECTORS, Names, parse_version, server_features
from elastichash.index.schema import with_source
from elastichash.settings import IndexSettings

log = logging.getLogger(__name__)

_NAMES = {"elasticsearch": "Elasticsearch", "opensearch": "OpenSearch"}
# Fields a read leaves out unless it needs them: the preview is a few hundred KB.
_LARGE = ("preview",)


@contextlib.contextmanager
def _outage_is_unavailable(what: str) -> Iterator[None]:
    """An unreachable or overloaded engine is a 503 (retry later); its 4xx stay errors."""
    try:
        yield
    except EngineUnreachable as exc:
        raise Unavailable(f"{what} failed: {exc}") from exc
    except EngineApiError as exc:
        if exc.status >= 500 or exc.status in TRANSIENT_STATUSES:
            raise Unavailable(f"{what} failed: {exc}") from exc
        raise


class EngineIndex:
    """Retrieval index behind an alias, a shared neighbours index, a stored Hamming script.

    The constructor does no I/O; :meth:`open` connects and bootstraps idempotently.
    ``kind`` picks the adapter (elasticsearch | opensearch); ``client`` injects one.
    """

    def __init__(
        self,
        url: str = "http://localhost:9200",
        index: str = "elastichash",
        *,
        kind: str = "elasticsearch",
        nbs_index: str | None = None,
        layout: Layout | None = None,
        strategy: str = "two_stage",
        bulk: BulkPolicy | None = None,
        request_timeout_s: float = 30.0,
        client: EngineClient | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise InvalidInput(f"unknown strategy {strategy!r}", field="strategy")
        self.names = Names.from_base(index, nbs_index)
        self.layout = layout or Layout()
        self.strategy = strategy
        self.bulk = bulk or BulkPolicy()
        self.kind = client.kind if client is not None else kind
        self.url = url
        self._timeout = request_timeout_s
        self._client = client
        self._own_client = client is None
        self._failures: FailureStore | None = None
        self.version: tuple[int, int] = (0, 0)
        # What this index serves beyond the common layout: the server's features that the
        # retrieval index was also created with (BIT_VECTORS: the bit vector field).
        self.features: frozenset[str] = frozenset()
        self.concrete = self.names.concrete  # the index behind the alias, once open

    @classmethod
    def from_settings(cls, settings: IndexSettings) -> EngineIndex:
        engine = settings.engine
        return cls(
            engine.url,
            engine.index,
            kind=engine.kind or settings.backend,
            nbs_index=engine.nbs_index,
            layout=Layout(engine.shards, engine.replicas, engine.refresh_interval),
            strategy=settings.strategy,
            bulk=BulkPolicy(max_retries=engine.bulk_max_retries),
            request_timeout_s=engine.request_timeout_s,
        )

    @property
    def client(self) -> EngineClient:
        if self._client is None:
            raise RuntimeError("EngineIndex is not open")
        return self._client

    @property
    def failures(self) -> FailureStore:
        if self._failures is None:
            raise RuntimeError("EngineIndex is not open")
        return self._failures

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is None:
            self._client = connect(self.kind, self.url, request_timeout_s=self._timeout)
        self._failures = FailureStore(self.client, self.names.failures, self.bulk)
        try:
            await self.bootstrap()
        except EngineUnreachable as exc:
            raise Unavailable(f"{_NAMES[self.kind]} at {self.url} is unreachable: {exc}") from exc

    async def bootstrap(self) -> None:
        info = await self.client.info()
        number = info["version"]["number"]
        self.version = parse_version(number)
        if self.kind == "elasticsearch" and self.version[0] < 8:
            log.warning("Elasticsearch %s is older than 8: unsupported", number)
        await ensure_script(self.client)
        await ensure_nbs(self.client, self.names.nbs, self.bulk)
        offered = server_features(self.kind, self.version)
        self.concrete, bits = await ensure_retrieval(
            self.client, self.names, self.layout, BIT_VECTORS in offered
        )
        self.features = frozenset({BIT_VECTORS} if bits else ())
        await ensure_failures(self.client, self.names, self.layout)
        log.info(
            "%s %s ready: alias %s -> %s, features %s", self.kind, number,
            self.names.alias, self.concrete, sorted(self.features) or "none",
        )

    async def bind_model(self, name: str, spec: binding.ModelIdentity) -> None:
        """Record the model whose codes this index holds in the mapping's ``_meta``, or refuse
        another one (``ModelMismatch``; see :mod:`elastichash.index.binding`). Call after
        :meth:`open`. A reindex behind the alias carries the record to the new index."""
        meta = await self._meta()
        fp = meta.get(binding.META_MODEL_FINGERPRINT)
        record = binding.bind(
            meta.get(binding.META_MODEL_NAME), fp,
            fp is None and await self.count() > 0, name, spec,
            f"the {_NAMES[self.kind]} index {self.names.alias} at {self.url}", engine=True)
        if record is not None:
            await self.client.put_mapping(self.concrete, {"_meta": {
                **meta, binding.META_MODEL_NAME: record.name,
                binding.META_MODEL_FINGERPRINT: record.fingerprint}})
            log.info("index %s bound to model %s (%s)", self.concrete, record.name,
                     record.fingerprint)

    async def model(self) -> tuple[str | None, str | None]:
        """(name, fingerprint) of the model this index is bound to, if any."""
        meta = await self._meta()
        return meta.get(binding.META_MODEL_NAME), meta.get(binding.META_MODEL_FINGERPRINT)

    async def _meta(self) -> dict[str, Any]:
        mapping = (await self.client.get_mapping(self.concrete))[self.concrete]["mappings"]
        return dict(mapping.get("_meta") or {})

    async def close(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.close()
            self._client = None

    async def refresh(self) -> None:
        """Make every write so far visible to search (tests, bulk imports)."""
        await self.client.refresh([self.names.alias, self.names.failures])

    # --- writes ----------------------------------------------------------------------------

    async def upsert(self, docs: Sequence[Document]) -> list[WriteResult]:
        plan = UpsertPlan.of(docs)
        bits = BIT_VECTORS in self.features
        actions = [
            Action("index", self.names.alias, doc.id, q.document_source(doc, dense_bit=bits),
                   require_alias=True, version=doc.version)
            for doc in plan.writes
        ]
        written = await run_bulk(self.client, actions, self.bulk) if actions else {}
        if written and all(not r.ok and r.transient for r in written.values()):
            # Nothing written and nothing refused for good: the engine as a whole is down, red
            # or overloaded. One error for the batch, so that a worker retries it in place
            # (intake paused) instead of requeueing every message and burning its delivery
            # limit during an outage.
            first = next(iter(written.values()))
            raise Unavailable(f"{_NAMES[self.kind]} wrote none of {len(written)}: {first.error}")
        cleared = await self.failures.clear(
            [i for i, r in written.items() if r.ok and not r.superseded],
            {d.id: d.version for d in plan.writes})
        return plan.results(written | cleared)

    async def add_source(self, doc_id: str, source: str) -> bool:
        """Read, append, write back under the document's own version: a newer upload that
        lands in between wins (the write is refused as superseded) and the append is tried
        again on it."""
        for _ in range(3):
            doc = await self._get(doc_id)  # the whole document: it is written back whole
            if doc is None:
                return False
            sources = with_source(doc.sources, doc.source, source)
            if sources == doc.sources:
                return True
            action = Action("index", self.names.alias, doc_id, q.document_source(
                replace(doc, sources=sources), dense_bit=BIT_VECTORS in self.features),
                require_alias=True, version=doc.version)
            result = (await run_bulk(self.client, [action], self.bulk))[doc_id]
            if not result.ok:
                raise Unavailable(f"adding a source to {doc_id} failed: {result.error}")
            if not result.superseded:
                return True
        raise Unavailable(f"{doc_id} kept changing while a source was added to it")

    async def delete(self, ids: Sequence[str]) -> list[WriteResult]:
        unique = list(dict.fromkeys(ids))
        actions = [Action("delete", self.names.alias, i, require_alias=True) for i in unique]
        by_id = await run_bulk(self.client, actions, self.bulk) if actions else {}
        return in_order(ids, by_id)

    # --- reads -----------------------------------------------------------------------------

    async def get(self, doc_id: str) -> Document | None:
        return await self._get(doc_id, _LARGE)

    async def _get(self, doc_id: str, excludes: Sequence[str] = ()) -> Document | None:
        src = await self.client.get(self.names.alias, doc_id, excludes)
        return None if src is None else q.document_from_source(doc_id, src)

    async def get_preview(self, doc_id: str) -> bytes | None:
        doc = await self._get(doc_id)
        return None if doc is None else doc.preview

    async def existing(self, ids: Sequence[str]) -> set[str]:
        # A get each (real time, as ``get``): an ids query would miss what the last refresh
        # interval wrote.
        unique = list(dict.fromkeys(ids))
        found = await asyncio.gather(
            *(self.client.get(self.names.alias, i, _LARGE) for i in unique))
        return {i for i, src in zip(unique, found, strict=True) if src is not None}

    async def capabilities(self) -> Capabilities:
        # A strategy is served when the index has the feature it needs (known once open()
        # inspected the cluster and the mapping).
        served = frozenset(
            st for st in STRATEGIES
            if st not in q.STRATEGY_NEEDS or q.STRATEGY_NEEDS[st] in self.features
        )
        server = f"{_NAMES[self.kind]} {self.version[0]}.{self.version[1]}"
        why = (("dense_bit", f"needs Elasticsearch >= 8.15 and an index created with it "
                             f"(server: {server})"),)
        return Capabilities(served, self.strategy, filter=True, text=True, why_not=why)

    async def scan(
        self, *, batch: int = SCAN_BATCH, after: str | None = None
    ) -> AsyncGenerator[list[CodeRecord], None]:
        while True:
            with _outage_is_unavailable("scan"):
                resp = await self.client.search(self.names.alias, q.scan_body(batch, after))
            records = q.records_from_response(dict(resp))
            if not records:
                return
            yield records
            after = records[-1].id

    async def duplicates(
        self, *, max_distance: int = 8, offset: int = 0, limit: int = 20
    ) -> DuplicatesResult:
        return await groups_from_scan(self, max_distance, offset, limit)

    async def search(self, query: SearchQuery) -> SearchResult:
        strategy = (await self.capabilities()).check(query)
        clauses = filters.parse(query.filter) if query.filter is not None else None
        if query.text is not None:
            return await self._search_words(query, clauses)
        code, short = query.codes()
        k, offset, max_distance = query.k, query.offset, query.max_distance
        if strategy == "auto":
            # A count per query would double the requests; ES serves large collections, and
            # two_stage there is what ElasticHash designed the index for.
            strategy = "two_stage"
        body, count_query = q.strategy_request(
            strategy, code, short, self.names.nbs, k=k, offset=offset,
            max_distance=max_distance, clauses=clauses,
        )
        started = time.perf_counter()
        with _outage_is_unavailable("search"):
            resp, candidates = await asyncio.gather(
                self.client.search(self.names.alias, body),
                self._count(count_query),
            )
        hits, total = q.hits_from_response(dict(resp))
        return SearchResult(
            hits=hits,
            candidates=total if candidates is None else candidates,
            total=total,
            took_ms=(time.perf_counter() - started) * 1000.0,
            strategy=strategy,
        )

    async def _search_words(
        self, query: SearchQuery, clauses: list[filters.Clause] | None
    ) -> SearchResult:
        """Images whose labels the words name (WordNet: a word names every class below it),
        by label score, or by Hamming distance when a code comes with the words; the same
        answer as the embedded index's."""
        from elastichash.model.labels import vocabulary

        assert query.text is not None
        started = time.perf_counter()
        classes, _, _ = vocabulary().resolve(query.text)
        strategy = "words" if query.code is None else "words+exact"
        if not classes:  # no word names a class: nothing can match
            return SearchResult([], 0, 0, (time.perf_counter() - started) * 1000.0, strategy)
        body = q.words_request(sorted(classes), query.code, k=query.k, offset=query.offset,
                               max_distance=query.max_distance, clauses=clauses)
        with _outage_is_unavailable("search"):
            resp = await self.client.search(self.names.alias, body)
        hits, total = q.hits_from_response(dict(resp), words=query.code is None)
        return SearchResult(hits, total, total, (time.perf_counter() - started) * 1000.0,
                            strategy)

    async def _count(self, query: dict[str, Any] | None) -> int | None:
        if query is None:
            return None
        return await self.client.count(self.names.alias, query)

    async def count(self) -> int:
        return await self.client.count(self.names.alias)

    async def stats(self) -> dict[str, Any]:
        prim = await self.client.index_stats(self.names.alias)
        return {
            "backend": self.kind,
            "alias": self.names.alias,
            "index": self.concrete,
            "count": await self.count(),
            "documents": prim["docs"]["count"],
            "deleted": prim["docs"]["deleted"],
            "store_bytes": prim["store"]["size_in_bytes"],
            "shards": self.layout.shards,
            "replicas": self.layout.replicas,
            "refresh_interval": self.layout.refresh_interval,
            "server_version": f"{self.version[0]}.{self.version[1]}",
            "strategies": sorted((await self.capabilities()).strategies),
            "default_strategy": self.strategy,
        }

    async def ready(self) -> bool:
        if self._client is None:
            return False
        return await self.client.health(timeout_s=2.0) in ("green", "yellow")

    # --- failure records -------------------------------------------------------------------

    async def record_failures(self, failures: Sequence[Failure]) -> None:
        """Failure records, leaving out a versioned one older than the indexed document (an
        older upload failed after a newer one was indexed: not what happened last)."""
        versioned = list(dict.fromkeys(f.id for f in failures if f.version))
        docs = await asyncio.gather(*(self.get(i) for i in versioned))
        held = {d.id: d.version for d in docs if d is not None}
        await self.failures.record([f for f in failures if f.version >= held.get(f.id, 0)])

    async def get_failure(self, doc_id: str) -> Failure | None:
        return await self.failures.get(doc_id)

    async def recent_failures(self, limit: int = 50) -> list[Failure]:
        return await self.failures.recent(limit)
