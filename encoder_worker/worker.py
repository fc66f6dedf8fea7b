"""Encoder worker: consume the ingest queue, micro-batch, encode off the loop, publish codes
with confirms, then ack; and answer query encodings (the encode RPC) first.

Runs on the consumer runtime (``elastichash.amqp.runtime``: health, QoS, drain, summary), which
settles each message by ``outcome_for``. What is this worker's own, per ingest message:

* encoded -> index message confirmed -> ack;
* bad image -> failure record confirmed on the index queue, then a copy with ``x-eh-reason``
  confirmed on the dead-letter exchange, then ack (a bare reject could not carry the reason);
* bad headers -> dead-letter copy with the reason, then ack;
* a publish that fails -> requeue (bounded by the queue's delivery limit).

Query encodings never wait behind the ingest backlog: they come on their own queue and
connection, run on their own inference session and thread (``rpc_threads``), the ingest threads
run at a lower CPU priority (``ingest_nice``, Linux), and while a query is waiting no new
ingest batch starts encoding (for at most ``rpc_priority_s``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aio_pika.abc import AbstractIncomingMessage

from elastichash import amqp
from elastichash.amqp.runtime import Batched, Direct, Runtime, Slot
from elastichash.errors import Unavailable
from elastichash.health import total
from elastichash.messages import BadMessage, IndexDoc, IndexFailure, decode_ingest
from elastichash.pipeline import IngestItem
from elastichash.priority import QueryFirst
from elastichash.roles import Role, run_role
from elastichash.settings import ModelSettings
from encoder_worker import encode
from encoder_worker.config import EncoderWorkerSettings
from encoder_worker.metrics import Metrics

log = logging.getLogger(__name__)
Msg = AbstractIncomingMessage
T = TypeVar("T")


class EncoderWorker:
    def __init__(
        self, settings: EncoderWorkerSettings, encoder: Any, query_encoder: Any = None
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.query_encoder = query_encoder if query_encoder is not None else encoder
        self.metrics = Metrics()
        self.runtime = Runtime(
            "encoder worker",
            settings,
            settings.amqp,
            self.metrics,
            summary=lambda: {"encoded": total(self.metrics.encoded)},
        )
        self.topo = self.runtime.topo
        # Batches in flight at once = executor threads: enough to keep the next batch
        # collecting while one encodes, bounded by the prefetch and the ingest threads.
        per_prefetch = max(1, settings.amqp.prefetch // settings.batch_max - 1)
        self.parallel = max(1, min(per_prefetch, settings.ingest_thread_count()))
        # Room for the batches encoding, one confirming, and one filling.
        self.prefetch = max(settings.amqp.prefetch, settings.batch_max * (self.parallel + 2))
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.parallel, "eh-encode", initializer=lower_priority, initargs=(settings.ingest_nice,)
        )
        self._rpc_executor = concurrent.futures.ThreadPoolExecutor(
            max(1, settings.rpc_threads), "eh-encode-rpc"
        )
        self._queries = QueryFirst(settings.rpc_priority_s)

    async def run(self, stop: asyncio.Event) -> int:
        s = self.settings
        try:
            return await self.runtime.run(
                [
                    Direct(amqp.RK_RPC, self._on_rpc, s.rpc_prefetch, own_connection=True),
                    Batched(
                        amqp.RK_INGEST,
                        self._on_batch,
                        self.prefetch,
                        s.batch_max,
                        s.batch_ms,
                        self.parallel,
                    ),
                ],
                stop,
            )
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._rpc_executor.shutdown(wait=False, cancel_futures=True)

    # -- ingest: decode, act, report --------------------------------------------------

    def _decode(self, message: Msg) -> IngestItem:
        try:
            return decode_ingest(
                message.body,
                message.headers or {},
                message.content_type,
                self.settings.limits.max_bytes,
            )
        except BadMessage:
            raise
        except Exception as err:
            raise BadMessage("bad_message", f"cannot decode ingest message: {err!r}") from err

    async def _on_batch(self, batch: list[Msg], slot: Slot) -> None:
        rt = self.runtime
        queue = self.topo.queue(amqp.RK_INGEST)
        good: list[tuple[Msg, IngestItem]] = []
        settling: list[asyncio.Future[None]] = []
        for message in batch:
            try:
                good.append((message, self._decode(message)))
            except BadMessage as exc:
                settling.append(asyncio.ensure_future(
                    rt.settle(message, amqp.outcome_for(exc), queue)))
        if good:
            await self._queries.wait_turn()
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                results = await loop.run_in_executor(
                    self._executor, encode.encode_batch, self.encoder, [it for _, it in good],
                    self.settings.preview_px, self.settings.limits.max_pixels,
                )
            except Exception as exc:
                # Not an image's fault (those are failure records): retry, bounded by the
                # delivery limit.
                log.exception("encoding a batch of %d failed", len(good))
                outcome = amqp.outcome_for(exc)
                settling.extend(
                    asyncio.ensure_future(rt.settle(m, outcome, queue)) for m, _ in good)
                good, results = [], []
            # The CPU step is done: free the slot so the next batch encodes while this one
            # waits for its confirms (the prefetch still bounds what is unacked).
            slot.release()
            self.metrics.encode_seconds.observe(time.perf_counter() - started)
            self.metrics.batch_size.observe(len(good))
            for (message, _item), result in zip(good, results, strict=True):
                settling.append(asyncio.ensure_future(self._report(message, result, queue)))
        await asyncio.gather(*settling)

    async def _report(self, message: Msg, result: IndexDoc | IndexFailure, queue: str) -> None:
        """Hand the result on to the index queue; settle by how that went."""
        rt = self.runtime
        try:
            body = result.model_dump_json().encode()
        except Exception as err:  # e.g. metadata the serialiser refuses
            exc = BadMessage("bad_message", f"cannot forward: {err!r}")
            await rt.settle(message, amqp.outcome_for(exc), queue)
            return
        published = asyncio.ensure_future(rt.publisher.publish(
            amqp.RK_INDEX,
            body,
            timeout=self.settings.amqp.publish_timeout_s,
            message_id=result.id,
            content_type="application/json",
        ))
        await asyncio.wait([published])
        if isinstance(result, IndexFailure):
            # The failure record is written; the dead-letter copy says why for the operator.
            success = amqp.Outcome.dead_letter(result.reason, result.message)
        else:
            success = amqp.ACK
            if published.exception() is None:
                self.metrics.encoded.inc()
        await rt.settle_after(message, [published], queue, success)

    # -- queries ------------------------------------------------------------------------

    async def _on_rpc(self, message: Msg) -> None:
        """Encode and reply. Always acked (by the runtime): a request that fails is dropped
        (its caller times out and may retry) rather than held or redelivered."""
        s = self.settings
        started = time.perf_counter()
        with self._queries:
            try:
                loop = asyncio.get_running_loop()
                reply = await loop.run_in_executor(
                    self._rpc_executor,
                    encode.encode_query,
                    self.query_encoder,
                    message.body,
                    s.limits.max_bytes,
                )
            except Exception:
                log.exception("encode request %s failed", message.correlation_id)
                self.metrics.rpc.labels("error").inc()
                return
        self.metrics.rpc.labels("ok" if reply.ok else reply.reason or "error").inc()
        if not message.reply_to:
            return
        try:
            await self.runtime.publisher_for(amqp.RK_RPC).publish(
                message.reply_to,
                reply.model_dump_json().encode(),
                timeout=s.amqp.rpc_timeout_s,
                to="default",
                persistent=False,
                correlation_id=message.correlation_id,
                content_type="application/json",
            )
        except Unavailable as exc:  # the caller went away (its reply queue is gone)
            log.info("encode reply not delivered: %s", exc)
        self.metrics.rpc_seconds.observe(time.perf_counter() - started)


def lower_priority(nice: int) -> None:
    """Run the calling thread, and the threads it starts from now on, ``nice`` steps below
    the priority it has (a worker started niced keeps its queries above its ingest). Linux
    only: there the nice value is per thread (``setpriority`` on a thread id) and a new thread
    inherits its creator's; elsewhere it would apply to the whole process, queries included,
    so it is left alone."""
    if nice <= 0 or sys.platform != "linux":
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid,
                       min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:
        log.warning("cannot lower the ingest threads' priority: %s", exc)


def _in_new_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a thread of its own, so that what it sets on its thread (a lower priority)
    does not stay on a pooled thread that runs other work later."""
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=run, name="eh-load")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return box[0]


def ingest_model_settings(settings: EncoderWorkerSettings) -> ModelSettings:
    """The ingest session's model settings: its threads bounded by ``ingest_threads`` where
    the model settings leave them to the default."""
    threads = settings.ingest_thread_count()
    model = settings.model
    return model.model_copy(update={
        "intra_op_threads": model.intra_op_threads or threads,
        "decode_workers": model.decode_workers or threads,
    })


def _load_encoders(settings: EncoderWorkerSettings) -> tuple[Any, Any]:
    """The ingest encoder, and the query encoder: its own session and threads, so a query
    never waits for the ingest batches' inference pool. The ingest session is created on a
    thread of lower priority (``ingest_nice``), so its inference threads, which inherit that,
    yield the cores to a query's; its threads are bounded (``ingest_threads``)."""
    from elastichash.model.encoder import Encoder

    ingest_model = ingest_model_settings(settings)

    def load_ingest() -> Any:
        lower_priority(settings.ingest_nice)
        return Encoder.load(ingest_model, settings.limits)

    ingest = _in_new_thread(load_ingest)
    log.info("ingest: %d inference threads, %d decode workers, nice %d; queries: %s",
             ingest_model.intra_op_threads, ingest_model.decode_workers, settings.ingest_nice,
             f"own session, {settings.rpc_threads} thread(s)" if settings.rpc_threads > 0
             else "the ingest session")
    if settings.rpc_threads <= 0:
        return ingest, ingest
    query_model = settings.model.model_copy(
        update={"intra_op_threads": settings.rpc_threads, "decode_workers": 1, "batch_size": 1}
    )
    return ingest, Encoder.load(query_model, settings.limits)


async def _amain(settings: EncoderWorkerSettings) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Loaded once, before consuming: a model that breaks the contract stops start-up here.
    ingest, query = await asyncio.to_thread(_load_encoders, settings)
    return await EncoderWorker(settings, ingest, query).run(stop)


ROLE = Role(
    command="encoder-worker",
    summary="run an encoder worker (ingest queue and query encodings)",
    description=(
        "Consume the ingest queue: decode, encode in micro-batches, publish the codes to the "
        "index queue with confirms, then ack. Also answers query encodings (the encode RPC) "
        "on its own queue, session and thread, ahead of the ingest backlog."
    ),
    env_prefix="EH_ENCODER_",
    settings=EncoderWorkerSettings,
    example_setting="AMQP__URL",
    data_note=(
        "It decides where built-in models are built and kept unless "
        "EH_ENCODER_MODEL__MODELS_DIR is set (EH_ENCODER_MODEL__MODEL names one, or a path)."
    ),
    worker=True,
)


def main(argv: list[str] | None = None) -> int:
    return run_role(ROLE, argv, _amain)
