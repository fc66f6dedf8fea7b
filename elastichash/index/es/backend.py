"""``ElasticsearchIndex``: the ``Index`` protocol over Elasticsearch 8/9 (ElasticHash layout)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError

from elastichash.errors import InvalidInput, Unavailable
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
from elastichash.index.es.bulk import BulkPolicy, in_order, run_bulk
from elastichash.index.es.failures import FailureStore
from elastichash.index.es.mapping import Names, parse_version, supports_dense_bit
from elastichash.settings import IndexSettings

log = logging.getLogger(__name__)


class ElasticsearchIndex:
    """Retrieval index behind an alias, a shared neighbours index, a stored Hamming script.

    The constructor does no I/O; :meth:`open` connects and bootstraps idempotently.
    """

    def __init__(
        self,
        url: str = "http://localhost:9200",
        index: str = "elastichash",
        *,
        nbs_index: str | None = None,
        layout: Layout | None = None,
        strategy: str = "two_stage",
        bulk: BulkPolicy | None = None,
        request_timeout_s: float = 30.0,
        client: AsyncElasticsearch | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise InvalidInput(f"unknown strategy {strategy!r}", field="strategy")
        self.names = Names.from_base(index, nbs_index)
        self.layout = layout or Layout()
        self.strategy = strategy
        self.bulk = bulk or BulkPolicy()
        self._url = url
        self._timeout = request_timeout_s
        self._client = client
        self._own_client = client is None
        self._failures: FailureStore | None = None
        self.version: tuple[int, int] = (0, 0)
        self.dense_bit = False  # the retrieval index maps the bit vector field
        self.concrete = self.names.concrete  # the index behind the alias, once open

    @classmethod
    def from_settings(cls, settings: IndexSettings) -> ElasticsearchIndex:
        return cls(
            settings.es_url,
            settings.es_index,
            nbs_index=settings.es_nbs_index,
            layout=Layout(settings.es_shards, settings.es_replicas, settings.es_refresh_interval),
            strategy=settings.strategy,
            bulk=BulkPolicy(max_retries=settings.es_bulk_max_retries),
            request_timeout_s=settings.es_request_timeout_s,
        )

    @property
    def client(self) -> AsyncElasticsearch:
        if self._client is None:
            raise RuntimeError("ElasticsearchIndex is not open")
        return self._client

    @property
    def failures(self) -> FailureStore:
        if self._failures is None:
            raise RuntimeError("ElasticsearchIndex is not open")
        return self._failures

    # --- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is None:
            self._client = AsyncElasticsearch(
                self._url, request_timeout=self._timeout, max_retries=2, retry_on_timeout=True
            )
        self._failures = FailureStore(self.client, self.names.failures, self.bulk)
        try:
            await self.bootstrap()
        except TransportError as exc:
            raise Unavailable(f"Elasticsearch at {self._url} is unreachable: {exc}") from exc

    async def bootstrap(self) -> None:
        info = await self.client.info()
        self.version = parse_version(info["version"]["number"])
        if self.version[0] < 8:
            log.warning("Elasticsearch %s is older than 8: unsupported", info["version"]["number"])
        await ensure_script(self.client)
        await ensure_nbs(self.client, self.names.nbs, self.bulk)
        want_bits = supports_dense_bit(self.version)
        self.concrete, self.dense_bit = await ensure_retrieval(
            self.client, self.names, self.layout, want_bits
        )
        await ensure_failures(self.client, self.names, self.layout)
        log.info(
            "elasticsearch %s ready: alias %s -> %s, dense_bit=%s",
            info["version"]["number"], self.names.alias, self.concrete, self.dense_bit,
        )

    async def close(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.close()
            self._client = None

    async def refresh(self) -> None:
        """Make every write so far visible to search (tests, bulk imports)."""
        await self.client.indices.refresh(index=[self.names.alias, self.names.failures])

    # --- writes ----------------------------------------------------------------------------

    async def upsert(self, docs: Sequence[Document]) -> list[WriteResult]:
        by_id: dict[str, WriteResult] = {}
        latest: dict[str, Document] = {}
        for doc in docs:  # a repeated id: the last one wins, as it would in sequence
            try:
                q.check_codes(doc.code, doc.short)
                latest[doc.id] = doc
                by_id.pop(doc.id, None)
            except InvalidInput as exc:
                by_id[doc.id] = WriteResult(id=doc.id, ok=False, error=exc.message)
                latest.pop(doc.id, None)
        actions = [
            {
                "_op_type": "index",
                "_index": self.names.alias,
                "_id": doc.id,
                "_source": q.document_source(doc, dense_bit=self.dense_bit),
            }
            for doc in latest.values()
        ]
        written = await run_bulk(self.client, actions, self.bulk) if actions else {}
        by_id.update(written)
        cleared = await self.failures.clear([i for i, r in written.items() if r.ok])
        by_id.update(cleared)
        return in_order((d.id for d in docs), by_id)

    async def delete(self, ids: Sequence[str]) -> list[WriteResult]:
        unique = list(dict.fromkeys(ids))
        actions = [{"_op_type": "delete", "_index": self.names.alias, "_id": i} for i in unique]
        by_id = await run_bulk(self.client, actions, self.bulk) if actions else {}
        return in_order(ids, by_id)

    # --- reads -----------------------------------------------------------------------------

    async def get(self, doc_id: str) -> Document | None:
        try:
            resp = await self.client.get(index=self.names.alias, id=doc_id)
        except NotFoundError:
            return None
        return q.document_from_source(doc_id, resp["_source"])

    async def capabilities(self) -> Capabilities:
        # dense_bit needs a bit-vector mapping, known once open() inspected the cluster.
        served = frozenset(st for st in STRATEGIES if st != "dense_bit" or self.dense_bit)
        why = (
            f"needs Elasticsearch >= 8.15 and an index created with it "
            f"(server {self.version[0]}.{self.version[1]})"
        )
        return Capabilities(served, self.strategy, why_not=(("dense_bit", why),))

    async def scan(
        self, *, batch: int = SCAN_BATCH, after: str | None = None
    ) -> AsyncGenerator[list[CodeRecord], None]:
        while True:
            resp = await self.client.search(index=self.names.alias, **q.scan_body(batch, after))
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
        code, short = query.codes()
        k, offset, max_distance = query.k, query.offset, query.max_distance
        if strategy == "auto":
            # A count per query would double the requests; ES serves large collections, and
            # two_stage there is what ElasticHash designed the index for.
            strategy = "two_stage"
        count_query: dict[str, Any] | None
        if strategy == "two_stage":
            body = q.two_stage_body(
                code, short, self.names.nbs, k=k, offset=offset, max_distance=max_distance
            )
            count_query = q.candidates_query(short, self.names.nbs)
        elif strategy == "exact":
            body = q.exact_body(code, k=k, offset=offset, max_distance=max_distance)
            count_query = {"match_all": {}}
        else:  # dense_bit: capabilities() offers it only where the mapping has the field
            body = q.dense_bit_body(code, k=k, offset=offset, max_distance=max_distance)
            count_query = {"match_all": {}}
        if max_distance is None:
            count_query = None  # every candidate is counted in total already
        started = time.perf_counter()
        try:
            resp, candidates = await asyncio.gather(
                self.client.search(index=self.names.alias, **body),
                self._count(count_query),
            )
        except (TransportError, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status_code < 500 and exc.status_code != 429:
                raise
            raise Unavailable(f"search failed: {exc}") from exc
        hits, total = q.hits_from_response(dict(resp))
        return SearchResult(
            hits=hits,
            candidates=total if candidates is None else candidates,
            total=total,
            took_ms=(time.perf_counter() - started) * 1000.0,
            strategy=strategy,
        )

    async def _count(self, query: dict[str, Any] | None) -> int | None:
        if query is None:
            return None
        return int((await self.client.count(index=self.names.alias, query=query))["count"])

    async def count(self) -> int:
        return int((await self.client.count(index=self.names.alias))["count"])

    async def stats(self) -> dict[str, Any]:
        resp = await self.client.indices.stats(index=self.names.alias, metric="docs,store")
        prim = resp["_all"]["primaries"]
        return {
            "backend": "elasticsearch",
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
        try:
            health = await self.client.options(request_timeout=2.0, max_retries=0).cluster.health()
        except (TransportError, ApiError) as exc:
            log.debug("cluster health failed: %s", exc)
            return False
        return health.get("status") in ("green", "yellow")

    # --- failure records -------------------------------------------------------------------

    async def record_failures(self, failures: Sequence[Failure]) -> None:
        await self.failures.record(failures)

    async def get_failure(self, doc_id: str) -> Failure | None:
        return await self.failures.get(doc_id)

    async def recent_failures(self, limit: int = 50) -> list[Failure]:
        return await self.failures.recent(limit)
