"""The gateway's distributed :class:`~elastichash.pipeline.Pipeline`: ingest goes to the
broker with confirms, query encoding is an RPC to the encoder workers over their own queue.

The RPC replies come back on a per-gateway exclusive queue with a fixed name (``P.reply.<id>``)
rather than direct reply-to: a robust channel re-declares a named queue after a broker restart
and resumes consuming from it, so searches recover on their own. The model's metadata (bit
selection, name, fingerprint) is read from the model file without an inference session.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from elastichash import amqp
from elastichash.errors import (
    ElasticHashError,
    ImageError,
    PartlyAccepted,
    Unavailable,
)
from elastichash.messages import (
    H_VERSION,
    SCHEMA_VERSION,
    BadMessage,
    decode_reply,
    encode_ingest,
)
from elastichash.model.contract import ModelSpec
from elastichash.pipeline import IngestItem, QueryCode, UploadClock
from elastichash.settings import AmqpSettings, ModelSettings

log = logging.getLogger(__name__)

# How long a queue-depth round trip may take before stats report the figure unavailable.
BACKLOG_TIMEOUT_S = 0.5


class AmqpPipeline:
    def __init__(self, settings: AmqpSettings, model: ModelSettings) -> None:
        self.settings = settings
        self.model_settings = model
        self.topo = amqp.Topology.of(settings)
        self._connection: AbstractRobustConnection | None = None
        self._rpc_connection: AbstractRobustConnection | None = None
        self._publisher: amqp.Publisher | None = None
        self._rpc: amqp.Publisher | None = None
        self._stats: AbstractChannel | None = None  # queue depths, apart from publishing
        self._depth_tasks: dict[tuple[str, ...], asyncio.Task[int]] = {}
        self._reply_queue = f"{settings.prefix}.reply.{uuid.uuid4().hex[:12]}"
        self._pending: dict[str, asyncio.Future[QueryCode]] = {}
        self._spec: ModelSpec | None = None
        self._clock = UploadClock()

    async def start(self) -> None:
        self._spec = await asyncio.to_thread(self._load_spec)
        try:
            self._connection = await amqp.connect(self.settings, "gateway")
            # Queries on a connection of their own: an ingest flood's frames (and the broker's
            # flow control of a busy publishing connection) never hold up an encode RPC.
            self._rpc_connection = await amqp.connect(self.settings, "gateway-rpc")
            await self._open(self._connection, self._rpc_connection)
        except BaseException:
            await self._close()  # or the connections' tasks die noisily
            raise

    async def _open(
        self, connection: AbstractRobustConnection, rpc_connection: AbstractRobustConnection
    ) -> None:
        self._publisher = amqp.Publisher(connection, self.topo)
        await self._publisher.open()
        self._rpc = amqp.Publisher(rpc_connection, self.topo)
        await self._rpc.open()
        replies = await self._rpc.channel.declare_queue(
            self._reply_queue, exclusive=True, auto_delete=True, durable=False
        )
        await replies.consume(self._on_reply, no_ack=True)
        self._stats = await connection.channel()
        log.info(
            "AMQP pipeline on %s (prefix %s)", amqp.safe_url(self.settings.url),
            self.settings.prefix,
        )

    async def stop(self) -> None:
        # submit() returns only after confirms, so nothing is buffered here to drain.
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(Unavailable("gateway shutting down"))
        await self._close()

    async def _close(self) -> None:
        for conn in (self._rpc_connection, self._connection):
            if conn is not None:
                await amqp.close_connection(conn)
        self._connection = self._rpc_connection = None

    def is_queued(self, image_id: str) -> bool | None:
        return None  # the backlog is in the broker; the gateway falls back on its own memory

    async def backlog(self) -> int | None:
        """Messages waiting in the ingest and index queues, counted now (a fresh passive
        declare each, see ``amqp.message_count``); None at once when the broker is away, and
        None after ``BACKLOG_TIMEOUT_S`` when it does not answer: stats never wait for it."""
        return await self._queue_depth(amqp.RK_INGEST, amqp.RK_INDEX)

    async def ingest_depth(self) -> int | None:
        """Images waiting to be encoded (the ingest queue alone), or None when unknown."""
        return await self._queue_depth(amqp.RK_INGEST)

    async def _queue_depth(self, *routing_keys: str) -> int | None:
        if not amqp.is_up(self._connection):
            return None
        # The count runs as a task of its own that is never cancelled: aiormq closes a
        # channel whose call is cancelled mid-flight, so a caller's timeout must not reach it.
        # A slow count is simply not waited for; the next caller picks up its result.
        task = self._depth_tasks.get(routing_keys)
        if task is None or task.done():
            task = asyncio.ensure_future(self._count(routing_keys))
            self._depth_tasks[routing_keys] = task
        done, _ = await asyncio.wait({task}, timeout=BACKLOG_TIMEOUT_S)
        if not done:
            return None
        exc = task.exception()
        if exc is not None:  # stats must not fail because the broker is restarting
            log.debug("queue depth unavailable: %r", exc)
            return None
        return task.result()

    async def _count(self, routing_keys: tuple[str, ...]) -> int:
        assert self._connection is not None
        if self._stats is None or self._stats.is_closed:
            self._stats = await self._connection.channel()
        channel = self._stats
        return sum([await amqp.message_count(channel, self.topo.queue(rk)) for rk in routing_keys])

    async def ready(self) -> bool:
        """The connection is up now and both publishing channels are open: false within a
        moment of losing the broker (a reconnecting connection is not ready)."""
        pub, rpc = self._publisher, self._rpc
        return amqp.is_up(self._connection, pub.channel if pub else None) and amqp.is_up(
            self._rpc_connection, rpc.channel if rpc else None
        )

    def _publisher_or_fail(self, rpc: bool = False) -> amqp.Publisher:
        pub = self._rpc if rpc else self._publisher
        conn = self._rpc_connection if rpc else self._connection
        if pub is None or conn is None or conn.is_closed:
            raise Unavailable("not connected to the broker", retry_after=1.0)
        return pub

    async def submit(self, items: Sequence[IngestItem]) -> None:
        pub = self._publisher_or_fail()
        timeout = self.settings.publish_timeout_s

        async def one(item: IngestItem) -> None:
            # The version of the document it becomes: of two uploads of one id, the later
            # is kept even when another encoder worker finishes the earlier one last.
            body, headers, content_type = encode_ingest(replace(item, seq=self._clock.next()))
            await pub.publish(
                amqp.RK_INGEST,
                body,
                timeout=timeout,
                headers=headers,
                message_id=item.id,
                content_type=content_type,
            )

        results = await asyncio.gather(*(one(i) for i in items), return_exceptions=True)
        failed = [res for res in results if isinstance(res, BaseException)]
        if not failed:
            return
        confirmed = [it.id for it, res in zip(items, results, strict=True)
                     if not isinstance(res, BaseException)]
        first = failed[0]
        if not confirmed:
            raise first
        # The broker holds the confirmed ones: they will be indexed, so the caller must
        # answer for them as accepted rather than tell the client they failed.
        message = first.message if isinstance(first, ElasticHashError) else str(first)
        raise PartlyAccepted(f"{len(failed)} of {len(items)} images not confirmed by the "
                             f"broker: {message}", confirmed, retry_after=1.0)

    async def encode_query(self, data: bytes) -> QueryCode:
        pub = self._publisher_or_fail(rpc=True)
        timeout = self.settings.rpc_timeout_s
        loop = asyncio.get_running_loop()
        corr = uuid.uuid4().hex
        fut: asyncio.Future[QueryCode] = loop.create_future()
        self._pending[corr] = fut
        started = loop.time()
        try:
            await pub.publish(
                amqp.RK_RPC,
                data,
                timeout=timeout,
                persistent=False,
                message_id=corr,
                correlation_id=corr,
                reply_to=self._reply_queue,
                # A request nobody waits for any more is dropped by the broker, not encoded.
                expiration=timeout,
                headers={H_VERSION: SCHEMA_VERSION},
            )
            remaining = max(0.0, timeout - (loop.time() - started))
            return await asyncio.wait_for(fut, remaining)
        except TimeoutError as exc:
            raise Unavailable(f"no encoder answered within {timeout:g}s", retry_after=1.0) from exc
        finally:
            self._pending.pop(corr, None)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        fut = self._pending.get(message.correlation_id or "")
        if fut is None or fut.done():
            return  # a late reply to a request that already timed out
        try:
            reply = decode_reply(message.body)
        except BadMessage as exc:
            fut.set_exception(Unavailable(f"bad reply from encoder: {exc.message}"))
            return
        if reply.ok and reply.code and reply.short:
            fut.set_result(
                QueryCode(code=bytes.fromhex(reply.code), short=bytes.fromhex(reply.short))
            )
        else:
            fut.set_exception(
                ImageError(reply.reason or "corrupt", reply.message or "cannot encode")
            )

    def _load_spec(self) -> ModelSpec:
        from elastichash.model.contract import load_spec
        from elastichash.model.registry import resolve_settings

        return load_spec(resolve_settings(self.model_settings))

    @property
    def model_name(self) -> str:
        """The model as named in the settings (a built-in name or a path)."""
        from elastichash.model.registry import choose

        return choose(self.model_settings)

    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            raise Unavailable("model metadata not loaded yet")
        return self._spec

    def short_of(self, code: bytes) -> bytes:
        spec = self._spec
        if spec is None:
            raise Unavailable("model metadata not loaded yet")
        return spec.short_of(code)

    def model_info(self) -> dict[str, Any]:
        return {} if self._spec is None else self._spec.info()
