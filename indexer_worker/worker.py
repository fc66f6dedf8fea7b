"""Indexer worker: consume the index queue, write batches to the index, ack each message only
after its own item was written.

Runs on the consumer runtime (``elastichash.amqp.runtime``), which settles each message by
``outcome_for``. What is this worker's own, per message:

* written (``WriteResult.ok``) -> ack;
* ``WriteResult.transient`` -> back off, then requeue; the quorum queue's delivery limit bounds
  the retries and then dead-letters it;
* the whole write fails (index unavailable) -> retry in place with capped backoff: intake
  pauses (the prefetch bounds what is held) instead of burning the delivery limit;
* permanent item error or a malformed message -> copy with ``x-eh-reason`` to the dead-letter
  exchange, then ack;
* failure records -> ``index.record_failures`` -> ack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage

from elastichash import amqp
from elastichash.amqp.runtime import Batched, Runtime, Slot
from elastichash.errors import InvalidInput, Unavailable
from elastichash.health import total
from elastichash.index.base import Document, Failure, Index, WriteResult
from elastichash.index.incoming import screen
from elastichash.messages import BadMessage, IndexDoc, IndexFailure, decode_index
from elastichash.roles import Role, run_role
from indexer_worker.config import IndexerWorkerSettings
from indexer_worker.metrics import Metrics

log = logging.getLogger(__name__)
Msg = AbstractIncomingMessage


class IndexerWorker:
    def __init__(self, settings: IndexerWorkerSettings, index: Index) -> None:
        self.settings = settings
        self.index = index
        self.duplicates = settings.index.duplicate_screen()
        self.metrics = Metrics()
        self.runtime = Runtime(
            "indexer worker",
            settings,
            settings.amqp,
            self.metrics,
            summary=lambda: {
                "written": total(self.metrics.written),
                "failures": total(self.metrics.failures),
            },
            also_ready=lambda: self.index_ready,
        )
        self.queue = self.runtime.topo.queue(amqp.RK_INDEX)
        self.prefetch = max(settings.amqp.prefetch, settings.batch_max * 2)
        self._backoff = 0.0
        self.index_ready = True  # probed every index_probe_s; readiness reports it

    async def run(self, stop: asyncio.Event) -> int:
        s = self.settings
        intake = Batched(amqp.RK_INDEX, self._on_batch, self.prefetch, s.batch_max, s.batch_ms)
        # The probe ends on its own event, not by cancellation alone: on 3.11, wait_for
        # swallows a cancel that lands as the awaited call finishes (seen when the broker and
        # the index both refuse at once), and an uncancelled probe would hang the exit.
        done = asyncio.Event()
        probe = asyncio.create_task(self._probe_index(stop, done))
        try:
            return await self.runtime.run([intake], stop)
        finally:
            done.set()
            probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe

    async def _probe_index(self, stop: asyncio.Event, done: asyncio.Event) -> None:
        """Readiness follows the index too: an engine that is down or red makes the indexer
        unready (it holds its messages meanwhile), not only a lost broker."""
        period = self.settings.index_probe_s
        while not (stop.is_set() or done.is_set()):
            try:
                async with asyncio.timeout(max(period, 2.0)):
                    ok = await self.index.ready()
            except Exception as exc:  # any failure to answer is "not ready"
                log.debug("index readiness probe failed: %r", exc)
                ok = False
            if done.is_set():
                return
            if ok != self.index_ready:
                log.warning("index %s", "ready again" if ok else "not ready: readiness fails")
            self.index_ready = ok
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await done.wait()

    def _decode(self, message: Msg) -> IndexDoc | IndexFailure:
        try:
            parsed = decode_index(message.body)
            if isinstance(parsed, IndexDoc):
                parsed.document()  # all conversions checked before any write
            return parsed
        except BadMessage:
            raise
        except Exception as err:
            raise BadMessage("bad_message", f"cannot decode index message: {err!r}") from err

    async def _on_batch(self, batch: list[Msg], _slot: Slot) -> None:
        docs: list[tuple[Msg, IndexDoc]] = []
        fails: list[tuple[Msg, IndexFailure]] = []
        for message in batch:
            try:
                parsed = self._decode(message)
            except BadMessage as exc:
                await self._settle(message, exc)
                continue
            if isinstance(parsed, IndexDoc):
                docs.append((message, parsed))
            else:
                fails.append((message, parsed))
        if fails:
            await self._record_failures(fails)
        if docs and self.duplicates.active:
            docs = await self._screen(docs)
        if docs:
            await self._write(docs)

    async def _screen(self, docs: list[tuple[Msg, IndexDoc]]) -> list[tuple[Msg, IndexDoc]]:
        """Mark or skip near-duplicates (ingest option). Skipped ones are recorded and acked;
        the rest come back, marked under policy keep. Empty when stopping (nothing acked)."""
        documents = [d.document() for _, d in docs]
        screened: list[tuple[list[Document], list[Failure]]] = []

        async def run() -> None:
            screened[:] = [await screen(self.index, documents, self.duplicates)]

        if not await self._retrying("screen duplicates", run):
            return []
        kept, skipped = screened[0]
        if skipped:
            if not await self._retrying(
                    "record skipped duplicates", lambda: self.index.record_failures(skipped)):
                return []
            self.metrics.failures.inc(len(skipped))
        by_id = {d.id: d for d in kept}
        out = []
        for message, parsed in docs:
            doc = by_id.get(parsed.id)
            if doc is None:
                await self._settle(message, None)
            else:
                out.append((message, parsed.model_copy(update={"metadata": doc.metadata})))
        return out

    async def _settle(self, message: Msg, exc: BaseException | None) -> None:
        await self.runtime.settle(message, amqp.outcome_for(exc), self.queue)

    async def _record_failures(self, fails: list[tuple[Msg, IndexFailure]]) -> None:
        records = [f.failure() for _, f in fails]
        try:
            recorded = await self._retrying(
                "record failures", lambda: self.index.record_failures(records))
        except InvalidInput as exc:  # the index refuses the records: an operator's case
            for message, _ in fails:
                await self._settle(message, BadMessage("index_rejected", exc.message))
            return
        if recorded:
            self.metrics.failures.inc(len(fails))
            for message, _ in fails:
                await self._settle(message, None)

    async def _write(self, docs: list[tuple[Msg, IndexDoc]]) -> None:
        started = time.perf_counter()
        documents = [d.document() for _, d in docs]
        results: list[WriteResult] = []

        async def upsert() -> None:
            results[:] = await self.index.upsert(documents)

        try:
            if not await self._retrying("write", upsert):
                return  # stopping: left unacked, the broker redelivers
        except InvalidInput as exc:
            if len(docs) > 1:  # find the one the index refuses; write the others
                for one in docs:
                    await self._write([one])
            else:
                await self._settle(docs[0][0], BadMessage("index_rejected", exc.message))
            return
        self.metrics.write_seconds.observe(time.perf_counter() - started)
        self.metrics.batch_size.observe(len(docs))
        retry: list[Msg] = []
        for (message, _), res in zip(docs, results, strict=True):
            if res.ok:
                self.metrics.written.inc()
                await self._settle(message, None)
            elif res.transient:
                retry.append(message)
            else:
                reason = res.error or "rejected by the index"
                await self._settle(message, BadMessage("index_rejected", reason))
        if retry:
            await self._requeue(retry)
        else:
            self._backoff = 0.0

    async def _requeue(self, messages: list[Msg]) -> None:
        s = self.settings
        self._backoff = min(max(self._backoff * 2, s.retry_backoff_s), s.retry_backoff_max_s)
        # Back off so an index outage is not a hot loop of redeliveries.
        await asyncio.sleep(self._backoff)
        for message in messages:
            await self._settle(message, Unavailable("the index refused it for now"))

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
                if self.runtime.stopping:
                    log.warning("index %s failed while stopping: left unacked (%s)", what, exc)
                    return False
                log.warning("index %s failed, retrying in %.1fs: %s", what, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, s.retry_backoff_max_s)


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


ROLE = Role(
    command="indexer-worker",
    summary="run an indexer worker (index queue -> index)",
    description=(
        "Consume the index queue: write documents and failure records to the index in "
        "batches (through the search service by default), acking each message only after its "
        "own item was written; refused items are dead-lettered with a reason."
    ),
    env_prefix="EH_INDEXER_",
    settings=IndexerWorkerSettings,
    example_setting="INDEX__SEARCH_URL",
    data_note=(
        "The indexer writes through the search service by default and keeps nothing "
        "there; with EH_INDEXER_INDEX__BACKEND=embedded it decides where the index lives "
        "unless EH_INDEXER_INDEX__DATA_DIR is set."
    ),
    worker=True,
)


def main(argv: list[str] | None = None) -> int:
    return run_role(ROLE, argv, _amain)
