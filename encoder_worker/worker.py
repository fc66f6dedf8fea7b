"""Encoder worker: consume ingest, micro-batch, encode off the loop, publish codes with
confirms, then ack. Serves the encode RPC queue on its own channel and thread, so a query
never waits behind the ingest backlog.

Ack policy (per input message):
* encoded -> index message confirmed -> ack;
* bad image -> failure record confirmed on the index queue + copy with ``x-eh-reason``
  confirmed on the dead-letter exchange -> ack (a bare reject could not carry the reason);
* bad headers -> dead-letter copy with reason -> ack;
* a publish that fails -> nack with requeue (bounded by the queue's delivery limit);
* the connection drops -> nothing to do, the broker redelivers; a cancelled batch never acks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import signal
import time
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from elastichash import amqp, health
from elastichash.errors import Unavailable
from elastichash.health import run_worker
from elastichash.messages import BadMessage, IndexDoc, IndexFailure, decode_ingest
from elastichash.pipeline import IngestItem
from encoder_worker import encode
from encoder_worker.config import EncoderWorkerSettings
from encoder_worker.metrics import Metrics

log = logging.getLogger(__name__)


class _Slot:
    """One executor slot, released once: after the CPU step, or when the batch ends."""

    def __init__(self, sem: asyncio.Semaphore) -> None:
        self._sem = sem
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._sem.release()


class EncoderWorker:
    def __init__(self, settings: EncoderWorkerSettings, encoder: Any) -> None:
        self.settings = settings
        self.encoder = encoder
        self.topo = amqp.Topology.of(settings.amqp)
        self.metrics = Metrics()
        # Batches in flight at once = executor threads: enough to keep the next batch
        # collecting while one encodes, bounded by the prefetch and the cores.
        per_prefetch = max(1, settings.amqp.prefetch // settings.batch_max - 1)
        self.parallel = max(1, min(per_prefetch, os.cpu_count() or 1))
        # Room for the batches encoding, one confirming, and one filling.
        self.prefetch = max(settings.amqp.prefetch, settings.batch_max * (self.parallel + 2))
        self._executor = concurrent.futures.ThreadPoolExecutor(self.parallel, "eh-encode")
        self._rpc_executor = concurrent.futures.ThreadPoolExecutor(1, "eh-encode-rpc")
        self._buffer: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.parallel)
        self._tasks: set[asyncio.Task[None]] = set()
        self._connection: AbstractRobustConnection | None = None
        self._publisher: amqp.Publisher | None = None
        self._stopping = False

    @property
    def publisher(self) -> amqp.Publisher:
        assert self._publisher is not None
        return self._publisher

    def ready(self) -> bool:
        return (
            self._connection is not None and not self._connection.is_closed and not self._stopping
        )

    async def run(self, stop: asyncio.Event) -> int:
        s = self.settings
        runner = await health.serve(
            health.start_app(self.metrics, self.ready), s.health_host, s.health_port
        )
        try:
            self._connection = await amqp.connect(s.amqp, "encoder-worker")
            self._publisher = amqp.Publisher(self._connection, self.topo)
            await self._publisher.open()
            ingest_ch = await self._connection.channel()
            await ingest_ch.set_qos(prefetch_count=self.prefetch)
            ingest_q = (await amqp.declare(ingest_ch, self.topo)).queues[amqp.RK_INGEST]
            rpc_ch = await self._connection.channel()
            await rpc_ch.set_qos(prefetch_count=s.rpc_prefetch)
            rpc_q = (await amqp.declare(rpc_ch, self.topo)).queues[amqp.RK_RPC]
            rpc_tag = await rpc_q.consume(self._on_rpc)
            ingest_tag = await ingest_q.consume(self._on_ingest)
            log.info(
                "encoder worker consuming %s (prefetch %d, batch %d/%gms, %d in parallel)",
                ingest_q.name,
                self.prefetch,
                s.batch_max,
                s.batch_ms,
                self.parallel,
            )
            loop_task = asyncio.create_task(self._batch_loop())
            await stop.wait()
            # Drain: stop intake first, then finish what was delivered, within the grace.
            self._stopping = True
            log.info("draining (grace %gs)", s.drain_timeout_s)
            # One deadline for the whole drain, so the pod's termination grace can be set
            # just above drain_timeout_s.
            deadline = asyncio.get_running_loop().time() + s.drain_timeout_s
            for queue, tag in ((ingest_q, ingest_tag), (rpc_q, rpc_tag)):
                try:
                    async with asyncio.timeout_at(deadline):
                        await queue.cancel(tag)
                except Exception as exc:  # the broker may be gone: then nothing more arrives
                    log.warning("cancel consumer %s: %s", tag, exc)
            await amqp.let_deliveries_land()
            self._buffer.put_nowait(None)
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.shield(loop_task)
                    if self._tasks:
                        await asyncio.gather(*self._tasks)
                    # Belt and braces: a delivery that landed after the loop closed its intake.
                    late = amqp.drain_nowait(self._buffer, 1 << 30)
                    for i in range(0, len(late), s.batch_max):
                        chunk = late[i : i + s.batch_max]
                        log.info("settling %d late deliveries", len(chunk))
                        await self._process(chunk, _Slot(asyncio.Semaphore(0)))
            except TimeoutError:
                log.warning(
                    "drain grace over: cancelling %d batches (they are not acked)", len(self._tasks)
                )
            loop_task.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(loop_task, *self._tasks, return_exceptions=True)
            # A little past the drain deadline: closing is bounded too (see close_gracefully).
            await amqp.close_gracefully(
                ingest_ch, rpc_ch, self.publisher.channel, deadline=deadline + 5.0
            )
            return 0
        finally:
            if self._connection is not None:
                await amqp.close_connection(self._connection)
            await runner.cleanup()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._rpc_executor.shutdown(wait=False, cancel_futures=True)
            m = self.metrics
            log.info(
                "encoder worker stopped: consumed=%d encoded=%d redelivered=%d requeued=%d"
                " resent=%d",
                health.total(m.consumed),
                health.total(m.encoded),
                health.total(m.redelivered),
                health.total(m.requeued),
                self._publisher.resent if self._publisher else 0,
            )

    async def _on_ingest(self, message: AbstractIncomingMessage) -> None:
        self.metrics.consumed.inc()
        if message.redelivered:
            self.metrics.redelivered.inc()
        self._buffer.put_nowait(message)

    async def _batch_loop(self) -> None:
        s = self.settings
        closed = False
        while not closed:
            batch, closed = await amqp.collect_batch(self._buffer, s.batch_max, s.batch_ms / 1000)
            if closed:  # take everything delivered before the cancel
                rest = amqp.drain_nowait(self._buffer, 1 << 30)
                batch.extend(rest)
            for i in range(0, len(batch), s.batch_max):
                await self._slots.acquire()
                slot = _Slot(self._slots)
                task = asyncio.create_task(self._process(batch[i : i + s.batch_max], slot))
                self._tasks.add(task)
                task.add_done_callback(functools.partial(self._done, slot=slot))

    def _done(self, task: asyncio.Task[None], *, slot: _Slot) -> None:
        self._tasks.discard(task)
        slot.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("batch failed", exc_info=task.exception())

    async def _process(self, batch: list[AbstractIncomingMessage], slot: _Slot) -> None:
        """Settle every message of the batch, whatever happens: an unexpected error puts
        back (requeue, bounded by the delivery limit) what was not settled yet, so no
        message can sit unacked on the channel for ever."""
        try:
            await self._process_batch(batch, slot)
        except asyncio.CancelledError:
            raise  # shutdown: never ack; the broker redelivers
        except Exception:
            log.exception("batch of %d failed; requeueing what is unsettled", len(batch))
            for message in batch:
                if not message.processed:
                    self.metrics.requeued.inc()
                    await amqp.settle(message, "requeue")

    async def _process_batch(self, batch: list[AbstractIncomingMessage], slot: _Slot) -> None:
        s = self.settings
        timeout = s.amqp.publish_timeout_s
        good: list[tuple[AbstractIncomingMessage, IngestItem]] = []
        outcomes: list[asyncio.Future[Any]] = []
        settled: list[tuple[AbstractIncomingMessage, list[asyncio.Future[Any]]]] = []
        for message in batch:
            try:
                good.append(
                    (
                        message,
                        decode_ingest(
                            message.body,
                            message.headers or {},
                            message.content_type,
                            s.limits.max_bytes,
                        ),
                    )
                )
            except Exception as err:
                exc = err if isinstance(err, BadMessage) else BadMessage(
                    "bad_message", f"cannot decode ingest message: {err!r}")
                self.metrics.failed.labels(exc.reason).inc()
                log.warning("dead-lettering ingest message %s: %s", message.message_id, exc.message)
                futs: list[asyncio.Future[Any]] = [
                    asyncio.ensure_future(
                        self.publisher.dead_letter(
                            message,
                            self.topo.queue(amqp.RK_INGEST),
                            exc.reason,
                            exc.message,
                            timeout=timeout,
                        )
                    )
                ]
                settled.append((message, futs))
        if good:
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                results = await loop.run_in_executor(
                    self._executor, encode.encode_batch, self.encoder, [it for _, it in good]
                )
            except Exception:
                # Not an image's fault (those are failure records): retry, bounded by the
                # delivery limit.
                log.exception("encoding a batch of %d failed; requeueing", len(good))
                results = []
                for message, _ in good:
                    self.metrics.requeued.inc()
                    await amqp.settle(message, "requeue")
                good = []
            # The CPU step is done: free the slot so the next batch encodes while this one
            # waits for its confirms (the prefetch still bounds what is unacked).
            slot.release()
            self.metrics.encode_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(good))
            for (message, _item), result in zip(good, results, strict=True):
                try:
                    handed = self._hand_on(message, result, timeout)
                except Exception as exc:  # e.g. metadata the serialiser refuses
                    handed = [asyncio.ensure_future(self.publisher.dead_letter(
                        message, self.topo.queue(amqp.RK_INGEST), "bad_message",
                        f"cannot forward: {exc!r}", timeout=timeout))]
                settled.append((message, handed))
        for _, futs in settled:
            outcomes.extend(futs)
        await asyncio.gather(*outcomes, return_exceptions=True)
        for message, futs in settled:
            errors = [f.exception() or "cancelled" for f in futs
                      if f.cancelled() or f.exception() is not None]
            if not errors:
                await amqp.settle(message, "ack")
            else:
                log.warning("requeueing %s: %s", message.message_id, errors[0])
                self.metrics.requeued.inc()
                await amqp.settle(message, "requeue")

    def _hand_on(
        self, message: AbstractIncomingMessage, result: IndexDoc | IndexFailure, timeout: float
    ) -> list[asyncio.Future[Any]]:
        body = result.model_dump_json().encode()
        futs: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(
                self.publisher.publish(
                    amqp.RK_INDEX,
                    body,
                    timeout=timeout,
                    message_id=result.id,
                    content_type="application/json",
                )
            )
        ]
        if isinstance(result, IndexFailure):
            self.metrics.failed.labels(result.reason).inc()
            futs.append(
                asyncio.ensure_future(
                    self.publisher.dead_letter(
                        message,
                        self.topo.queue(amqp.RK_INGEST),
                        result.reason,
                        result.message,
                        timeout=timeout,
                    )
                )
            )
        else:
            self.metrics.encoded.inc()
        return futs

    async def _on_rpc(self, message: AbstractIncomingMessage) -> None:
        s = self.settings
        try:
            loop = asyncio.get_running_loop()
            reply = await loop.run_in_executor(
                self._rpc_executor,
                encode.encode_query,
                self.encoder,
                message.body,
                s.limits.max_bytes,
            )
            self.metrics.rpc.labels("ok" if reply.ok else reply.reason or "error").inc()
            if message.reply_to:
                await self.publisher.publish(
                    message.reply_to,
                    reply.model_dump_json().encode(),
                    timeout=s.amqp.rpc_timeout_s,
                    to="default",
                    persistent=False,
                    correlation_id=message.correlation_id,
                    content_type="application/json",
                )
        except Unavailable as exc:  # the caller went away (direct reply-to gone): drop it
            log.info("encode reply not delivered: %s", exc)
        except asyncio.CancelledError:
            raise  # never ack a cancelled handler; the request's TTL bounds its life
        except Exception:
            # Drop it (the caller times out and may retry) rather than hold an RPC
            # prefetch slot until the channel closes.
            log.exception("encode request %s failed", message.correlation_id)
            self.metrics.rpc.labels("error").inc()
        await amqp.settle(message, "ack")


def _load_encoder(settings: EncoderWorkerSettings) -> Any:
    from elastichash.model.encoder import Encoder

    return Encoder.load(settings.model, settings.limits)


async def _amain(settings: EncoderWorkerSettings) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Loaded once, before consuming: a model that breaks the contract stops start-up here.
    encoder = await asyncio.to_thread(_load_encoder, settings)
    return await EncoderWorker(settings, encoder).run(stop)


def main(argv: list[str] | None = None) -> int:
    return run_worker(
        "elastichash encoder-worker", (__doc__ or "").splitlines()[0], argv, EncoderWorkerSettings,
        lambda s: s.health_port, _amain,
    )
