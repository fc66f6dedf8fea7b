"""Indexer worker: consume the index queue, write batches to the index, ack each message only
after its own item was written.

Ack policy (per message):
* written (``WriteResult.ok``) -> ack;
* ``WriteResult.transient`` or the whole write raised (index unavailable) -> back off, nack with
  requeue; the quorum queue's delivery limit bounds the retries and then dead-letters it;
* permanent item error or a malformed message -> copy with ``x-eh-reason`` to the dead-letter
  exchange, then ack;
* failure records -> ``index.record_failures`` -> ack (requeue if that raised).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from elastichash import amqp, health
from elastichash.errors import InvalidInput, Unavailable
from elastichash.health import run_worker
from elastichash.index.base import Document, Index, WriteResult
from elastichash.index.incoming import screen
from elastichash.messages import BadMessage, IndexDoc, IndexFailure, decode_index
from indexer_worker.config import IndexerWorkerSettings
from indexer_worker.metrics import Metrics

log = logging.getLogger(__name__)
Msg = AbstractIncomingMessage


class IndexerWorker:
    def __init__(self, settings: IndexerWorkerSettings, index: Index) -> None:
        self.settings = settings
        self.index = index
        self.duplicates = settings.index.duplicate_screen()
        self.topo = amqp.Topology.of(settings.amqp)
        self.metrics = Metrics()
        self.prefetch = max(settings.amqp.prefetch, settings.batch_max * 2)
        self._buffer: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._connection: AbstractRobustConnection | None = None
        self._publisher: amqp.Publisher | None = None
        self._stopping = False
        self._backoff = 0.0

    @property
    def publisher(self) -> amqp.Publisher:
        assert self._publisher is not None
        return self._publisher

    def ready(self) -> bool:
        conn = self._connection
        return conn is not None and not conn.is_closed and not self._stopping

    async def run(self, stop: asyncio.Event) -> int:
        s = self.settings
        app = health.start_app(self.metrics, self.ready)
        runner = await health.serve(app, s.health_host, s.health_port)
        try:
            self._connection = await amqp.connect(s.amqp, "indexer-worker")
            self._publisher = amqp.Publisher(self._connection, self.topo)
            await self._publisher.open()
            channel = await self._connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = (await amqp.declare(channel, self.topo)).queues[amqp.RK_INDEX]
            tag = await queue.consume(self._on_message)
            log.info("indexer worker consuming %s (prefetch %d)", queue.name, self.prefetch)
            loop_task = asyncio.create_task(self._loop())
            await stop.wait()
            self._stopping = True
            log.info("draining (grace %gs)", s.drain_timeout_s)
            deadline = asyncio.get_running_loop().time() + s.drain_timeout_s  # one for it all
            try:
                async with asyncio.timeout_at(deadline):
                    await queue.cancel(tag)
            except Exception as exc:  # the broker may be gone: then nothing more arrives
                log.warning("cancel consumer: %s", exc)
            await amqp.let_deliveries_land()
            self._buffer.put_nowait(None)
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(loop_task)
                    late = amqp.drain_nowait(self._buffer, 1 << 30)  # landed after intake closed
                    if late:
                        log.info("settling %d late deliveries", len(late))
                        await self._write(late)
            except TimeoutError:
                log.warning("drain grace over: cancelling the write in flight (not acked)")
            loop_task.cancel()
            await asyncio.gather(loop_task, return_exceptions=True)
            # A little past the drain deadline: closing is bounded too (see close_gracefully).
            await amqp.close_gracefully(channel, self.publisher.channel, deadline=deadline + 5.0)
            return 0
        finally:
            if self._connection is not None:
                await amqp.close_connection(self._connection)
            await runner.cleanup()
            m = self.metrics
            log.info(
                "indexer worker stopped: consumed=%d written=%d failures=%d redelivered=%d"
                " requeued=%d",
                health.total(m.consumed),
                health.total(m.written),
                health.total(m.failures),
                health.total(m.redelivered),
                health.total(m.requeued),
            )

    async def _on_message(self, message: Msg) -> None:
        self.metrics.consumed.inc()
        if message.redelivered:
            self.metrics.redelivered.inc()
        self._buffer.put_nowait(message)

    async def _loop(self) -> None:
        s = self.settings
        closed = False
        while not closed:
            batch, closed = await amqp.collect_batch(self._buffer, s.batch_max, s.batch_ms / 1000)
            if closed:
                batch.extend(amqp.drain_nowait(self._buffer, 1 << 30))
            for i in range(0, len(batch), s.batch_max):
                chunk = batch[i : i + s.batch_max]
                try:
                    await self._write(chunk)
                except Exception:  # a bug must not stop the consumer: retry, bounded
                    log.exception("writing a batch of %d failed; requeueing", len(chunk))
                    await self._requeue([m for m in chunk if not m.processed])

    async def _dead(self, message: Msg, reason: str, detail: str) -> None:
        self.metrics.dead.labels(reason).inc()
        log.warning("dead-lettering %s: %s (%s)", message.message_id, reason, detail)
        try:
            await self.publisher.dead_letter(
                message,
                self.topo.queue(amqp.RK_INDEX),
                reason,
                detail,
                timeout=self.settings.amqp.publish_timeout_s,
            )
        except Unavailable:
            await self._requeue([message])
            return
        await amqp.settle(message, "ack")

    async def _requeue(self, messages: list[Msg]) -> None:
        s = self.settings
        self._backoff = min(max(self._backoff * 2, s.retry_backoff_s), s.retry_backoff_max_s)
        # Back off so an index outage is not a hot loop of redeliveries.
        await asyncio.sleep(self._backoff)
        for message in messages:
            self.metrics.requeued.inc()
            await amqp.settle(message, "requeue")

    async def _retrying(self, what: str, call: Callable[[], Awaitable[object]]) -> bool:
        """Retry a whole-batch index call until it succeeds or we are told to stop. An index
        outage pauses intake (the prefetch bounds what we hold) instead of burning the
        messages' delivery limit; returns False when stopping (nothing is acked then)."""
        s = self.settings
        backoff = s.retry_backoff_s
        while True:
            try:
                await call()
                return True
            except Unavailable as exc:
                if self._stopping:
                    log.warning("index %s failed while stopping: left unacked (%s)", what, exc)
                    return False
                log.warning("index %s failed, retrying in %.1fs: %s", what, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, s.retry_backoff_max_s)

    async def _screen(self, documents: list[Document], docs: list[tuple[Msg, IndexDoc]]) -> None:
        """Mark or skip near-duplicates (ingest option); skipped ones are recorded and acked,
        ``documents`` and ``docs`` keep the rest, in step."""
        kept, skipped = await screen(self.index, documents, self.duplicates)
        if skipped:
            await self.index.record_failures(skipped)
            self.metrics.failures.inc(len(skipped))
        ids = {d.id for d in kept}
        for message, parsed in docs:
            if parsed.id not in ids:
                await amqp.settle(message, "ack")
        docs[:] = [(m, p) for m, p in docs if p.id in ids]
        documents[:] = kept

    async def _write(self, batch: list[Msg]) -> None:
        docs: list[tuple[Msg, IndexDoc]] = []
        fails: list[tuple[Msg, IndexFailure]] = []
        for message in batch:
            try:
                parsed = decode_index(message.body)
                if isinstance(parsed, IndexDoc):
                    parsed.document()  # all conversions checked before any write
            except Exception as err:
                exc = err if isinstance(err, BadMessage) else BadMessage(
                    "bad_message", f"cannot decode index message: {err!r}")
                await self._dead(message, exc.reason, exc.message)
                continue
            if isinstance(parsed, IndexDoc):
                docs.append((message, parsed))
            else:
                fails.append((message, parsed))
        if fails:
            records = [f.failure() for _, f in fails]
            try:
                recorded = await self._retrying(
                    "record failures", lambda: self.index.record_failures(records))
            except InvalidInput as exc:  # the index refuses the records: an operator's case
                for message, _ in fails:
                    await self._dead(message, "index_rejected", exc.message)
                recorded = False
            if recorded:
                self.metrics.failures.inc(len(fails))
                for message, _ in fails:
                    await amqp.settle(message, "ack")
        if not docs:
            return
        started = time.perf_counter()
        documents = [d.document() for _, d in docs]
        if self.duplicates.active:
            screened = await self._retrying(
                "screen duplicates", lambda: self._screen(documents, docs))
            if not screened or not documents:
                return
        results: list[WriteResult] = []

        async def upsert() -> None:
            results[:] = await self.index.upsert(documents)

        try:
            if not await self._retrying("write", upsert):
                return
        except InvalidInput as exc:
            if len(docs) > 1:  # find the one the index refuses; write the others
                for message, _ in docs:
                    await self._write([message])
            else:
                await self._dead(docs[0][0], "index_rejected", exc.message)
            return
        self.metrics.write_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(docs))
        retry: list[Msg] = []
        for (message, _), res in zip(docs, results, strict=True):
            if res.ok:
                self.metrics.written.inc()
                await amqp.settle(message, "ack")
            elif res.transient:
                retry.append(message)
            else:
                await self._dead(message, "index_rejected", res.error or "rejected by the index")
        if retry:
            await self._requeue(retry)
        else:
            self._backoff = 0.0


async def _amain(settings: IndexerWorkerSettings) -> int:
    from elastichash.index.factory import make_index

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    index = make_index(settings.index)
    await index.open()
    try:
        return await IndexerWorker(settings, index).run(stop)
    finally:
        await index.close()


def main(argv: list[str] | None = None) -> int:
    return run_worker(
        "elastichash indexer-worker", (__doc__ or "").splitlines()[0], argv, IndexerWorkerSettings,
        lambda s: s.health_port, _amain,
    )
